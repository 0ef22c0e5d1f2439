# SPDX-License-Identifier: Apache-2.0
"""What each day-2 operation of the runners checks before it changes anything, the steps it
would take, what it returns, and the rows of the cluster's status: all read from the
cluster model (``pg_replication_cluster``) and the plain answers the runner passes in.

A check is ``{"check": name, "ok": bool, "detail": text}``; the runner stops, changing
nothing, when one fails (:func:`preflight`). Pure logic; runs on the master's Python.
"""

import os
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
postgres = _sibling("pg_replication_postgres")
member = _sibling("pg_replication_member")
cluster_model = _sibling("pg_replication_cluster")
settings_util = _sibling("pg_replication_settings")

FORMULA = cluster_model.FORMULA
lsn = postgres.lsn_bytes


# --------------------------------------------------------------------------- returns


def check(checks, name, ok, detail=""):
    checks.append({"check": name, "ok": bool(ok), "detail": detail})


def refused(operation, checks, steps):
    failed = [f"{c['check']} ({c['detail']})" for c in checks if not c["ok"]]
    return {
        "result": False,
        "retcode": 1,  # salt-run's exit code
        "comment": f"{operation} refused, nothing changed: " + "; ".join(failed),
        "checks": checks,
        "steps": steps,
    }


def preflight(operation, checks, steps, test, would):
    """What an operation returns before changing anything: refused when a check failed, the
    checks and steps with ``test=True``; None when it goes on."""
    if not all(c["ok"] for c in checks):
        return refused(operation, checks, steps)
    if test:
        return {"result": None, "comment": would, "checks": checks, "steps": steps}
    return None


def succeeded(comment, checks, done, **more):
    return {"result": True, "comment": comment, "checks": checks, "done": done, **more}


def failed(comment, checks, done, **more):
    """What an operation returns when it changed something and then failed (salt-run exits 1)."""
    return {"result": False, "retcode": 1, "comment": comment, "checks": checks, "done": done, **more}


def finished(operation, primary, comment, checks, done, left, change):
    """What an operation returns once ``primary`` was promoted: succeeded, or, with steps
    ``left`` (each with its error), failed with the new primary writable and the command
    that finishes the rest once they are fixed."""
    lines = cluster_model.pillar_change(change)
    if not left:
        return succeeded(comment, checks, done, pillar_change=lines)
    finish = f"salt-run pg_replication.follow primary={primary}"
    comment = (
        f"{operation}: {primary} is the primary and takes writes, but {len(left)} step(s) failed: "
        + "; ".join(left)
        + f". Fix them, then run `{finish}` to finish."
    )
    return failed(comment, checks, done, left=left, finish=finish, pillar_change=lines)


def failure(operation, exc, done):
    """What an operation returns when step ``exc`` (an exception) failed after ``done``."""
    return {"result": False, "retcode": 1, "comment": f"{operation} failed: {exc}", "done": done}


# --------------------------------------------------------------------------- shared checks


def apply_delay(cluster, host):
    """The seconds ``host`` (a delayed standby) waits before it replays a commit: its
    ``hosts:<id>:settings:recovery_min_apply_delay``; 0 for none, None unreadable."""
    return settings_util.apply_delay_seconds((cluster.hosts.get(host) or {}).get("settings"))


def not_delayed(checks, cluster, host):
    """A delayed standby is never promoted: it lags by design (its delay protects against a
    bad write, which a promotion would replay once it is due)."""
    delay = apply_delay(cluster, host)
    check(checks, f"{host} is not a delayed standby", delay == 0,
          f"recovery_min_apply_delay: {delay} s" if delay != 0 else "no apply delay")  # fmt: skip


def no_cascade_from(checks, cluster, old):
    """A standby that names the old primary as its upstream would cascade from it while it
    rejoins (or forever, if it is gone): the pillar must stop naming it first."""
    cascading = cluster.cascading_from(old)
    fix = f"remove {FORMULA}:hosts:<host>:upstream: {old} from {', '.join(cascading)} first" if cascading else ""
    check(checks, f"no standby names {old} as its upstream", not cascading, fix)


