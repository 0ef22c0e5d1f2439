# SPDX-License-Identifier: Apache-2.0
"""The ``pg_replication`` pillar's schema: every key's type and grammar (:data:`SCHEMA`), the
small language the schema is written in, the settings the formula writes itself, and the
checks of single values (passwords, secrets, templated paths).

A spec is a dict (a mapping with exactly these keys, each with its own spec) or a function
``check(value, key, errors)`` that appends ``"key: message"`` for each fault. Unknown keys
are refused, so a typo never silently becomes a default.

Pure logic; runs on the minion's Python (3.9 on Debian 11).
"""

import ipaddress
import os
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
syntax = _sibling("pg_replication_syntax")

ROLES = ("primary", "standby", "barman", "pooler")
SYNC_METHODS = ("any", "first")
RESTART_MODES = ("auto", "manual")
INSTALL_METHODS = ("pkg", "pip")
POOLER_TARGETS = ("primary", "vip")
POOL_MODES = ("transaction", "session", "statement")
HA_MODES = ("manual", "automatic")
# Barman's WAL `compression` (none: not compressed) and its base backup `backup_compression`
# (pg_basebackup's client-side compression; lz4 and zstd need pg_basebackup 15+).
WAL_COMPRESSIONS = ("gzip", "bzip2", "pigz", "none")
BACKUP_COMPRESSIONS = ("none", "gzip", "lz4", "zstd")
CLOUD_COMPRESSIONS = ("gzip", "bzip2", "none")
MIN_PASSWORD_LENGTH = 12
MIN_VERSION, MAX_VERSION = 10, 18
KEY = "pg_replication"
# postgresql.conf settings the formula writes itself, and the pillar key that sets each.
RESERVED_SETTINGS = {
    "port": f"{KEY}:port",
    "data_directory": f"{KEY}:data_dir",
    "hba_file": f"{KEY}:conf_dir",
    "ident_file": f"{KEY}:conf_dir",
    "external_pid_file": f"{KEY}:pid_file",
    "unix_socket_directories": f"{KEY}:socket_dir",
    "cluster_name": f"{KEY}:cluster",
    "primary_conninfo": f"{KEY}:hosts",
    "primary_slot_name": f"{KEY}:hosts:<standby>:slot",
    "synchronous_standby_names": f"{KEY}:synchronous",
    "restore_command": f"{KEY}:standby:restore_from_cloud or restore_from_barman",
    "ssl": f"{KEY}:tls",
    "ssl_ca_file": f"{KEY}:tls",
    "ssl_cert_file": f"{KEY}:tls",
    "ssl_key_file": f"{KEY}:tls",
    "config_file": None,
    "include": None,
    "include_dir": None,
    "include_if_exists": None,
}


class PlanError(ValueError):
    """The pillar is invalid; the message lists every fault with its pillar key."""


# --------------------------------------------------------------------------- the language


def _message(check):
    """A spec from a function value -> message or None."""

    def spec(value, key, errors):
        message = check(value)
        if message:
            errors.append(f"{key}: {message}")

    return spec


def _pattern(regex, what):
    return _message(lambda v: syntax.check_pattern(v, regex, what))


def _int(minimum=None, maximum=None):
    return _message(lambda v: syntax.check_int(v, minimum, maximum))


def _nullable(spec):
    def check(value, key, errors):
        if value is not None:
            spec(value, key, errors)

    return check


def _list_of(spec):
    def check(value, key, errors):
        if not isinstance(value, list):
            errors.append(f"{key}: must be a list, not {_type(value)}")
            return
        for i, item in enumerate(value):
            spec(item, f"{key}:{i}", errors)

    return check


def _mapping_of(key_spec, value_spec):
    """A mapping whose keys are names (checked by ``key_spec``) and values ``value_spec``."""

    def check(value, key, errors):
        if not isinstance(value, dict):
            errors.append(f"{key}: must be a mapping, not {_type(value)}")
            return
        for name, item in value.items():
            key_spec(name, f"{key}:{name}", errors)
            validate(item, value_spec, f"{key}:{name}", errors)

    return check


def _enum(*choices):
    return _message(lambda v: None if v in choices else f"{v!r} is not one of {', '.join(map(str, choices))}")


def _bool(value, key, errors):
    if not isinstance(value, bool):
        errors.append(f"{key}: {value!r} is not true or false")


