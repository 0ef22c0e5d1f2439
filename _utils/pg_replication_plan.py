"""Validate the ``pg_replication`` pillar and derive what each minion must do.

Pure logic (no Salt, no PostgreSQL): the execution module exposes it as
``pg_replication.plan`` so that ``map.jinja`` fails at render time, before any state runs,
with a message naming the pillar key at fault.

Every key has a type and a grammar (:data:`SCHEMA`); unknown keys are refused, so a typo
never silently becomes a default. Every string the formula writes from pillar values
(postgresql.conf lines, connection strings, ``.pgpass`` lines, Barman options, command
lines) is built here with the escapes of ``pg_replication_syntax``.

Runs on the minion's Python (3.9 on Debian 11): no 3.10+ features.
"""

import copy
import importlib.util
import ipaddress
import os
import re


def _sibling(name):
    """Load another file of _utils/ (Salt's loader gives utils no package to import from)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location("pg_replication_sibling_" + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


syntax = _sibling("pg_replication_syntax")

ROLES = ("primary", "standby", "barman")
SYNC_METHODS = ("any", "first")
RESTART_MODES = ("auto", "manual")
INSTALL_METHODS = ("pkg", "pip")
# Barman's WAL `compression` (none: not compressed) and its base backup `backup_compression`
# (pg_basebackup's client-side compression; lz4 and zstd need pg_basebackup 15+).
WAL_COMPRESSIONS = ("gzip", "bzip2", "pigz", "none")
BACKUP_COMPRESSIONS = ("none", "gzip", "lz4", "zstd")
BACKUP_COMPRESSIONS_FROM_15 = ("lz4", "zstd")
CLOUD_COMPRESSIONS = ("gzip", "bzip2", "none")
# The profile barman-cloud-* read in the credentials file (AWS_SHARED_CREDENTIALS_FILE).
CLOUD_PROFILE = "pg_replication"
# Its file, in the home of the user that runs them (its own, not ~/.aws/credentials).
CLOUD_CREDENTIALS = ".pg_replication-cloud-credentials"
# The backup host's post-backup hook that runs barman-cloud-backup once a backup is DONE.
CLOUD_BACKUP_HOOK = "/usr/local/lib/pg_replication/barman-cloud-backup-when-done"
# The package (same name on both families) with the tool Barman runs for a compression.
COMPRESSION_PKGS = {"bzip2": "bzip2", "pigz": "pigz", "lz4": "lz4", "zstd": "zstd"}
MIN_PASSWORD_LENGTH = 12
MIN_VERSION, MAX_VERSION = 10, 18
KEY = "pg_replication"
# The Salt mine function whose first address stands for a host the pillar gives no address.
MINE_FUNCTION = "pg_replication_address"
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
    "restore_command": f"{KEY}:standby:restore_from_cloud",
    "ssl": f"{KEY}:tls",
    "ssl_ca_file": f"{KEY}:tls",
    "ssl_cert_file": f"{KEY}:tls",
    "ssl_key_file": f"{KEY}:tls",
    "config_file": None,
    "include": None,
    "include_dir": None,
    "include_if_exists": None,
}


# The PostgreSQL major version each distribution release ships; other versions need
# pg_replication:upstream_repo. (os grain, osmajorrelease grain) -> version.
DISTRIBUTION_VERSIONS = {
    ("Debian", 11): 13,
    ("Debian", 12): 15,
    ("Debian", 13): 17,
    ("Ubuntu", 22): 14,
    ("Ubuntu", 24): 16,
}


class PlanError(ValueError):
    """The pillar is invalid; the message lists every fault with its pillar key."""


# --------------------------------------------------------------------------- schema
# A spec is a dict (a mapping with exactly these keys, each with its own spec) or a
# function check(value, key, errors) that appends "key: message" for each fault.


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
_role = _pattern(syntax.ROLE_RE, "a valid role name (letters, digits, _)")
_slot = _pattern(syntax.SLOT_RE, "a valid slot name (lower-case letters, digits, _)")
_minion_id = _pattern(syntax.MINION_ID_RE, "a valid minion id (letters, digits, _ . -)")
_server_name = _pattern(syntax.SERVER_RE, "a valid Barman server name (letters, digits, _ . -)")
_port = _int(1, 65535)
_version = _int(MIN_VERSION, MAX_VERSION)
_retention = _pattern(syntax.RETENTION_RE, "a retention policy (REDUNDANCY n or RECOVERY WINDOW OF n DAYS)")


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
        if not isinstance(value, str) or not regex.match(value):
            errors.append(f"{key}: is not {what}")

    return check


_certificate = _pem("CERTIFICATE")
_private_key = _pem("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


def _setting(name, value, key, errors):
    if not isinstance(name, str) or not syntax.SETTING_RE.match(name):
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


HOST_SPEC = {
    "role": _enum(*ROLES),
    "address": _ip,
    "slot": _slot,
    "application_name": _pattern(syntax.APPLICATION_NAME_RE, "a valid application name (letters, digits, _ . -)"),
    # A standby streams from the primary, or from this other server (cascading).
    "upstream": _nullable(_minion_id),
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
}
BARMAN_SERVER_SPEC = {
    "address": _host,
    "port": _port,
    "version": _version,
    "primary": _nullable(_host),
    **BARMAN_SERVER_DEFAULTS,
}
SCHEMA = {
    "version": _version,
    "cluster": _pattern(syntax.CLUSTER_RE, "a valid cluster name (lower-case letters, digits, _ -)"),
    "port": _port,
    "upstream_repo": _bool,
    # A host's address may come from the Salt mine instead (MINE_FUNCTION).
    "hosts": _mapping_of(_minion_id, _record(HOST_SPEC, required=("role",))),
    "network": _nullable(_message(lambda v: None if _network(v) else f"{v!r} is not a CIDR network")),
    "replication": {"user": _role, "password": _secret},
    "standby": {
        "wipe_unrelated_data": _bool,
        "wipe_promoted_copy": _bool,
        "rebuild_lost_slot": _bool,
        # restore_command from barman:cloud's WAL copy: a standby behind its slot catches up.
        "restore_from_cloud": _bool,
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
        **BARMAN_SERVER_DEFAULTS,
        "user_replication": _bool,
        "backup_max_age": _int(1),
        "backup_schedule": _nullable(_pattern(syntax.CRON_SCHEDULE_RE, "a cron schedule (five fields, or @daily)")),
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
    },
    "switchover": {"max_lag_bytes": _int(0)},
    # TLS on every TCP connection: the CA's certificate, and each server's certificate (its
    # address in subjectAltName) and key.
    "tls": {
        "ca_cert": _nullable(_certificate),
        "hosts": _mapping_of(
            _minion_id, _record({"cert": _certificate, "key": _private_key}, required=("cert", "key"))
        ),
    },
    "synchronous": {"method": _enum(*SYNC_METHODS), "count": _int(1, 100), "standbys": _list_of(_minion_id)},
    "spare_wal_senders": _int(0, 100),
    "spare_replication_slots": _int(0, 100),
    "restart": {"primary": _enum(*RESTART_MODES), "standby": _enum(*RESTART_MODES)},
    "service": {"enable": _bool},
    # OS family values (osfamilymap.yaml), which a pillar may override.
    "pkgs": {"server": _templated(_package), "client": _templated(_package)},
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


def _network(value):
    try:
        return str(ipaddress.ip_network(str(value)))
    except ValueError:
        return None


# --------------------------------------------------------------------------- checks


def redact(value):
    """``value`` with every secret (passwords, .pgpass lines) replaced by ``********``."""
    if isinstance(value, dict):
        return {k: ("********" if _is_secret_key(k) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _is_secret_key(name):
    return any(word in str(name) for word in ("password", "pgpass", "secret")) or str(name) == "key"


def _check_password(errors, key, user, password):
    if not password:
        errors.append(f"{key}: a password is required")
    elif not isinstance(password, str):
        return  # the schema said so
    elif len(password) < MIN_PASSWORD_LENGTH:
        errors.append(f"{key}: the password is too weak (fewer than {MIN_PASSWORD_LENGTH} characters)")
    elif password == user:
        errors.append(f"{key}: the password must not equal the user name")


def _slot_default(minion_id):
    return re.sub(r"[^a-z0-9_]", "_", minion_id.lower())[:58] + "_slot"


def _expand(value, version, cluster):
    if isinstance(value, str):
        return value.replace("{version}", str(version)).replace("{cluster}", str(cluster))
    if isinstance(value, dict):
        return {k: _expand(v, version, cluster) for k, v in value.items()}
    return value


def _hosts(config, mine, errors):
    out = {}
    for minion_id, spec in config["hosts"].items():
        address = spec.get("address")
        if address is None:
            address = _mine_address(str(minion_id), mine, errors)
            if address is None:
                continue
        host = dict(spec, id=str(minion_id), address=str(ipaddress.ip_address(str(address))))
        if host["role"] == "standby":
            host["slot"] = spec.get("slot") or _slot_default(str(minion_id))
            # The minion id by default: pg_stat_replication says who streams, and
            # synchronous_standby_names can name each standby.
            host["application_name"] = spec.get("application_name") or str(minion_id)
        out[str(minion_id)] = host
    return out


def _upstreams(hosts, primary, errors):
    """Each standby's ``upstream`` (the server it streams from: the primary unless the pillar
    names another standby). Refused: an upstream that is not a server of the pillar, on a
    host that is not a standby, and chains that do not end at the primary."""
    for host in hosts.values():
        key, upstream = f"{KEY}:hosts:{host['id']}:upstream", host.get("upstream")
        if upstream is None:
            continue
        upstream = host["upstream"] = str(upstream)
        if host["role"] != "standby":
            errors.append(f"{key}: only a standby streams from an upstream (this host is a {host['role']})")
        elif upstream not in hosts:
            errors.append(f"{key}: {upstream!r} is not a host in {KEY}:hosts")
        elif hosts[upstream]["role"] not in ("primary", "standby"):
            errors.append(f"{key}: {upstream!r} is not a server (it is a {hosts[upstream]['role']} host)")
    if errors or primary is None:
        return
    for host in hosts.values():
        chain = [host["id"]]
        while host["role"] == "standby" and chain[-1] != primary["id"]:
            following = hosts[chain[-1]].get("upstream") or primary["id"]
            if following in chain:
                errors.append(
                    f"{KEY}:hosts:{host['id']}:upstream: the chain {' -> '.join([*chain, following])} is a cycle;"
                    " every standby must lead to the primary"
                )
                break
            chain.append(following)


# Where the formula writes the TLS files: in each server's conf_dir, and the CA's beside
# The CA the servers' own connections to each other verify them with.
PEER_CA_FILE = "/etc/pg_replication/ca.crt"
# Barman's server files on the backup host.
TLS_FILES = {"ca_file": "pg_replication-ca.crt", "cert_file": "pg_replication-server.crt",
             "key_file": "pg_replication-server.key"}  # fmt: skip


def _tls_enabled(config, hosts, errors):
    """Whether the pillar turns TLS on (``tls:ca_cert``); then every server needs its
    certificate and key."""
    tls = config.get("tls") or {}
    if not tls.get("ca_cert"):
        if tls.get("hosts"):
            errors.append(f"{KEY}:tls:ca_cert: is required with {KEY}:tls:hosts")
        return False
    for host in hosts.values():
        if host["role"] in ("primary", "standby") and not (tls.get("hosts") or {}).get(host["id"]):
            errors.append(f"{KEY}:tls:hosts:{host['id']}: every server needs its certificate and key with TLS on")
    return True


def _tls_paths(directory):
    return {name: f"{directory}/{filename}" for name, filename in TLS_FILES.items()}


def _tls_conninfo(ca_file, version):
    """What a client of TLS-only servers adds to its connection string: verify the server's
    certificate and name, and bind SCRAM to the TLS channel (libpq 13+)."""
    extra = {"sslmode": "verify-full", "sslrootcert": ca_file}
    if int(version) >= 13:
        extra["channel_binding"] = "require"
    return extra


def _tls_files(tls, me, plan, barman):
    role = (me or {}).get("role")
    if not tls or role not in ("primary", "standby", "barman"):
        return None
    if role == "barman":
        return {"ca_file": _tls_paths(barman["config_dir"])["ca_file"]}
    return _tls_paths(plan["conf_dir"])


def _downstream(hosts, primary, minion_id):
    """The standbys that stream from ``minion_id``."""
    primary_id = (primary or {}).get("id")
    return sorted(
        (h for h in hosts.values() if h["role"] == "standby" and (h.get("upstream") or primary_id) == minion_id),
        key=lambda h: h["id"],
    )


def mine_request(config):
    """``(minion ids, mine function)`` for the hosts the pillar gives no address, or None."""
    hosts = config.get("hosts") if isinstance(config, dict) else None
    if not isinstance(hosts, dict):
        return None
    missing = sorted(str(h) for h, spec in hosts.items() if isinstance(spec, dict) and spec.get("address") is None)
    return (missing, MINE_FUNCTION) if missing else None


def _mine_address(minion_id, mine, errors):
    """The first address the Salt mine holds for ``minion_id`` (:data:`MINE_FUNCTION`)."""
    key = f"{KEY}:hosts:{minion_id}:address"
    found = (mine or {}).get(minion_id)
    if not found:
        errors.append(
            f"{key}: is required (the Salt mine has no {MINE_FUNCTION} for {minion_id}: set mine_functions"
            " in its pillar and run mine.update, or give the address)"
        )
        return None
    first = found[0] if isinstance(found, list) else found
    message = syntax.check_ip(first)
    if message:
        errors.append(f"{key}: the Salt mine's {MINE_FUNCTION} for {minion_id}: {message}")
        return None
    return first


def _check_slots(hosts, barman_servers, errors):
    """Slot names must be unique on each primary."""
    seen = {}
    claims = [(None, f"{KEY}:hosts:{h['id']}:slot", h["slot"]) for h in hosts.values() if h["role"] == "standby"]
    # This cluster's primary is None; another cluster's primary is its address and port.
    claims += [
        ((s["address"], s["port"]) if s["external"] else None, s["key"] + ":slot_name", s["slot_name"])
        for s in barman_servers
    ]
    for primary, key, slot in claims:
        if (primary, slot) in seen:
            errors.append(f"{key}: duplicate slot name {slot!r} (also {seen[primary, slot]})")
        else:
            seen[primary, slot] = key


def _server(config, barman, errors, key, name, spec, tls_ca=None):
    """One Barman server section: the pillar's barman settings, overridden per server, with
    the option values its server file holds."""
    if name in ("all", "barman"):
        errors.append(f"{key}: {name!r} is reserved by Barman; choose another server name")
    server = {k: spec.get(k, barman.get(k)) for k in BARMAN_SERVER_DEFAULTS}
    server.update(name=name, key=key, primary=spec.get("primary"), external=bool(spec.get("external")))
    server.update(cloud_wal_script=None, cloud_backup_script=None)  # barman:cloud's hooks
    server["port"] = int(spec.get("port") or config["port"])
    server["version"] = int(spec.get("version") or config["version"])
    for user_key, password_key in (("user", "password"), ("streaming_user", "streaming_password")):
        _check_password(errors, f"{key}:{password_key}", server[user_key], server[password_key])
    server["address"] = str(spec["address"])
    server["bin_dir"] = _expand(config["bin_dir"], server["version"], "")
    server["client_pkg"] = _expand(config["pkgs"]["client"], server["version"], "")
    server["retention_policy"] = " ".join(str(server["retention_policy"]).upper().split())
    if server["backup_compression"] in BACKUP_COMPRESSIONS_FROM_15 and server["version"] < 15:
        errors.append(
            f"{key}:backup_compression: {server['backup_compression']} needs PostgreSQL 15 or later"
            f" (this server runs {server['version']}); use gzip or none"
        )
    common = {"host": server["address"], "port": server["port"]}
    if tls_ca and not server["external"]:  # this cluster's primary: TLS only
        common.update(_tls_conninfo(tls_ca, server["version"]))
    server["conninfo"] = syntax.conninfo(**common, user=server["user"], dbname="postgres")
    server["streaming_conninfo"] = syntax.conninfo(**common, user=server["streaming_user"])
    where = f"{server['address']}:{server['port']}"
    server["description"] = f"PostgreSQL {server['version']} on {server['primary']} ({where}), streaming"
    return server


def cloud_command(cloud, home, tool, *args):
    """A barman-cloud-* command line (words) run as the user whose home is ``home``: its
    credentials file named in the environment and picked by profile, no secret in argv."""
    words = [
        "env", f"AWS_SHARED_CREDENTIALS_FILE={home}/{CLOUD_CREDENTIALS}", f"AWS_DEFAULT_REGION={cloud['region']}",
        tool, "--cloud-provider", "aws-s3", "--profile", CLOUD_PROFILE,
    ]  # fmt: skip
    if cloud.get("endpoint_url"):
        words += ["--endpoint-url", cloud["endpoint_url"]]
    return words + list(args)


def _cloud_hooks(barman, servers, method, errors):
    """barman:cloud: each server's hook scripts copy its WAL (before Barman archives a
    segment, retried until it is stored) and each DONE base backup to the object store."""
    key = f"{KEY}:barman:cloud"
    cloud = barman["cloud"] = {"region": "us-east-1", "compression": "gzip", **barman["cloud"]}
    cloud["backup_hook"] = CLOUD_BACKUP_HOOK
    if method != "pkg":
        errors.append(f"{key}: needs {KEY}:barman:install:method pkg (the barman-cli-cloud package)")
    flags = [] if cloud["compression"] == "none" else ["--" + cloud["compression"]]
    for server in servers:
        if server["backup_compression"] != "none":
            errors.append(
                f"{server['key']}:backup_compression: barman-cloud-backup copies plain base backups only;"
                f" set none with {key}"
            )
        words = (cloud["destination"], server["name"])
        server["cloud_wal_script"] = syntax.shell_words(
            cloud_command(cloud, barman["home"], "barman-cloud-wal-archive", *flags, *words)
        )
        server["cloud_backup_script"] = syntax.shell_words(
            [CLOUD_BACKUP_HOOK, *cloud_command(cloud, barman["home"], "barman-cloud-backup", *flags, *words)]
        )


def _restore_command(config, barman, servers, errors):
    """A standby's restore_command with standby:restore_from_cloud: this cluster's WAL from
    barman:cloud's copy (barman-cloud-wal-restore), as the postgres user."""
    if not (config.get("standby") or {}).get("restore_from_cloud"):
        return None
    own = [s for s in servers if not s["external"]]
    if not barman.get("cloud") or not own:
        errors.append(f"{KEY}:standby:restore_from_cloud: needs a barman host and {KEY}:barman:cloud")
        return None
    words = cloud_command(barman["cloud"], config["home"], "barman-cloud-wal-restore")
    words += [barman["cloud"]["destination"], own[0]["name"]]
    return syntax.shell_words(words) + " %f %p"


