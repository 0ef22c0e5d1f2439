"""
Day-2 operations of a pg_replication cluster, run from the salt-master: the cluster's status,
a planned switchover, a failover when the primary is gone, and the rejoin of a former primary.

Each operation asks every member where it stands (``pg_replication.member`` on the minions),
checks its preconditions, and with ``test=True`` stops there: it returns every check and
the steps it would take, and changes nothing. A refused operation changes nothing either.
The steps then run in order from here, host by host: the minions' states are applied with
the new roles given as pillar on the command line, and the runner ends with the pillar
change to make, so that the next highstate agrees with the running cluster (until then,
the highstate of a host whose role changed refuses to run: it never promotes or demotes).

Sync it and the shared ``_utils`` to the master first: ``salt-run saltutil.sync_all``.
"""

import time

import salt.client
from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"

SERVER_ROLES = ("primary", "standby")
FORMULA = "pg_replication"


def __virtual__():
    return __virtualname__


# --------------------------------------------------------------------------- minions


def _client():
    if "pg_replication.client" not in __context__:
        __context__["pg_replication.client"] = salt.client.get_local_client(__opts__["conf_file"])
    return __context__["pg_replication.client"]


def _call(minion, fun, *args, timeout=120, **kwargs):
    """Run one execution function on one minion; its return, or CommandExecutionError."""
    answer = _client().cmd(minion, fun, arg=list(args), kwarg=kwargs or None, timeout=timeout, full_return=True)
    answer = answer.get(minion)
    if not isinstance(answer, dict) or "ret" not in answer:
        raise CommandExecutionError(f"{minion} did not answer {fun}")
    if answer.get("retcode"):
        raise CommandExecutionError(f"{minion}: {fun} failed: {answer['ret']}")
    return answer["ret"]


def _apply(minion, change, timeout=900):
    """state.apply the formula on ``minion`` with ``change`` (:func:`_change`) as pillar; the
    states it changed."""
    answers = _client().cmd(
        minion, "state.apply", arg=[FORMULA], kwarg={"pillar": {"pg_replication": change}}, timeout=timeout,
        full_return=True,
    )  # fmt: skip
    states = (answers.get(minion) or {}).get("ret")
    if not isinstance(states, dict):
        raise CommandExecutionError(f"state.apply on {minion} failed: {states}")
    failed = [f"{s.get('__id__')}: {s.get('comment')}" for s in states.values() if s.get("result") is False]
    if failed:
        raise CommandExecutionError(f"state.apply on {minion} failed: {'; '.join(failed)}")
    return sorted(s.get("__id__") for s in states.values() if s.get("changes"))


def _lsn(text):
    """A WAL position ('16/B374D848') as a number of bytes."""
    return __utils__["pg_replication_postgres.lsn_bytes"](text)


# --------------------------------------------------------------------------- the cluster


