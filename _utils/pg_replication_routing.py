# SPDX-License-Identifier: Apache-2.0
"""How clients reach the primary (issue #29): the floating address (``vip``) the running
primary holds, PgBouncer on the pooler hosts (its ini, hba and auth files, the lookup
function ``auth_query`` calls), and the connection strings of each way in.

Functions append ``"pillar:key: message"`` to ``errors`` for each fault. Pure logic; runs on
the minion's Python (3.9 on Debian 11).
"""

import ipaddress
import os
import re
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
syntax = _sibling("pg_replication_syntax")
schema = _sibling("pg_replication_schema")
KEY = schema.KEY

# The lookup function auth_query calls: SECURITY DEFINER (owned by the superuser that makes
# it), reading pg_shadow for one login role that is not a superuser; EXECUTE for the lookup
# role only. In every database that takes connections (PgBouncer 1.18 runs auth_query in
# the client's database), template1 included so that new databases have it.
LOOKUP_SCHEMA = "pgbouncer_lookup"  # not pg_*: PostgreSQL reserves those names
LOOKUP_FUNCTION = f"{LOOKUP_SCHEMA}.lookup(text)"
LOOKUP_BODY = "SELECT usename::text, passwd::text FROM pg_catalog.pg_shadow WHERE usename = $1 AND NOT usesuper"
AUTH_QUERY = "SELECT usename, passwd FROM pgbouncer_lookup.lookup($1)"
# PgBouncer's admin console: root over the local socket, peer authentication (no password).
ADMIN_USER = "root"
INI_FILE, HBA_FILE, AUTH_FILE = "pgbouncer.ini", "pg_replication_hba.conf", "userlist.txt"
# What PgBouncer reads only when it starts (a change restarts it; the rest is reloaded).
LISTEN_FILE = "pg_replication_listen.ini"
# Run by systemd after the server stops (ExecStopPost): a server that died drops the VIP.
VIP_DROP_SCRIPT = "/usr/local/lib/pg_replication/vip-drop"


def cluster_routing(config, hosts, errors):
    """The VIP, its prefix length, the poolers (``[{id, address, port}]``) and PgBouncer's
    target (``vip`` or ``primary``), checked against the hosts and the network."""
    vip, prefix = _vip(config, hosts, errors)
    pooler = config.get("pooler") or {}
    ids = sorted({h["id"] for h in hosts.values() if h["role"] == "pooler"} | _listed_poolers(pooler, hosts, errors))
    target = pooler.get("target") or "primary"
    port = int(pooler.get("port") or 6432)
    if ids and target == "vip" and not vip:
        errors.append(f"{KEY}:pooler:target: vip needs {KEY}:vip (the floating address PgBouncer points at)")
    if ids:
        schema.check_password(
            errors, f"{KEY}:pooler:auth_password", pooler.get("auth_user"), pooler.get("auth_password")
        )
    if ids and port == int(config.get("port") or 5432) and any(hosts[i]["role"] in ("primary", "standby") for i in ids):
        errors.append(f"{KEY}:pooler:port: {port} is the servers' port, and a pooler runs beside a server")
    return {
        "vip": vip,
        "vip_prefix": prefix,
        "target": target,
        "poolers": [{"id": i, "address": hosts[i]["address"], "port": port} for i in ids],
    }


def _vip(config, hosts, errors):
    key, vip = f"{KEY}:vip", config.get("vip")
    if not vip:
        return None, None
    vip = ipaddress.ip_address(str(vip))
    if not config.get("network"):
        errors.append(f"{key}: needs {KEY}:network (the VIP must be an address of the cluster's network)")
        return None, None
    network = ipaddress.ip_network(config["network"])
    if vip not in network:
        errors.append(f"{key}: {vip} is outside {KEY}:network {network}")
    elif vip in (network.network_address, network.broadcast_address) and network.prefixlen < network.max_prefixlen - 1:
        errors.append(f"{key}: {vip} is the network's own address or its broadcast address")
    for host in hosts.values():
        if ipaddress.ip_address(host["address"]) == vip:
            errors.append(f"{key}: {vip} is the address of {host['id']} ({KEY}:hosts:{host['id']}:address)")
    return str(vip), network.prefixlen