def _synchronous(config, hosts, errors):
    """``synchronous_standby_names`` for the primary (None: asynchronous). The list may name
    the primary itself (a switchover swaps roles, not this list): it is left out, and the
    count must fit the standbys that remain."""
    sync = config.get("synchronous") or {}
    names = sync.get("standbys") or []
    if not names:
        return None
    key = f"{KEY}:synchronous"
    standbys, seen_application_names = [], {}
    primary_id = next((h["id"] for h in hosts.values() if h["role"] == "primary"), None)
    for i, name in enumerate(names):
        host = hosts.get(str(name))
        if names.index(name) != i:
            errors.append(f"{key}:standbys:{i}: {name!r} is listed twice")
        elif host is None or host["role"] not in ("primary", "standby"):
            errors.append(f"{key}:standbys:{i}: {name!r} is not a server (primary or standby) in {KEY}:hosts")
        elif host["role"] == "standby" and host.get("upstream") not in (None, primary_id):
            errors.append(
                f"{key}:standbys:{i}: {name!r} streams from {host['upstream']}, not from the primary;"
                " only the primary's own standbys can be synchronous"
            )
        elif host["role"] == "standby":
            other = seen_application_names.setdefault(host["application_name"], host["id"])
            if other != host["id"]:
                errors.append(
                    f"{KEY}:hosts:{host['id']}:application_name: {host['application_name']!r} is also"
                    f" {other}'s; synchronous standbys need their own"
                )
            standbys.append(host["application_name"])
    count = int(sync.get("count") or 1)
    if count > len(standbys):
        errors.append(f"{key}:count: {count} is more than the {len(standbys)} standby(s) in {key}:standbys")
    quoted = ", ".join('"' + name + '"' for name in standbys)
    return f"{str(sync.get('method') or 'any').upper()} {count} ({quoted})"