class Cluster:
    """Every member's answer to ``pg_replication.member``: the pillar's hosts and roles, and
    where each server stands."""

    def __init__(self, tgt, timeout=20, ping_timeout=5):
        # Ask only the minions that answer: a dead primary's must not make every call wait.
        alive = sorted(m for m, ok in _client().cmd(tgt, "test.ping", timeout=ping_timeout).items() if ok is True)
        # Each member answers from its own pillar: the one on the master now, not a cached one.
        _client().cmd(alive, "saltutil.refresh_pillar", kwarg={"wait": True}, timeout=timeout, tgt_type="list")
        answers = _client().cmd(alive, "pg_replication.member", timeout=timeout, full_return=True, tgt_type="list")
        self.members = {
            minion: answer["ret"]
            for minion, answer in answers.items()
            if isinstance(answer, dict) and not answer.get("retcode") and isinstance(answer.get("ret"), dict)
        }
        if not self.members:
            raise CommandExecutionError(f"no minion matching {tgt!r} answered with a pg_replication pillar")
        self.plan = next(iter(self.members.values()))["plan"]
        self.hosts = self.plan["hosts"]

    def plan_of(self, host):
        member = self.members.get(host)
        return member["plan"] if member else None

    def server(self, host):
        """The running state of ``host``'s server: None if its minion did not answer."""
        member = self.members.get(host)
        return member.get("server") if member else None

    def role(self, host):
        return (self.hosts.get(host) or {}).get("role")

    def upstream(self, host, primary):
        """The server standby ``host`` streams from once ``primary`` leads: the upstream the
        pillar names (cascading), or ``primary``."""
        return (self.hosts.get(host) or {}).get("upstream") or primary

    def cascading_from(self, host):
        """The standbys whose pillar names ``host`` as their upstream."""
        return sorted(h for h, spec in self.hosts.items() if spec.get("upstream") == host)

    def pillar_primary(self):
        return next(host for host, spec in self.hosts.items() if spec["role"] == "primary")

    def servers(self):
        return sorted(host for host, spec in self.hosts.items() if spec["role"] in SERVER_ROLES)

    def backup_hosts(self):
        return sorted(host for host, spec in self.hosts.items() if spec["role"] == "barman")

    def running_primaries(self):
        return [
            h for h in self.servers() if (self.server(h) or {}).get("running") and not self.server(h)["in_recovery"]
        ]

    def barman_server_name(self):
        """The name of Barman's server for this cluster's primary (None without Barman)."""
        for host in self.backup_hosts():
            for server in (self.plan_of(host) or {}).get("barman_servers") or ():
                if not server.get("external"):
                    return server["name"]
        return None

    def conn(self, host):
        """Keyword arguments that reach ``host``'s server over its local socket."""
        plan = self.plan_of(host) or self.plan
        return {"host": plan["socket_dir"], "port": plan["port"]}


def _start(tgt):
    """What every operation starts from: the cluster, the pillar's primary, no check yet."""
    cluster = Cluster(tgt)
    return cluster, cluster.pillar_primary(), []


def _check(checks, name, ok, detail=""):
    checks.append({"check": name, "ok": bool(ok), "detail": detail})


def _refused(operation, checks, steps):
    failed = [f"{c['check']} ({c['detail']})" for c in checks if not c["ok"]]
    return {
        "result": False,
        "retcode": 1,  # salt-run's exit code
        "comment": f"{operation} refused, nothing changed: " + "; ".join(failed),
        "checks": checks,
        "steps": steps,
    }


def _preflight(operation, checks, steps, test, would):
    """What an operation returns before changing anything: refused when a check failed, the
    checks and steps with ``test=True``; None when it goes on."""
    if not all(c["ok"] for c in checks):
        return _refused(operation, checks, steps)
    if test:
        return {"result": None, "comment": would, "checks": checks, "steps": steps}
    return None


def _succeeded(comment, checks, done, **more):
    return {"result": True, "comment": comment, "checks": checks, "done": done, **more}


def _failed(operation, exc, done):
    return {"result": False, "retcode": 1, "comment": f"{operation} failed: {exc}", "done": done}


def _change(cluster, roles):
    """The ``pg_replication`` pillar after a change of roles (``{minion id: role}``): the
    roles, and what the barman section must say so that Barman keeps its server (the same
    name, the same archive) and backs up the new primary."""
    change = {"hosts": {host: {"role": role} for host, role in sorted(roles.items())}}
    new_primary = next((host for host, role in roles.items() if role == "primary"), None)
    pinned, barman = cluster.plan.get("barman_pillar") or {}, {}
    if pinned.get("primary") and roles.get(pinned["primary"]) == "standby" and new_primary:
        barman["primary"] = new_primary
    name = cluster.barman_server_name()
    if name and not pinned.get("server_name") and new_primary:  # it defaults to <primary>-streaming
        barman["server_name"] = name
    if barman:
        change["barman"] = barman
    return change


def _pillar_change(change):
    """The change as lines an operator copies into the pillar."""
    return [
        f"{FORMULA}:{section}:{key}:role: {value['role']}"
        if section == "hosts"
        else f"{FORMULA}:{section}:{key}: {value}"
        for section in sorted(change)
        for key, value in sorted(change[section].items())
    ]


