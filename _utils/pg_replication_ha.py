# SPDX-License-Identifier: Apache-2.0
"""What the master's HA engine (``_engines/pg_replication_ha.py``) decides, tick by tick,
from what the members answered: pure code, driven by the engine's clock (a fake one in the
unit tests).

States of the primary, as the master sees it:

- ``healthy``: the primary answers and runs as a primary. Each such tick records which of
  its standbys are *eligible* should it be lost: streaming, and at most
  ``ha:max_lag_on_failover`` bytes behind it.
- ``primary suspected``: its minion is silent, or it says PostgreSQL is down (or runs in
  recovery), since ``lost_since`` (the first tick that saw it so; a master that just started
  starts counting then). The eligibility recorded on its last healthy tick is kept.
- ``primary lost``: a strict majority of the primary's *peers* (every other PostgreSQL
  server of the pillar, cascades included: the set the primary's watchdog counts) answer
  and say they lost it, and have said so on every tick for ``ha:failover_timeout``
  seconds: they cannot reach its PostgreSQL port, and its direct standbys' WAL receivers do
  not stream (or have heard nothing for ``ha:fence_timeout`` seconds). A silent peer counts
  against the majority: a master cut off from the cluster decides nothing. A silent primary
  minion whose PostgreSQL port the master itself still reaches is not lost either (its
  watchdog, reaching the master, would not fence it). Counting from the agreement, not from
  the first silence, is what makes the fence come first: the primary has reached neither the
  master nor that majority since then, so its watchdog stops it within ``fence_timeout``
  (plus a check and the stop itself). Barman's hosts, where ``receive-wal`` streams from
  the primary, are further witnesses: asked with the peers, one that still reaches the
  silent primary's port holds the failover as the master's own reach does (until the
  fence closes the port); a silent witness holds nothing.
- ``promoting``: in ``mode: automatic``, an eligible standby that answers (the one that
  received the most WAL) is chosen and the runner's ``failover`` runs with
  ``fenced=True``: the primary's watchdog has fenced it, since
  ``failover_timeout >= fence_timeout + fence_margin + 2 * check_interval``. Only if that
  watchdog was seen running on the primary's last healthy tick (its health answer's
  ``watchdog``): with no watchdog (the pillar says automatic but the primary's highstate
  has not run since, or it answered nothing about it) nothing fences the old primary, and
  the engine refuses.
- ``cooldown``: after a failover, nothing more is decided for ``ha:failover_cooldown``
  seconds, and not before the pillar names the promoted standby as the primary (the pillar
  stays the source of truth: the engine prints the change, the operator commits it).

Beside those states, with ``ha:auto_rejoin``: the former primary of a failover is rejoined
(the runner's ``rejoin``: stopped if it runs, pg_rewind, a standby of the new primary) once
the pillar makes it a standby, its minion answers and its PostgreSQL is down (fenced by its
watchdog, or dead). One running as a primary is never rejoined automatically: its writes
after the failover would be discarded (``rejoin_refused``). A failed rejoin is tried again
after ``ha:failover_timeout`` seconds. Until then the former primary stays down.

Each change of state or of its reason is one event (``salt/pg_replication/ha/<name>``):
``primary_suspected``, ``primary_back``, ``no_majority``, ``primary_lost``, ``manual``,
``refused`` (no eligible candidate, or no watchdog seen on the primary), ``cooldown``,
``candidate_chosen``, ``promoted``, ``failover_failed``, ``waiting_for_pillar``, ``healthy``;
with ``ha:auto_rejoin``: ``rejoining``, ``rejoined``, ``rejoin_failed``, ``rejoin_refused``.
"""

HEALTHY = "healthy"
SUSPECTED = "primary suspected"
LOST = "primary lost"
PROMOTING = "promoting"
COOLDOWN = "cooldown"

DEFAULTS = {
    "mode": "manual",
    "check_interval": 1,
    "fence_timeout": 8,
    "failover_timeout": 12,
    "fence_margin": 2,
    "max_lag_on_failover": 16777216,
    "failover_cooldown": 600,
    "auto_rejoin": False,
}
STATE_FILE = "ha.json"


def config(pillar_ha):
    """The ``ha`` pillar with its defaults. The formula's schema refuses bad values at
    render; here, a value of the wrong kind (e.g. masked by ``pillar.get``) keeps its
    default, and anything but ``automatic`` is ``manual``: the engine never acts on a
    value it cannot read."""
    out = dict(DEFAULTS)
    for key, value in (pillar_ha or {}).items() if isinstance(pillar_ha, dict) else ():
        default = DEFAULTS.get(key)
        if key == "mode":
            out[key] = "automatic" if value == "automatic" else "manual"
        elif isinstance(default, bool):
            out[key] = value if isinstance(value, bool) else default
        elif isinstance(default, int) and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value if value >= 0 else default
    return out