def _barman(config, hosts, primary, errors, tls=False):
    """Barman settings for the backup host: one server section for this cluster's primary,
    plus one per entry of ``barman:servers`` (primaries of other clusters)."""
    barman = copy.deepcopy(config["barman"])
    barman["compression_pkgs"] = []
    servers = []
    if not any(h["role"] == "barman" for h in hosts.values()):
        return barman, servers
    install = barman.setdefault("install", {})
    method = install.setdefault("method", "pkg")
    for path_key in ("venv", "link") if method == "pip" else ():
        if not install.get(path_key):
            errors.append(f"{KEY}:barman:install:{path_key}: an absolute path is required for method pip")
    # The barman command cron runs (pip: the link to the virtualenv's entry point).
    barman["bin"] = install.get("link") if method == "pip" else "/usr/bin/barman"
    barman["cron_command"] = syntax.shell_words([barman["bin"], "-c", barman["config_file"], "-q", "cron"])
    barman["cron_test"] = syntax.shell_words(["test", "-x", barman["bin"]])
    # Scheduled base backups of every server (Barman's own `backup all`), from cron.
    barman["backup_command"] = syntax.shell_words([barman["bin"], "-c", barman["config_file"], "-q", "backup", "all"])
    # barman check's "backup maximum age", in Barman's whole days.
    barman["last_backup_maximum_age"] = f"{max(1, -(-int(barman.get('backup_max_age') or 86400) // 86400))} DAYS"
    target = barman.get("primary") or (primary or {}).get("id")
    if target and target not in hosts:
        errors.append(f"{KEY}:barman:primary: {target!r} is not a host in {KEY}:hosts")
    elif target and hosts[target]["role"] != "primary":
        errors.append(f"{KEY}:barman:primary: host {target!r} is not a primary")
    elif target:
        spec = {"primary": target, "address": hosts[target]["address"]}
        name = barman.get("server_name") or f"{target}-streaming"
        if not syntax.SERVER_RE.match(name):
            errors.append(f"{KEY}:barman:server_name: {name!r} is not a valid Barman server name")
        tls_ca = _tls_paths(barman["config_dir"])["ca_file"] if tls else None
        servers.append(_server(config, barman, errors, f"{KEY}:barman", name, spec, tls_ca))
    for name, spec in (barman.get("servers") or {}).items():
        key = f"{KEY}:barman:servers:{name}"
        if any(s["name"] == name for s in servers):
            errors.append(f"{key}: server name {name!r} is already this cluster's server")
        spec = dict(spec, external=True, primary=spec.get("primary") or spec.get("address"))
        servers.append(_server(config, barman, errors, key, name, spec))
    if barman.get("cloud"):
        _cloud_hooks(barman, servers, method, errors)
    tools = {s[k] for s in servers for k in ("compression", "backup_compression")}
    barman["compression_pkgs"] = sorted(COMPRESSION_PKGS[t] for t in tools if t in COMPRESSION_PKGS)
    return barman, servers


