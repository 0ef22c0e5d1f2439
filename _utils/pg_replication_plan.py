"""Validate the ``pg_replication`` pillar and derive what each minion must do.

Pure logic (no Salt, no PostgreSQL): the execution module exposes it as
``pg_replication.plan`` so that ``map.jinja`` fails at render time, before any state runs,
with a message naming the pillar key at fault.
"""

import copy
import ipaddress
import re

ROLES = ("primary", "standby", "barman")
INSTALL_METHODS = ("pkg", "pip")
# PostgreSQL identifiers for slots; Barman also insists on ^[0-9a-z_]+$.
SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")
ROLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MIN_PASSWORD_LENGTH = 12
KEY = "pg_replication"
# Barman server section names; "all" and "barman" mean something else to Barman.
SERVER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# What a barman:servers entry may override (the rest comes from the barman section).
SERVER_KEYS = (
    "user", "password", "streaming_user", "streaming_password", "slot_name",
    "retention_policy", "minimum_redundancy",
)  # fmt: skip


class PlanError(ValueError):
    """The pillar is invalid; the message lists every fault with its pillar key."""


def _slot_default(minion_id):
    return re.sub(r"[^a-z0-9_]", "_", minion_id.lower())[:58] + "_slot"


def _check_password(errors, key, user, password):
    if not password:
        errors.append(f"{key}: a password is required")
    elif len(str(password)) < MIN_PASSWORD_LENGTH:
        errors.append(f"{key}: the password is too weak (fewer than {MIN_PASSWORD_LENGTH} characters)")
    elif str(password) == user:
        errors.append(f"{key}: the password must not equal the user name")


def _check_role_name(errors, key, name):
    if not name or not ROLE_RE.match(str(name)):
        errors.append(f"{key}: {name!r} is not a valid role name")


def _expand(value, version, cluster):
    if isinstance(value, str):
        return value.replace("{version}", str(version)).replace("{cluster}", str(cluster))
    if isinstance(value, dict):
        return {k: _expand(v, version, cluster) for k, v in value.items()}
    return value


