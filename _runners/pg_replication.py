# SPDX-License-Identifier: Apache-2.0
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

This file talks to the minions; what it decides from their answers is pure code in
``_utils``: the cluster model and the pillar change (``pg_replication_cluster``), each
operation's checks, steps and returns and the status rows (``pg_replication_checks``),
the shape of a member's answer (``pg_replication_member``).
Sync it and the shared ``_utils`` to the master first: ``salt-run saltutil.sync_all``.
"""

import functools
import logging
import time
import types

import salt.client
import salt.utils.event
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "pg_replication"

FORMULA = "pg_replication"
# Fired on the master's bus the moment a standby is promoted, long before the runner returns
# (the other members' highstates come after): a reactor can repoint clients or DNS at once.
PROMOTED_TAG = "salt/pg_replication/promoted"
# A Barman server's connections (replication or not); the wal_ ones with barman:backup_from.
WHAT_BARMAN_CONNECTS_WITH = (("conninfo", False), ("streaming_conninfo", True), ("wal_conninfo", False),
                             ("wal_streaming_conninfo", True))  # fmt: skip


def __virtual__():
    return __virtualname__


def _pure(name):
    """A function of the pure side in ``_utils``: ``_pure("checks.preflight")``."""
    return __utils__[f"pg_replication_{name}"]


# --------------------------------------------------------------------------- minions


def _client():
    if "pg_replication.client" not in __context__:
        __context__["pg_replication.client"] = salt.client.get_local_client(__opts__["conf_file"])
    return __context__["pg_replication.client"]


# ``pg_replication_jobs``' functions, kept in a plain global: polls run _call in the utils
# loader, where this module's __utils__ is not packed (the first call is made outside a poll).
_JOBS = {}


def _jobs(name):
    if name not in _JOBS:
        _JOBS[name] = __utils__[f"pg_replication_jobs.{name}"]
    return _JOBS[name]


def _ask(*args, **kwargs):
    return _jobs("ask")(_client(), *args, **kwargs)


def _call(minion, fun, *args, timeout=120, limit=900, **kwargs):
    """Run one execution function on one minion; its return, or CommandExecutionError (also
    when it still runs after ``limit`` seconds: ``pg_replication_jobs.ask``)."""
    return _answer_of(minion, fun, _ask(minion, fun, args, kwargs or None, timeout=timeout, limit=limit))


def _answer_of(minion, fun, answer):
    """``answer`` (a return event's data: ``return``, ``retcode``), or CommandExecutionError."""
    if answer is None:
        raise CommandExecutionError(f"{minion} did not answer {fun}")
    if answer.get("retcode"):
        raise CommandExecutionError(f"{minion}: {fun} failed: {answer['return']}")
    return answer["return"]


def _member(minion, problems, **kwargs):
    """``minion``'s answer to ``pg_replication.member`` (``kwargs``: its ``change``), checked
    with ``problems`` (``pg_replication_member.problems``: taken from ``__utils__`` by the
    caller, since a poll runs this where ``__utils__`` is not packed)."""
    return _checked_record(minion, _call(minion, "pg_replication.member", **kwargs), problems)


def _checked_record(minion, record, problems):
    wrong = problems(record)
    if wrong:
        raise CommandExecutionError(f"{minion}: pg_replication.member gave no member record: {'; '.join(wrong)}")
    return record


def _plans(hosts, change, wait=60):
    """``{host: its plan under the pillar change}``, every host asked at once (one render's
    time for all of them), or CommandExecutionError for one that does not answer in time."""
    answers = _jobs("gather")(_client(), list(hosts), "pg_replication.member", kwarg={"change": change}, wait=wait)
    problems, plans = _pure("member.problems"), {}
    for host in hosts:
        answer = answers.get(host)
        event = {"return": answer["ret"], "retcode": answer["retcode"]} if answer else None
        plans[host] = _checked_record(host, _answer_of(host, "pg_replication.member", event), problems)["plan"]
    return plans


def _apply(minion, change, limit=1800):
    """state.apply the formula on ``minion`` with ``change`` (``pg_replication_cluster.change``)
    as pillar; the states it changed."""
    answer = _ask(minion, "state.apply", [FORMULA], {"pillar": {"pg_replication": change}}, limit=limit)
    states = (answer or {}).get("return")
    if not isinstance(states, dict):
        raise CommandExecutionError(f"state.apply on {minion} failed: {states}")
    failed = [f"{s.get('__id__')}: {s.get('comment')}" for s in states.values() if s.get("result") is False]
    if failed:
        raise CommandExecutionError(f"state.apply on {minion} failed: {'; '.join(failed)}")
    return sorted(s.get("__id__") for s in states.values() if s.get("changes"))


def _promote(cluster, to, old, operation):
    """Promote ``to`` (the old primary ``old`` is stopped or fenced), fire
    ``salt/pg_replication/promoted`` on the master's bus, and return the step's line."""
    timeline = _call(to, "pg_replication.promote", **cluster.conn(to))["timeline"]
    data = {"operation": operation, "primary": to, "old_primary": old, "timeline": timeline}
    try:
        with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
            bus.fire_event(data, PROMOTED_TAG)
    except Exception as exc:  # noqa: BLE001 - a missed event must not fail a promotion  # pylint: disable=broad-except
        log.warning("pg_replication: %s not fired: %s", PROMOTED_TAG, exc)
    return f"promoted {to}: timeline {timeline}"


def _lsn(text):
    """A WAL position ('16/B374D848') as a number of bytes."""
    return __utils__["pg_replication_postgres.lsn_bytes"](text)


# --------------------------------------------------------------------------- the cluster


# How long the cluster read waits for a minion's first answer before it counts as silent:
# a loaded minion may take seconds to start a job, and a member missed makes an operation
# refuse ("every server runs") or skip it. Only the failover, whose lost primary is silent
# by definition, waits less: those seconds are part of the outage.
PING_WAIT, FAILOVER_PING_WAIT = 10, 2


def _cluster(tgt, timeout=20, ping_timeout=PING_WAIT):
    """The cluster model (``pg_replication_cluster.Cluster``) of the members of ``tgt`` that
    answer with a member record."""
    # Ask only the minions that answer: a dead primary's must not make every call wait.
    # Each member answers from its own pillar: the one on the master now, not a cached one;
    # it is refreshed while the ping waits for the silent ones.
    alive, _ = _jobs("answering_with")(
        _client(), tgt, "saltutil.refresh_pillar", kwarg={"wait": True}, ping_wait=ping_timeout, wait=timeout,
        tgt_type="compound",
    )  # fmt: skip
    answers = _client().cmd(alive, "pg_replication.member", timeout=timeout, full_return=True, tgt_type="list")
    cluster = _pure("cluster.from_answers")(answers)
    if cluster is None:
        raise CommandExecutionError(f"no minion matching {tgt!r} answered with a pg_replication pillar")
    return cluster


def _answering(tgt, timeout=2):
    """The minions of ``tgt`` (a compound target: a glob, or ``L@a,b``) that answer
    ``test.ping`` within ``timeout`` seconds, sorted. A silent one is given up then, with no
    ``saltutil.find_job`` after it (Salt's ``cmd`` would wait ``gather_job_timeout`` more:
    10 s by default, which held a failover up that long for the dead primary's minion)."""
    pinged = _jobs("gather")(_client(), tgt, "test.ping", wait=timeout, tgt_type="compound")
    return sorted(m for m, answer in pinged.items() if answer.get("ret") is True)


def _start(tgt, ping_timeout=PING_WAIT):
    """What every operation starts from: the cluster and the pillar's primary."""
    cluster = _cluster(tgt, ping_timeout=ping_timeout)
    return cluster, cluster.pillar_primary()


# --------------------------------------------------------------------------- status


def cluster_status(tgt="*"):
    """
    Every member of the cluster: its role in the pillar and as running, timeline, WAL
    position, lag behind the primary (bytes, and seconds since the last replayed
    transaction), its slots with the WAL each retains, and each Barman server's check.
    ``table`` is the same as lines of text; ``--out=json`` gives all of it as data.
    ``lock``: the day-2 operation that holds the cluster (None); ``ha``: the HA engine's
    state (mode, state, last decision, last failover; None when it never ran).

    CLI Example:

    .. code-block:: bash

        salt-run pg_replication.cluster_status
        salt-run pg_replication.cluster_status --out=json
    """
    cluster = _cluster(tgt)
    barman_rows = {host: _barman_row(host, cluster.plan_of(host)) for host in cluster.without_server()}
    out = _pure("checks.status")(cluster, barman_rows)
    return dict(
        out,
        connect=_pure("routing.connection_strings")(cluster.plan.get("routing"), cluster.hosts, cluster.plan["port"]),
        lock=__utils__["pg_replication_lock.holder"](_lock_path()),
        ha=__utils__["pg_replication_ha.read_state"](__opts__["cachedir"]),
    )


def _barman_row(host, plan):
    checks = {}
    for server in plan["barman_servers"] or ():
        try:
            checks[server["name"]] = _call(host, "barman.failed_checks", server["name"])
        except CommandExecutionError as exc:
            checks[server["name"]] = exc
    return _pure("checks.barman_row")(checks)


# --------------------------------------------------------------------------- switchover


def switchover(to, test=False, tgt="*", max_lag=None, timeout=60, stop_timeout=600):
    """
    Planned switchover: make standby ``to`` the primary, the primary a standby of it (with
    pg_rewind, never a full copy), the other standbys and Barman follow it.

    Refused, with nothing changed, unless: exactly one primary runs and it is the pillar's;
    ``to`` streams from it on its slot, with at most ``max_lag`` bytes of WAL not replayed (default
    ``pg_replication:switchover:max_lag_bytes``, 16 MiB); the primary has wal_log_hints or
    data checksums; ``to`` has the WAL senders and slots its new standbys need; no standby
    names the primary as its ``upstream``; every connection the new topology needs works,
    tried as it will be made (each server that will stream from ``to``, the old primary
    included, and each Barman server, with their TLS, roles, .pgpass and ``to``'s pg_hba). A
    cascading standby keeps its upstream (when ``to`` is that upstream, it follows the
    promotion on the same slot).

    Steps: create the slots of every other member on ``to`` (before anyone connects); a
    CHECKPOINT on the primary while clients still write (its shutdown checkpoint is then
    short); stop the primary cleanly; wait until ``to`` has received its shutdown checkpoint (otherwise
    start it again and stop; a unit that the service manager has not finished stopping after
    ``stop_timeout`` seconds holds nothing up once PostgreSQL's control file says it is shut
    down); promote ``to``; apply the formula with the new roles on ``to``,
    the old primary (after pg_rewind), the other standbys and the backup hosts (Barman's
    conninfo follows, receive-wal streams from the new primary's slot); drop the old
    primary's slots. With ``pg_replication:pooler``, every PgBouncer is PAUSEd before the
    primary stops, and repointed and RESUMEd once ``to`` is promoted; the ``vip`` then moves
    from the old primary to ``to`` (pg_replication_handover). ``test=True`` runs the checks
    and lists the steps only. Once ``to`` is promoted, a step that fails does not stop the
    others: ``to`` stays the writable primary, and the return lists what is ``left`` and the command that finishes it
    (``salt-run pg_replication.follow primary=<to>``). The moment ``to`` is promoted, the
    event ``salt/pg_replication/promoted`` (``operation``, ``primary``, ``old_primary``,
    ``timeline``) is on the master's bus, for a reactor that repoints what the formula does not.

    CLI Example:

    .. code-block:: bash

        salt-run pg_replication.switchover to=standby test=True
        salt-run pg_replication.switchover to=standby
    """
    cluster, old = _start(tgt)
    return _switchover(cluster, old, to, test, max_lag, timeout, stop_timeout)


def _switchover(cluster, old, to, test=False, max_lag=None, timeout=60, stop_timeout=600):
    """The switchover from ``old`` to ``to`` in ``cluster`` (as :func:`switchover` does)."""
    checks, change, steps = _pure("checks.switchover")(cluster, old, to, max_lag)
    stop, plans = _preflight(
        "switchover", cluster, to, change, checks, steps, test, f"switchover {old} -> {to} would run"
    )
    if stop:
        return stop
    done = []
    try:
        created = _create_member_slots(cluster, to, plans[to], done)
        try:
            # While clients still write: the stop's shutdown checkpoint then has little left
            # to flush, and the write pause is shorter (Patroni's demote does the same).
            _call(old, "pg_replication.checkpoint", **cluster.conn(old))
            done.append(f"checkpoint on {old}")
            _pure("handover.pause")(cluster, _call, done)  # clients wait in PgBouncer (issue #29)
            _stop_primary_cleanly(cluster, old, to, timeout, done, stop_timeout)
        except CommandExecutionError:
            for slot in created:  # the primary runs again: leave the standby as it was
                _call(to, "pg_replication.slot_drop", slot, **cluster.conn(to))
            raise
        done.append(_promote(cluster, to, old, "switchover"))
    except CommandExecutionError as exc:
        _pure("handover.resume")(cluster, _call, done)
        return _pure("checks.failure")("switchover", exc, done)
    # Past the point of no return: a step that fails no longer stops the others.
    left = _pure("handover.handover")(cluster, _call, old, to, done, "RESUME")
    left += _follow(cluster, to, change, done, rejoin=[old])
    comment = f"{to} is the primary; {old} and the other members follow it"
    return _pure("checks.finished")("switchover", to, comment, checks, done, left, change)


def _create_member_slots(cluster, primary, plan, done):
    """Before ``primary`` is promoted: the slots its future standbys and Barman stream from
    (``plan``: its plan after the change)."""
    existing = set(_call(primary, "pg_replication.slots", **cluster.conn(primary)))
    created = []
    for slot in sorted(set(plan["served_slots"]) - existing):
        _call(primary, "pg_replication.slot_create", slot, **cluster.conn(primary))
        done.append(f"created slot {slot} on {primary}")
        created.append(slot)
    return created


def _stop_primary_cleanly(cluster, old, to, timeout, done, stop_timeout=600):
    """Stop the primary, then make sure ``to`` has every WAL record it wrote (its shutdown
    checkpoint included); if not, start it again and give up. A service manager that has
    not finished stopping the unit after ``stop_timeout`` seconds is only reported when
    PostgreSQL itself is shut down (its control file says so: it writes nothing more)."""
    plan = cluster.plan_of(old)
    try:
        _call(old, "service.stop", plan["service_name"], limit=stop_timeout)
        unfinished = None
    except CommandExecutionError as exc:
        unfinished = str(exc)
    control = _call(old, "pg_replication.controldata", plan["data_dir"], plan["bin_dir"])
    if control.get("Database cluster state") != "shut down":
        state = control.get("Database cluster state")
        _start_again(old, plan, f"{old} did not shut down cleanly ({state}){'; ' + unfinished if unfinished else ''}")
    checkpoint = _lsn(control["Latest checkpoint location"])
    done.append(f"stopped {old}: shutdown checkpoint at {control['Latest checkpoint location']}")
    if unfinished:
        done.append(f"{old}'s {plan['service_name']} had not finished stopping ({unfinished}); PostgreSQL is shut down")

    lsn = __utils__["pg_replication_postgres.lsn_bytes"]  # the poll runs received() where __utils__ is not packed

    def received():
        return lsn(_call(to, "pg_replication.position", **cluster.conn(to))["lsn"]) > checkpoint

    if not __utils__["pg_replication_poll.until"](received, timeout):
        _start_again(old, plan, f"{to} did not receive {old}'s shutdown checkpoint within {timeout}s")
    done.append(f"{to} received {old}'s shutdown checkpoint")


def _start_again(old, plan, reason):
    """Give up a switchover: start the old primary again and refuse with ``reason``, which
    stays the refusal's first words even when the start itself fails."""
    try:
        _call(old, "service.start", plan["service_name"])
    except CommandExecutionError as exc:
        raise CommandExecutionError(f"{reason}; starting {old} again failed too: {exc}") from exc
    raise CommandExecutionError(f"{reason}; {old} was started again")


def _follow(cluster, primary, change, done, rejoin=()):
    """After ``primary``'s promotion: the formula with the pillar ``change`` on it, then on
    each other standby, each backup host, each former primary in ``rejoin`` (pg_rewind first).
    A step that fails does not stop the others: the steps left, each with its error."""
    left = []

    def step(host, what, action):
        # Asked again just before: a minion that stopped answering since the start would
        # otherwise hold the whole runner for the apply's timeout.
        if host not in cluster.members or not _answering(host, timeout=5):
            left.append(f"{host}: {what}: its minion did not answer")
            return
        try:
            done.append(f"{what}: {action()}")
        except CommandExecutionError as exc:
            left.append(f"{host}: {what}: {exc}")

    step(primary, f"applied on {primary}", lambda: _apply(primary, change) or "no change")
    # The other standbys first: they must not cascade from a former primary while it rejoins.
    for host in cluster.servers():
        if host not in (primary, *rejoin):
            step(host, f"applied on {host}", lambda h=host: _apply_and_wait(cluster, h, primary, change))
    # Barman before the former primaries: while its configuration still names one, `barman
    # cron` starts receive-wal again on that server's slot as soon as it runs as a standby,
    # and the rejoin cannot drop an active slot (seen on Debian 11, Barman 2.12).
    for host in cluster.backup_hosts():
        step(host, f"applied on {host}", lambda h=host: _barman_follows(cluster, h, change))
    for host in rejoin:
        step(host, f"{host} rejoined as a standby of {primary}", lambda h=host: _rejoin(cluster, h, primary, change))
    return left


def _apply_and_wait(cluster, host, primary, change):
    applied = _apply(host, change) or "no change"
    _wait_streaming(cluster, host, cluster.upstream(host, primary))
    return applied


def _barman_follows(cluster, host, change):
    for server in cluster.plan_of(host)["barman_servers"] or ():
        if not server.get("external"):
            _call(host, "barman.receive_wal_stop", server["name"])
    return _apply(host, change) or "no change"


def _preflight(operation, cluster, to, change, checks, steps, test, would):
    """``(the return that stops operation before it changes anything (its checks failed, or
    test), or None; the plans of to and each backup host under the change)``. Once the
    checks on the model pass, the connections the new topology needs are tried too and
    added to ``checks``."""
    plans = {}
    if all(c["ok"] for c in checks):
        hosts = [to, *(h for h in cluster.backup_hosts() if h in cluster.members)]
        try:
            plans = _plans(hosts, change)
        except CommandExecutionError as exc:
            _pure("checks.check")(checks, f"{', '.join(hosts)} plan the new topology", False, str(exc))
        else:
            checks.extend(_new_paths(cluster, to, plans))
    return _pure("checks.preflight")(operation, checks, steps, test, would), plans


def _new_paths(cluster, to, plans):
    """Each connection the topology after the change needs, tried as it will be made before
    anything changes: every server that will stream from ``to`` (its replication role, its
    .pgpass, TLS as it verifies servers, ``to``'s pg_hba line) and each Barman server of
    each backup host (its conninfo and streaming conninfo, as the barman user; ``plans``:
    each backup host's plan after the change)."""
    checks, target = [], cluster.plan_of(to)
    for host in cluster.servers():
        if host == to or host not in cluster.members or cluster.upstream(host, to) != to:
            continue
        plan = cluster.plan_of(host)
        _try(checks, f"{host} reaches {to} as its standby will", host, "pg_replication.primary_system_identifier",
             cluster.hosts[to]["address"], port=target["port"], user=plan["replication"]["user"],
             passfile=f"{plan['home']}/.pgpass", tls=plan.get("peer_tls"), timeout=10)  # fmt: skip
    for host in cluster.backup_hosts():
        if host not in plans:
            continue
        for server in plans[host]["barman_servers"] or ():
            if server.get("external"):
                continue
            for which, replication in WHAT_BARMAN_CONNECTS_WITH:
                if not server.get(which):
                    continue
                name = f"{host} reaches {to} with Barman's {server['name']} {which}"
                # conninfo as a keyword: a positional argument with "=" in it is parsed as one
                _try(checks, name, host, "pg_replication.conninfo_works", conninfo=server[which],
                     replication=replication, os_user="barman")  # fmt: skip
    return checks


def _try(checks, name, minion, fun, *args, **kwargs):
    try:
        _call(minion, fun, *args, **kwargs)
        _pure("checks.check")(checks, name, True)
    except CommandExecutionError as exc:
        _pure("checks.check")(checks, name, False, str(exc))


def _wait_streaming(cluster, host, source, timeout=120, replayed=None):
    """Until ``host`` streams from ``source``, its upstream (and has replayed up to LSN
    ``replayed``)."""
    address = cluster.hosts[source]["address"]
    # The poll runs streaming() where __utils__ is not packed.
    lsn, problems, streams_from = (
        __utils__["pg_replication_postgres.lsn_bytes"],
        _pure("member.problems"),
        _pure("member.streams_from"),
    )

    def streaming():
        server = _member(host, problems)["server"]
        caught_up = replayed is None or lsn(server.get("replay_lsn") or "0/0") >= replayed
        return streams_from(server, address) and caught_up

    if not __utils__["pg_replication_poll.until"](streaming, timeout, interval=2):
        raise CommandExecutionError(f"{host} does not stream from {source} after {timeout}s")


def _rejoin(cluster, host, primary, change):
    """Stop ``host`` if it runs, pg_rewind it from ``primary``, apply the formula as a standby,
    wait until it streams, drop the slots it kept from its time as a primary."""
    plan = cluster.plan_of(host)
    server = _member(host, _pure("member.problems"), change=change)["server"]
    end = server.get("lsn") if server.get("running") else server.get("checkpoint")
    if server.get("running"):
        _call(host, "service.stop", plan["service_name"])
    # pg_rewind learns the new primary's timeline from its control file: checkpoint it first.
    _call(primary, "pg_replication.checkpoint", **cluster.conn(primary))
    config_file = f"{plan['conf_dir']}/postgresql.conf" if plan["conf_dir"] != plan["data_dir"] else None
    rewind = _call(
        host, "pg_replication.rewind", plan["data_dir"], cluster.hosts[primary]["address"], port=plan["port"],
        user=plan["replication"]["user"], passfile=f"{plan['home']}/.pgpass", bin_dir=plan["bin_dir"],
        config_file=config_file, version=plan["version"], tls=plan.get("peer_tls"), timeout=600, limit=3600,
    )  # fmt: skip
    # Rewound as a standby: the watchdog's fence marker (if it fenced itself) has done its job.
    _call(host, "pg_replication.fence_clear")
    _apply(host, change)
    _wait_streaming(cluster, host, cluster.upstream(host, primary))
    return _pure("checks.rejoin_report")(rewind, end, _drop_inactive_slots(cluster, host))


def _drop_inactive_slots(cluster, host):
    """The slots former primary ``host`` kept from its time as a primary, once nothing
    streams from them (they would hold WAL forever): dropped; their names."""
    dropped = []
    for name, slot in _call(host, "pg_replication.slots", **cluster.conn(host)).items():
        if not slot["active"]:
            _call(host, "pg_replication.slot_drop", name, **cluster.conn(host))
            dropped.append(name)
    return dropped


# --------------------------------------------------------------------------- failover


def failover(to=None, fence=False, fenced=False, test=False, tgt="*"):
    """
    The primary is gone: promote the standby that received the most WAL (or ``to``), then
    the other standbys and Barman follow it. Only the primary's own standbys are candidates
    (a cascading standby is behind its upstream). Refused while the old primary still runs as a
    primary, unless ``fence=True``: then it is stopped first. An old primary whose minion
    does not answer may be cut off and still take writes: refused while any standby reaches
    its PostgreSQL port, and unless the operator says it is stopped or powered off
    (``fenced=True``), or, with ``ha:mode: automatic``, the HA engine has seen it cut off from
    the master and a majority of its peers long enough for its watchdog to have fenced it
    (``fence_timeout + fence_margin + 2 * check_interval``); an unanswering minion alone
    never promotes. The old primary, when it comes
    back, is refused by its own highstate; ``salt-run pg_replication.rejoin host=<it>``
    makes it a standby (after the pillar change this runner prints). Before the promotion,
    every connection to the chosen standby that the new topology needs is tried, as with
    the switchover; after it, a failing step leaves the rest to
    ``salt-run pg_replication.follow``. Every PgBouncer is repointed and RECONNECTed, and
    the ``vip`` added on the new primary (removed first from an old primary that answers).
    The event ``salt/pg_replication/promoted`` is fired the moment the standby is promoted,
    as with the switchover.

    CLI Example:

    .. code-block:: bash

        salt-run pg_replication.failover test=True
        salt-run pg_replication.failover
        salt-run pg_replication.failover to=standby2 fence=True
        salt-run pg_replication.failover fenced=True
    """
    clock = _Clock()
    cluster, old = _start(tgt, ping_timeout=FAILOVER_PING_WAIT)
    clock.mark("cluster read")
    reachable = _reaches(cluster, old) if old not in cluster.members else None
    proof = _watchdog_proof(old) if reachable is not None and not fenced else None
    clock.mark("old primary's port tried")
    checks, chosen, alive, change, steps = _pure("checks.failover")(cluster, old, to, fence, fenced, reachable, proof)
    stop, plans = _preflight(
        "failover", cluster, chosen, change, checks, steps, test, f"failover to {chosen} would run"
    )
    if stop:
        return stop
    clock.mark("new paths tried")
    done = []
    try:
        if alive:
            _call(old, "service.stop", cluster.plan_of(old)["service_name"])
            done.append(f"stopped {old}")
        _create_member_slots(cluster, chosen, plans[chosen], done)
        clock.mark("slots made")
        done.append(_promote(cluster, chosen, old, "failover"))
        writable = clock.mark("promoted")
    except CommandExecutionError as exc:
        return _pure("checks.failure")("failover", exc, done)
    answers = cluster.members.pop(old, None) is not None  # it is not touched: rejoin brings it back
    left = _pure("handover.handover")(cluster, _call, old, chosen, done, "RECONNECT", old_answers=answers)
    clock.mark("clients repointed")
    left += [step for step in _follow(cluster, chosen, change, done) if not step.startswith(f"{old}:")]
    clock.mark("members followed")
    comment = f"{chosen} is the primary; run `salt-run pg_replication.rejoin host={old}` when {old} is back"
    out = _pure("checks.finished")("failover", chosen, comment, checks, done, left, change)
    return dict(out, seconds_to_writable_primary=writable, timings=clock.marks)


class _Clock:
    """Seconds since an operation started, at each of its named steps (its ``timings``)."""

    def __init__(self):
        self.started, self.marks = time.monotonic(), {}

    def mark(self, step):
        self.marks[step] = round(time.monotonic() - self.started, 1)
        return self.marks[step]


def _reaches(cluster, host):
    """``{standby: whether it reaches host's PostgreSQL port}`` for each answering standby,
    asked at once through Salt's ``network.connect`` (its own socket timeout 1.5 s, as the
    HA engine's: a LAN answers in milliseconds, a lost SYN is sent again after 1 s)."""
    address, port = cluster.hosts[host]["address"], cluster.plan["port"]
    standbys = [s for s in cluster.servers() if s != host and s in cluster.members]
    # A standby that has not answered in 10 s cannot say the port is closed (it counts as reached).
    answers = _jobs("gather")(_client(), standbys, "network.connect", [address, port], {"timeout": 1.5}, wait=10)
    reached = _pure("checks.port_reached")
    return {standby: reached(answers.get(standby)) for standby in standbys}


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
    cluster, primary = _start(tgt)
    checks, steps = _pure("checks.rejoin")(cluster, host, primary)
    stop = _pure("checks.preflight")("rejoin", checks, steps, test, f"{host} would rejoin as a standby of {primary}")
    if stop:
        return stop
    try:
        report = _rejoin(cluster, host, primary, {})
    except CommandExecutionError as exc:
        return _pure("checks.failure")("rejoin", exc, [])
    return {"result": True, "comment": f"{host} streams from {primary}", "rejoin": report}


def follow(primary, test=False, tgt="*"):
    """
    Finish what a switchover or failover left undone: every member follows ``primary``,
    which must be the one server running as a primary. Each standby and backup host gets
    the formula with the new roles and streams from its upstream; a former primary that
    does not stream from ``primary`` yet is rewound and rejoins. Rerunning it after a
    partial run is safe: what already follows is only checked again.

    CLI Example:

    .. code-block:: bash

        salt-run pg_replication.follow primary=standby2 test=True
        salt-run pg_replication.follow primary=standby2
    """
    cluster = _cluster(tgt)
    checks, change, rejoining, steps = _pure("checks.follow")(cluster, primary)
    stop = _pure("checks.preflight")("follow", checks, steps, test, f"every member would follow {primary}")
    if stop:
        return stop
    done = []
    left = _follow(cluster, primary, change, done, rejoin=rejoining)
    for host in _pure("checks.former_primaries")(cluster, primary):
        if host not in rejoining and host in cluster.members and not any(s.startswith(f"{host}:") for s in left):
            done.append(f"dropped on {host} the slots nothing streams from: {_drop_inactive_slots(cluster, host)}")
    return _pure("checks.finished")("follow", primary, f"every member follows {primary}", checks, done, left, change)


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
    cluster, primary = _start(tgt)
    checks, up = _pure("checks.rolling_restart_checks")(cluster, primary)
    pending = {h: _call(h, "pg_replication.pending_restart", **cluster.conn(h)) for h in up}
    lowered = _call(primary, "pg_replication.lowered_minimums", **cluster.conn(primary)) if primary in up else {}
    order, steps = _pure("checks.restart_order")(cluster, primary, pending, lowered)
    stop = _pure("checks.preflight")("rolling_restart", checks, steps, test, "rolling restart would run")
    if stop:
        return stop
    done = []
    try:
        for host in order:
            _restart_member(cluster, host, primary, timeout, done)
    except CommandExecutionError as exc:
        return _pure("checks.failure")("rolling_restart", exc, done)
    return _pure("checks.succeeded")(f"restarted {', '.join(order) or 'nothing'}", checks, done)


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


# --------------------------------------------------------------------------- minor upgrade


def upgrade_minor(test=False, tgt="*", to=None, max_lag=None, switch_back=None, refresh=True, timeout=300):
    """
    Upgrade every server's PostgreSQL packages (the plan's ``pkgs``: server and client) to
    the repository's newest build of the same major version, one server at a time, with one
    switchover's write pause: each standby (``pkg.install`` of that version, restart,
    streaming again and caught up), then a switchover to an upgraded standby (``to``, or the
    first standby streaming from the primary that is not delayed), then the old primary
    (upgraded, restarted, streaming from the new primary), then, with ``switch_back`` (default
    ``pg_replication:upgrade:switch_back``), a switchover back to it. A server already on the
    newest build is left alone: after a failed step, fix it and run this again.

    Refused, with nothing changed, unless the cluster is healthy: exactly the pillar's primary
    runs, every server runs, each standby streams from its upstream with at most ``max_lag``
    bytes not replayed (default ``pg_replication:switchover:max_lag_bytes``), and the
    switchover's own checks pass. ``test=True`` lists which host goes from which version to
    which and the steps, and changes nothing (``refresh``: the package lists are refreshed
    first, as ``pkg.latest_version`` does). Without the switch back, the return ends with the
    pillar change to make, as a switchover's.

    CLI Example:

    .. code-block:: bash

        salt-run pg_replication.upgrade_minor test=True
        salt-run pg_replication.upgrade_minor
        salt-run pg_replication.upgrade_minor to=standby2 switch_back=True
    """
    cluster, primary = _start(tgt)
    packages, by_name = _pure("upgrade.packages"), _pure("upgrade.by_name")
    installed, latest = {}, {}
    for host in cluster.servers():
        names = packages(cluster.plan_of(host))
        if host not in cluster.members or not names:
            continue
        installed[host] = by_name(names, _call(host, "pkg.version", *names))
        latest[host] = by_name(names, _call(host, "pkg.latest_version", *names, refresh=refresh, timeout=300))
    preflight = _pure("upgrade.preflight")
    checks, moves, order, steps = preflight(cluster, primary, installed, latest, to, max_lag, switch_back)
    stop = _pure("checks.preflight")("upgrade_minor", checks, steps, test, "upgrade_minor would run")
    if stop:
        return dict(stop, upgrades=moves)
    if not order:
        return _pure("checks.succeeded")(steps[0], checks, [], upgrades={})
    # The switchover tries the connections its new topology needs itself, before it changes anything.
    # Called as a plain function: it calls back into this runner (``_call``, ``_switchover``),
    # whose ``__utils__`` is packed in the runner's loader context only, not in the utils'.
    run = _pure("upgrade.run")
    run = getattr(run, "func", run)
    return run(_upgrade_ops(tgt, max_lag), cluster, primary, moves, order, checks, timeout)


def _upgrade_ops(tgt, max_lag):
    """What ``pg_replication_upgrade.run`` does through the minions."""

    def position(cluster, host):
        return _call(host, "pg_replication.position", **cluster.conn(host))["lsn"]

    def cluster_as(change):
        answers = _client().cmd(
            _answering(tgt), "pg_replication.member", kwarg={"change": change}, timeout=20, full_return=True,
            tgt_type="list",
        )  # fmt: skip
        cluster = _pure("cluster.from_answers")(answers)
        if cluster is None:
            raise CommandExecutionError(f"no minion matching {tgt!r} answered with a pg_replication pillar")
        return cluster

    return types.SimpleNamespace(
        call=_call,
        position=position,
        wait_streaming=_wait_streaming,
        switchover=lambda cluster, old, new: _switchover(cluster, old, new, max_lag=max_lag),
        cluster=cluster_as,
    )


# --------------------------------------------------------------------------- one lock, HA


def _lock_path():
    return __utils__["pg_replication_lock.path"](__opts__["cachedir"])


def _locked(operation):
    """``operation`` (a day-2 operation of this runner) run under the cluster's one lock
    (``pg_replication_lock``): refused, nothing changed, while another operation or the HA
    engine holds it."""

    @functools.wraps(operation)
    def locked(*args, **kwargs):
        def refused(holder):
            checks = []
            _pure("checks.check")(checks, "no other day-2 operation holds the cluster", False, holder)
            return _pure("checks.refused")(operation.__name__, checks, [])

        # The operation runs here, not inside a function of __utils__ (whose loader context
        # has no __utils__ of its own).
        release, holder = __utils__["pg_replication_lock.acquire"](_lock_path(), operation.__name__)
        if release is None:
            return refused(holder)
        try:
            return operation(*args, **kwargs)
        finally:
            release()

    return locked


switchover = _locked(switchover)
failover = _locked(failover)
rejoin = _locked(rejoin)
follow = _locked(follow)
rolling_restart = _locked(rolling_restart)
upgrade_minor = _locked(upgrade_minor)


def _watchdog_proof(old):
    """``(ok, detail)``: whether ``old``'s own watchdog has surely fenced it, from the HA
    engine's state on this master (``pg_replication_ha_proof``)."""
    state = __utils__["pg_replication_ha.read_state"](__opts__["cachedir"])
    return _pure("ha_proof.watchdog_fenced")(state, old, time.time())


# --------------------------------------------------------------------------- major upgrade


def upgrade_major(to, test=False, tgt="*", mode=None, max_lag=None, timeout=300):
    """
    Upgrade the cluster to PostgreSQL ``to`` (a major version) with ``pg_upgrade``: the
    standbys stopped, the primary stopped cleanly, a new cluster made with the formula's
    initdb options and ``pg_upgrade --link`` or ``--clone`` into it (``mode``, default
    ``pg_replication:upgrade:major_mode``), the formula applied on the primary with the new
    version (it starts: writes resume), ``vacuumdb --analyze-in-stages``, then each standby
    re-created on the new version by the formula's bootstrap (pg_basebackup from the new
    primary, on its slot). The old clusters stay, stopped and not started at boot, until
    the operator removes them. Until the new primary starts, a failed step is undone and
    the old cluster runs as before. The backup host is left alone: the pillar change gives
    the new system a Barman server of its own (``barman:server_name``), which the highstate
    then sets up with its first backup.

    Refused, with nothing changed, unless: exactly the pillar's primary runs, every server
    runs and each standby streams with at most ``max_lag`` bytes not replayed, ``to`` is
    newer than ``pg_replication:version``, its binaries are on every server, the new data
    directories are empty, each server has the free space, every installed extension is
    there for ``to``, every column option in use is one ``to`` knows (pg_upgrade's schema
    restore sets them again), each backup host holds a DONE backup of the cluster's Barman
    server younger than ``pg_replication:barman:backup_max_age``, and ``pg_upgrade --check``
    passes on the primary. ``test=True`` runs
    these checks (pg_upgrade --check included, on a throw-away cluster) and lists the
    steps. The return ends with the pillar change (``pg_replication:version``, and with
    Barman ``barman:server_name``) and the measured seconds without writes.

    CLI Example:

    .. code-block:: bash

        salt-run pg_replication.upgrade_major to=18 test=True
        salt-run pg_replication.upgrade_major to=18
        salt-run pg_replication.upgrade_major to=18 mode=clone
    """
    cluster, primary = _start(tgt)
    problems = _pure("member.problems")
    new_plans = {
        host: _member(host, problems, change={"version": int(to)})["plan"]
        for host in cluster.servers()
        if host in cluster.members
    }
    facts = {
        host: _call(
            host, "pg_replication.upgrade_facts", cluster.plan_of(host)["data_dir"], plan["bin_dir"], plan["data_dir"]
        )  # fmt: skip
        for host, plan in new_plans.items()
    }
    backups = _barman_backups(cluster)
    preflight = functools.partial(_pure("upgrade_major.preflight"), backups=backups, now=time.time())
    checks, steps = preflight(cluster, primary, to, new_plans, facts, None, None, mode, max_lag)
    # The checks on the primary's server need it running with the new binaries there.
    if all(c["ok"] for c in checks):
        old, new = cluster.plan_of(primary), new_plans[primary]
        missing = _call(primary, "pg_replication.extensions_missing", int(to), **cluster.conn(primary))
        column_options = _call(primary, "pg_replication.column_options", **cluster.conn(primary))
        upgrade_check = _call(
            primary, "pg_replication.upgrade_check", old["bin_dir"], new["bin_dir"], old["data_dir"],
            f"{old['conf_dir']}/postgresql.conf", new["initdb_command"], int(to), port=old["port"],
            socket_dir=old["socket_dir"], home=old["home"], mode=_pure("upgrade_major.mode_of")(cluster, mode),
            options=_pure("upgrade_major.option_names")(column_options), timeout=600,
        )  # fmt: skip
        checks, steps = preflight(cluster, primary, to, new_plans, facts, upgrade_check, missing, mode, max_lag,
                                  column_options)  # fmt: skip
    stop = _pure("checks.preflight")("upgrade_major", checks, steps, test, f"upgrade_major to {to} would run")
    if stop:
        return stop
    run = _pure("upgrade_major.run")
    run = getattr(run, "func", run)
    ops = types.SimpleNamespace(call=_call, apply=_apply, wait_streaming=_wait_streaming, now=time.monotonic)
    return run(ops, cluster, primary, to, new_plans, checks, mode, timeout)


upgrade_major = _locked(upgrade_major)


def _barman_backups(cluster):
    """``{backup host: its barman.list_backups of the cluster's Barman server, or None when
    it did not answer}``; None when the cluster has no Barman server."""
    name = cluster.barman_server_name()
    if name is None:
        return None
    out = {}
    for host in cluster.backup_hosts():
        try:
            out[host] = _call(host, "barman.list_backups", name, timeout=60) if host in cluster.members else None
        except CommandExecutionError:
            out[host] = None
    return out