# What pg_rewind needs of its source server's role (PostgreSQL docs, pg_rewind): given to the
# replication role, which may already copy the whole data directory with pg_basebackup.
REWIND_GRANTS = [
    "pg_ls_dir(text, boolean, boolean)",
    "pg_stat_file(text, boolean)",
    "pg_read_binary_file(text)",
    "pg_read_binary_file(text, bigint, bigint, boolean)",
]


def barman_grants(version):
    """Memberships and EXECUTE grants a non-superuser barman role needs (Barman docs)."""
    if version >= 15:
        return {
            "groups": ["pg_checkpoint", "pg_read_all_settings", "pg_read_all_stats"],
            "execute": [
                "pg_backup_start(text, boolean)",
                "pg_backup_stop(boolean)",
                "pg_switch_wal()",
                "pg_create_restore_point(text)",
            ],
        }
    return {
        "groups": ["pg_read_all_settings", "pg_read_all_stats"],
        "execute": [
            "pg_start_backup(text, boolean, boolean)",
            "pg_stop_backup()",
            "pg_stop_backup(boolean, boolean)",
            "pg_switch_wal()",
            "pg_create_restore_point(text)",
        ],
    }


# The topology's need of each setting: one WAL sender and slot per standby, two senders
# (receive-wal and a base backup) and one slot per backup host, plus the pillar's spares.
HEADROOM = {
    "max_wal_senders": ((1, 2), "spare_wal_senders"),
    "max_replication_slots": ((1, 1), "spare_replication_slots"),
}


