# SPDX-License-Identifier: Apache-2.0
"""Restore drills on the backup host (``pg_replication:barman:drill``), part of the ``barman``
execution module: restore the latest DONE backup of each Barman server into a scratch
directory, verify it, start it on a private port with a time limit, check it, record the
result and the restore time (RTO), and remove the copy, always. Barman's backups are only
read (``barman recover`` copies out of them).

Everything a drill needs is in the configuration file the formula writes
(``<barman home>/pg_replication-drill/drill.json``): cron runs drills with ``salt-call
--local``, without the pillar. The decisions are ``_utils/pg_replication_drill.py``'s.

:depends: barman, the PostgreSQL server binaries of each backed-up major version
"""

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import tempfile
import time

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "barman"
BARMAN_USER = "barman"


def __virtual__():
    return __virtualname__


def _u(name):
    """A function of ``_utils/pg_replication_drill.py``."""
    return __utils__[f"pg_replication_drill.{name}"]


def _default_config():
    home = __utils__["pg_replication_pillar.lookup"](__pillar__, "pg_replication:barman:home", None)
    return _u("config_path")(home or "/var/lib/barman")


def _load_config(config):
    try:
        with open(config or _default_config(), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(
            f"no restore drill configured here ({exc}); set pg_replication:barman:drill"
        ) from exc


def _write_json(path, data):
    """Write ``data`` to ``path`` atomically, mode 0640 (group barman reads it)."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".drill-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.chmod(tmp, 0o640)
        with contextlib.suppress(KeyError, OSError):
            shutil.chown(tmp, group=BARMAN_USER)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _as_barman(words, timeout):
    """Run ``words`` as the barman user (no shell); ``cmd.run_all``'s answer."""
    return __salt__["cmd.run_all"](words, runas=BARMAN_USER, python_shell=False, ignore_retcode=True,
                                   timeout=max(1, int(timeout)), cwd="/")  # fmt: skip


def _said(res):
    return ((res.get("stderr") or "") + "\n" + (res.get("stdout") or "")).strip().splitlines()[-3:]


def _postmaster_pid(p):
    try:
        with open(os.path.join(p["data"], "postmaster.pid"), encoding="utf-8") as fh:
            return int(fh.readline().strip())
    except (OSError, ValueError):
        return None


def _stop_and_remove(p, bin_dir, drill_dir):
    """Stop the scratch copy's postmaster (immediate; killed if it does not stop) and remove the
    scratch directory, which must lie inside the drill's directory."""
    if not _u("inside")(p["scratch"], drill_dir):
        raise CommandExecutionError(f"refusing to remove {p['scratch']}: not inside {drill_dir}")
    pid = _postmaster_pid(p)
    if pid:
        if bin_dir and os.path.exists(os.path.join(bin_dir, "pg_ctl")):
            _as_barman(_u("stop_command")(bin_dir, p), 90)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 0)
            # still there (or a stale pid reused: only a postgres of the scratch copy is killed)
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if p["data"].encode() in fh.read():
                    os.kill(pid, signal.SIGKILL)
                    time.sleep(1)
    if os.path.lexists(p["scratch"]):
        shutil.rmtree(p["scratch"])
    return not os.path.lexists(p["scratch"])


def _connect(p, port, dbname="postgres"):
    import psycopg2  # pylint: disable=import-outside-toplevel

    return psycopg2.connect(host=p["scratch"], port=port, user=_u("superuser")(), dbname=dbname,
                            connect_timeout=5)  # fmt: skip


def _out_of_recovery(p, port):
    import psycopg2  # pylint: disable=import-outside-toplevel

    try:
        conn = _connect(p, port)
    except psycopg2.Error:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT NOT pg_is_in_recovery()")
            return cur.fetchone()[0]
    finally:
        conn.close()


def _wait_out_of_recovery(p, port, timeout):
    """Poll until the copy takes writes (here, not through pg_replication_poll: a function
    called from the utils loader could not reach this module's ``__utils__``)."""
    until = time.monotonic() + max(1, timeout)
    while True:
        if _out_of_recovery(p, port):
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(0.5)


def _row_counts(p, port, tables):
    """``count(*)`` of each database.schema.table of the list (schema.table: no database)."""
    from psycopg2 import sql  # pylint: disable=import-outside-toplevel

    counts = {}
    for table in tables:
        parts = table.split(".")
        if len(parts) != 3:
            continue
        conn = _connect(p, port, dbname=parts[0])
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(parts[1], parts[2])))
                counts[table] = cur.fetchone()[0]
        finally:
            conn.close()
    return counts