# --------------------------------------------------------------------------- status


def cluster_status(tgt="*"):
    """
    Every member of the cluster: its role in the pillar and as running, timeline, WAL
    position, lag behind the primary (bytes, and seconds since the last replayed
    transaction), its slots with the WAL each retains, and each Barman server's check.
    ``table`` is the same as lines of text; ``--out=json`` gives all of it as data.

    CLI Example:

    .. code-block:: bash

        salt-run pg_replication.cluster_status
        salt-run pg_replication.cluster_status --out=json
    """
    cluster = Cluster(tgt)
    primaries = cluster.running_primaries()
    primary_lsn = _lsn(cluster.server(primaries[0])["lsn"]) if len(primaries) == 1 else None
    members = {}
    for host in sorted(cluster.hosts):
        row = {"pillar_role": cluster.role(host), "address": cluster.hosts[host]["address"]}
        if host not in cluster.members:
            row["state"] = "no answer"
        elif cluster.role(host) in SERVER_ROLES:
            row.update(_server_row(cluster.server(host), primary_lsn))
        else:
            row.update(_barman_row(host, cluster.plan_of(host)))
        members[host] = row
    return {"members": members, "table": _table(members)}


def _server_row(server, primary_lsn):
    if not server["running"]:
        return {"state": f"down ({server.get('state')})", "timeline": server.get("timeline")}
    row = {
        "state": "standby" if server["in_recovery"] else "primary",
        "timeline": server["timeline"],
        "lsn": server["lsn"],
        "slots": {
            name: {"active": slot["active"], "retained_bytes": slot["retained_bytes"]}
            for name, slot in server["slots"].items()
        },
    }
    if server["in_recovery"]:
        receiver = server.get("receiver") or {}
        row["upstream"] = receiver.get("sender_host") if receiver.get("status") == "streaming" else None
        row["lag_bytes"] = primary_lsn - _lsn(server["lsn"]) if primary_lsn is not None else None
        row["lag_seconds"] = (server.get("lag") or {}).get("seconds")
    return row


def _barman_row(host, plan):
    checks = {}
    for server in plan["barman_servers"] or ():
        try:
            failed = _call(host, "barman.failed_checks", server["name"])
            checks[server["name"]] = "all OK" if not failed else "FAILED: " + ", ".join(failed)
        except CommandExecutionError as exc:
            checks[server["name"]] = f"unknown ({exc})"
    return {"state": "barman", "barman_check": checks}


def _table(members):
    lines = [f"{'member':<16} {'pillar':<8} {'running':<22} {'tl':>3} {'lsn':<14} {'lag':>10}  slots / barman"]
    for host, row in members.items():
        extra = row.get("barman_check") or {
            name: f"{'active' if slot['active'] else 'inactive'} {slot['retained_bytes']}B"
            for name, slot in (row.get("slots") or {}).items()
        }
        lag = row.get("lag_bytes")
        lines.append(
            f"{host:<16} {row['pillar_role']:<8} {row.get('state', ''):<22} {row.get('timeline') or '':>3} "
            f"{row.get('lsn') or '':<14} {'' if lag is None else f'{lag}B':>10}  "
            + ", ".join(f"{k}: {v}" for k, v in sorted(extra.items()))
        )
    return lines


# --------------------------------------------------------------------------- switchover


