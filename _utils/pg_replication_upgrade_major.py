# SPDX-License-Identifier: Apache-2.0
"""A major-version upgrade of the cluster with ``pg_upgrade`` (``salt-run
pg_replication.upgrade_major to=<version>``): its preflight, its steps and their run, and
the command lines the minions run (initdb, pg_upgrade, vacuumdb).

The order: the standbys stopped, the primary stopped cleanly (clients' writes stop here),
a new cluster of the new version made with the formula's initdb options (and the old
cluster's data checksums), ``pg_upgrade --link`` or ``--clone``
(``pg_replication:upgrade:major_mode``) from the old cluster into it, then the formula
applied on the primary with the new version: it writes the new cluster's configuration and
starts it (the point of no return: writes resume), makes the standbys' slots; the
statistics rebuilt (``vacuumdb --analyze-in-stages``); each standby re-created by the
formula's own bootstrap (``pg_basebackup`` from the new primary into its empty new data
directory, on its slot), streaming; the old clusters kept, stopped and no longer started
at boot, until the operator removes them. Until the new primary starts, a failed step
undoes what was done (the old ``pg_control`` back, the new data directory emptied) and
starts the old cluster again: nothing changed.

Preflight, each a refusal with nothing changed: exactly the pillar's primary runs, every
server runs, every standby streams and is caught up (lag), the new version is newer and
its binaries are on every server, the new data directories are empty, free space (the
primary: the new cluster's own files, pg_upgrade links or clones the data files; a
standby: a whole copy of the primary's data beside the old one), ``pg_upgrade --check``
passes on the primary, every installed extension is there for the new version, each
backup host holds a DONE backup of the cluster younger than ``barman:backup_max_age``.

The runner asks the minions; this module decides from their answers and runs the steps
through the callables the runner passes in (``ops``: ``call``, ``apply``,
``wait_streaming``, ``now``), so it is tested without minions. Runs on the master's Python;
:func:`initdb_args`, :func:`pg_upgrade_args` and :func:`vacuumdb_args` on the minions'
(3.9 on Debian 11).
"""

import os
import re
import runpy
import shlex

from salt.exceptions import CommandExecutionError

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
checks_util = _sibling("pg_replication_checks")
cluster_model = _sibling("pg_replication_cluster")
member = _sibling("pg_replication_member")
postgres = _sibling("pg_replication_postgres")
minor = _sibling("pg_replication_upgrade")
drill = _sibling("pg_replication_drill")

check = checks_util.check
FORMULA = cluster_model.FORMULA
# pg_replication:upgrade:major_mode: how pg_upgrade moves the data files.
MODES = ("link", "clone")
# Beyond the data files: the new cluster's catalogs, WAL and pg_upgrade's dump (bytes).
MARGIN = 256 << 20
# The port pg_upgrade runs its servers on (never the clients' one).
UPGRADE_PORT = 50432
CHECKSUM_OPTIONS = ("--data-checksums", "-k", "--no-data-checksums")
# The column options (attoptions) PostgreSQL knows in every release since 9.0; pg_upgrade's
# dump sets each one again, and the new server refuses a name it does not know (seen:
# Debian's 17.12 stores pg_attver on every column, which 18.6, released before it, refuses;
# 15.20 stores it too, and 17.12 knows it). Any other name in use is tried on the new
# version's server (pg_replication.upgrade_check).
COLUMN_OPTIONS = ("n_distinct", "n_distinct_inherited")


# --------------------------------------------------------------------------- command lines


def initdb_args(command, data_dir, checksums, new_version):
    """The formula's ``initdb_command`` (a shell line) for ``data_dir``, with the old cluster's
    data checksums (pg_upgrade needs both alike; PostgreSQL 18's initdb turns them on unless
    told ``--no-data-checksums``)."""
    words = shlex.split(command)
    out, skip = [], False
    for word in words:
        if skip:
            out.append(data_dir)
            skip = False
        elif word in ("-D", "--pgdata"):
            out.append(word)
            skip = True
        elif word.startswith("--pgdata="):
            out.append(f"--pgdata={data_dir}")
        elif word not in CHECKSUM_OPTIONS:
            out.append(word)
    if "-D" not in out and "--pgdata" not in out and not any(w.startswith("--pgdata=") for w in out):
        out += ["-D", data_dir]
    if checksums:
        out.append("--data-checksums")
    elif int(new_version) >= 18:
        out.append("--no-data-checksums")
    return out