def _marker_count(p, port, server, backup_id):
    """The backup markers in the copy up to and including ``backup_id``'s (None: no table)."""
    names = _u("marker")()
    conn = _connect(p, port, dbname=names["database"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{names['schema']}.{names['table']}",))
            if not cur.fetchone()[0]:
                return None
            cur.execute(names["count_sql"], {"server": server, "backup_id": backup_id})
            return cur.fetchone()[0]
    finally:
        conn.close()


def _marker_expected(drill_dir, server, backup_id):
    """What the marker hook recorded for ``backup_id`` (None: no marker was written for it)."""
    try:
        with open(_u("marker_record_path")(drill_dir, server), encoding="utf-8") as fh:
            return json.load(fh).get(backup_id)
    except (OSError, ValueError, AttributeError):
        return None


def _log_tail(p):
    try:
        with open(p["log"], encoding="utf-8", errors="replace") as fh:
            return [line.rstrip() for line in fh.readlines()[-5:]]
    except OSError:
        return []


class _Failed(Exception):
    """A step of the drill failed: the reason recorded."""


def _one(server, conf, spec):
    """One drill of ``server``; returns its result (recorded by the caller)."""
    import psycopg2  # pylint: disable=import-outside-toplevel

    drill_dir, port, bin_dir = conf["dir"], int(conf["port"]), spec["bin_dir"]
    p = _u("paths")(drill_dir, server)
    started = time.time()
    deadline = time.monotonic() + int(conf["timeout"])
    steps, backup_id, rto, rows, marker = {}, None, None, {}, None

    def left(step):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Failed(f"timed out after {conf['timeout']}s, before {step}")
        return remaining

    def step(name, fun):
        t0 = time.monotonic()
        try:
            return fun()
        finally:
            steps[name] = round(time.monotonic() - t0, 1)

    ok, reason = False, None
    try:
        _stop_and_remove(p, bin_dir, drill_dir)  # a copy a crashed drill left
        target = conf.get("target") or "latest"
        chosen = _u("choose_backup")(__salt__["barman.list_backups"](server), _u("parse_target")(target))
        if not chosen:
            raise _Failed(f"no DONE backup of {server}" + ("" if target == "latest" else f" before {target}"))
        backup_id = chosen["backup_id"]
        if spec.get("verify"):
            try:
                step("verify", lambda: __salt__["barman.verify_backup"](server, backup_id, timeout=left("verify")))
            except CommandExecutionError as exc:
                raise _Failed(f"barman verify-backup {backup_id}: {exc}") from exc
        os.makedirs(p["scratch"], mode=0o700)
        shutil.chown(p["scratch"], user=BARMAN_USER, group=BARMAN_USER)
        t_restore = time.monotonic()
        try:
            step("restore", lambda: __salt__["barman.restore"](
                server, p["data"], backup_id, timeout=left("restore"), **_u("restore_args")(target)))  # fmt: skip
        except CommandExecutionError as exc:
            raise _Failed(f"barman recover {backup_id}: {exc}") from exc
        for path, text in ((p["conf"], "# pg_replication restore drill: settings on pg_ctl's command line\n"),
                           (p["hba"], "local all all trust\n"), (p["ident"], "")):  # fmt: skip
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            shutil.chown(path, user=BARMAN_USER, group=BARMAN_USER)
        res = step("start", lambda: _as_barman(_u("start_command")(bin_dir, p, port, left("start")), left("start") + 5))
        if res["retcode"] or not _wait_out_of_recovery(p, port, min(60, deadline - time.monotonic())):
            raise _Failed(
                "the restored copy did not start and leave recovery: " + " | ".join(_log_tail(p) or _said(res))
            )
        rto = time.monotonic() - t_restore
        res = step("amcheck", lambda: _as_barman(
            _u("amcheck_command")(bin_dir, p, port, spec.get("tables") or []), left("amcheck")))  # fmt: skip
        if res["retcode"]:
            raise _Failed("pg_amcheck: " + " | ".join(_said(res)))
        rows = _row_counts(p, port, spec.get("tables") or [])
        if spec.get("marker"):
            marker = {"expected": _marker_expected(drill_dir, server, backup_id),
                      "found": _marker_count(p, port, server, backup_id)}  # fmt: skip
            counted, why = _u("marker_verdict")(backup_id, marker["expected"], marker["found"])
            if not counted:
                raise _Failed(why)
        ok = True
    except _Failed as exc:
        reason = str(exc)
    except (CommandExecutionError, OSError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
    except psycopg2.Error as exc:  # the copy's checks: a failed drill, recorded
        reason = f"on the restored copy: {str(exc).strip()}"
    finally:
        try:
            removed = _stop_and_remove(p, bin_dir, drill_dir)
        except (CommandExecutionError, OSError) as exc:
            removed, reason, ok = False, (reason or "") + f"; the scratch copy could not be removed: {exc}", False
        if not removed:
            ok, reason = False, reason or "the scratch copy could not be removed"
    steps["total"] = round(time.time() - started, 1)
    return _u("result")(
        server, ok, reason, backup_id, rto=rto, started=started, steps=steps, now=time.time(), rows=rows, marker=marker
    )


def drill(server=None, config=None):
    """
    Run a restore drill of ``server`` (default: every server of the drill's configuration) now:
    restore its latest DONE backup (``barman recover``; with ``target`` a point in time, the
    latest backup before it) into ``<home>/pg_replication-drill/<server>.scratch``, verify it
    (``barman verify-backup``), start it with its major version's ``pg_ctl`` on the private
    port (Unix socket only), wait until it leaves recovery, run ``pg_amcheck`` on the catalog
    and the pillar's tables, count the backup markers (this cluster's server: the rows
    Barman's pre-backup hook wrote on the primary up to this backup must all be there), record
    the result in ``<server>.result.json`` (ok, reason, backup_id, rto_seconds: restore +
    start until it accepts writes, started, finished, steps' seconds, rows, marker: expected
    and found), and remove the copy, also on failure and timeout. ``config``: the
    drill's configuration file (default: under the pillar's Barman home). Returns
    ``{server: result}``; the job fails if a drill failed. One drill at a time runs.

    CLI Example:

    .. code-block:: bash

        salt backup barman.drill
        salt backup barman.drill master-streaming
    """
    conf = _load_config(config)
    servers = [server] if server else sorted(conf["servers"])
    unknown = [s for s in servers if s not in conf["servers"]]
    if unknown:
        raise CommandExecutionError(f"no restore drill configured for {', '.join(unknown)}")
    lock_path = _u("paths")(conf["dir"], servers[0])["lock"]
    results = {}
    with open(lock_path, "a", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise CommandExecutionError("a restore drill is already running on this host") from exc
        for name in servers:
            results[name] = _one(name, conf, conf["servers"][name])
            _write_json(_u("paths")(conf["dir"], name)["result"], results[name])
            log.log(logging.INFO if results[name]["ok"] else logging.ERROR, "restore drill of %s: %s", name,
                    "OK" if results[name]["ok"] else results[name]["reason"])  # fmt: skip
    # Always set: cmd.run_all leaves the last command's exit code there (salt-call's, cron's).
    __context__["retcode"] = 0 if all(r["ok"] for r in results.values()) else 1
    return results


def drill_last(server, config=None):
    """
    The last recorded restore drill of ``server`` (its result file), or None; and whether
    drills are scheduled: ``{"scheduled": bool, "result": {...}|None}``; None if no drill is
    configured on this host.

    CLI Example:

    .. code-block:: bash

        salt backup barman.drill_last master-streaming
    """
    try:
        conf = _load_config(config)
    except CommandExecutionError:
        return None
    if server not in conf.get("servers", {}):
        return None
    recorded = __utils__["pg_replication_barman_metrics.read_drill_result"](conf["dir"], server)
    return {"scheduled": bool(conf.get("schedule")), "result": recorded}


def drill_health(server, config=None):
    """
    What the last restore drill of ``server`` means for monitoring: ``{"code": 0|2,
    "message": ..., "result": ...}`` (2, CRITICAL: the drill failed, or drills are scheduled
    and none is recorded); None if no drill is configured. Part of ``barman.health``.

    CLI Example:

    .. code-block:: bash

        salt backup barman.drill_health master-streaming
    """
    found = drill_last(server, config)
    if found is None:
        return None
    code, message = _u("health")(server, found["scheduled"], found["result"], time.time())
    return {"code": code, "message": message, "result": found["result"]}