def _check_headroom(config, standbys, backup_hosts, errors):
    """The settings are pillar values, the same whatever the topology (so adding or removing
    a host never restarts a server); refuse a topology that does not fit them."""
    settings = config.get("settings") or {}
    for name, ((per_standby, per_backup), spare_key) in HEADROOM.items():
        spare = int(config.get(spare_key) or 0)
        needed = per_standby * len(standbys) + per_backup * len(backup_hosts) + spare
        value = settings.get(name)
        try:
            value = int(value)
        except (TypeError, ValueError):
            errors.append(f"{KEY}:settings:{name}: must be a whole number, not {value!r}")
            continue
        if value < needed:
            errors.append(
                f"{KEY}:settings:{name}: {value} is too small for {len(standbys)} standby(s) and"
                f" {len(backup_hosts)} backup host(s) with {KEY}:{spare_key} = {spare}: at least {needed}"
            )


def _settings_for(config):
    settings = dict(config.get("settings") or {})
    if int(config["version"]) < 13:
        settings.pop("max_slot_wal_keep_size", None)
    return settings


def _hba(config, servers, backup_hosts, tls=False):
    """pg_hba.conf lines: local peer for postgres only, scram-sha-256 on every TCP line (with
    TLS, every TCP line is hostssl: a connection in clear text matches none)."""
    method = "scram-sha-256"
    lines = [
        ("local", "all", "postgres", "", "peer map=pg_replication"),
    ]
    repl_user = config["replication"]["user"]
    # Every server may stream from (and pg_rewind against) every other: a switchover changes
    # roles, never this file.
    for host in sorted(servers, key=lambda h: h["id"]):
        lines.append(("host", "replication", repl_user, _cidr(host["address"]), method))
        lines.append(("host", "postgres", repl_user, _cidr(host["address"]), method))
    barman = config.get("barman") or {}
    for host in backup_hosts:
        lines.append(("host", "replication", barman["streaming_user"], _cidr(host["address"]), method))
        lines.append(("host", "all", barman["user"], _cidr(host["address"]), method))
    if config.get("network"):
        lines.append(("host", "all", "all", config["network"], method))
    if tls:
        lines = [("hostssl", *line[1:]) if line[0] == "host" else line for line in lines]
    return [dict(zip(("type", "database", "user", "address", "method"), line)) for line in lines]