def lsn(text):
    """A WAL position ('16/B374D848') as a number of bytes (None stays None)."""
    if not text:
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def primary_ok(server):
    """Whether a server's answer (a member record's ``server``) is a running primary."""
    return bool(server and server.get("running") and server.get("in_recovery") is False)


def streaming(server):
    """Whether a standby's answer says its WAL receiver streams."""
    receiver = (server or {}).get("receiver") or {}
    return bool(
        server and server.get("running") and server.get("in_recovery") and receiver.get("status") == "streaming"
    )


def says_lost(server, reached, quiet, direct=True):
    """A standby that answers says it lost the primary: running in recovery, the primary's
    port not reached (``reached`` False; None: not asked, which says nothing), and its WAL
    receiver not streaming, or silent for more than ``quiet`` seconds (a sender that died
    with its link sends no FIN: the receiver may say "streaming" until
    ``wal_receiver_timeout``)."""
    receiver = (server or {}).get("receiver") or {}
    age = receiver.get("last_msg_age")
    stale = isinstance(age, (int, float)) and age > quiet
    return bool(server and server.get("running") and server.get("in_recovery") and reached is False
                and (not direct or not streaming(server) or stale))  # fmt: skip


def eligibility(primary_server, servers, standbys, max_lag):
    """``{standby: lag in bytes}`` of the standbys that stream and lag at most ``max_lag``
    bytes behind the primary's WAL position, on a healthy tick."""
    top = lsn(primary_server.get("lsn"))
    out = {}
    for host in standbys:
        server = servers.get(host)
        if not streaming(server) or top is None or lsn(server.get("lsn")) is None:
            continue
        lag = max(0, top - lsn(server["lsn"]))
        if lag <= max_lag:
            out[host] = lag
    return out


