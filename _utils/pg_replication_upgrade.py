# SPDX-License-Identifier: Apache-2.0
"""A minor-release upgrade of the cluster's PostgreSQL packages, one server at a time
(``salt-run pg_replication.upgrade_minor``): what is installed and what the repository
offers on each server, whether the cluster is healthy enough to start, the order of the
steps, and their run.

The order: each standby (its PostgreSQL packages upgraded to the repository's newest
build of the same major, restarted, streaming again and caught up), then a switchover to
an upgraded standby, then the old primary (upgraded, restarted, streaming from the new
primary), then, with ``pg_replication:upgrade:switch_back``, a switchover back. Clients
see one switchover's write pause (two with the switch back); a server already on the
newest build is left alone, so a run that stopped half-way is finished by running it
again.

The runner asks the minions; this module decides from their answers and runs the steps
through the callables the runner passes in (``ops``: ``call``, ``wait_streaming``,
``position``, ``switchover``, ``cluster``), so it is tested without minions. Runs on the
master's Python.
"""

import os
import runpy

from salt.exceptions import CommandExecutionError

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
checks_util = _sibling("pg_replication_checks")
cluster_model = _sibling("pg_replication_cluster")
member = _sibling("pg_replication_member")
postgres = _sibling("pg_replication_postgres")

check = checks_util.check
FORMULA = cluster_model.FORMULA
# The packages of a server that a minor upgrade moves: the server's and its client's (the
# plan's ``pkgs``); the others (Barman's, PgBouncer's...) are left to their own states.
SERVER_PACKAGES = ("server", "client")


def packages(plan):
    """The PostgreSQL package names of the server of ``plan`` (``postgresql-15``,
    ``postgresql-client-15`` on Debian)."""
    pkgs = (plan or {}).get("pkgs") or {}
    return [pkgs[key] for key in SERVER_PACKAGES if pkgs.get(key)]


def by_name(names, answer):
    """``pkg.version`` / ``pkg.latest_version``'s answer as ``{name: version}``: Salt gives a
    string for one name, a dict for several; "" for none."""
    if isinstance(answer, dict):
        return {name: answer.get(name) or "" for name in names}
    return {names[0]: answer or ""} if len(names) == 1 else dict.fromkeys(names, "")


def upgrades(installed, latest):
    """``{host: {package: {"old": version, "new": version}}}`` for the packages whose
    repository holds a newer build (``latest``: ``pkg.latest_version``, "" when the
    installed one is the newest); hosts with nothing to upgrade are left out."""
    out = {}
    for host, names in sorted(installed.items()):
        moves = {
            name: {"old": old, "new": latest.get(host, {}).get(name)}
            for name, old in sorted(names.items())
            if old and latest.get(host, {}).get(name) and latest[host][name] != old
        }
        if moves:
            out[host] = moves
    return out


def describe(host, moves):
    return f"{host}: " + ", ".join(f"{name} {v['old']} -> {v['new']}" for name, v in sorted(moves.items()))


# --------------------------------------------------------------------------- checks


def target(cluster, primary, to=None):
    """The standby to switch over to: ``to``, or the first standby (sorted) that streams
    from the primary itself (no cascade) and is not delayed."""
    if to:
        return to
    for host in cluster.servers():
        if host == primary or cluster.upstream(host, primary) != primary:
            continue
        if checks_util.apply_delay(cluster, host) == 0:
            return host
    return None


def streaming_health(cluster, primary, max_lag=None, delayed_lag=False):
    """The checks before an upgrade changes anything: exactly the pillar's primary runs;
    every server runs, each standby streams from its upstream and has at most ``max_lag``
    bytes of the primary's WAL not replayed (a delayed standby only with ``delayed_lag``:
    else it lags by design). Shared by the minor and the major upgrade."""
    max_lag = int(
        max_lag if max_lag is not None else (cluster.plan.get("switchover") or {}).get("max_lag_bytes", 16 << 20)
    )
    checks = []
    running = cluster.running_primaries()
    check(checks, f"exactly one primary runs, the pillar's ({primary})", running == [primary],
          f"running: {running or 'none'}")  # fmt: skip
    down = [h for h in cluster.servers() if not (cluster.server(h) or {}).get("running")]
    check(checks, "every server runs", not down, f"not running: {down}" if down else "")
    head = (cluster.server(primary) or {}).get("lsn") if primary in running else None
    for host in cluster.servers():
        if host == primary or host in down:
            continue
        server, source = cluster.server(host), cluster.upstream(host, primary)
        streaming = member.streams_from(server, cluster.hosts[source]["address"])
        check(checks, f"{host} streams from {source}", streaming, f"receiver: {server.get('receiver') or 'none'}")
        if not delayed_lag and checks_util.apply_delay(cluster, host) != 0:
            continue  # a delayed standby lags by design
        lag = postgres.lsn_bytes(head) - postgres.lsn_bytes(server.get("replay_lsn") or server["lsn"]) if head else None
        check(checks, f"{host} is at most {max_lag} bytes behind (WAL not replayed)",
              lag is not None and lag <= max_lag, f"{lag} bytes behind")  # fmt: skip
    return checks


def health(cluster, primary, installed, max_lag=None):
    """:func:`streaming_health`, then each server's packages installed (``installed``:
    ``{host: {package: version}}``)."""
    checks = streaming_health(cluster, primary, max_lag)
    for host in cluster.servers():
        missing = sorted(name for name, version in (installed.get(host) or {}).items() if not version)
        check(checks, f"{host} has its PostgreSQL packages installed", installed.get(host) and not missing,
              f"not installed: {missing or packages(cluster.plan_of(host))}")  # fmt: skip
    return checks


