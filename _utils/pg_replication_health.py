# SPDX-License-Identifier: Apache-2.0
"""The health items the ``pg_replication_health`` beacon watches, and what changed between
two looks: a server's role (or ``down``), each standby's streaming as its upstream sees it,
its own WAL receiver's status; a backup host's ``barman check`` items.

:func:`server_items` and :func:`barman_items` flatten what ``pg_replication.status`` and
``barman.check`` answer into ``{item: value}`` (values are plain strings or booleans);
:func:`changes` compares two such snapshots. The beacon keeps the last snapshot and fires
one event per change. Pure logic; runs on the minion's Python (3.9 on Debian 11).
"""

# Beacon events are tagged salt/beacon/<minion>/pg_replication_health/<TAG_PREFIX><item kind>.
TAG_PREFIX = "pg_replication/health/"
# What a server is when pg_replication.status does not answer.
DOWN = "down"


def server_items(status, error=None):
    """A PostgreSQL server's items from ``pg_replication.status``'s answer (``status`` None
    and ``error``: it did not answer)."""
    if status is None:
        return {"role": DOWN}
    items = {"role": status["role"]}
    for row in status.get("replication") or []:
        name = row.get("application_name") or str(row.get("pid"))
        items[f"streaming:{name}"] = row.get("state") == "streaming"
    # The standbys that stream through a slot but are gone: their slot is inactive.
    # (pg_replication.slots answers {slot_name: row}; a list of rows with slot_name too.)
    slots = status.get("slots") or []
    if isinstance(slots, dict):
        slots = [dict(row, slot_name=name) for name, row in slots.items() if isinstance(row, dict)]
    for slot in slots:
        name = slot.get("slot_name") if isinstance(slot, dict) else None
        if name and slot.get("slot_type", "physical") == "physical":
            items[f"slot_active:{name}"] = bool(slot.get("active"))
    if status["role"] == "standby":
        receiver = status.get("wal_receiver") or {}
        items["wal_receiver"] = receiver.get("status") or "stopped"
    return items


def barman_items(checks):
    """A backup host's items from ``{server: barman.check's answer, or None}`` (None:
    barman did not answer for the server)."""
    items = {}
    for server, result in sorted(checks.items()):
        if result is None:
            items[f"barman:{server}"] = "unknown"
            continue
        for item, answer in sorted(result.items()):
            items[f"barman:{server}:{item}"] = (answer or {}).get("status") or "unknown"
    return items


def _kind(item):
    return item.split(":", 1)[0]


def changes(previous, current):
    """The events for what changed from ``previous`` to ``current`` (snapshots of items):
    ``[{"tag": ..., "item": ..., "old": ..., "new": ...}]``, sorted by item; an item that
    appears or goes away has None on the other side. No previous snapshot (the first look
    after the minion started): no event, the snapshot is the baseline."""
    if previous is None:
        return []
    events = []
    for item in sorted(set(previous) | set(current)):
        old, new = previous.get(item), current.get(item)
        if old != new:
            events.append({"tag": TAG_PREFIX + _kind(item), "item": item, "old": old, "new": new})
    return events


def validate(config):
    """``(ok, message)`` for the beacon's configuration (a list of one-key mappings, as Salt
    passes it, or a mapping)."""
    if isinstance(config, list):
        merged = {}
        for entry in config:
            if not isinstance(entry, dict):
                return False, "pg_replication_health: each entry must be a mapping"
            merged.update(entry)
        config = merged
    if not isinstance(config, dict):
        return False, "pg_replication_health: the configuration must be a list of mappings"
    unknown = sorted(set(config) - {"interval", "host", "port", "barman_servers", "disable_during_state_run"})
    if unknown:
        return False, f"pg_replication_health: unknown key(s) {', '.join(unknown)}"
    port = config.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
        return False, f"pg_replication_health: port {port!r} is not a port number"
    servers = config.get("barman_servers", [])
    if not isinstance(servers, list) or not all(isinstance(s, str) and s for s in servers):
        return False, "pg_replication_health: barman_servers must be a list of Barman server names"
    if (port is None) == (not servers):
        return False, "pg_replication_health: give port (a PostgreSQL server) or barman_servers (a backup host)"
    return True, "valid"