class Decider:
    """The engine's picture of one cluster and its decisions. ``step`` takes one tick's
    observation and returns ``(events, failover)``: events ``[(name, data)]`` to fire, and
    the standby to promote (or None); ``failover_result`` takes what the runner returned."""

    def __init__(self, now, remembered=None):
        remembered = remembered or {}
        self.state = None  # not seen yet
        self.reason = "starting"
        self.primary = None
        self.lost_since = None
        self.agreed_since = None  # the first tick of the peers' continuous agreement
        self.eligible = None  # {standby: lag} on the last healthy tick; None: never seen healthy
        # Whether the primary's watchdog ran on its last healthy tick (its health answer's
        # ``watchdog``; None: not said). Recorded for the runner's failover, which accepts
        # the watchdog's fence as proof only when it was seen running.
        self.watchdog = None
        self.last_failover = remembered.get("last_failover")
        self.promoted = remembered.get("promoted")
        self.retry_at = None
        self.chosen = None
        self.started = now
        self.last_decision = remembered.get("last_decision")
        # The former primary of the last failover, until it is rejoined (ha:auto_rejoin).
        self.rejoin = remembered.get("rejoin")
        self.rejoin_retry_at = None
        self._said = set()
        if self.promoted:
            self.state, self.reason = COOLDOWN, "remembered"

    # ------------------------------------------------------------------ one tick

    def step(self, now, obs):
        """``obs``: ``{"primary": the pillar's primary, "standbys": its own standbys per the
        pillar, "peers": every other server of the pillar (default: the standbys),
        "servers": {host: its answer's server or None when silent}, "reaches": {peer:
        whether it reached the primary's port} (asked only while suspected),
        "master_reaches": whether the master reached that port itself (None: not asked),
        "witnesses": {Barman's host: whether it reached that port} (those that answered),
        "ha": config(...)}``."""
        ha = obs["ha"]
        events = []
        if self.state == PROMOTING:
            return events, None
        if self.state == COOLDOWN and not self._cooldown_over(now, obs, ha, events):
            return events, None
        primary = obs["primary"]
        if primary != self.primary:
            self.primary, self.lost_since, self.eligible, self.retry_at = primary, None, None, None
            self.agreed_since, self.watchdog = None, None
            if self.state in (SUSPECTED, LOST):  # another primary now: nothing came back
                self.state = None
        servers = obs["servers"]
        server = servers.get(primary)
        if primary_ok(server):
            self.eligible = eligibility(server, servers, obs["standbys"], ha["max_lag_on_failover"])
            self.watchdog = server.get("watchdog")
            was = self.state
            self.lost_since, self.retry_at, self.agreed_since = None, None, None
            if was != HEALTHY:
                self._move(events, now, HEALTHY, "primary_back" if was in (SUSPECTED, LOST) else "healthy",
                           {"primary": primary, "eligible": sorted(self.eligible)})  # fmt: skip
            return events, None
        if self.lost_since is None:
            self.lost_since = now
        why = (
            "its minion is silent"
            if server is None
            else f"PostgreSQL is down: {server.get('error') or 'not a primary'}"
        )
        silent_for = now - self.lost_since
        detail = {"primary": primary, "why": why, "for": round(silent_for, 1)}
        reaches, standbys = obs.get("reaches") or {}, obs["standbys"]
        peers = obs.get("peers", standbys)
        agreeing = sorted(
            p for p in peers if says_lost(servers.get(p), reaches.get(p), ha["fence_timeout"], direct=p in standbys)
        )
        detail.update(agreeing=agreeing, peers=list(peers))
        reached_by = []  # only a silent minion's port speaks for it
        if server is None:
            reached_by = sorted(w for w, ok in (obs.get("witnesses") or {}).items() if ok)
            if obs.get("master_reaches") is True:
                reached_by.append("the master")
        if reached_by or not peers or len(agreeing) * 2 <= len(peers):
            self.agreed_since = None
            if reached_by:
                verb = "reaches" if len(reached_by) == 1 else "reach"
                detail["why"] = f"{why}, but {' and '.join(reached_by)} {verb} its PostgreSQL port"
            name = "primary_suspected" if silent_for < ha["failover_timeout"] else "no_majority"
            self._move(events, now, SUSPECTED, name, detail)
            return events, None
        if self.agreed_since is None:
            self.agreed_since = now
        agreed_for = now - self.agreed_since
        if agreed_for < ha["failover_timeout"]:
            self._move(events, now, SUSPECTED, "primary_suspected", dict(detail, agreed_for=round(agreed_for, 1)))
            return events, None
        self._move(events, now, LOST, "primary_lost", dict(detail, eligible=sorted(self.eligible or ())))
        return events, self._decide(now, obs, ha, servers, detail, events)

    def _decide(self, now, obs, ha, servers, detail, events):
        if ha["mode"] != "automatic":
            self._say(
                events,
                now,
                "manual",
                dict(
                    detail,
                    comment="mode manual: nothing promoted; `salt-run pg_replication.failover` once it is fenced",
                ),
            )
            return None
        if self.last_failover is not None and now - self.last_failover < ha["failover_cooldown"]:
            self._say(events, now, "cooldown", dict(detail, last_failover=self.last_failover))
            return None
        if self.retry_at is not None and now < self.retry_at:
            return None
        candidates = {
            h: lsn(servers[h].get("lsn")) or 0
            for h in (self.eligible or {})
            if (servers.get(h) or {}).get("running") and servers[h].get("in_recovery")
        }
        if not candidates:
            why = (
                "the primary was never seen healthy"
                if self.eligible is None
                else (
                    f"none of {sorted(self.eligible)} answers as a standby"
                    if self.eligible
                    else f"no standby within max_lag_on_failover ({ha['max_lag_on_failover']} bytes) when it was lost"
                )
            )
            self._say(events, now, "refused", dict(detail, comment=f"no eligible candidate: {why}"))
            return None
        if self.watchdog is not True:
            why = "the primary's watchdog was not seen running on its last healthy check: nothing fences it"
            self._say(events, now, "refused", dict(detail, comment=f"{why} (apply the highstate on every server)"))
            return None
        self.chosen = max(sorted(candidates), key=candidates.get)
        self._move(
            events, now, PROMOTING, "candidate_chosen", dict(detail, candidate=self.chosen, candidates=candidates)
        )
        return self.chosen

    def failover_result(self, now, ret, retry_after):
        """What the runner's failover returned (its dict, or an error text): ``promoted`` and
        the cooldown, or ``failover_failed`` (a refusal, which changed nothing, is tried again
        after ``retry_after`` seconds; a failure after the promotion is not)."""
        events = []
        ret = ret if isinstance(ret, dict) else {"result": False, "comment": str(ret)}
        detail = {"primary": self.primary, "candidate": self.chosen, "comment": ret.get("comment"),
                  "pillar_change": ret.get("pillar_change"), "left": ret.get("left")}  # fmt: skip
        if ret.get("result") is True:
            self.promoted, self.last_failover, self.rejoin = self.chosen, now, self.primary
            self._move(events, now, COOLDOWN, "promoted", detail)
        elif "refused, nothing changed" in str(ret.get("comment")):
            self.retry_at = now + retry_after
            self._move(events, now, LOST, "failover_failed", detail)
        else:
            # Something changed (the candidate may be promoted): no second try by itself.
            self.promoted, self.last_failover, self.rejoin = self.chosen, now, self.primary
            self._move(events, now, COOLDOWN, "failover_failed", detail)
        return events

    def rejoin_due(self, now, obs):
        """``(events, host)``: the former primary to rejoin now (``ha:auto_rejoin``), or
        None. Only once the pillar makes it a standby of another primary, its minion
        answers, and its PostgreSQL is down."""
        events, host = [], self.rejoin
        if not host or self.state == PROMOTING or not obs["ha"].get("auto_rejoin"):
            return events, None
        if obs["primary"] == host or host not in obs.get("peers", obs["standbys"]):
            return events, None  # the pillar does not make it a standby yet (waiting_for_pillar)
        server = obs["servers"].get(host)
        if server is None:
            return events, None  # not back
        if server.get("running"):
            if server.get("in_recovery"):
                self.rejoin = None  # a standby already: rejoined by hand
                return events, None
            self._say(events, now, "rejoin_refused", {
                "host": host, "primary": obs["primary"],
                "comment": f"{host} runs as a primary: its writes since the failover would be discarded;"
                           f" check them, then `salt-run pg_replication.rejoin host={host}`"})  # fmt: skip
            return events, None
        if self.rejoin_retry_at is not None and now < self.rejoin_retry_at:
            return events, None
        self._say(events, now, "rejoining", {"host": host, "primary": obs["primary"]})
        return events, host

    def rejoin_result(self, now, host, ret, retry_after):
        """What the runner's ``rejoin`` of ``host`` returned: ``rejoined``, or
        ``rejoin_failed`` and another try after ``retry_after`` seconds."""
        events = []
        ret = ret if isinstance(ret, dict) else {"result": False, "comment": str(ret)}
        detail = {"host": host, "comment": ret.get("comment"), "rejoin": ret.get("rejoin")}
        if ret.get("result") is True:
            self.rejoin, self.rejoin_retry_at = None, None
            self._said.discard("rejoining")
            self._say(events, now, "rejoined", detail)
        else:
            self.rejoin_retry_at = now + retry_after
            self._said.difference_update({"rejoining", "rejoin_failed"})
            self._say(events, now, "rejoin_failed", detail)
        return events

    def rereads(self):
        """Whether the engine may re-read the cluster (pillar and members) on its usual
        schedule: not while the primary is suspected or lost (a silent minion would hold
        every re-read up, and the picture decided on must stay the same), but in cooldown
        it must, though the former primary is down or silent: that re-read is how the
        engine sees the pillar change it waits for (and ``ha:auto_rejoin`` with it)."""
        return self.state not in (SUSPECTED, LOST, PROMOTING)

    def _cooldown_over(self, now, obs, ha, events):
        if self.last_failover is not None and now - self.last_failover < ha["failover_cooldown"]:
            return False
        if self.promoted and obs["primary"] != self.promoted:
            self._say(events, now, "waiting_for_pillar", {
                "promoted": self.promoted, "pillar_primary": obs["primary"],
                "comment": f"no decision until the pillar names {self.promoted} as the primary"})  # fmt: skip
            return False
        self.promoted = None
        self.state = None  # seen afresh
        return True

    # ------------------------------------------------------------------ events

    def _move(self, events, now, state, name, data):
        if state != self.state:
            self._said = set()
        self.state = state
        self._say(events, now, name, data)

    def _say(self, events, now, name, data):
        """One event per reason while the state stays (not one per tick)."""
        if name in self._said:
            return
        self._said.add(name)
        self.reason = name
        self.last_decision = {"time": now, "event": name, "state": self.state, **data}
        events.append((name, dict(data, state=self.state)))

    def remembered(self):
        """What survives a restart of the master (written to :data:`STATE_FILE`)."""
        return {
            "state": self.state,
            "reason": self.reason,
            "primary": self.primary,
            "lost_since": self.lost_since,
            # The runner's failover reads these two (pg_replication_ha_proof).
            "agreed_since": self.agreed_since,
            "watchdog": self.watchdog,
            "eligible": self.eligible,
            "last_failover": self.last_failover,
            "promoted": self.promoted,
            "rejoin": self.rejoin,
            "last_decision": self.last_decision,
        }


def decider(now, remembered=None):
    """A new :class:`Decider` (for callers that reach this file through Salt's loader,
    which packs functions only)."""
    return Decider(now, remembered)


def state_path(cachedir):
    import os  # pylint: disable=import-outside-toplevel

    return os.path.join(cachedir, "pg_replication", STATE_FILE)


def read_state(cachedir):
    """The HA engine's last written state (None when it never ran on this master)."""
    import json  # pylint: disable=import-outside-toplevel

    try:
        with open(state_path(cachedir)) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(cachedir, data):
    import json  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel

    path = state_path(cachedir)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