def _switchover_checks(cluster, old, to, max_lag):
    checks = []
    running = cluster.running_primaries()
    _check(checks, f"exactly one primary runs, the pillar's ({old})", running == [old], f"running: {running or 'none'}")
    _check(checks, f"{to} is a standby in the pillar", cluster.role(to) == "standby", f"{to}: {cluster.role(to)}")
    target = cluster.server(to) or {}
    receiver = target.get("receiver") or {}
    streaming = (
        target.get("running")
        and target.get("in_recovery")
        and receiver.get("status") == "streaming"
        and receiver.get("sender_host") == cluster.hosts[old]["address"]
        and receiver.get("slot_name") == (cluster.hosts.get(to) or {}).get("slot")
    )
    _check(checks, f"{to} streams from {old} on its slot", streaming, f"receiver: {receiver or 'none'}")
    lag = None
    if streaming and old in running:
        # What it has still to replay before it can be promoted (received or not).
        lag = _lsn(cluster.server(old)["lsn"]) - _lsn(target["replay_lsn"] or target["lsn"])
    _check(checks, f"{to} is at most {max_lag} bytes behind (WAL not replayed)",
           lag is not None and lag <= max_lag, f"{lag} bytes behind")  # fmt: skip
    primary = cluster.server(old) or {}
    _check(
        checks,
        f"pg_rewind can rejoin {old} (wal_log_hints or data checksums)",
        "on" in (primary.get("wal_log_hints"), primary.get("data_checksums")),
        f"wal_log_hints={primary.get('wal_log_hints')} data_checksums={primary.get('data_checksums')}",
    )
    _check_capacity(checks, cluster, to, target)
    _check_no_cascade_from(checks, cluster, old)
    return checks


def _check_no_cascade_from(checks, cluster, old):
    """A standby that names the old primary as its upstream would cascade from it while it
    rejoins (or forever, if it is gone): the pillar must stop naming it first."""
    cascading = cluster.cascading_from(old)
    fix = f"remove {FORMULA}:hosts:<host>:upstream: {old} from {', '.join(cascading)} first" if cascading else ""
    _check(checks, f"no standby names {old} as its upstream", not cascading, fix)


def _check_capacity(checks, cluster, to, target):
    """The new primary serves every other server and each Barman server (two connections)."""
    others = len(cluster.servers()) - 1
    backups = len(cluster.backup_hosts())
    senders, slots = others + 2 * backups, others + backups
    _check(
        checks,
        f"{to} has the WAL senders and slots the new topology needs ({senders} and {slots})",
        (target.get("max_wal_senders") or 0) >= senders and (target.get("max_replication_slots") or 0) >= slots,
        f"max_wal_senders={target.get('max_wal_senders')} max_replication_slots={target.get('max_replication_slots')}",
    )


def switchover(to, test=False, tgt="*", max_lag=None, timeout=60):
    """
    Planned switchover: make standby ``to`` the primary, the primary a standby of it (with
    pg_rewind, never a full copy), the other standbys and Barman follow it.

    Refused, with nothing changed, unless: exactly one primary runs and it is the pillar's;
    ``to`` streams from it on its slot, with at most ``max_lag`` bytes of WAL not replayed (default
    ``pg_replication:switchover:max_lag_bytes``, 16 MiB); the primary has wal_log_hints or
    data checksums; ``to`` has the WAL senders and slots its new standbys need; no standby
    names the primary as its ``upstream``. A cascading standby keeps its upstream (when
    ``to`` is that upstream, it follows the promotion on the same slot).

    Steps: create the slots of every other member on ``to`` (before anyone connects); stop
    the primary cleanly; wait until ``to`` has received its shutdown checkpoint (otherwise
    start it again and stop); promote ``to``; apply the formula with the new roles on ``to``,
    the old primary (after pg_rewind), the other standbys and the backup hosts (Barman's
    conninfo follows, receive-wal streams from the new primary's slot); drop the old
    primary's slots. ``test=True`` runs the checks and lists the steps only.

    CLI Example:

    .. code-block:: bash

        salt-run pg_replication.switchover to=standby test=True
        salt-run pg_replication.switchover to=standby
    """
    cluster, old, _ = _start(tgt)
    max_lag = int(
        max_lag if max_lag is not None else (cluster.plan.get("switchover") or {}).get("max_lag_bytes", 16 << 20)
    )
    checks = _switchover_checks(cluster, old, to, max_lag)
    change = _change(cluster, {old: "standby", to: "primary"})
    steps = _switchover_steps(cluster, old, to, change)
    stop = _preflight("switchover", checks, steps, test, f"switchover {old} -> {to} would run")
    if stop:
        return stop
    done = []
    try:
        created = _create_member_slots(cluster, to, change, done)
        try:
            _stop_primary_cleanly(cluster, old, to, timeout, done)
        except CommandExecutionError:
            for slot in created:  # the primary runs again: leave the standby as it was
                _call(to, "pg_replication.slot_drop", slot, **cluster.conn(to))
            raise
        done.append(f"promoted {to}: timeline {_call(to, 'pg_replication.promote', **cluster.conn(to))['timeline']}")
        _follow(cluster, to, change, done, rejoin=[old])
    except CommandExecutionError as exc:
        return _failed("switchover", exc, done)
    comment = f"{to} is the primary; {old} and the other members follow it"
    return _succeeded(comment, checks, done, pillar_change=_pillar_change(change))