def preflight(cluster, primary, installed, latest, to=None, max_lag=None, switch_back=None):
    """``(checks, moves, order, steps)`` of a minor upgrade: ``moves`` from :func:`upgrades`,
    ``order`` the actions (``("upgrade", host)``, ``("switchover", old, new)``) and
    ``steps`` the same as lines for the operator."""
    checks = health(cluster, primary, installed, max_lag)
    moves = upgrades(installed, latest)
    if switch_back is None:
        switch_back = bool((cluster.plan.get("upgrade") or {}).get("switch_back"))
    order, steps = [], []
    if not moves:
        return checks, moves, order, ["every server has the newest PostgreSQL packages of the repository"]
    standbys = [h for h in cluster.servers() if h != primary and h in moves]
    # Upstream standbys before the standbys that cascade from them.
    standbys.sort(key=lambda h: (cluster.upstream(h, primary) != primary, h))
    for host in standbys:
        order.append(("upgrade", host))
        steps.append(f"upgrade {describe(host, moves[host])}; restart; wait until it streams and caught up")
    if primary in moves:
        new = target(cluster, primary, to)
        ok = bool(new) and new in cluster.servers() and new != primary
        check(checks, f"an upgraded standby can take over from {primary}", ok,
              f"switchover target: {new or 'none (a standby streaming from the primary, not delayed)'}")  # fmt: skip
        if ok:
            switch_checks, change, _ = checks_util.switchover(cluster, primary, new, max_lag)
            checks.extend(switch_checks)
            order += [("switchover", primary, new), ("upgrade", primary)]
            steps.append(f"switchover {primary} -> {new} (salt-run {FORMULA}.switchover to={new})")
            steps.append(f"upgrade {describe(primary, moves[primary])}; restart; wait until it streams from {new}")
            if switch_back:
                order.append(("switchover", new, primary))
                steps.append(f"switchover {new} -> {primary} ({FORMULA}:upgrade:switch_back)")
            else:
                steps.append("then change the pillar: " + ", ".join(cluster_model.pillar_change(change)))
    return checks, moves, order, steps


# --------------------------------------------------------------------------- the run


def upgrade_server(ops, cluster, host, primary, moves, timeout):
    """Upgrade ``host``'s packages (standby), restart it, wait until it streams from its
    upstream and has replayed what the primary had written when it came back; check the
    installed versions. Its line for ``done``."""
    names = sorted(moves)
    plan = cluster.plan_of(host)
    # Debian's maintainer scripts stop the cluster and start it again; the restart after makes
    # sure it runs the new binaries on every platform.
    ops.call(host, "pkg.install", pkgs=[{name: moves[name]["new"]} for name in names], refresh=False,
             timeout=600, limit=1800)  # fmt: skip
    ops.call(host, "service.restart", plan["service_name"], timeout=600)
    head = postgres.lsn_bytes(ops.position(cluster, primary))
    ops.wait_streaming(cluster, host, cluster.upstream(host, primary), timeout, head)
    now = by_name(names, ops.call(host, "pkg.version", *names))
    wrong = {n: now[n] for n in names if now[n] != moves[n]["new"]}
    if wrong:
        raise CommandExecutionError(f"{host}: after the upgrade: {wrong}")
    return f"upgraded {describe(host, moves)}; it streams from {cluster.upstream(host, primary)} and caught up"


def run(ops, cluster, primary, moves, order, checks, timeout=300):
    """Run ``order`` (:func:`preflight`); the runner's return. A step that fails stops the
    run: the return says what was done, and running it again finishes it (upgraded servers
    are left alone)."""
    done, change, current, started = [], {}, primary, cluster
    for action in order:
        try:
            if action[0] == "upgrade":
                done.append(upgrade_server(ops, cluster, action[1], current, moves[action[1]], timeout))
                continue
            old, new = action[1], action[2]
            # Where every member stands now, after the standbys' restarts.
            cluster = ops.cluster(change)
            ret = ops.switchover(cluster, old, new)
            done.append(f"switchover {old} -> {new}: {ret.get('comment')}")
            if not ret.get("result"):
                return _stopped(ret, done, moves, checks)
            done.extend(f"  {line}" for line in ret.get("done") or ())
            change = _net_change(started, primary, new)
            current = new
            # The cluster as the runner sees it now: the pillar with the change, the new primary.
            cluster = ops.cluster(change)
        except CommandExecutionError as exc:
            return _stopped({"comment": str(exc)}, done, moves, checks)
    comment = f"every server runs the newest PostgreSQL packages of the repository; {current} is the primary"
    return checks_util.succeeded(
        comment, checks, done, upgraded=moves, pillar_change=cluster_model.pillar_change(change)
    )


def _net_change(cluster, primary, current):
    """The pillar change that makes ``current`` the primary (none when it is ``primary``)."""
    if current == primary:
        return {}
    return cluster_model.change(cluster, {primary: "standby", current: "primary"})


def _stopped(ret, done, moves, checks):
    out = checks_util.failed(
        f"upgrade_minor stopped: {ret.get('comment')}. Fix it, then run "
        f"`salt-run {FORMULA}.upgrade_minor` again (upgraded servers are left alone).",
        checks, done, upgrades=moves,
    )  # fmt: skip
    for key in ("left", "finish", "pillar_change"):
        if ret.get(key):
            out[key] = ret[key]
    return out