def capacity(checks, cluster, to, target):
    """The new primary serves every other server and each Barman server (two connections)."""
    others = len(cluster.servers()) - 1
    backups = len(cluster.backup_hosts())
    senders, slots = others + 2 * backups, others + backups
    check(
        checks,
        f"{to} has the WAL senders and slots the new topology needs ({senders} and {slots})",
        (target.get("max_wal_senders") or 0) >= senders and (target.get("max_replication_slots") or 0) >= slots,
        f"max_wal_senders={target.get('max_wal_senders')} max_replication_slots={target.get('max_replication_slots')}",
    )


# --------------------------------------------------------------------------- switchover


def switchover(cluster, old, to, max_lag=None):
    """A switchover from ``old`` to ``to``: ``(checks, change, steps)``. ``max_lag`` (None:
    the pillar's ``switchover:max_lag_bytes``, 16 MiB) bounds the WAL ``to`` has not replayed."""
    max_lag = int(
        max_lag if max_lag is not None else (cluster.plan.get("switchover") or {}).get("max_lag_bytes", 16 << 20)
    )
    checks = switchover_checks(cluster, old, to, max_lag)
    change = cluster_model.change(cluster, {old: "standby", to: "primary"})
    return checks, change, switchover_steps(cluster, old, to, change)


def switchover_checks(cluster, old, to, max_lag):
    checks = []
    running = cluster.running_primaries()
    check(checks, f"exactly one primary runs, the pillar's ({old})", running == [old], f"running: {running or 'none'}")
    check(checks, f"{to} is a standby in the pillar", cluster.role(to) == "standby", f"{to}: {cluster.role(to)}")
    not_delayed(checks, cluster, to)
    target = cluster.server(to) or {}
    receiver = target.get("receiver") or {}
    slot = (cluster.hosts.get(to) or {}).get("slot")
    streaming = member.streams_from(target, cluster.hosts[old]["address"]) and receiver.get("slot_name") == slot
    check(checks, f"{to} streams from {old} on its slot", streaming, f"receiver: {receiver or 'none'}")
    lag = None
    if streaming and old in running:
        # What it has still to replay before it can be promoted (received or not).
        lag = lsn(cluster.server(old)["lsn"]) - lsn(target["replay_lsn"] or target["lsn"])
    check(checks, f"{to} is at most {max_lag} bytes behind (WAL not replayed)",
          lag is not None and lag <= max_lag, f"{lag} bytes behind")  # fmt: skip
    primary = cluster.server(old) or {}
    check(
        checks,
        f"pg_rewind can rejoin {old} (wal_log_hints or data checksums)",
        "on" in (primary.get("wal_log_hints"), primary.get("data_checksums")),
        f"wal_log_hints={primary.get('wal_log_hints')} data_checksums={primary.get('data_checksums')}",
    )
    capacity(checks, cluster, to, target)
    no_cascade_from(checks, cluster, old)
    return checks


def switchover_steps(cluster, old, to, change):
    standbys = [h for h in cluster.servers() if h not in (old, to)]
    return [
        f"create on {to} the slots of {', '.join(sorted(set(cluster.servers()) - {to}) + cluster.backup_hosts())}",
        f"stop {old} cleanly and wait until {to} has received its shutdown checkpoint",
        f"promote {to}",
        f"apply {FORMULA} on {to} as primary",
        *[f"apply {FORMULA} on {h}: it follows {to}" for h in standbys],
        f"pg_rewind {old} from {to}, apply {FORMULA} on it as a standby, drop its old slots",
        *[f"stop receive-wal on {h}, apply {FORMULA}: Barman streams from {to}" for h in cluster.backup_hosts()],
        "then change the pillar: " + ", ".join(cluster_model.pillar_change(change)),
    ]


# --------------------------------------------------------------------------- failover