def _switchover_steps(cluster, old, to, change):
    standbys = [h for h in cluster.servers() if h not in (old, to)]
    return [
        f"create on {to} the slots of {', '.join(sorted(set(cluster.servers()) - {to}) + cluster.backup_hosts())}",
        f"stop {old} cleanly and wait until {to} has received its shutdown checkpoint",
        f"promote {to}",
        f"apply {FORMULA} on {to} as primary",
        *[f"apply {FORMULA} on {h}: it follows {to}" for h in standbys],
        f"pg_rewind {old} from {to}, apply {FORMULA} on it as a standby, drop its old slots",
        *[f"stop receive-wal on {h}, apply {FORMULA}: Barman streams from {to}" for h in cluster.backup_hosts()],
        "then change the pillar: " + ", ".join(_pillar_change(change)),
    ]


def _create_member_slots(cluster, primary, change, done):
    """Before ``primary`` is promoted: the slots its future standbys and Barman stream from."""
    plan = _call(primary, "pg_replication.member", change=change)["plan"]
    existing = set(_call(primary, "pg_replication.slots", **cluster.conn(primary)))
    created = []
    for slot in sorted(set(plan["served_slots"]) - existing):
        _call(primary, "pg_replication.slot_create", slot, **cluster.conn(primary))
        done.append(f"created slot {slot} on {primary}")
        created.append(slot)
    return created


def _stop_primary_cleanly(cluster, old, to, timeout, done):
    """Stop the primary, then make sure ``to`` has every WAL record it wrote (its shutdown
    checkpoint included); if not, start it again and give up."""
    plan = cluster.plan_of(old)
    _call(old, "service.stop", plan["service_name"])
    control = _call(old, "pg_replication.controldata", plan["data_dir"], plan["bin_dir"])
    if control.get("Database cluster state") != "shut down":
        _call(old, "service.start", plan["service_name"])
        raise CommandExecutionError(f"{old} did not shut down cleanly ({control.get('Database cluster state')})")
    checkpoint = _lsn(control["Latest checkpoint location"])
    done.append(f"stopped {old}: shutdown checkpoint at {control['Latest checkpoint location']}")

    lsn = __utils__["pg_replication_postgres.lsn_bytes"]  # the poll runs received() where __utils__ is not packed

    def received():
        return lsn(_call(to, "pg_replication.position", **cluster.conn(to))["lsn"]) > checkpoint

    if not __utils__["pg_replication_poll.until"](received, timeout):
        _call(old, "service.start", plan["service_name"])
        raise CommandExecutionError(
            f"{to} did not receive {old}'s shutdown checkpoint within {timeout}s; {old} was started again"
        )
    done.append(f"{to} received {old}'s shutdown checkpoint")