def pg_upgrade_args(old_bin_dir, new_bin_dir, data_dir, new_data_dir, config_file, mode, socket_dir,
                    check=False, old_port=None):  # fmt: skip
    """pg_upgrade's command line: ``--check`` of the running old cluster (on ``old_port``),
    or the upgrade of the stopped one (both servers on :data:`UPGRADE_PORT`, which no client
    uses)."""
    if mode not in MODES:
        raise ValueError(f"mode: one of {', '.join(MODES)}, not {mode!r}")
    cmd = [
        os.path.join(new_bin_dir, "pg_upgrade"),
        f"--old-bindir={old_bin_dir}",
        f"--new-bindir={new_bin_dir}",
        f"--old-datadir={data_dir}",
        f"--new-datadir={new_data_dir}",
        f"--old-options=-c config_file={config_file}",
        f"--socketdir={socket_dir}",
        "--username=postgres",
        f"--{mode}",
    ]
    if check:
        return [*cmd, "--check", f"--old-port={int(old_port)}", f"--new-port={UPGRADE_PORT}"]
    return [*cmd, f"--old-port={UPGRADE_PORT}", f"--new-port={UPGRADE_PORT}"]


def vacuumdb_args(new_bin_dir, new_version, socket_dir, port):
    """Statistics for the upgraded cluster: ``vacuumdb --all --analyze-in-stages``; from 18
    on pg_upgrade keeps most of them, ``--missing-stats-only`` builds the rest."""
    cmd = [os.path.join(new_bin_dir, "vacuumdb"), "--all", "--analyze-in-stages"]
    if int(new_version) >= 18:
        cmd.append("--missing-stats-only")
    return [*cmd, f"--host={socket_dir}", f"--port={int(port)}", "--username=postgres"]


def pillar_change(cluster, primary, new_version):
    """The lines the operator puts in the pillar once the upgrade is done: the version, and
    with Barman a server of its own for the new system (its system identifier changed;
    ``<primary>-pg<version>``), which the highstate sets up with its first backup, and the
    old server retired (``barman:retired``): its backups stay restorable."""
    lines = [f"{FORMULA}:version: {int(new_version)}"]
    old_server, new_server = cluster.barman_server_name(), f"{primary}-pg{int(new_version)}"
    if old_server and old_server != new_server:
        lines.append(f"{FORMULA}:barman:server_name: {new_server}")
        lines.append(f"{FORMULA}:barman:retired:{old_server}: {int(cluster.plan['version'])}")
    return lines


# --------------------------------------------------------------------------- preflight


def mode_of(cluster, mode=None):
    """``mode``, or ``pg_replication:upgrade:major_mode`` (default link)."""
    return mode or (cluster.plan.get("upgrade") or {}).get("major_mode") or "link"


def health(cluster, primary, max_lag=None):
    """Exactly the pillar's primary runs, every server runs, each standby streams from its
    upstream and has replayed the primary's WAL up to ``max_lag`` bytes (delayed standbys
    too: they are re-created from the new primary, what they hold is lost)."""
    return minor.streaming_health(cluster, primary, max_lag, delayed_lag=True)


def probe_options(names):
    """The column option names the new version's server is asked about: those not in
    :data:`COLUMN_OPTIONS`, each once, and none that a line of SQL cannot hold."""
    return sorted({n for n in names if n not in COLUMN_OPTIONS and n and not set(n) & set('\n\r"')})


def options_refused(names, output):
    """The names of ``names`` the new version's server refused in ``output`` (its single-user
    mode's, after :func:`probe_options`'s statements): "unrecognized parameter", and those
    not asked (no line of SQL holds them) that are not :data:`COLUMN_OPTIONS`."""
    unknown = set(re.findall(r'unrecognized parameter "([^"\n]*)"', output or ""))
    asked = probe_options(names)
    return sorted({n for n in names if n in unknown or (n not in asked and n not in COLUMN_OPTIONS)})


def option_names(column_options):
    """Every option name of ``pg_replication.column_options``, each once."""
    return sorted({name for names in (column_options or {}).values() for name in names})