def failover(cluster, old, to=None, fence=False, fenced=False, reachable=None, proof=None):
    """A failover away from ``old`` (to ``to``, or the candidate that received the most WAL):
    ``(checks, chosen, alive, change, steps)``; ``alive``: ``old`` still runs as a primary.
    ``reachable``, when ``old``'s minion did not answer: ``{standby: whether it reached
    old's PostgreSQL port}``; ``fenced``: the operator says ``old`` is stopped or off;
    ``proof``: ``(ok, detail)`` of ``pg_replication_ha_proof.watchdog_fenced``, whether its
    own watchdog has surely fenced it."""
    checks = []
    alive = old in cluster.running_primaries()
    check(checks, f"the old primary {old} does not run as a primary", not alive or fence,
          "it runs: pass fence=True to stop it first" if alive else "down or unreachable")  # fmt: skip
    if old not in cluster.members:
        unreachable(checks, old, fenced, reachable or {}, proof)
    candidates = failover_candidates(cluster, old)
    chosen = to or (max(candidates, key=candidates.get) if candidates else None)
    check(checks, "a running standby to promote", chosen in candidates,
          f"candidates (received WAL): {candidates}; chosen: {chosen}")  # fmt: skip
    others = [h for h in cluster.running_primaries() if h != old]
    check(checks, "no other primary runs", not others, f"running primaries: {others}")
    pillar_matches_the_streams(checks, cluster, old)
    no_cascade_from(checks, cluster, old)
    if chosen in candidates:
        capacity(checks, cluster, chosen, cluster.server(chosen))
    if chosen:
        not_delayed(checks, cluster, chosen)
    change = cluster_model.change(cluster, {old: "standby", chosen: "primary"} if chosen else {})
    steps = [
        *([f"stop {old} (fence)"] if alive else []),
        f"create on {chosen} the slots of every other member",
        f"promote {chosen}",
        f"apply {FORMULA} with the new roles on {chosen}, the other standbys and the backup hosts",
        f"later, when {old} is back: salt-run pg_replication.rejoin host={old}",
    ]
    return checks, chosen, alive, change, steps


def port_reached(answer):
    """Whether a minion's full answer to ``network.connect`` says the port was reached. A
    closed or silent port is ``result: False`` (which Salt also gives retcode 1); no answer,
    or any other, counts as reached: it cannot say the port is closed."""
    ret = answer.get("ret") if isinstance(answer, dict) else None
    return not (isinstance(ret, dict) and ret.get("result") is False)


def unreachable(checks, old, fenced, reachable, proof=None):
    """An old primary whose minion does not answer may be cut off and still take writes:
    no standby may reach its PostgreSQL port, and it must be fenced: the operator says so,
    or (``proof``) the HA engine measured it cut off long enough for its watchdog to fence
    it."""
    reached = sorted(h for h, ok in reachable.items() if ok)
    check(checks, f"no standby reaches {old}'s PostgreSQL port", reachable and not reached,
          f"reached from {', '.join(reached)}: it runs" if reached else
          ("no standby answered" if not reachable else f"tried from {', '.join(sorted(reachable))}"))  # fmt: skip
    by_watchdog, why = proof or (False, None)
    if fenced:
        detail = "the operator says so (fenced=True)"
    elif by_watchdog:
        detail = why
    else:
        detail = f"cut off, it may still take writes: stop or power off {old}, then pass fenced=True"
        detail += f"; not known fenced by its watchdog: {why}" if why else ""
    check(checks, f"{old} is fenced (its minion does not answer)", fenced or by_watchdog, detail)


def pillar_matches_the_streams(checks, cluster, old):
    """A failover away from ``old`` only when the running servers agree with the pillar
    that it was the primary: ``old`` does not run as a standby, and every standby that
    streams does so from the server the pillar names (``old``, or its upstream). Otherwise
    another server, maybe one whose minion does not answer, is the primary the standbys
    follow: promoting one of them would make two."""
    server = cluster.server(old) or {}
    check(checks, f"{old} does not run as a standby", not (server.get("running") and server.get("in_recovery")),
          f"it runs in recovery: the pillar does not name the running primary; see salt-run {FORMULA}.cluster_status"
          if server.get("running") and server.get("in_recovery") else "not in recovery")  # fmt: skip
    address_of = {spec.get("address"): host for host, spec in cluster.hosts.items()}
    astray = []
    for host in cluster.servers():
        server = cluster.server(host)
        if host == old or not member.streams_from(server):
            continue
        source = cluster.upstream(host, old)
        if not member.streams_from(server, cluster.hosts[source]["address"]):
            sender = server["receiver"]["sender_host"]
            astray.append(f"{host} streams from {address_of.get(sender, sender)}, not {source}")
    check(checks, "every streaming standby streams from the server the pillar names", not astray,
          "; ".join(astray) or "they do")  # fmt: skip