def _listed_poolers(pooler, hosts, errors):
    out = set()
    for i, name in enumerate(pooler.get("hosts") or []):
        if str(name) not in hosts:
            errors.append(f"{KEY}:pooler:hosts:{i}: {name!r} is not a host in {KEY}:hosts")
        else:
            out.add(str(name))
    return out


def target_address(routing, primary):
    """Where PgBouncer sends clients: the VIP, or ``primary``'s address."""
    return routing["vip"] if routing["target"] == "vip" else primary["address"]


def database_line(address, port):
    """PgBouncer's one [databases] line: every database, on ``address``."""
    return f"* = {syntax.conninfo(host=address, port=port)}"


def minion_routing(routing, config, me, primary, tls_on):
    """What this minion does for the clients: whether it holds the VIP, and as a pooler its
    PgBouncer files (the auth file holds a password: ``auth_file_password_lines``)."""
    out = dict(routing, holds_vip=bool(routing["vip"] and me and me["role"] == "primary"))
    if routing["vip"]:
        out.update(
            vip_drop_script=VIP_DROP_SCRIPT, vip_drop_lines=vip_drop_lines(routing["vip"], routing["vip_prefix"])
        )
    out["pooler"] = bool(me and me["id"] in {p["id"] for p in routing["poolers"]})
    if not out["pooler"]:
        return out
    pooler = config["pooler"]
    conf_dir = pooler["conf_dir"]
    client_tls = tls_on and bool(((config.get("tls") or {}).get("hosts") or {}).get(me["id"]))
    files = {"ini": f"{conf_dir}/{INI_FILE}", "hba": f"{conf_dir}/{HBA_FILE}", "auth": f"{conf_dir}/{AUTH_FILE}",
             "listen": f"{conf_dir}/{LISTEN_FILE}"}  # fmt: skip
    if tls_on:
        files["ca"] = f"{conf_dir}/pg_replication-ca.crt"
    if client_tls:
        files.update(cert=f"{conf_dir}/pg_replication-pooler.crt", key=f"{conf_dir}/pg_replication-pooler.key")
    out.update(
        files=files,
        client_tls=client_tls,
        ini_lines=ini_lines(pooler, files, target_address(routing, primary), config["port"], config["socket_dir"]),
        listen_lines=[
            "listen_addr = *",
            f"listen_port = {pooler['port']}",
            f"unix_socket_dir = {config['socket_dir']}",
        ],
        hba_lines=hba_lines(client_tls),
        auth_file_password_lines=auth_file_lines(pooler["auth_user"], pooler.get("auth_password") or ""),
        lookup_role=pooler["auth_user"],
    )
    return out


def ini_lines(pooler, files, address, port, socket_dir):
    """pgbouncer.ini: every database on the target; SCRAM through auth_query (hba), the
    admin console for root over the local socket; TLS to the servers with the CA, to the
    clients with this host's certificate."""
    lines = ["[databases]", database_line(address, port), "", "[pgbouncer]", f"%include {files['listen']}"]
    settings = [
        ("auth_type", "hba"), ("auth_hba_file", files["hba"]), ("auth_file", files["auth"]),
        ("auth_user", pooler["auth_user"]), ("auth_query", AUTH_QUERY), ("admin_users", ADMIN_USER),
        ("pool_mode", pooler["pool_mode"]), ("default_pool_size", pooler["default_pool_size"]),
        ("max_client_conn", pooler["max_client_conn"]), ("ignore_startup_parameters", "extra_float_digits"),
        ("logfile", "/var/log/postgresql/pgbouncer.log"), ("pidfile", f"{socket_dir}/pgbouncer.pid"),
    ]  # fmt: skip
    if "ca" in files:
        settings += [("server_tls_sslmode", "verify-full"), ("server_tls_ca_file", files["ca"])]
    if "cert" in files:
        settings += [("client_tls_sslmode", "require"), ("client_tls_cert_file", files["cert"]),
                     ("client_tls_key_file", files["key"])]  # fmt: skip
    return lines + [f"{name} = {value}" for name, value in settings]