def unknown_column_options(column_options, refused=None):
    """``["db: option"]`` for the options of ``pg_replication.column_options`` the new version
    does not know: those its server refused (``refused``, from ``pg_replication.upgrade_check``),
    or without that answer those not in :data:`COLUMN_OPTIONS`."""
    return [
        f"{db}: {name}" for db, names in sorted((column_options or {}).items()) for name in names
        if (name not in COLUMN_OPTIONS if refused is None else name in refused)
    ]  # fmt: skip


def preflight(cluster, primary, new_version, new_plans, facts, upgrade_check, missing, mode=None, max_lag=None,
              column_options=None, backups=None, now=None):  # fmt: skip
    """``(checks, steps)`` of the upgrade to ``new_version``. ``new_plans``: each server's
    plan with the new version (``pg_replication.member`` with the change); ``facts``: each
    server's ``pg_replication.upgrade_facts``; ``upgrade_check``: the primary's
    ``pg_replication.upgrade_check`` (None: not run, an earlier check failed);
    ``missing``: the primary's ``pg_replication.extensions_missing``; ``column_options``:
    its ``pg_replication.column_options`` (pg_upgrade --check does not try them);
    ``backups``: each backup host's ``barman.list_backups`` of the cluster's Barman server
    (None for a host that did not answer; ``backups`` None: the cluster has no Barman),
    judged at ``now`` (a timestamp)."""
    mode = mode_of(cluster, mode)
    old = int(cluster.plan["version"])
    checks = []
    check(checks, f"{FORMULA}:upgrade:major_mode is one of {', '.join(MODES)}", mode in MODES, f"mode: {mode}")
    check(checks, f"PostgreSQL {new_version} is newer than the cluster's {old}", int(new_version) > old,
          f"{FORMULA}:version is {old}")  # fmt: skip
    checks += health(cluster, primary, max_lag)
    checks += recent_backup(cluster, backups, now)
    primary_bytes = (facts.get(primary) or {}).get("data_bytes") or 0
    for host in cluster.servers():
        fact = facts.get(host)
        if fact is None:
            check(checks, f"{host} answered", False, "no answer to pg_replication.upgrade_facts")
            continue
        absent = sorted(name for name, there in fact["binaries"].items() if not there)
        check(checks, f"{host} has PostgreSQL {new_version}'s binaries", not absent,
              f"not in {new_plans[host]['bin_dir']}: {', '.join(absent)} (install "
              f"{', '.join(_server_packages(new_plans[host]))})" if absent else new_plans[host]["bin_dir"])  # fmt: skip
        check(checks, f"{host}'s new data directory is empty", fact["new_data_dir_empty"],
              new_plans[host]["data_dir"])  # fmt: skip
        need = _space_needed(host == primary, fact["data_bytes"], primary_bytes)
        check(checks, f"{host} has {need} bytes free for the new cluster", fact["free_bytes"] >= need,
              f"{fact['free_bytes']} bytes free where {new_plans[host]['data_dir']} goes")  # fmt: skip
    if missing is not None:
        check(checks, f"every extension is there for PostgreSQL {new_version}", not missing,
              f"missing: {', '.join(missing)}" if missing else "")  # fmt: skip
    if column_options is not None:
        refused = (upgrade_check or {}).get("options_refused")
        unknown = unknown_column_options(column_options, refused)
        how = (f"refused by PostgreSQL {new_version}'s server (tried on a throw-away cluster)" if refused is not None
               else f"not known to every release ({', '.join(COLUMN_OPTIONS)} are)")  # fmt: skip
        check(checks, f"every column option in use is one PostgreSQL {new_version} knows", not unknown,
              f"{how}: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; a newer minor release of "
              f"{new_version} may know them" if unknown else "")  # fmt: skip
    if upgrade_check is not None:
        check(checks, f"pg_upgrade --check --{mode} passes on {primary}", upgrade_check["ok"],
              upgrade_check["output"] if not upgrade_check["ok"] else "")  # fmt: skip
    return checks, steps(cluster, primary, new_version, new_plans, mode)