def _follow(cluster, primary, change, done, rejoin=()):
    """After ``primary``'s promotion: the formula with the pillar ``change`` on it, then on
    each other standby, each backup host, each former primary in ``rejoin`` (pg_rewind first)."""
    done.append(f"applied on {primary}: {_apply(primary, change) or 'no change'}")
    # The other standbys first: they must not cascade from a former primary while it rejoins.
    for host in cluster.servers():
        if host not in (primary, *rejoin) and host in cluster.members:
            done.append(f"applied on {host}: {_apply(host, change) or 'no change'}")
            _wait_streaming(cluster, host, cluster.upstream(host, primary))
    # Barman before the former primaries: while its configuration still names one, `barman
    # cron` starts receive-wal again on that server's slot as soon as it runs as a standby,
    # and the rejoin cannot drop an active slot (seen on Debian 11, Barman 2.12).
    for host in cluster.backup_hosts():
        for server in cluster.plan_of(host)["barman_servers"] or ():
            if not server.get("external"):
                _call(host, "barman.receive_wal_stop", server["name"])
        done.append(f"applied on {host}: {_apply(host, change) or 'no change'}")
    for host in rejoin:
        report = _rejoin(cluster, host, primary, change)
        done.append(f"{host} rejoined as a standby of {primary}: {report}")


def _wait_streaming(cluster, host, source, timeout=120, replayed=None):
    """Until ``host`` streams from ``source``, its upstream (and has replayed up to LSN
    ``replayed``)."""
    address = cluster.hosts[source]["address"]
    lsn = __utils__["pg_replication_postgres.lsn_bytes"]  # the poll runs streaming() where __utils__ is not packed

    def streaming():
        server = _call(host, "pg_replication.member")["server"]
        receiver = server.get("receiver") or {}
        caught_up = replayed is None or lsn(server.get("replay_lsn") or "0/0") >= replayed
        return receiver.get("status") == "streaming" and receiver.get("sender_host") == address and caught_up

    if not __utils__["pg_replication_poll.until"](streaming, timeout, interval=2):
        raise CommandExecutionError(f"{host} does not stream from {source} after {timeout}s")


def _rejoin(cluster, host, primary, change):
    """Stop ``host`` if it runs, pg_rewind it from ``primary``, apply the formula as a standby,
    wait until it streams, drop the slots it kept from its time as a primary."""
    plan = cluster.plan_of(host)
    server = _call(host, "pg_replication.member", change=change)["server"]
    end = server.get("lsn") if server.get("running") else server.get("checkpoint")
    if server.get("running"):
        _call(host, "service.stop", plan["service_name"])
    # pg_rewind learns the new primary's timeline from its control file: checkpoint it first.
    _call(primary, "pg_replication.checkpoint", **cluster.conn(primary))
    config_file = f"{plan['conf_dir']}/postgresql.conf" if plan["conf_dir"] != plan["data_dir"] else None
    rewind = _call(
        host, "pg_replication.rewind", plan["data_dir"], cluster.hosts[primary]["address"], port=plan["port"],
        user=plan["replication"]["user"], passfile=f"{plan['home']}/.pgpass", bin_dir=plan["bin_dir"],
        config_file=config_file, version=plan["version"], tls=plan.get("peer_tls"), timeout=600,
    )  # fmt: skip
    _apply(host, change)
    _wait_streaming(cluster, host, cluster.upstream(host, primary))
    dropped = []
    for name, slot in _call(host, "pg_replication.slots", **cluster.conn(host)).items():
        if not slot["active"]:
            _call(host, "pg_replication.slot_drop", name, **cluster.conn(host))
            dropped.append(name)
    report = {"rewound": rewind["rewound"], "diverged_at": rewind["diverged_at"], "dropped_slots": dropped,
              "discarded_bytes": 0, "pg_rewind": rewind["output"]}  # fmt: skip
    if rewind["diverged_at"] and end:
        report["discarded_bytes"] = max(0, _lsn(end) - _lsn(rewind["diverged_at"].split()[0]))
    return report


# --------------------------------------------------------------------------- failover