def hba_lines(client_tls):
    """PgBouncer's hba: root's admin console by peer only, SCRAM for everyone else (over
    TLS only when the pooler has a certificate)."""
    tcp = "hostssl" if client_tls else "host"
    return [
        f"local pgbouncer {ADMIN_USER} peer",
        f"local all {ADMIN_USER} reject",
        f"host all {ADMIN_USER} 0.0.0.0/0 reject",
        f"host all {ADMIN_USER} ::/0 reject",
        "local all all scram-sha-256",
        f"{tcp} all all 0.0.0.0/0 scram-sha-256",
        f"{tcp} all all ::/0 scram-sha-256",
    ]


def auth_file_lines(auth_user, password):
    """PgBouncer's auth_file: root with no password (peer only, see :func:`hba_lines`) and the
    lookup role with its password (PgBouncer logs in with it to run auth_query)."""

    def quoted(value):
        return '"' + str(value).replace('"', '""') + '"'

    return [f'{quoted(ADMIN_USER)} ""', f"{quoted(auth_user)} {quoted(password)}"]


# What the admin console may be told from here: SHOW takes one word, KILL one database's name
# (pooler_pause: a database whose pool still holds a server connection after the wait).
ADMIN_COMMANDS = ("PAUSE", "RESUME", "RECONNECT", "RELOAD", "SHOW", "KILL")
# A database name KILL takes as it is (the admin console has no quoting).
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def admin_statement(command):
    """``command`` as the admin console statement it is (upper-case words, KILL's database
    name as given), or None if it is not one this formula sends."""
    words = str(command).split()
    if not words or words[0].upper() not in ADMIN_COMMANDS:
        return None
    verb = words[0].upper()
    if verb in ("SHOW", "KILL"):
        if len(words) != 2:
            return None
        if verb == "SHOW":
            return f"SHOW {words[1].upper()}" if words[1].isalpha() else None
        return f"KILL {words[1]}" if _PLAIN_NAME.match(words[1]) and words[1] != "pgbouncer" else None
    return verb if len(words) == 1 else None


def admin_name(name):
    """A database's name as the admin console takes it whatever it holds: double-quoted,
    its quotes doubled (PgBouncer's admin.c unquotes such a word)."""
    return '"' + str(name).replace('"', '""') + '"'


def busy_databases(pools):
    """The databases (SHOW POOLS ``pools``) whose pools still hold a server connection
    linked to a client (a running transaction; in pool_mode session, a connected client):
    what a PAUSE still waits for. The admin console's own is never one."""
    return _pools_with(pools, ("sv_active",))


def stuck_databases(pools):
    """The databases (SHOW POOLS ``pools``) with anything on the way to the old primary
    after a failover: a server connection linked to a client (a query in flight) or
    logging in, or a client waiting for one. Each would wait for a host that is gone (a
    login until ``server_connect_timeout``, a query until TCP gives up); KILLed, its clients
    reconnect, to the new primary. The admin console's own is never one."""
    return _pools_with(pools, ("sv_active", "sv_login", "cl_waiting"))


def _pools_with(pools, counts):
    """The databases (SHOW POOLS ``pools``) with a pool where any of ``counts`` is not 0,
    sorted, the admin console's own left out."""
    names = {str(row.get("database")) for row in pools or () if any(int(row.get(k) or 0) > 0 for k in counts)}
    return sorted(n for n in names if n != "pgbouncer")


def paused_databases(databases):
    """The databases (SHOW DATABASES ``databases``) paused on their own (a KILL leaves a
    database so): what RESUME must name besides the pooler's own pause."""
    names = {str(row.get("name")) for row in databases or () if int(row.get("paused") or 0)}
    return sorted(n for n in names if n != "pgbouncer")