def recent_backup(cluster, backups, now):
    """Each backup host holds a DONE backup of the cluster's Barman server that ended less
    than ``barman:backup_max_age`` seconds before ``now``: the way back should the upgrade
    go wrong after its point of no return."""
    if backups is None:
        return []
    max_age = int((cluster.plan.get("barman_pillar") or {}).get("backup_max_age") or 86400)
    name, checks = cluster.barman_server_name(), []
    for host, listed in sorted(backups.items()):
        what = f"{host} holds a DONE backup of {name} younger than {FORMULA}:barman:backup_max_age ({max_age} s)"
        if listed is None:
            check(checks, what, False, "no answer to barman.list_backups")
            continue
        last = drill.choose_backup(listed)
        ended = (last or {}).get("end_time_timestamp")
        age = None if ended is None else now - float(ended)
        detail = (
            "no DONE backup"
            if last is None
            else f"{last['backup_id']}, " + ("its end time not reported" if age is None else f"{age:.0f} s old")
        )
        check(checks, what, age is not None and age <= max_age,
              f"{detail}: take one (`salt {host} barman.backup {name}`)" if age is None or age > max_age
              else detail)  # fmt: skip
    return checks


def _server_packages(plan):
    pkgs = plan.get("pkgs") or {}
    return [pkgs[key] for key in ("server", "client") if pkgs.get(key)]


def _space_needed(is_primary, data_bytes, primary_bytes):
    """The primary: its new catalogs and WAL and pg_upgrade's dump (the data files are linked
    or cloned), about a tenth of the data; a standby: a whole copy of the primary's data,
    its old copy stays."""
    if is_primary:
        return MARGIN + data_bytes // 10
    return MARGIN + primary_bytes


def standby_order(cluster, primary):
    """The standbys, those that cascade from another standby first (stopped first: each
    stops before its upstream)."""
    return sorted(
        (h for h in cluster.servers() if h != primary), key=lambda h: (cluster.upstream(h, primary) == primary, h)
    )


def steps(cluster, primary, new_version, new_plans, mode):
    old_plan = cluster.plan_of(primary) or cluster.plan
    new = new_plans.get(primary) or {}
    standbys = standby_order(cluster, primary)
    out = [f"stop the standby {h} ({(cluster.plan_of(h) or {}).get('service_name')})" for h in standbys]
    out += [
        f"stop the primary {primary} cleanly (writes stop here)",
        f"initdb {new.get('data_dir')} (PostgreSQL {new_version}, the old cluster's data checksums); "
        f"pg_upgrade --{mode} from {old_plan['data_dir']} (kept)",
        f"apply the formula on {primary} with {FORMULA}:version {new_version}: its configuration, "
        f"started (writes resume; no way back to the old cluster after this), its standbys' slots",
        "vacuumdb --all --analyze-in-stages (statistics)",
    ]
    out += [
        f"re-create {h} on PostgreSQL {new_version}: the formula's bootstrap (pg_basebackup from "
        f"{cluster.upstream(h, primary)} on its slot into {(new_plans.get(h) or {}).get('data_dir')}); "
        f"its old cluster kept, stopped"
        for h in reversed(standbys)
    ]
    out.append("the old clusters stay, stopped and not started at boot, until you remove them")
    out.append("then change the pillar: " + ", ".join(pillar_change(cluster, primary, new_version)))
    return out


# --------------------------------------------------------------------------- the run


