# SPDX-License-Identifier: Apache-2.0
"""The files the formula writes from the plan: pg_hba.conf, postgresql.conf, recovery.conf
(before PostgreSQL 12), .pgpass, and a standby's primary_conninfo, each value escaped for
its file with ``pg_replication_syntax``. Templates only print these lines.

Pure logic; runs on the minion's Python (3.9 on Debian 11).
"""

import ipaddress
import os
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
syntax = _sibling("pg_replication_syntax")


def settings(config, host_settings=None):
    """The pillar's settings this version knows: the cluster's, and a host's own over them.
    With ``ha:mode: automatic`` and no ``wal_keep_size`` of the pillar's, each server keeps
    ``max_wal_size`` of WAL (:func:`rewind_wal_keep`)."""
    settings = dict(config.get("settings") or {})
    settings.update(host_settings or {})
    if int(config["version"]) < 13:
        settings.pop("max_slot_wal_keep_size", None)
    else:
        settings.update(rewind_wal_keep(config, settings))
    if int(config["version"]) >= 17 and (config.get("barman") or {}).get("incremental_schedule"):
        # Incremental backups read WAL summaries (pg_basebackup --incremental); a reload.
        settings.setdefault("summarize_wal", "on")
    return settings


def rewind_wal_keep(config, settings):
    """``{"wal_keep_size": max_wal_size}`` when automatic failover is on and the pillar keeps
    no WAL itself: a fenced primary's fast shutdown (or its crash recovery) ends with a
    checkpoint that may remove the WAL back to its last checkpoint before the failover,
    which pg_rewind reads on it ("could not find previous WAL record") when the engine
    rejoins it; checkpoints are at most about ``max_wal_size`` apart."""
    if ((config.get("ha") or {}).get("mode") != "automatic" or "wal_keep_size" in settings
            or "max_wal_size" not in settings):  # fmt: skip
        return {}
    return {"wal_keep_size": settings["max_wal_size"]}


def hba(config, servers, backup_hosts, tls=False, poolers=()):
    """pg_hba.conf lines: local peer for postgres only, scram-sha-256 on every TCP line (with
    TLS, every TCP line is hostssl: a connection in clear text matches none)."""
    method = "scram-sha-256"
    lines = [
        ("local", "all", "postgres", "", "peer map=pg_replication"),
    ]
    monitoring = config.get("monitoring") or {}
    if monitoring.get("enabled"):
        # The exporter's role, for its OS user only (pg_ident.conf maps it).
        lines.append(("local", "all", monitoring["user"], "", "peer map=pg_replication"))
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
    # PgBouncer logs in as its clients (SCRAM pass-through) and as its lookup role.
    for pooler in sorted(poolers, key=lambda p: p["id"]):
        lines.append(("host", "all", "all", _cidr(pooler["address"]), method))
    if config.get("network"):
        lines.append(("host", "all", "all", config["network"], method))
    if tls:
        lines = [("hostssl", *line[1:]) if line[0] == "host" else line for line in lines]
    return [dict(zip(("type", "database", "user", "address", "method"), line)) for line in lines]


def _cidr(address):
    """One address as a host network (/32 or /128)."""
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def _standby_conninfo(plan):
    """A standby's primary_conninfo: its upstream as the replication role, the password from
    .pgpass, with the peer TLS options."""
    me, upstream = plan["me"], plan["upstream"]
    return syntax.conninfo(
        host=upstream["address"],
        port=plan["port"],
        user=plan["replication"]["user"],
        passfile=plan["home"] + "/.pgpass",
        application_name=me["application_name"],
        **plan["peer_tls"],
    )


def conf_lines(plan):
    """postgresql.conf as ``name = value`` lines, every value escaped for the file."""
    return [f"{name} = {syntax.conf_value(value)}" for name, value in conf_pairs(plan)]


def conf_pairs(plan):
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


def recovery_lines(plan):
    """recovery.conf (PostgreSQL 11 and older) for a standby."""
    pairs = [
        ("standby_mode", "on"),
        ("primary_conninfo", _standby_conninfo(plan)),
        ("primary_slot_name", plan["me"]["slot"]),
    ]
    if plan["restore_command"]:
        pairs.append(("restore_command", plan["restore_command"]))
    return [f"{name} = {syntax.conf_value(value)}" for name, value in pairs]


def pgpass(plan):
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
        # The cluster's own server at every server's address: after a switchover or a failover
        # the new primary is one of them, and the runner tries that path before it promotes.
        servers = sorted({h["address"] for h in [plan["primary"], *plan["standbys"]] if h})
        for server in plan["barman_servers"]:
            for address in [server["address"]] if server["external"] else sorted({server["address"], *servers}):
                for user, password in ((server["user"], server["password"]),
                                       (server["streaming_user"], server["streaming_password"])):  # fmt: skip
                    lines.append(syntax.pgpass_line(address, server["port"], "*", user, password))
    return lines


def initdb_command(plan, options):
    """The initdb command line of this server's cluster."""
    return syntax.shell_words([plan["bin_dir"] + "/initdb", "-D", plan["data_dir"], "-U", "postgres", *options])
