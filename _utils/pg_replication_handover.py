# SPDX-License-Identifier: Apache-2.0
"""What the runners do for the clients when the primary changes (issue #29): PgBouncer
paused on every pooler before the old primary stops, then repointed and resumed (a
switchover) or reconnected (a failover); the VIP removed from the old primary before it is
added on the new one.

The runner passes its ``call(minion, function, *args, **kwargs)`` (its return, or
CommandExecutionError); the cluster is ``pg_replication_cluster.Cluster``. Runs on the
master's Python.
"""

from salt.exceptions import CommandExecutionError


def _routing(cluster):
    return cluster.plan.get("routing") or {}


def _poolers(cluster):
    return _routing(cluster).get("poolers") or []


def _admin(cluster, pooler):
    """Where ``pooler``'s admin console is: its port and socket directory."""
    plan = cluster.plan_of(pooler["id"]) or cluster.plan
    return {"port": pooler["port"], "socket_dir": plan["socket_dir"]}


def pause(cluster, call, done):
    """PAUSE every pooler, each with a bounded wait (``pooler:pause_wait``): PAUSE returns
    once their server connections are released (each running transaction ended; in
    pool_mode session, each client gone), and holds new queries until RESUME. A database
    still busy after the wait is KILLed (its clients disconnected, as the old primary's stop
    would). Raises if one fails."""
    wait = int((cluster.plan.get("pooler") or {}).get("pause_wait", 5))
    for pooler in _poolers(cluster):
        paused = call(pooler["id"], "pg_replication.pooler_pause", wait=wait, timeout=60, **_admin(cluster, pooler))
        killed = (paused or {}).get("killed") or []
        done.append(
            f"paused PgBouncer on {pooler['id']}"
            + (f" (after {wait}s, killed the clients of {', '.join(killed)})" if killed else "")
        )


def resume(cluster, call, done):
    """RESUME every pooler (after a switchover that stopped before the promotion); a pooler
    that was not paused says so, which is not an error here."""
    for pooler in _poolers(cluster):
        try:
            call(pooler["id"], "pg_replication.pooler_admin", "RESUME", **_admin(cluster, pooler))
            done.append(f"resumed PgBouncer on {pooler['id']}")
        except CommandExecutionError as exc:
            done.append(f"PgBouncer on {pooler['id']}: {exc}")


def handover(cluster, call, old, new, done, then, old_answers=True):
    """Once ``new`` is promoted: every pooler pointed at it (or the VIP) and told ``then``
    (RESUME after a switchover's PAUSE, RECONNECT after a failover), then the VIP removed
    from ``old`` (when its minion answers: a fenced or dead one has dropped it) and added on
    ``new``. A step that fails does not stop the others: the steps left, with their error."""
    routing, left = _routing(cluster), []
    target = routing.get("vip") if routing.get("target") == "vip" else cluster.hosts[new]["address"]
    for pooler in _poolers(cluster):
        plan = cluster.plan_of(pooler["id"])
        try:
            if plan is None:
                raise CommandExecutionError("its minion did not answer")
            ini = plan["routing"]["files"]["ini"]
            call(pooler["id"], "pg_replication.pooler_repoint", ini, target, plan["port"], then=then,
                 **_admin(cluster, pooler))  # fmt: skip
            done.append(f"PgBouncer on {pooler['id']} points at {target}: {then}")
        except CommandExecutionError as exc:
            left.append(f"{pooler['id']}: PgBouncer to {target} and {then}: {exc}")
    if routing.get("vip"):
        _move_vip(cluster, call, routing, old if old_answers else None, new, done, left)
    return left


def _move_vip(cluster, call, routing, old, new, done, left):
    vip, prefix = routing["vip"], routing["vip_prefix"]
    try:
        if old is not None:
            call(old, "pg_replication.vip_remove", vip, prefix)
            done.append(f"removed {vip} from {old}")
        added = call(new, "pg_replication.vip_add", vip, prefix, cluster.hosts[new]["address"])
        done.append(f"{vip} on {new} ({added['interface']}), announced by gratuitous ARP")
    except CommandExecutionError as exc:
        left.append(f"{new}: {vip}: {exc}")