def run(ops, cluster, primary, new_version, new_plans, checks, mode=None, timeout=300):
    """Run the upgrade (:func:`steps`); the runner's return. ``ops``: ``call(host, fun,
    *args, **kwargs)``, ``apply(host, change)``, ``wait_streaming(cluster, host, source,
    timeout)``, ``now()``."""
    mode = mode_of(cluster, mode)
    change = {"version": int(new_version)}
    old, new = cluster.plan_of(primary), new_plans[primary]
    standbys = standby_order(cluster, primary)
    done, stopped = [], []
    try:
        for host in standbys:
            ops.call(host, "service.stop", cluster.plan_of(host)["service_name"], timeout=600)
            stopped.append(host)
            done.append(f"stopped the standby {host}")
        stop_started = ops.now()
        ops.call(primary, "service.stop", old["service_name"], timeout=600)
        stopped.append(primary)
        control = ops.call(primary, "pg_replication.controldata", old["data_dir"], old["bin_dir"])
        if control.get("Database cluster state") != "shut down":
            raise CommandExecutionError(f"{primary} is not shut down cleanly: {control.get('Database cluster state')}")
        done.append(f"stopped the primary {primary} cleanly at {control.get('Latest checkpoint location')}")
        out = ops.call(
            primary, "pg_replication.upgrade_cluster", old["bin_dir"], new["bin_dir"], old["data_dir"],
            new["data_dir"], os.path.join(old["conf_dir"], "postgresql.conf"), new["initdb_command"],
            int(new_version), socket_dir=old["socket_dir"], home=old["home"], mode=mode, timeout=3600, limit=7200,
        )  # fmt: skip
        done.append(
            f"pg_upgrade --{mode} {old['data_dir']} -> {new['data_dir']}: {out.splitlines()[-1] if out else ''}"
        )
    except CommandExecutionError as exc:
        return _rolled_back(ops, cluster, primary, new, stopped, done, checks, exc)
    left, lines = [], pillar_change(cluster, primary, new_version)
    try:
        applied = ops.apply(primary, change)
    except CommandExecutionError as exc:
        return _left(f"the formula on {primary} with PostgreSQL {new_version}: {exc}", done, checks, new_version, lines)
    downtime = round(ops.now() - stop_started, 1)
    done.append(f"applied the formula on {primary} with PostgreSQL {new_version} ({len(applied)} states changed); "
                f"it takes writes: {downtime} s without writes")  # fmt: skip
    for step, host, fun, args in _after(cluster, primary, new_version, new_plans, standbys):
        try:
            if fun == "apply":
                ops.apply(host, change)
                ops.wait_streaming(cluster, host, cluster.upstream(host, primary), timeout)
            else:
                ops.call(host, fun, *args, timeout=3600, limit=7200)
            done.append(step)
        except CommandExecutionError as exc:
            left.append(f"{step}: {exc}")
    if left:
        return dict(_left("; ".join(left), done, checks, new_version, lines), write_downtime_seconds=downtime)
    return checks_util.succeeded(
        f"the cluster runs PostgreSQL {new_version}; the old clusters are kept, stopped",
        checks, done, pillar_change=lines, write_downtime_seconds=downtime,
    )  # fmt: skip


def _after(cluster, primary, new_version, new_plans, standbys):
    """The steps after the new primary started: ``(line, host, fun, args)``."""
    new = new_plans[primary]
    out = [
        ("statistics rebuilt (vacuumdb --analyze-in-stages)", primary, "pg_replication.analyze_new_cluster",
         (new["bin_dir"], int(new_version), new["socket_dir"], new["port"])),
    ]  # fmt: skip
    for host in reversed(standbys):  # upstreams first
        out.append((f"{host} re-created on PostgreSQL {new_version}, streaming from {cluster.upstream(host, primary)}",
                    host, "apply", ()))  # fmt: skip
    for host in [primary, *reversed(standbys)]:
        old = cluster.plan_of(host)
        if old["conf_dir"] != old["data_dir"]:
            out.append((f"{host}: the old cluster is not started at boot ({old['conf_dir']}/start.conf manual)",
                        host, "file.write", (os.path.join(old["conf_dir"], "start.conf"), "manual")))  # fmt: skip
        if old["service_name"] != new_plans[host]["service_name"]:
            out.append((f"{host}: {old['service_name']} disabled", host, "service.disable", (old["service_name"],)))
    return out


def _rolled_back(ops, cluster, primary, new, stopped, done, checks, exc):
    """Before the new primary started: undo the upgrade on the primary, start what was
    stopped (the primary first); the return says nothing changed, or what could not be
    restarted."""
    again = []
    old = cluster.plan_of(primary)
    try:
        if primary in stopped:
            again += list(ops.call(primary, "pg_replication.upgrade_undo", old["data_dir"], new["data_dir"]) or ())
        for host in ([primary] if primary in stopped else []) + [h for h in stopped if h != primary]:
            ops.call(host, "service.start", cluster.plan_of(host)["service_name"], timeout=600)
            again.append(f"started {host} again")
    except CommandExecutionError as undo_exc:
        return checks_util.failed(
            f"upgrade_major failed: {exc}; and undoing it failed: {undo_exc}. The old cluster "
            f"({old['data_dir']}) is intact unless pg_upgrade --link's new cluster was started: "
            f"start {old['service_name']} by hand.",
            checks, done + again,
        )  # fmt: skip
    return checks_util.failed(
        f"upgrade_major failed before the new primary started, undone: the old cluster runs as before. {exc}",
        checks, done + again,
    )  # fmt: skip


def _left(what, done, checks, new_version, change):
    return checks_util.failed(
        f"upgrade_major: the primary runs PostgreSQL {new_version} (no way back), but: {what}. "
        f"Change the pillar ({', '.join(change)}), fix it and run the highstate.",
        checks, done, pillar_change=change,
    )  # fmt: skip