def failover(to=None, fence=False, test=False, tgt="*"):
    """
    The primary is gone: promote the standby that received the most WAL (or ``to``), then
    the other standbys and Barman follow it. Only the primary's own standbys are candidates
    (a cascading standby is behind its upstream). Refused while the old primary still runs as a
    primary, unless ``fence=True``: then it is stopped first. The old primary, when it comes
    back, is refused by its own highstate; ``salt-run pg_replication.rejoin host=<it>``
    makes it a standby (after the pillar change this runner prints).

    CLI Example:

    .. code-block:: bash

        salt-run pg_replication.failover test=True
        salt-run pg_replication.failover
        salt-run pg_replication.failover to=standby2 fence=True
    """
    started = time.monotonic()
    cluster, old, checks = _start(tgt)
    alive = old in cluster.running_primaries()
    _check(checks, f"the old primary {old} does not run as a primary", not alive or fence,
           "it runs: pass fence=True to stop it first" if alive else "down or unreachable")  # fmt: skip
    # The old primary's own standbys (a cascading standby is behind its upstream).
    candidates = {
        h: _lsn(cluster.server(h)["lsn"])
        for h in cluster.servers()
        if h != old
        and cluster.upstream(h, old) == old
        and (cluster.server(h) or {}).get("running")
        and cluster.server(h)["in_recovery"]
    }
    chosen = to or (max(candidates, key=candidates.get) if candidates else None)
    _check(checks, "a running standby to promote", chosen in candidates,
           f"candidates (received WAL): {candidates}; chosen: {chosen}")  # fmt: skip
    others = [h for h in cluster.running_primaries() if h != old]
    _check(checks, "no other primary runs", not others, f"running primaries: {others}")
    _check_no_cascade_from(checks, cluster, old)
    if chosen in candidates:
        _check_capacity(checks, cluster, chosen, cluster.server(chosen))
    change = _change(cluster, {old: "standby", chosen: "primary"} if chosen else {})
    steps = [
        *([f"stop {old} (fence)"] if alive else []),
        f"create on {chosen} the slots of every other member",
        f"promote {chosen}",
        f"apply {FORMULA} with the new roles on {chosen}, the other standbys and the backup hosts",
        f"later, when {old} is back: salt-run pg_replication.rejoin host={old}",
    ]
    stop = _preflight("failover", checks, steps, test, f"failover to {chosen} would run")
    if stop:
        return stop
    done = []
    try:
        if alive:
            _call(old, "service.stop", cluster.plan_of(old)["service_name"])
            done.append(f"stopped {old}")
        _create_member_slots(cluster, chosen, change, done)
        done.append(
            f"promoted {chosen}: timeline {_call(chosen, 'pg_replication.promote', **cluster.conn(chosen))['timeline']}"
        )
        writable = time.monotonic() - started
        cluster.members.pop(old, None)  # it is not touched: rejoin brings it back
        _follow(cluster, chosen, change, done)
    except CommandExecutionError as exc:
        return _failed("failover", exc, done)
    comment = f"{chosen} is the primary; run `salt-run pg_replication.rejoin host={old}` when {old} is back"
    return _succeeded(
        comment, checks, done, seconds_to_writable_primary=round(writable, 1), pillar_change=_pillar_change(change)
    )


# --------------------------------------------------------------------------- rejoin


def rejoin(host, test=False, tgt="*"):
    """
    Make ``host``, a former primary, a standby of the pillar's primary: stop it if it runs,
    pg_rewind it from the primary (reporting where their timelines diverged and how much of
    its WAL was discarded), apply the formula, drop the slots it kept. The pillar must
    already make ``host`` a standby and name the running primary as the primary.

    CLI Example:

    .. code-block:: bash

        salt-run pg_replication.rejoin host=master test=True
        salt-run pg_replication.rejoin host=master
    """
    cluster, primary, checks = _start(tgt)
    _check(checks, f"{host} is a standby in the pillar", cluster.role(host) == "standby",
           f"{host}: {cluster.role(host)}; change the pillar first")  # fmt: skip
    _check(checks, f"{host}'s minion answers", host in cluster.members, "" if host in cluster.members else "no answer")
    running = cluster.running_primaries()
    _check(checks, f"the pillar's primary {primary} runs as a primary", primary in running, f"running: {running}")
    target = cluster.server(host) or {}
    streaming = (
        target.get("running")
        and target.get("in_recovery")
        and (target.get("receiver") or {}).get("status") == "streaming"
    )
    _check(checks, f"{host} is not already a streaming standby", not streaming, "it streams" if streaming else "")
    steps = [f"stop {host} if it runs", f"pg_rewind {host} from {primary}", f"apply {FORMULA} on {host}",
             f"drop the slots {host} kept"]  # fmt: skip
    stop = _preflight("rejoin", checks, steps, test, f"{host} would rejoin as a standby of {primary}")
    if stop:
        return stop
    try:
        report = _rejoin(cluster, host, primary, {})
    except CommandExecutionError as exc:
        return _failed("rejoin", exc, [])
    return {"result": True, "comment": f"{host} streams from {primary}", "rejoin": report}