def _cidr(address):
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def _standby_conninfo(plan):
    me, upstream = plan["me"], plan["upstream"]
    return syntax.conninfo(
        host=upstream["address"],
        port=plan["port"],
        user=plan["replication"]["user"],
        passfile=plan["home"] + "/.pgpass",
        application_name=me["application_name"],
        **plan["peer_tls"],
    )


def _conf_lines(plan):
    """postgresql.conf as ``name = value`` lines, every value escaped for the file."""
    return [f"{name} = {syntax.conf_value(value)}" for name, value in _conf_pairs(plan)]


def _conf_pairs(plan):
    """postgresql.conf's (name, value) pairs, in file order."""
    pairs = []
    if plan["conf_dir"] != plan["data_dir"]:
        pairs += [
            ("data_directory", plan["data_dir"]),
            ("hba_file", plan["conf_dir"] + "/pg_hba.conf"),
            ("ident_file", plan["conf_dir"] + "/pg_ident.conf"),
        ]
    if plan.get("pid_file"):
        pairs.append(("external_pid_file", plan["pid_file"]))
    pairs += [
        ("unix_socket_directories", plan["socket_dir"]),
        ("cluster_name", f"{plan['version']}/{plan['cluster']}"),
        ("port", plan["port"]),
    ]
    pairs += sorted(plan["settings"].items())
    if plan["tls"] and plan["role"] in ("primary", "standby"):
        pairs += [("ssl", "on"), ("ssl_ca_file", plan["tls"]["ca_file"]), ("ssl_cert_file", plan["tls"]["cert_file"]),
                  ("ssl_key_file", plan["tls"]["key_file"])]  # fmt: skip
    if plan["role"] == "primary" and plan["synchronous_standby_names"]:
        pairs.append(("synchronous_standby_names", plan["synchronous_standby_names"]))
    if plan["role"] == "standby" and plan["standby_signal"]:
        pairs += [("primary_conninfo", _standby_conninfo(plan)), ("primary_slot_name", plan["me"]["slot"])]
        if plan["restore_command"]:
            pairs.append(("restore_command", plan["restore_command"]))
    return pairs