def lookup_statements(auth_user):
    """The lookup function and its grants, as one transaction's statements (idempotent)."""
    role = f'"{auth_user}"'  # a plain identifier (schema: ROLE_RE)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {LOOKUP_SCHEMA}",
        f"REVOKE ALL ON SCHEMA {LOOKUP_SCHEMA} FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA {LOOKUP_SCHEMA} TO {role}",
        f"CREATE OR REPLACE FUNCTION {LOOKUP_SCHEMA}.lookup(text, OUT usename text, OUT passwd text)"
        f" RETURNS SETOF record LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
        f" AS $lookup$ {LOOKUP_BODY} $lookup$",
        f"REVOKE ALL ON FUNCTION {LOOKUP_FUNCTION} FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION {LOOKUP_FUNCTION} TO {role}",
    ]


def lookup_check_sql():
    """What :func:`lookup_missing` reads of the lookup function, for the role ``%(role)s``."""
    return (
        "SELECT p.prosecdef, p.prosrc, o.rolsuper AS owner_is_superuser,"
        " CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = %(role)s)"
        "  THEN has_function_privilege(%(role)s, p.oid, 'EXECUTE') END AS role_executes,"
        " has_function_privilege('public', p.oid, 'EXECUTE') AS public_executes,"
        " CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = %(role)s)"
        "  THEN has_schema_privilege(%(role)s, n.oid, 'USAGE') END AS role_uses_schema"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles o ON o.oid = p.proowner"
        " WHERE n.nspname = 'pgbouncer_lookup' AND p.proname = 'lookup'"
    )


def lookup_missing(row):
    """What the lookup function (``row``: :func:`lookup_check_sql`'s, None if it does not exist)
    lacks; empty: it is as the formula makes it."""
    if not row:
        return ["the lookup function"]
    wanted = {
        "prosecdef": (True, "SECURITY DEFINER"),
        "owner_is_superuser": (True, "a superuser owner"),
        "role_executes": (True, "EXECUTE for the lookup role"),
        "public_executes": (False, "no EXECUTE for PUBLIC"),
        "role_uses_schema": (True, "USAGE on its schema for the lookup role"),
    }
    out = [what for key, (value, what) in wanted.items() if bool(row.get(key)) != value]
    if (row.get("prosrc") or "").strip() != LOOKUP_BODY:
        out.insert(0, "the lookup function's body")
    return out


def connection_strings(routing, hosts, port, dbname="DBNAME", user="USER"):
    """The ways in, as libpq connection strings: the VIP, each pooler, and every server at
    once (libpq tries them in turn and keeps the one that takes writes)."""
    routing = routing or {}
    servers = sorted((h for h in hosts.values() if h["role"] in ("primary", "standby")), key=lambda h: h["id"])
    common = {"dbname": dbname, "user": user}
    out = {
        "multi_host": syntax.conninfo(
            host=",".join(h["address"] for h in servers),
            port=",".join(str(port) for _ in servers),
            target_session_attrs="read-write",
            **common,
        ),  # fmt: skip
        "poolers": {
            p["id"]: syntax.conninfo(host=p["address"], port=p["port"], **common) for p in routing.get("poolers") or ()
        },
    }
    if routing.get("vip"):
        out["vip"] = syntax.conninfo(host=routing["vip"], port=port, **common)
    return out


def vip_drop_lines(vip, prefix):
    """The script systemd runs after PostgreSQL stops (ExecStopPost): a server that died (not
    a clean stop, which leaves the VIP to the runner) drops the VIP at once."""
    return [
        "#!/bin/sh",
        "# Written by pg_replication: a primary whose PostgreSQL died drops the floating address.",
        '[ "$SERVICE_RESULT" = success ] && exit 0',
        f"dev=$(ip -o addr show to {vip} | awk '{{print $2; exit}}')",
        f'[ -n "$dev" ] && ip addr del {vip}/{prefix} dev "$dev"',
        "exit 0",
    ]