# --------------------------------------------------------------------------- rolling restart


def rolling_restart(test=False, tgt="*", timeout=120):
    """
    Restart, one at a time, the servers whose configuration waits for a restart
    (``pg_replication:restart`` manual, or a standby that could not restart before its
    primary): the standbys first, each streaming again before the next, then the primary;
    or the primary first when it lowers a setting its standbys need at least as high
    (max_connections, max_worker_processes, max_wal_senders, max_prepared_transactions,
    max_locks_per_transaction), as PostgreSQL requires. A primary restart is a short outage
    for its clients; nothing is promoted. Refused unless exactly the pillar's primary runs.

    CLI Example:

    .. code-block:: bash

        salt-run pg_replication.rolling_restart test=True
        salt-run pg_replication.rolling_restart
    """
    cluster, primary, checks = _start(tgt)
    running = cluster.running_primaries()
    _check(checks, f"exactly one primary runs, the pillar's ({primary})", running == [primary],
           f"running: {running or 'none'}")  # fmt: skip
    up = [h for h in cluster.servers() if (cluster.server(h) or {}).get("running")]
    _check(checks, "every server runs", set(up) == set(cluster.servers()), f"running: {up}")
    pending = {h: _call(h, "pg_replication.pending_restart", **cluster.conn(h)) for h in up}
    lowered = _call(primary, "pg_replication.lowered_minimums", **cluster.conn(primary)) if primary in up else {}
    standbys = [h for h in cluster.servers() if h != primary]
    order = [primary, *standbys] if lowered else [*standbys, primary]
    order = [h for h in order if pending.get(h)]
    steps = [f"restart {h} ({', '.join(pending[h])})" for h in order] or ["nothing waits for a restart"]
    if primary in order:
        steps += [f"apply {FORMULA} on {h}: Barman streams again" for h in cluster.backup_hosts()]
    if lowered:
        steps.insert(0, f"primary first: it lowers {', '.join(sorted(lowered))}")
    stop = _preflight("rolling_restart", checks, steps, test, "rolling restart would run")
    if stop:
        return stop
    done = []
    try:
        for host in order:
            _restart_member(cluster, host, primary, timeout, done)
    except CommandExecutionError as exc:
        return _failed("rolling_restart", exc, done)
    return _succeeded(f"restarted {', '.join(order) or 'nothing'}", checks, done)


def _restart_member(cluster, host, primary, timeout, done):
    """Restart ``host``, then wait until the cluster is whole again: a standby streams; after
    the primary, every standby has replayed past its restart (the settings it recorded at
    startup) and Barman's receive-wal, which ended with it, streams again."""
    _call(host, "service.restart", cluster.plan_of(host)["service_name"], timeout=600)
    done.append(f"restarted {host}")
    if host == primary:
        replayed = _lsn(_call(primary, "pg_replication.position", **cluster.conn(primary))["lsn"])
        for standby in (h for h in cluster.servers() if h != primary):
            _wait_streaming(cluster, standby, cluster.upstream(standby, primary), timeout, replayed=replayed)
        for backup in cluster.backup_hosts():
            done.append(f"applied on {backup}: {_apply(backup, {}) or 'no change'}")
    else:
        _wait_streaming(cluster, host, cluster.upstream(host, primary), timeout)
    left = _call(host, "pg_replication.pending_restart", **cluster.conn(host))
    if left:
        raise CommandExecutionError(f"{host} still waits for a restart for {', '.join(left)}")