def _cloud_pkgs(plan):
    """barman-cloud's packages where a barman-cloud tool runs: the backup host with barman:cloud,
    and every server with standby:restore_from_cloud (a switchover makes a primary a standby)."""
    runs_a_tool = plan["barman"].get("cloud") if plan["role"] == "barman" else plan["restore_command"]
    return list(plan["barman"].get("cloud_pkgs") or []) if plan["role"] and runs_a_tool else []


def _recovery_lines(plan):
    """recovery.conf (PostgreSQL 11 and older) for a standby."""
    pairs = [
        ("standby_mode", "on"),
        ("primary_conninfo", _standby_conninfo(plan)),
        ("primary_slot_name", plan["me"]["slot"]),
    ]
    if plan["restore_command"]:
        pairs.append(("restore_command", plan["restore_command"]))
    return [f"{name} = {syntax.conf_value(value)}" for name, value in pairs]


def _pgpass(plan):
    """The .pgpass lines (secrets: the plan hides them unless asked) of this minion."""
    lines = []
    if plan["role"] in ("primary", "standby") and plan["standbys"]:
        # Each server reaches every other as the replication role: to stream from the primary,
        # and to pg_rewind against a new primary after a switchover.
        rep = plan["replication"]
        for host in sorted([plan["primary"], *plan["standbys"]], key=lambda h: h["id"]):
            if host["id"] != plan["minion_id"]:
                lines.append(syntax.pgpass_line(host["address"], plan["port"], "*", rep["user"], rep["password"]))
    if plan["role"] == "barman":
        for server in plan["barman_servers"]:
            for user, password in ((server["user"], server["password"]),
                                   (server["streaming_user"], server["streaming_password"])):  # fmt: skip
                lines.append(syntax.pgpass_line(server["address"], server["port"], "*", user, password))
    return lines


def _expanded_paths(config, errors):
    version, cluster = config["version"], config["cluster"]
    for name in EXPANDED:
        if config.get(name):
            config[name] = _expand(config[name], version, cluster)
            if name.endswith("_name"):
                continue
            message = syntax.check_path(config[name])
            if message:
                errors.append(f"{KEY}:{name}: {message}")
    for name in ("server", "client"):
        config["pkgs"][name] = _expand(config["pkgs"][name], version, cluster)
    config["repo"] = _expand(config.get("repo") or {}, version, cluster)


def _check_distribution(plan, grains, errors):
    """The versions this host installs must be the distribution's, or come upstream."""
    if plan.get("upstream_repo"):
        return
    os_name, release = grains.get("os"), grains.get("osmajorrelease")
    try:
        shipped = DISTRIBUTION_VERSIONS.get((os_name, int(release)))
    except (TypeError, ValueError):
        return
    if shipped is None:
        return
    needed = []
    if plan["role"] in ("primary", "standby"):
        needed.append((f"{KEY}:version", plan["version"]))
    elif plan["role"] == "barman":  # the client of each backed-up primary's version
        for server in plan["barman_servers"]:
            needed.append((server["key"] + ":version" if server["external"] else f"{KEY}:version", server["version"]))
    for key, version in needed:
        if version != shipped:
            errors.append(
                f"{key}: {os_name} {release} ships PostgreSQL {shipped}, not {version}; "
                f"set {KEY}:upstream_repo: true to install it from the PostgreSQL project's repository"
            )