def _hosts(config, errors):
    hosts = config.get("hosts") or {}
    if not isinstance(hosts, dict) or not hosts:
        errors.append(f"{KEY}:hosts: at least one host (minion id -> role, address) is required")
        return {}
    out = {}
    for minion_id, spec in hosts.items():
        key = f"{KEY}:hosts:{minion_id}"
        if not isinstance(spec, dict):
            errors.append(f"{key}: must be a mapping with role and address")
            continue
        role = spec.get("role")
        if role not in ROLES:
            errors.append(f"{key}:role: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        try:
            address = str(ipaddress.ip_address(str(spec.get("address", ""))))
        except ValueError:
            errors.append(f"{key}:address: {spec.get('address')!r} is not an IP address")
            address = None
        host = dict(spec, id=str(minion_id), role=role, address=address)
        if role == "standby":
            host["slot"] = spec.get("slot") or _slot_default(str(minion_id))
            host["application_name"] = spec.get("application_name") or "walreceiver"
        out[str(minion_id)] = host
    return out


def _check_slots(hosts, barman_servers, errors):
    """Slot names must be valid everywhere and unique on each primary."""
    seen = {}
    claims = [(None, f"{KEY}:hosts:{h['id']}:slot", h["slot"]) for h in hosts.values() if h["role"] == "standby"]
    # This cluster's primary is None; another cluster's primary is its address and port.
    claims += [
        ((s["address"], s["port"]) if s["external"] else None, s["key"] + ":slot_name", s["slot_name"])
        for s in barman_servers
    ]
    for primary, key, slot in claims:
        if not isinstance(slot, str) or not SLOT_RE.match(slot):
            errors.append(f"{key}: {slot!r} is not a valid slot name (lower-case letters, digits, _)")
        elif (primary, slot) in seen:
            errors.append(f"{key}: duplicate slot name {slot!r} (also {seen[primary, slot]})")
        else:
            seen[primary, slot] = key


def _server(config, barman, errors, key, name, spec):
    """One Barman server section: the pillar's barman settings, overridden per server."""
    if not isinstance(name, str) or not SERVER_RE.match(name) or name in ("all", "barman"):
        errors.append(f"{key}: {name!r} is not a valid Barman server name (letters, digits, . _ -)")
    server = {k: spec.get(k, barman.get(k)) for k in SERVER_KEYS}
    server.update(name=name, key=key, primary=spec.get("primary"), external=bool(spec.get("external")))
    for field, default in (("port", config.get("port")), ("version", config.get("version"))):
        try:
            server[field] = int(spec.get(field) or default)
        except (TypeError, ValueError):
            errors.append(f"{key}:{field}: {spec.get(field)!r} is not a number")
            server[field] = default
    for user_key, password_key in (("user", "password"), ("streaming_user", "streaming_password")):
        _check_role_name(errors, f"{key}:{user_key}", server[user_key])
        _check_password(errors, f"{key}:{password_key}", server[user_key], server[password_key])
    address = str(spec.get("address") or "")
    if not (_is_ip(address) or (HOSTNAME_RE.match(address) and not re.fullmatch(r"[0-9.]+", address))):
        errors.append(f"{key}:address: {spec.get('address')!r} is not an IP address or host name")
    server["address"] = address
    server["bin_dir"] = _expand(config.get("bin_dir") or "", server["version"], "")
    server["client_pkg"] = _expand((config.get("pkgs") or {}).get("client") or "", server["version"], "")
    return server


def _is_ip(value):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _barman(config, hosts, primary, errors):
    """Barman settings for the backup host: one server section for this cluster's primary,
    plus one per entry of ``barman:servers`` (primaries of other clusters)."""
    barman = copy.deepcopy(config.get("barman") or {})
    backup_hosts = [h for h in hosts.values() if h["role"] == "barman"]
    servers = []
    if not backup_hosts:
        return barman, servers
    install = barman.setdefault("install", {})
    method = install.setdefault("method", "pkg")
    if method not in INSTALL_METHODS:
        errors.append(f"{KEY}:barman:install:method: {method!r} is not one of {', '.join(INSTALL_METHODS)}")
    for path_key in ("venv", "link") if method == "pip" else ():
        if not str(install.get(path_key) or "").startswith("/"):
            errors.append(f"{KEY}:barman:install:{path_key}: an absolute path is required for method pip")
    # The barman command cron runs (pip: the link to the virtualenv's entry point).
    barman["bin"] = install.get("link") if method == "pip" else "/usr/bin/barman"
    target = barman.get("primary") or (primary or {}).get("id")
    if target and target not in hosts:
        errors.append(f"{KEY}:barman:primary: {target!r} is not a host in {KEY}:hosts")
    elif target and hosts[target]["role"] != "primary":
        errors.append(f"{KEY}:barman:primary: host {target!r} is not a primary")
    elif target:
        spec = {"primary": target, "address": hosts[target]["address"]}
        name = barman.get("server_name") or f"{target}-streaming"
        servers.append(_server(config, barman, errors, f"{KEY}:barman", name, spec))
    extra = barman.get("servers") or {}
    if not isinstance(extra, dict):
        errors.append(f"{KEY}:barman:servers: must map server names to their primary's settings")
        extra = {}
    for name, spec in extra.items():
        key = f"{KEY}:barman:servers:{name}"
        if not isinstance(spec, dict):
            errors.append(f"{key}: must be a mapping (address, port, version, slot_name, ...)")
            continue
        if any(s["name"] == name for s in servers):
            errors.append(f"{key}: server name {name!r} is already this cluster's server")
        spec = dict(spec, external=True, primary=spec.get("primary") or spec.get("address"))
        servers.append(_server(config, barman, errors, key, name, spec))
    return barman, servers


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


def _size(config, standbys, backup_hosts):
    settings = dict(config.get("settings") or {})
    senders = len(standbys) + 2 * len(backup_hosts) + int(config.get("spare_wal_senders", 2))
    slots = len(standbys) + len(backup_hosts) + int(config.get("spare_replication_slots", 2))
    settings.setdefault("max_wal_senders", senders)
    settings.setdefault("max_replication_slots", slots)
    settings["port"] = config["port"]
    if int(config["version"]) < 13:
        settings.pop("max_slot_wal_keep_size", None)
    return settings


def _hba(config, standbys, backup_hosts):
    """pg_hba.conf lines: local peer for postgres only, scram-sha-256 on every TCP line."""
    method = "scram-sha-256"
    lines = [
        ("local", "all", "postgres", "", "peer map=pg_replication"),
    ]
    repl_user = config["replication"]["user"]
    for host in standbys:
        lines.append(("host", "replication", repl_user, _cidr(host["address"]), method))
    barman = config.get("barman") or {}
    for host in backup_hosts:
        lines.append(("host", "replication", barman["streaming_user"], _cidr(host["address"]), method))
        lines.append(("host", "all", barman["user"], _cidr(host["address"]), method))
    if config.get("network"):
        lines.append(("host", "all", "all", config["network"], method))
    return [dict(zip(("type", "database", "user", "address", "method"), line, strict=True)) for line in lines]


def _cidr(address):
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def build(config, minion_id):
    """Return the validated plan for ``minion_id``; raise PlanError listing every fault."""
    config = copy.deepcopy(config)
    errors = []
    try:
        config["version"] = int(config.get("version"))
        if config["version"] < 10:
            raise ValueError
    except (TypeError, ValueError):
        errors.append(f"{KEY}:version: {config.get('version')!r} is not a PostgreSQL major version (10+)")
        config["version"] = 15
    try:
        config["port"] = int(config.get("port", 5432))
    except (TypeError, ValueError):
        errors.append(f"{KEY}:port: {config.get('port')!r} is not a port number")
    if config.get("network"):
        try:
            config["network"] = str(ipaddress.ip_network(str(config["network"])))
        except ValueError:
            errors.append(f"{KEY}:network: {config['network']!r} is not a CIDR network")

    hosts = _hosts(config, errors)
    primaries = [h for h in hosts.values() if h["role"] == "primary"]
    standbys = [h for h in hosts.values() if h["role"] == "standby"]
    backup_hosts = [h for h in hosts.values() if h["role"] == "barman"]
    if hosts and not primaries:
        errors.append(f"{KEY}:hosts: no host has role primary")
    elif len(primaries) > 1:
        errors.append(f"{KEY}:hosts: more than one primary ({', '.join(h['id'] for h in primaries)})")
    primary = primaries[0] if primaries else None

    replication = config.setdefault("replication", {})
    _check_role_name(errors, f"{KEY}:replication:user", replication.get("user"))
    if standbys:
        _check_password(errors, f"{KEY}:replication:password", replication.get("user"), replication.get("password"))

    barman, barman_servers = _barman(config, hosts, primary, errors)
    _check_slots(hosts, barman_servers, errors)
    if errors:
        raise PlanError("invalid pillar: " + "; ".join(errors))

    version, cluster = config["version"], config.get("cluster", "main")
    plan = _expand({k: v for k, v in config.items() if k not in ("settings", "hosts")}, version, cluster)
    me = hosts.get(minion_id)
    plan.update(
        {
            "minion_id": minion_id,
            "role": me["role"] if me else None,
            "me": me,
            "hosts": hosts,
            "primary": primary,
            "standbys": standbys,
            "backup_hosts": backup_hosts,
            "barman": barman,
            "barman_servers": barman_servers,
            "barman_grants": barman_grants(version),
            "settings": _size(config, standbys, backup_hosts),
            "hba": _hba(config, standbys, backup_hosts),
            "standby_signal": version >= 12,
        }
    )
    return plan