def failover_candidates(cluster, old):
    """The old primary's own running standbys (a cascading standby is behind its upstream;
    a delayed standby lags by design), each with the WAL it received, in bytes."""
    return {
        h: lsn(cluster.server(h)["lsn"])
        for h in cluster.servers()
        if h != old
        and cluster.upstream(h, old) == old
        and apply_delay(cluster, h) == 0
        and (cluster.server(h) or {}).get("running")
        and cluster.server(h)["in_recovery"]
    }


def follow(cluster, primary):
    """Every member follows ``primary``, the one running primary: ``(checks, change,
    rejoining, steps)``; ``rejoining``: the pillar's former primaries that do not stream
    from it yet (pg_rewind first)."""
    checks, running = [], cluster.running_primaries()
    check(checks, f"{primary} is the one server running as a primary", running == [primary],
          f"running: {running or 'none'}")  # fmt: skip
    roles = dict.fromkeys(former_primaries(cluster, primary), "standby")
    change = cluster_model.change(cluster, {**roles, primary: "primary"})
    rejoining = [
        h for h in sorted(roles) if not member.streams_from(cluster.server(h), cluster.hosts[primary]["address"])
    ]
    steps = [
        f"apply {FORMULA} with the new roles on {primary}, each other standby and each backup host",
        *[f"pg_rewind {h} from {primary}, apply {FORMULA} on it as a standby" for h in rejoining],
        "then change the pillar: " + ", ".join(cluster_model.pillar_change(change)),
    ]
    return checks, change, rejoining, steps


def former_primaries(cluster, primary):
    """The servers the pillar still makes the primary, other than ``primary``."""
    return [h for h in cluster.servers() if cluster.role(h) == "primary" and h != primary]


# --------------------------------------------------------------------------- rejoin


def rejoin(cluster, host, primary):
    """The rejoin of former primary ``host`` as a standby of ``primary``: ``(checks, steps)``."""
    checks = []
    check(checks, f"{host} is a standby in the pillar", cluster.role(host) == "standby",
          f"{host}: {cluster.role(host)}; change the pillar first")  # fmt: skip
    check(checks, f"{host}'s minion answers", host in cluster.members, "" if host in cluster.members else "no answer")
    running = cluster.running_primaries()
    check(checks, f"the pillar's primary {primary} runs as a primary", primary in running, f"running: {running}")
    streaming = member.streams_from(cluster.server(host))
    check(checks, f"{host} is not already a streaming standby", not streaming, "it streams" if streaming else "")
    steps = [f"stop {host} if it runs", f"pg_rewind {host} from {primary}", f"apply {FORMULA} on {host}",
             f"drop the slots {host} kept"]  # fmt: skip
    return checks, steps


def rejoin_report(rewind, end, dropped):
    """What a rejoin reports: pg_rewind's ``rewind`` (``rewound``, ``diverged_at``,
    ``output``), the slots it ``dropped``, and the WAL discarded from the former primary's
    ``end`` (its last position, or checkpoint when it was down) back to the divergence."""
    report = {"rewound": rewind["rewound"], "diverged_at": rewind["diverged_at"], "dropped_slots": dropped,
              "discarded_bytes": 0, "pg_rewind": rewind["output"]}  # fmt: skip
    if rewind["diverged_at"] and end:
        report["discarded_bytes"] = max(0, lsn(end) - lsn(rewind["diverged_at"].split()[0]))
    return report


# --------------------------------------------------------------------------- rolling restart


def rolling_restart_checks(cluster, primary):
    """Before a rolling restart: ``(checks, up)``, ``up`` the servers that run."""
    checks = []
    running = cluster.running_primaries()
    check(checks, f"exactly one primary runs, the pillar's ({primary})", running == [primary],
          f"running: {running or 'none'}")  # fmt: skip
    up = [h for h in cluster.servers() if (cluster.server(h) or {}).get("running")]
    check(checks, "every server runs", set(up) == set(cluster.servers()), f"running: {up}")
    return checks, up