def build(config, minion_id, grains=None, mine=None):
    """Return the validated plan for ``minion_id``; raise PlanError listing every fault.
    ``grains``: the minion's ``os``, ``osmajorrelease`` and ``init``; ``mine``: the Salt
    mine's :data:`MINE_FUNCTION` data, ``{minion id: [address, ...]}``, for the hosts the
    pillar gives no address."""
    grains = grains or {}
    errors = []
    validate(config, SCHEMA, KEY, errors)
    for required in ("version", "hosts", "pkgs", "bin_dir", "conf_dir", "data_dir", "socket_dir", "home"):
        if isinstance(config, dict) and config.get(required) in (None, {}, ""):
            errors.append(f"{KEY}:{required}: is required" + (" (at least one host)" if required == "hosts" else ""))
    if errors:
        raise PlanError("invalid pillar: " + "; ".join(errors))

    config = copy.deepcopy(config)
    config["version"], config["port"] = int(config["version"]), int(config.get("port", 5432))
    config.setdefault("cluster", "main")
    if config.get("network"):
        config["network"] = _network(config["network"])
    hosts = _hosts(config, mine, errors)
    if errors:
        raise PlanError("invalid pillar: " + "; ".join(errors))
    primaries = [h for h in hosts.values() if h["role"] == "primary"]
    standbys = [h for h in hosts.values() if h["role"] == "standby"]
    backup_hosts = [h for h in hosts.values() if h["role"] == "barman"]
    if not primaries:
        errors.append(f"{KEY}:hosts: no host has role primary")
    elif len(primaries) > 1:
        errors.append(f"{KEY}:hosts: more than one primary ({', '.join(h['id'] for h in primaries)})")
    primary = primaries[0] if primaries else None
    _upstreams(hosts, primary, errors)

    replication = config.setdefault("replication", {})
    if standbys:
        _check_password(errors, f"{KEY}:replication:password", replication.get("user"), replication.get("password"))

    # Barman servers first: each expands the version templates with its own version.
    tls = _tls_enabled(config, hosts, errors)
    barman, barman_servers = _barman(config, hosts, primary, errors, tls)
    _check_slots(hosts, barman_servers, errors)
    restore_command = _restore_command(config, barman, barman_servers, errors)
    _check_headroom(config, standbys, backup_hosts, errors)
    synchronous_standby_names = _synchronous(config, hosts, errors)
    _expanded_paths(config, errors)
    if errors:
        raise PlanError("invalid pillar: " + "; ".join(errors))

    version = config["version"]
    plan = {k: v for k, v in config.items() if k not in ("settings", "hosts")}
    me = hosts.get(minion_id)
    downstream = _downstream(hosts, primary, minion_id) if me and me["role"] in ("primary", "standby") else []
    plan.update(
        {
            "minion_id": minion_id,
            "role": me["role"] if me else None,
            "me": me,
            "hosts": hosts,
            "primary": primary,
            "standbys": standbys,
            # The server a standby streams from: the primary, or another standby (cascading).
            "upstream": hosts[me.get("upstream") or primary["id"]] if me and me["role"] == "standby" else None,
            # The standbys that stream from this server, and the slots it serves: theirs, and
            # on the primary Barman's for this cluster.
            "downstream": downstream,
            "served_slots": sorted(
                {h["slot"] for h in downstream}
                | {s["slot_name"] for s in barman_servers if not s["external"] and me and me["role"] == "primary"}
            ),
            "backup_hosts": backup_hosts,
            "barman": barman,
            "barman_servers": barman_servers,
            "barman_grants": barman_grants(version),
            "settings": _settings_for(config),
            "synchronous_standby_names": synchronous_standby_names,
            "restore_command": restore_command,
            # With TLS: where this host's TLS files go (a backup host has the CA's only).
            "tls": _tls_files(tls, me, plan, barman),
            "hba": _hba(config, primaries + standbys, backup_hosts, tls),
            "rewind_grants": REWIND_GRANTS,
            "standby_signal": version >= 12,
            "initdb_command": syntax.shell_words(
                [plan["bin_dir"] + "/initdb", "-D", plan["data_dir"], "-U", "postgres", *config["initdb_options"]]
            ),
        }
    )
    # How this server reaches the others (bootstrap, slots, rejoin, role checks): with TLS,
    # as the standbys stream (verify-full against the cluster's CA), with a copy of the CA
    # outside the data and configuration directories (there before the bootstrap).
    server_tls = plan["tls"] and plan["role"] in ("primary", "standby")
    plan["peer_tls"] = _tls_conninfo(PEER_CA_FILE, version) if server_tls else {}
    plan["cloud_pkgs"] = _cloud_pkgs(plan)
    # Where barman:cloud's key pair goes on this host (the home of the user running the tools).
    cloud_home = plan["barman"]["home"] if plan["role"] == "barman" else plan["home"]
    plan["cloud_credentials"] = f"{cloud_home}/{CLOUD_CREDENTIALS}" if plan["cloud_pkgs"] else None
    plan["cloud_profile"] = CLOUD_PROFILE
    plan["conf_lines"] = _conf_lines(plan)
    # Every setting the file holds: what the server runs with after a restart (others: defaults).
    plan["conf_settings"] = dict(_conf_pairs(plan))
    plan["recovery_lines"] = _recovery_lines(plan) if plan["role"] == "standby" else []
    plan["pgpass_lines"] = _pgpass(plan)
    if grains.get("init") == "systemd" and plan.get("systemd_service_name"):
        # systemd: the cluster's own unit (the umbrella unit only starts clusters it saw at boot)
        plan["service_name"] = plan["systemd_service_name"]
    _check_distribution(plan, grains, errors)
    if errors:
        raise PlanError("invalid pillar: " + "; ".join(errors))
    return plan
