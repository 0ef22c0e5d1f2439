# SPDX-License-Identifier: Apache-2.0
"""Self-fencing of an isolated primary (issue #28): the ``ha`` pillar's checks, what each
minion's plan holds for the watchdog, and the watchdog's decision, one tick at a time.

The watchdog (``pg_replication-watchdog.service``, ``server/files/watchdog.py``) runs on every
PostgreSQL server when ``ha:mode`` is ``automatic``. Every ``check_interval`` seconds it asks:
does the local server run as a primary, does it reach the salt-master (a TCP connect to the
master's ret port), and which of its *peers* (every other PostgreSQL server of the pillar)
answer on their PostgreSQL port (a connection made or refused: the host answered). A primary
that has reached neither the master nor a strict majority of its peers for ``fence_timeout``
seconds fences: it writes the fence marker, then stops its cluster's unit (fast shutdown).
The master promotes only after ``failover_timeout`` >= ``fence_timeout`` + ``fence_margin``
+ 2 * ``check_interval`` without the primary (:func:`check_pillar` keeps that invariant), so
an isolated primary has stopped before a standby is promoted.

Quorum contract with the master's decision (pg_replication_ha): both sides count the same set
(every PostgreSQL server of the pillar but the primary) and need a strict majority of the
whole set, never of those that answer: then a primary that still sees a majority and a master
that heard a majority say "lost" cannot both exist (the two majorities share a server).

Pure logic; runs on the servers' own Python (3.9 on Debian 11): no 3.10+ features.
"""

import json

KEY = "pg_replication:ha"
MODES = ("manual", "automatic")
# The fence marker: present while the server is fenced; only rejoin removes it.
MARKER = "/var/lib/pg_replication/fenced"
# Where the formula puts the watchdog, its configuration and its unit.
LIB_DIR = "/usr/local/lib/pg_replication"
CONFIG_FILE = "/etc/pg_replication/watchdog.json"
UNIT = "pg_replication-watchdog.service"
UNIT_FILE = "/etc/systemd/system/" + UNIT
SERVER_ROLES = ("primary", "standby")

# Decisions of :meth:`Watchdog.tick`.
IDLE = "idle"  # not a running primary: nothing to watch
OK = "ok"  # a primary that sees the master or a majority of its peers
ISOLATED = "isolated"  # a primary that sees neither, for less than fence_timeout so far
FENCE = "fence"  # ... for fence_timeout: write the marker, stop the server
STOP_AGAIN = "stop-again"  # a running primary while the marker says it is fenced


def check_pillar(ha, errors):
    """The timings' invariant, on the schema-checked ``ha`` section (errors name the key)."""
    if not isinstance(ha, dict):
        return
    try:
        interval, fence = int(ha["check_interval"]), int(ha["fence_timeout"])
        failover, margin = int(ha["failover_timeout"]), int(ha["fence_margin"])
    except (KeyError, TypeError, ValueError):
        return  # the schema said what is missing or wrong
    if fence < 2 * interval:
        errors.append(
            f"{KEY}:fence_timeout: {fence} s is shorter than two checks "
            f"(2 * {KEY}:check_interval = {2 * interval} s): one lost check would fence"
        )
    needed = fence + margin + 2 * interval
    if failover < needed:
        errors.append(
            f"{KEY}:failover_timeout: {failover} s must be at least fence_timeout + fence_margin + "
            f"2 * check_interval = {fence} + {margin} + 2 * {interval} = {needed} s, or the master could "
            "promote a standby while the isolated primary still takes writes"
        )


def minion_ha(ha, hosts, me, port):
    """What this minion's plan holds of ``ha``: the pillar's values, whether the watchdog runs
    here (``automatic`` on a PostgreSQL server), and its peers (every other server)."""
    out = dict(ha or {})
    server = bool(me) and me.get("role") in SERVER_ROLES
    out["watchdog"] = bool(server and out.get("mode") == "automatic")
    peers = []
    if server:
        for name in sorted(hosts):
            host = hosts[name]
            if name != me["id"] and host.get("role") in SERVER_ROLES:
                peers.append({"id": name, "address": host["address"], "port": port})
    out["peers"] = peers
    out.update(marker=MARKER, config_file=CONFIG_FILE, lib_dir=LIB_DIR, unit=UNIT, unit_file=UNIT_FILE)
    return out


def watchdog_config(ha, minion_id, data_dir, service, master, master_port, vip_drop_script=None):
    """The watchdog's configuration file (JSON text) from this minion's plan's ``ha`` and
    paths; ``master``: the minion's ``master`` option (an address or a list),
    ``master_port``: the master's ret port; ``vip_drop_script``: the VIP's drop script
    (pg_replication:vip), run after the fence's clean stop (which leaves the VIP alone)."""
    masters = master if isinstance(master, list) else [master]
    config = {
        "minion_id": minion_id,
        "check_interval": ha["check_interval"],
        "fence_timeout": ha["fence_timeout"],
        "fence_margin": ha["fence_margin"],
        "masters": [{"address": str(m), "port": int(master_port)} for m in masters if m],
        "peers": ha["peers"],
        "marker": ha["marker"],
        "data_dir": data_dir,
        "service": service,
        "vip_drop_script": vip_drop_script,
    }
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def marker_path():
    """Where the fence marker is (:data:`MARKER`)."""
    return MARKER


def majority(reached, total):
    """A strict majority of ``total`` peers (none when there is no peer)."""
    return total > 0 and 2 * reached > total


class Watchdog:
    """The decision, fed one observation per check; ``now`` is a monotonic clock's seconds."""

    def __init__(self, fence_timeout, now):
        self.fence_timeout = fence_timeout
        # The last time the primary saw the master or a majority (or was not a primary).
        # Starting counts as seen: a watchdog (re)started gets a whole fence_timeout.
        self.last_seen = now

    def tick(self, now, primary, master_reached, peers_reached, peers_total, fenced=False):
        """``primary``: the local server runs as a primary; ``master_reached``: a master
        answered; ``peers_reached`` of ``peers_total`` peers answered; ``fenced``: the marker
        is there. Returns ``(decision, reason)``."""
        if not primary:
            self.last_seen = now
            return IDLE, "not a running primary"
        if fenced:
            return STOP_AGAIN, "runs as a primary although fenced (only rejoin clears the fence)"
        seen = []
        if master_reached:
            seen.append("the salt-master")
        if majority(peers_reached, peers_total):
            seen.append(f"{peers_reached} of {peers_total} peers")
        if seen:
            self.last_seen = now
            return OK, "sees " + " and ".join(seen)
        if peers_total == 0:
            # Nothing could be promoted in its place: stopping would only lose the service.
            self.last_seen = now
            return OK, "no peer that could be promoted; never fences"
        alone = now - self.last_seen
        what = f"reached neither the salt-master nor a majority of its peers ({peers_reached} of {peers_total})"
        if alone >= self.fence_timeout:
            return FENCE, f"{what} for {alone:.1f} s (fence_timeout {self.fence_timeout} s)"
        return ISOLATED, f"{what} for {alone:.1f} s"


def marker_text(when, reason, minion_id):
    """The fence marker's content (JSON): when (UTC, ISO 8601), why, which server."""
    return json.dumps({"fenced_at": when, "reason": reason, "minion_id": minion_id}, sort_keys=True) + "\n"


def read_marker(text):
    """The marker's fields from its text; a marker that is not ours still fences."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {"fenced_at": None, "reason": "unreadable fence marker", "minion_id": None}
    return {k: data.get(k) for k in ("fenced_at", "reason", "minion_id")}