def restart_order(cluster, primary, pending, lowered):
    """``(order, steps)``: the servers to restart (``pending``: ``{host: settings}``), the
    standbys first, or the primary first when it ``lowered`` a hot-standby minimum."""
    standbys = [h for h in cluster.servers() if h != primary]
    order = [primary, *standbys] if lowered else [*standbys, primary]
    order = [h for h in order if pending.get(h)]
    steps = [f"restart {h} ({', '.join(pending[h])})" for h in order] or ["nothing waits for a restart"]
    if primary in order:
        steps += [f"apply {FORMULA} on {h}: Barman streams again" for h in cluster.backup_hosts()]
    if lowered:
        steps.insert(0, f"primary first: it lowers {', '.join(sorted(lowered))}")
    return order, steps


# --------------------------------------------------------------------------- status


def status(cluster, barman_rows):
    """``cluster_status``'s return: a row per member, and the same as ``table`` lines.
    ``barman_rows``: the row of each member that runs no server (:func:`barman_row`)."""
    primaries = cluster.running_primaries()
    primary_lsn = lsn(cluster.server(primaries[0])["lsn"]) if len(primaries) == 1 else None
    members = {}
    for host in sorted(cluster.hosts):
        row = {"pillar_role": cluster.role(host), "address": cluster.hosts[host]["address"]}
        if host not in cluster.members:
            row["state"] = "no answer"
        elif cluster.role(host) in member.SERVER_ROLES:
            row.update(server_row(cluster.server(host), primary_lsn))
            if apply_delay(cluster, host):
                row["apply_delay_seconds"] = apply_delay(cluster, host)
        else:
            row.update(barman_rows[host])
        members[host] = row
    problems = status_problems(cluster, members)
    return {"problems": problems, "members": members, "table": [f"! {line}" for line in problems] + table(members)}


def status_problems(cluster, members):
    """What an operator must see first: not exactly one server running as a primary, each
    server that does not stream from where it should, each member that did not answer,
    each Barman server whose check fails."""
    primaries, out = cluster.running_primaries(), []
    if len(primaries) != 1:
        out.append(f"{len(primaries)} servers run as a primary: {', '.join(primaries) or 'none'}")
    lead = primaries[0] if len(primaries) == 1 else None
    for host, row in members.items():
        if row.get("state") == "no answer":
            out.append(f"{host}: its minion did not answer")
        elif row.get("barman_check"):
            out.extend(
                f"{host}: Barman {name}: {check}" for name, check in row["barman_check"].items() if check != "all OK"
            )
        elif lead and host not in primaries:
            source = cluster.upstream(host, lead)
            if not member.streams_from(cluster.server(host), cluster.hosts[source]["address"]):
                out.append(f"{host} does not stream from {source} ({row['state']}, upstream {row.get('upstream')})")
    return out


def server_row(server, primary_lsn):
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
        row["lag_bytes"] = primary_lsn - lsn(server["lsn"]) if primary_lsn is not None else None
        row["lag_seconds"] = (server.get("lag") or {}).get("seconds")
    return row


def barman_row(checks):
    """The row of a backup host from each Barman server's check (``{name: failed items, or
    the error that kept it from answering}``)."""
    out = {}
    for name, failed in checks.items():
        if isinstance(failed, Exception):
            out[name] = f"unknown ({failed})"
        else:
            out[name] = "all OK" if not failed else "FAILED: " + ", ".join(failed)
    return {"state": "barman", "barman_check": out}


def table(members):
    lines = [f"{'member':<16} {'pillar':<8} {'running':<22} {'tl':>3} {'lsn':<14} {'lag':>10}  slots / barman"]
    for host, row in members.items():
        extra = row.get("barman_check") or {
            name: f"{'active' if slot['active'] else 'inactive'} {slot['retained_bytes']}B"
            for name, slot in (row.get("slots") or {}).items()
        }
        lag = row.get("lag_bytes")
        if row.get("apply_delay_seconds"):
            extra = dict(extra, delayed=f"{row['apply_delay_seconds']:g} s")
        lines.append(
            f"{host:<16} {row['pillar_role']:<8} {row.get('state', ''):<22} {row.get('timeline') or '':>3} "
            f"{row.get('lsn') or '':<14} {'' if lag is None else f'{lag}B':>10}  "
            + ", ".join(f"{k}: {v}" for k, v in sorted(extra.items()))
        )
    return lines
