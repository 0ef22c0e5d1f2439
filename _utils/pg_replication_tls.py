# SPDX-License-Identifier: Apache-2.0
"""TLS on every TCP connection of the cluster: where the formula writes the certificate
files, what a client adds to its connection string, and which options a peer connection
(one server asking another) may carry.

The pillar turns TLS on with ``tls:ca_cert``; every server then needs its certificate and
key (``tls:hosts``). Pure logic; runs on the minion's Python (3.9 on Debian 11).
"""

import os
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
KEY = _sibling("pg_replication_schema").KEY
# The CA the servers' own connections to each other verify them with.
PEER_CA_FILE = "/etc/pg_replication/ca.crt"
# The files in each server's conf_dir (a backup host has the CA's, in Barman's config_dir).
TLS_FILES = {"ca_file": "pg_replication-ca.crt", "cert_file": "pg_replication-server.crt",
             "key_file": "pg_replication-server.key"}  # fmt: skip
# What a peer connection may add for TLS (the plan's ``peer_tls``): verify the server's
# certificate against the cluster's CA, and bind SCRAM to the TLS channel.
PEER_TLS_KEYS = ("sslmode", "sslrootcert", "channel_binding")


def enabled(config, hosts, errors):
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


def paths(directory):
    return {name: f"{directory}/{filename}" for name, filename in TLS_FILES.items()}


def conninfo(ca_file, version):
    """What a client of TLS-only servers adds to its connection string: verify the server's
    certificate and name, and bind SCRAM to the TLS channel (libpq 13+)."""
    extra = {"sslmode": "verify-full", "sslrootcert": ca_file}
    if int(version) >= 13:
        extra["channel_binding"] = "require"
    return extra


def files(tls, me, plan, barman):
    """Where this host's TLS files go (None without TLS): a server's in its conf_dir, a
    backup host's (the CA's only) in Barman's config_dir."""
    role = (me or {}).get("role")
    if not tls or role not in ("primary", "standby", "barman"):
        return None
    if role == "barman":
        return {"ca_file": paths(barman["config_dir"])["ca_file"]}
    return paths(plan["conf_dir"])


def peer_conninfo(plan):
    """How a server reaches the others (bootstrap, slots, rejoin, role checks): with TLS, as
    the standbys stream (verify-full against the cluster's CA), with a copy of the CA outside
    the data and configuration directories (there before the bootstrap)."""
    server_tls = plan["tls"] and plan["role"] in ("primary", "standby")
    return conninfo(PEER_CA_FILE, plan["version"]) if server_tls else {}


def peer_options(tls):
    """``tls`` (a mapping of :data:`PEER_TLS_KEYS`, or None) as libpq connection options;
    ValueError names an unknown option."""
    tls = dict(tls or {})
    unknown = sorted(set(tls) - set(PEER_TLS_KEYS))
    if unknown:
        raise ValueError(f"tls: unknown option(s) {', '.join(unknown)}; expected {', '.join(PEER_TLS_KEYS)}")
    return {k: str(v) for k, v in tls.items() if v is not None}