def _type(value):
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _record(spec, required=()):
    """A mapping with exactly the keys of ``spec``, of which ``required`` must be set."""

    def check(value, key, errors):
        validate(value, spec, key, errors)
        if isinstance(value, dict):
            errors.extend(f"{key}:{name}: is required" for name in required if value.get(name) is None)

    return check


def validate(value, spec, key, errors):
    """Check ``value`` against ``spec``; append one "pillar:key: message" per fault."""
    if not isinstance(spec, dict):
        spec(value, key, errors)
        return
    if not isinstance(value, dict):
        errors.append(f"{key}: must be a mapping, not {_type(value)}")
        return
    for name in value:
        if name not in spec:
            errors.append(f"{key}:{name}: unknown key (expected one of {', '.join(sorted(spec))})")
    for name, sub in spec.items():
        if name in value:
            validate(value[name], sub, f"{key}:{name}", errors)


_path = _message(syntax.check_path)
_ip = _message(syntax.check_ip)
_host = _message(syntax.check_host)
_package = _pattern(syntax.PACKAGE_RE, "a package name")
_role = _pattern(syntax.ROLE_RE, "a valid role name (letters, digits, _; not pg_...)")
_slot = _pattern(syntax.SLOT_RE, "a valid slot name (lower-case letters, digits, _)")
_minion_id = _pattern(syntax.MINION_ID_RE, "a valid minion id (letters, digits, _ . -)")
_server_name = _pattern(syntax.SERVER_RE, "a valid Barman server name (letters, digits, _ . -)")
_port = _int(1, 65535)
_version = _int(MIN_VERSION, MAX_VERSION)
_duration = _pattern(syntax.DURATION_RE, "a Prometheus duration (e.g. 30s, 2m, 1h)")
_retention = _pattern(syntax.RETENTION_RE, "a retention policy (REDUNDANCY n or RECOVERY WINDOW OF n DAYS)")
_cron_schedule = _pattern(syntax.CRON_SCHEDULE_RE, "a cron schedule (five fields, or @daily)")


def _templated(spec):
    """A value that may hold {version} and {cluster}: checked with them filled in (both are
    checked on their own, and the expanded value is checked again by the plan)."""

    def check(value, key, errors):
        if isinstance(value, str):
            value = value.replace("{version}", "15").replace("{cluster}", "main")
        spec(value, key, errors)

    return check


def _secret(value, key, errors):
    """Passwords: presence and strength are checked where they are required."""
    if value is not None:
        message = syntax.check_secret(value)
        if message:
            errors.append(f"{key}: {message}")


def _pem(*kinds):
    def check(value, key, errors):
        message = syntax.check_pem(value, kinds)
        if message:
            errors.append(f"{key}: {message}")

    return check


def _secret_pattern(regex, what):
    """A secret matching ``regex``; the message never quotes it."""

    def check(value, key, errors):
        if not isinstance(value, str) or not regex.fullmatch(value):
            errors.append(f"{key}: is not {what}")

    return check


