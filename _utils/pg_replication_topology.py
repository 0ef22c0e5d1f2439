# SPDX-License-Identifier: Apache-2.0
"""The cluster's topology from the pillar: its hosts and their addresses (the pillar's, or
the Salt mine's), each standby's upstream, who streams from whom, the replication slots,
the synchronous standbys and the WAL senders and slots the topology needs.

Functions append ``"pillar:key: message"`` to ``errors`` for each fault. Pure logic; runs on
the minion's Python (3.9 on Debian 11).
"""

import ipaddress
import os
import re
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
syntax = _sibling("pg_replication_syntax")
KEY = _sibling("pg_replication_schema").KEY
settings_util = _sibling("pg_replication_settings")
# The Salt mine function whose first address stands for a host the pillar gives no address.
MINE_FUNCTION = "pg_replication_address"


def slot_default(minion_id):
    return re.sub(r"[^a-z0-9_]", "_", minion_id.lower())[:58] + "_slot"


def host_entries(config, mine_addresses, errors):
    """``{minion id: host}`` with each address (the pillar's or the Salt mine's) and, for a
    standby, its slot and application name."""
    out = {}
    for minion_id, spec in config["hosts"].items():
        address = spec.get("address")
        if address is None:
            address = mine_address(str(minion_id), mine_addresses, errors)
            if address is None:
                continue
        host = dict(spec, id=str(minion_id), address=str(ipaddress.ip_address(str(address))))
        if host["role"] == "standby":
            host["slot"] = spec.get("slot") or slot_default(str(minion_id))
            # The minion id by default: pg_stat_replication says who streams, and
            # synchronous_standby_names can name each standby.
            host["application_name"] = spec.get("application_name") or str(minion_id)
        out[str(minion_id)] = host
    return out


def mine_request(config):
    """``(minion ids, mine function)`` for the hosts the pillar gives no address, or None."""
    hosts = config.get("hosts") if isinstance(config, dict) else None
    if not isinstance(hosts, dict):
        return None
    missing = sorted(str(h) for h, spec in hosts.items() if isinstance(spec, dict) and spec.get("address") is None)
    return (missing, MINE_FUNCTION) if missing else None


def mine_address(minion_id, mine_addresses, errors):
    """The first address the Salt mine holds for ``minion_id`` (:data:`MINE_FUNCTION`)."""
    key = f"{KEY}:hosts:{minion_id}:address"
    found = (mine_addresses or {}).get(minion_id)
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


def check_host_settings(hosts, errors):
    """A host's own settings may not set what a hot standby needs at least as high as its
    primary's (any server may become the primary): those stay cluster-wide."""
    for host in hosts.values():
        for name in sorted(set(host.get("settings") or {}) & set(settings_util.HOT_STANDBY_MINIMUMS)):
            errors.append(
                f"{KEY}:hosts:{host['id']}:settings:{name}: a standby needs it at least as high as its primary's;"
                f" set {KEY}:settings:{name} for every server"
            )


def check_upstreams(hosts, primary, errors):
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


def by_role(hosts, errors):
    """``(primary, primaries, standbys, backup hosts)``; exactly one primary is allowed."""
    primaries = [h for h in hosts.values() if h["role"] == "primary"]
    standbys = [h for h in hosts.values() if h["role"] == "standby"]
    backup_hosts = [h for h in hosts.values() if h["role"] == "barman"]
    if not primaries:
        errors.append(f"{KEY}:hosts: no host has role primary")
    elif len(primaries) > 1:
        errors.append(f"{KEY}:hosts: more than one primary ({', '.join(h['id'] for h in primaries)})")
    return (primaries[0] if primaries else None), primaries, standbys, backup_hosts


def downstream(hosts, primary, minion_id):
    """The standbys that stream from ``minion_id``."""
    primary_id = (primary or {}).get("id")
    return sorted(
        (h for h in hosts.values() if h["role"] == "standby" and (h.get("upstream") or primary_id) == minion_id),
        key=lambda h: h["id"],
    )


def served_slots(downstream_hosts, barman_servers, me):
    """The slots a server serves: its downstream standbys', and on the primary Barman's for
    this cluster."""
    return sorted(
        {h["slot"] for h in downstream_hosts}
        | {s["slot_name"] for s in barman_servers if not s["external"] and me and me["role"] == "primary"}
    )


def check_slots(hosts, barman_servers, errors):
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


def synchronous(config, hosts, errors):
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
        elif host["role"] == "standby" and settings_util.apply_delay_seconds(host.get("settings")) != 0:
            errors.append(
                f"{key}:standbys:{i}: {name!r} is a delayed standby ({KEY}:hosts:{name}:settings:"
                "recovery_min_apply_delay): a commit would wait for its delay"
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


# The topology's need of each setting: one WAL sender and slot per standby, two senders
# (receive-wal and a base backup) and one slot per backup host, plus the pillar's spares.
HEADROOM = {
    "max_wal_senders": ((1, 2), "spare_wal_senders"),
    "max_replication_slots": ((1, 1), "spare_replication_slots"),
}


def check_headroom(config, standbys, backup_hosts, errors):
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