_certificate = _pem("CERTIFICATE")
_private_key = _pem("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


def _setting(name, value, key, errors):
    if not isinstance(name, str) or not syntax.SETTING_RE.fullmatch(name):
        errors.append(f"{key}: {name!r} is not a valid setting name (lower-case letters, digits, _, one dot)")
    elif name in RESERVED_SETTINGS:
        owner = RESERVED_SETTINGS[name]
        errors.append(f"{key}: {name} is written by the formula" + (f"; set {owner} instead" if owner else ""))
    message = syntax.check_setting_value(value)
    if message:
        errors.append(f"{key}: {message}")


def _settings(value, key, errors):
    if not isinstance(value, dict):
        errors.append(f"{key}: must be a mapping of setting names to values, not {_type(value)}")
        return
    for name, setting in value.items():
        _setting(name, setting, f"{key}:{name}", errors)


# --------------------------------------------------------------------------- the schema


def _drill_target(value):
    return _sibling("pg_replication_drill").check_target(value)


def _drill_table(value):
    return _sibling("pg_replication_drill").check_table(value)


def _drill_tables(value, key, errors):
    """``drill:tables``: a list (every server's drill checks them) or a mapping of Barman
    server names to lists (the plan checks the names)."""
    tables = _list_of(_message(_drill_table))
    if isinstance(value, dict):
        for name, item in value.items():
            tables(item, f"{key}:{name}", errors)
    else:
        tables(value, key, errors)


# Application objects: every name also goes through psycopg2's sql.Identifier; these
# patterns keep them printable in pg_hba.conf and in messages.
HBA_TYPES = ("local", "host", "hostssl")
HBA_METHODS = ("scram-sha-256", "md5", "peer", "cert", "reject")
PRIVILEGE_ON = ("database", "schema", "tables", "sequences", "functions")
_database_name = _pattern(syntax.APP_RE["database"], "a valid database name (letters, digits, _ -)")
_ident = _pattern(syntax.APP_RE["ident"], "a valid name (letters, digits, _)")


def _database(name, key, errors):
    _database_name(name, key, errors)


def _role_name(name, key, errors):
    _role(name, key, errors)


def _name_list(spec):
    return _nullable(_list_of(spec))


DATABASE_SPEC = {
    "owner": _role,
    "encoding": _pattern(syntax.APP_RE["encoding"], "an encoding name (e.g. UTF8)"),
    "locale": _pattern(syntax.APP_RE["locale"], "a locale name (e.g. C.UTF-8)"),
    "lc_collate": _pattern(syntax.APP_RE["locale"], "a locale name (e.g. C.UTF-8)"),
    "lc_ctype": _pattern(syntax.APP_RE["locale"], "a locale name (e.g. C.UTF-8)"),
    "template": _database_name,
    "connlimit": _int(-1, 100000),
    # {name: {version: X, schema: S}} (or null: the default version, in public).
    "extensions": _mapping_of(
        _pattern(syntax.APP_RE["extension"], "a valid extension name"),
        _nullable(
            _record(
                {
                    "version": _nullable(_pattern(syntax.APP_RE["extension_version"], "an extension version")),
                    "schema": _nullable(_ident),
                }
            )
        ),
    ),  # fmt: skip
    "schemas": _mapping_of(_ident, _nullable(_record({"owner": _nullable(_role)}))),
}
APP_ROLE_SPEC = {
    "login": _bool,
    "password": _secret,
    "superuser": _bool,
    "createdb": _bool,
    "createrole": _bool,
    "inherit": _bool,
    "replication": _bool,
    "bypassrls": _bool,
    "connlimit": _int(-1, 100000),
    "valid_until": _nullable(
        _pattern(syntax.APP_RE["valid_until"], "a date (YYYY-MM-DD[ HH:MM[:SS]][+TZ]) or infinity")
    ),
    "member_of": _name_list(_role),
}
PRIVILEGE_SPEC = {
    "role": _role,
    "database": _database_name,
    "on": _enum(*PRIVILEGE_ON),
    "schema": _nullable(_ident),
    # tables, sequences, functions: these only (function signatures: name(type, ...)); none
    # given: every one in the schema.
    "objects": _name_list(_pattern(syntax.APP_RE["object"], "a table, sequence or function(args) name")),
    # Default privileges of the objects this role creates (ALTER DEFAULT PRIVILEGES).
    "default_for": _nullable(_role),
    "privileges": _list_of(_pattern(syntax.APP_RE["privilege"], "a privilege keyword (e.g. SELECT)")),
}
HBA_SPEC = {
    "type": _enum(*HBA_TYPES),
    "database": _pattern(syntax.APP_RE["hba_name"], "a database name, all, or +role"),
    "user": _pattern(syntax.APP_RE["hba_name"], "a role name, all, or +role"),
    "address": _nullable(_message(lambda v: None if network(v) else f"{v!r} is not a CIDR network")),
    "method": _enum(*HBA_METHODS),
}

HOST_SPEC = {
    "role": _enum(*ROLES),
    "address": _ip,
    "slot": _slot,
    "application_name": _pattern(syntax.APPLICATION_NAME_RE, "a valid application name (letters, digits, _ . -)"),
    # A standby streams from the primary, or from this other server (cascading).
    "upstream": _nullable(_minion_id),
    # postgresql.conf settings of this host, merged over the cluster's (e.g. a delayed
    # standby's recovery_min_apply_delay, a reporting standby's work_mem).
    "settings": _settings,
}
# What the barman section sets for every server, and a barman:servers entry may override.
BARMAN_SERVER_DEFAULTS = {
    "user": _role,
    "password": _secret,
    "streaming_user": _role,
    "streaming_password": _secret,
    "slot_name": _slot,
    "retention_policy": _retention,
    "minimum_redundancy": _int(0),
    "immediate_checkpoint": _bool,
    "compression": _enum(*WAL_COMPRESSIONS),
    "backup_compression": _enum(*BACKUP_COMPRESSIONS),
}
# Barman's copy of every base backup and WAL segment to an S3-compatible object store
# (barman-cloud-backup and barman-cloud-wal-archive as Barman hook scripts).
CLOUD_SPEC = {
    "destination": _pattern(syntax.S3_URL_RE, "an S3 URL (s3://bucket or s3://bucket/prefix)"),
    "endpoint_url": _nullable(_pattern(syntax.ENDPOINT_URL_RE, "an endpoint URL (http(s)://host[:port])")),
    "region": _pattern(syntax.REGION_RE, "a region name (lower-case letters, digits, -)"),
    "access_key_id": _pattern(syntax.ACCESS_KEY_ID_RE, "an access key id (letters and digits)"),
    "secret_access_key": _secret_pattern(
        syntax.SECRET_ACCESS_KEY_RE, "a secret access key (letters, digits, / + = _ . -)"
    ),
    "compression": _enum(*CLOUD_COMPRESSIONS),
    # The store's own retention (barman-cloud-backup-delete from cron): null keeps every copy.
    "retention_policy": _nullable(_retention),
    "retention_schedule": _cron_schedule,
}
# Restore drills on the backup host (pg_replication_drill): null for none.
DRILL_SPEC = {
    "schedule": _nullable(_cron_schedule),
    "target": _message(lambda v: _drill_target(v)),
    "tables": _drill_tables,
    "timeout": _int(10, 86400),
    "port": _int(1024, 65535),
}
# Backups `barman keep` holds past the retention policy, by id: full, standalone, or none
# (the keep released; the policy may then remove the backup).
_keep = _mapping_of(
    _pattern(syntax.BACKUP_ID_RE, "a Barman backup id (YYYYMMDDTHHMMSS)"), _enum("full", "standalone", "none")
)
BARMAN_SERVER_SPEC = {
    "address": _host,
    "port": _port,
    "version": _version,
    "primary": _nullable(_host),
    "keep": _keep,
    **BARMAN_SERVER_DEFAULTS,
}
# A Prometheus exporter's address, port and options file (monitoring).
EXPORTER_SPEC = {
    "listen_address": _nullable(_ip),
    "port": _port,
    "defaults_file": _path,
}
SCHEMA = {
    "version": _version,
    "cluster": _pattern(syntax.CLUSTER_RE, "a valid cluster name (lower-case letters, digits, _ -)"),
    "port": _port,
    "upstream_repo": _bool,
    # A host's address may come from the Salt mine instead (pg_replication_topology.MINE_FUNCTION).
    "hosts": _mapping_of(_minion_id, _record(HOST_SPEC, required=("role",))),
    "network": _nullable(_message(lambda v: None if network(v) else f"{v!r} is not a CIDR network")),
    "replication": {"user": _role, "password": _secret},
    "standby": {
        "wipe_unrelated_data": _bool,
        "wipe_promoted_copy": _bool,
        "rebuild_lost_slot": _bool,
        # restore_command from barman:cloud's WAL copy: a standby behind its slot catches up.
        "restore_from_cloud": _bool,
        # ...or from Barman itself over SSH (barman-wal-restore; pg_replication_ssh).
        "restore_from_barman": _bool,
        # Where a new or rebuilt standby's data comes from (barman: Barman's latest backup).
        "bootstrap_from": _enum("primary", "barman"),
        "bootstrap_timeout": _int(1),
    },
    "initdb_options": _list_of(_pattern(syntax.INITDB_OPTION_RE, "an initdb option (--name or --name=value)")),
    "settings": _settings,
    "barman": {
        "install": {
            "method": _enum(*INSTALL_METHODS),
            "version": _nullable(_pattern(syntax.PIP_VERSION_RE, "a version number")),
            "venv": _nullable(_path),
            "link": _nullable(_path),
        },
        "server_name": _nullable(_server_name),
        "primary": _nullable(_minion_id),
        # Where base backups are taken: primary, standby (the first one), or a standby's id.
        "backup_from": _minion_id,
        **BARMAN_SERVER_DEFAULTS,
        "user_replication": _bool,
        "backup_max_age": _int(1),
        "keep": _keep,
        # Servers whose backups stay restorable after their system went (a major upgrade made
        # a new one): server name -> its PostgreSQL major version.
        "retired": _mapping_of(_server_name, _version),
        "backup_schedule": _nullable(_cron_schedule),
        "incremental_schedule": _nullable(_cron_schedule),
        "check_timeout": _int(1),
        "config_file": _path,
        "config_dir": _path,
        "home": _path,
        "log_dir": _path,
        "servers": _mapping_of(_server_name, _record(BARMAN_SERVER_SPEC, required=("address",))),
        "pkgs": _list_of(_package),
        "build_pkgs": _list_of(_package),
        "cloud": _nullable(_record(CLOUD_SPEC, required=("destination", "access_key_id", "secret_access_key"))),
        "cloud_pkgs": _list_of(_package),
        "ssh_client_pkgs": _list_of(_package),
        "ssh_server_pkgs": _list_of(_package),
        "ssh_service": _pattern(syntax.SERVICE_RE, "a service name"),
        "drill": _nullable(_record(DRILL_SPEC)),
    },
    "switchover": {"max_lag_bytes": _int(0)},
    # salt-run pg_replication.upgrade_minor (pg_replication_upgrade).
    "upgrade": {"switch_back": _bool, "major_mode": _enum("link", "clone")},
    # Automatic failover (pg_replication_ha on the master, pg_replication_fence on the servers):
    # timings in seconds, checked together by pg_replication_fence.check_pillar.
    "ha": {
        "mode": _enum(*HA_MODES),
        "check_interval": _int(1, 3600),
        "fence_timeout": _int(1, 86400),
        "failover_timeout": _int(1, 86400),
        "fence_margin": _int(1, 3600),
        "max_lag_on_failover": _int(0),
        "failover_cooldown": _int(0, 31536000),
        "auto_rejoin": _bool,
    },
    # Clients follow the primary: its floating address, and PgBouncer (pg_replication_routing).
    "vip": _nullable(_ip),
    "pooler": {
        "hosts": _list_of(_minion_id),
        "target": _enum(*POOLER_TARGETS),
        "port": _port,
        "pool_mode": _enum(*POOL_MODES),
        "default_pool_size": _int(1, 10000),
        "max_client_conn": _int(1, 1000000),
        "pause_wait": _int(0, 3600),
        "auth_user": _role,
        "auth_password": _secret,
        "pkg": _package,
        "service": _pattern(syntax.SERVICE_RE, "a service name"),
        "conf_dir": _path,
    },
    # TLS on every TCP connection: the CA's certificate, and each server's certificate (its
    # address in subjectAltName) and key.
    "tls": {
        "ca_cert": _nullable(_certificate),
        "expiry_warning_days": _int(0, 3650),
        "hosts": _mapping_of(
            _minion_id, _record({"cert": _certificate, "key": _private_key}, required=("cert", "key"))
        ),
    },
    # Application objects, made on the primary (standbys get them by replication): see
    # pg_replication_apps for the checks across them.
    "databases": _mapping_of(_database, _record(DATABASE_SPEC)),
    "roles": _mapping_of(_role_name, _record(APP_ROLE_SPEC)),
    "privileges": _list_of(_record(PRIVILEGE_SPEC, required=("role", "database", "on", "privileges"))),
    "hba": _list_of(_record(HBA_SPEC, required=("type", "database", "user", "method"))),
    "absent": {"databases": _list_of(_database_name), "roles": _list_of(_role)},
    "synchronous": {"method": _enum(*SYNC_METHODS), "count": _int(1, 100), "standbys": _list_of(_minion_id)},
    "spare_wal_senders": _int(0, 100),
    "spare_replication_slots": _int(0, 100),
    "restart": {"primary": _enum(*RESTART_MODES), "standby": _enum(*RESTART_MODES)},
    "service": {"enable": _bool},
    "monitoring": {
        "enabled": _bool,
        "user": _role,
        "os_user": _role,
        "postgres_exporter": {**EXPORTER_SPEC, "queries_file": _path},
        "node_exporter": {**EXPORTER_SPEC, "textfile_dir": _path},
        "barman_interval": _int(1, 59),
        "cron_file": _path,
        "salt_call": _nullable(_path),
        "tls": _bool,
        "tls_dir": _path,
        "beacon": {"enabled": _bool, "interval": _int(5, 86400)},
        "prometheus": {
            "host": _nullable(_minion_id),
            "scrape_interval": _duration,
            "evaluation_interval": _duration,
            "config_file": _path,
            "rules_file": _path,
        },
        "alerts": {
            "for": _duration,
            "lag_max_bytes": _int(0),
            "lag_max_seconds": _int(0),
            "slot_retained_max_bytes": _int(0),
            "archive_max_bytes": _int(0),
        },
        "pkgs": {"postgres_exporter": _package, "node_exporter": _package, "prometheus": _package},
        "services": {
            name: _pattern(syntax.SERVICE_RE, "a service name")
            for name in ("postgres_exporter", "node_exporter", "prometheus")
        },
    },
    # OS family values (osfamilymap.yaml), which a pillar may override.
    "pkgs": {"server": _templated(_package), "client": _templated(_package), "arping": _package},
    "service_name": _templated(_pattern(syntax.SERVICE_RE, "a service name")),
    "systemd_service_name": _templated(_pattern(syntax.SERVICE_RE, "a service name")),
    "bin_dir": _templated(_path),
    "conf_dir": _templated(_path),
    "data_dir": _templated(_path),
    "socket_dir": _templated(_path),
    "home": _templated(_path),
    "pid_file": _nullable(_templated(_path)),
    "createcluster_conf": _nullable(_path),
    "salt_psycopg2_pkg": _package,
    "repo": {
        "url": _templated(_pattern(syntax.URL_RE, "an http(s) URL")),
        "key_url": _pattern(syntax.URL_RE, "an http(s) URL"),
        "keyring": _path,
    },
}
# Values that may hold {version} and {cluster}: checked again once expanded.
EXPANDED = ("bin_dir", "conf_dir", "data_dir", "socket_dir", "home", "pid_file", "service_name", "systemd_service_name")


def network(value):
    try:
        return str(ipaddress.ip_network(str(value)))
    except ValueError:
        return None


# --------------------------------------------------------------------------- single values


def redact(value):
    """``value`` with every secret (passwords, .pgpass lines) replaced by ``********``."""
    if isinstance(value, dict):
        return {k: ("********" if _is_secret_key(k) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


# Names that look like secrets' but hold none (a setting's value the file shows anyway).
NOT_SECRET_KEYS = ("password_encryption",)


def _is_secret_key(name):
    if str(name) in NOT_SECRET_KEYS:
        return False
    return any(word in str(name) for word in ("password", "pgpass", "secret")) or str(name) == "key"


def check_password(errors, key, user, password):
    if not password:
        errors.append(f"{key}: a password is required")
    elif not isinstance(password, str):
        return  # the schema said so
    elif len(password) < MIN_PASSWORD_LENGTH:
        errors.append(f"{key}: the password is too weak (fewer than {MIN_PASSWORD_LENGTH} characters)")
    elif password == user:
        errors.append(f"{key}: the password must not equal the user name")


def expand(value, version, cluster):
    if isinstance(value, str):
        return value.replace("{version}", str(version)).replace("{cluster}", str(cluster))
    if isinstance(value, dict):
        return {k: expand(v, version, cluster) for k, v in value.items()}
    return value


def expand_paths(config, errors):
    """The values of :data:`EXPANDED`, the package names and the repository with {version} and
    {cluster} filled in; a path that is no longer valid once expanded is refused."""
    version, cluster = config["version"], config["cluster"]
    for name in EXPANDED:
        if config.get(name):
            config[name] = expand(config[name], version, cluster)
            if name.endswith("_name"):
                continue
            message = syntax.check_path(config[name])
            if message:
                errors.append(f"{KEY}:{name}: {message}")
    for name in ("server", "client"):
        config["pkgs"][name] = expand(config["pkgs"][name], version, cluster)
    config["repo"] = expand(config.get("repo") or {}, version, cluster)


# The keys a plan cannot do without (defaults.yaml and osfamilymap.yaml set all but hosts).
REQUIRED = ("version", "hosts", "pkgs", "bin_dir", "conf_dir", "data_dir", "socket_dir", "home")


def check(config, errors):
    """Check the whole pillar against :data:`SCHEMA` and :data:`REQUIRED`."""
    validate(config, SCHEMA, KEY, errors)
    for required in REQUIRED:
        if isinstance(config, dict) and config.get(required) in (None, {}, ""):
            errors.append(f"{KEY}:{required}: is required" + (" (at least one host)" if required == "hosts" else ""))
