# SPDX-License-Identifier: Apache-2.0
"""Barman operations through its JSON output (``barman -f json``), run as the barman user.

Failures raise CommandExecutionError with Barman's own message (its ``_ERROR`` list).
The configuration file comes from the ``barman.config_file`` config option, else the
pillar's ``pg_replication:barman:config_file`` (default /etc/barman.conf); the binary from
the ``barman.bin`` option, else the pillar's virtualenv link when Barman is installed with
pip (``pg_replication:barman:install``), else ``barman`` on the PATH; the user from
``barman.user`` (default barman).

:depends: barman
"""

import configparser
import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time

import psutil
import salt.utils.files
import salt.utils.path
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "barman"

RECOVERY_TARGETS = ("target_time", "target_xid", "target_lsn", "target_name")


def __virtual__():
    # Loads before Barman is installed, so that a first ``test=True`` run can predict; the
    # functions raise (marked "unavailable") until the barman command exists.
    return __virtualname__


def _unavailable_error(message):
    return __utils__["pg_replication_unavailable.error"](message)


def _pillar(key, default):
    return __utils__["pg_replication_pillar.lookup"](__pillar__, key, default)


def _setting(option, pillar_key, default):
    """A minion config option, else the formula's pillar value, else ``default``."""
    value = __salt__["config.option"](option, None) or None
    if value is None:
        value = _pillar(f"pg_replication:barman:{pillar_key}", None)
    return default if value is None else value


def _binary():
    install = _pillar("pg_replication:barman:install", {}) or {}
    pip_link = install.get("link") if install.get("method") == "pip" else None
    binary = __salt__["config.option"]("barman.bin", None) or pip_link or salt.utils.path.which("barman")
    if not binary or not salt.utils.path.which(binary):
        raise _unavailable_error(f"barman: the barman command is not installed ({binary or 'not on the PATH'})")
    return binary


def _config_file():
    return _setting("barman.config_file", "config_file", "/etc/barman.conf")


def _base(json_output=True, config=None):
    base = [_binary(), "-c", config or _config_file()]
    return base + ["-f", "json"] if json_output else base


# barman commands that only read: any other may change what `barman check` reports.
READ_ONLY_COMMANDS = ("check", "list-backup", "list-backups", "show-backup", "show-server", "status",
                      "replication-status", "--version")  # fmt: skip


def _run_all(args, timeout=None, json_output=True, config=None):
    """Run one barman command as the barman user (``config``: another configuration file than
    Barman's): ``cmd.run_all``'s answer."""
    if args[0] not in READ_ONLY_COMMANDS:
        __context__.pop("barman.last_checks", None)
    return __salt__["cmd.run_all"](
        _base(json_output, config) + [str(a) for a in args],
        runas=__salt__["config.option"]("barman.user", "barman"),
        python_shell=False,
        ignore_retcode=True,
        timeout=timeout,
        cwd="/",
    )


def _run(*args, parse=True, timeout=None, config=None):
    """Run one barman command; return its parsed JSON output."""
    res = _run_all(args, timeout=timeout, config=config)
    out = res["stdout"].strip()
    data = None
    if parse and out:
        try:
            data = json.loads(out)
        except ValueError:
            data = None
    if isinstance(data, dict) and data.get("_ERROR"):
        message = "barman {}: {}".format(args[0], "; ".join(map(str, data["_ERROR"])))
        if any(str(e).startswith("Unknown server") for e in data["_ERROR"]):
            raise _unavailable_error(message)  # its configuration is not written yet
        raise CommandExecutionError(message)
    if res["retcode"] and args[0] != "check":
        raise CommandExecutionError(f"barman {args[0]} failed: {(res['stderr'] or out).strip()}")
    return data if parse else out


def version():
    """
    The version of the Barman this module runs (the binary it chose: see the module's notes).

    CLI Example:

    .. code-block:: bash

        salt backup barman.version
    """
    return _run("--version", parse=False, timeout=60).split()[0]


def _server_section(command, server, *args):
    """Run a per-server barman command; return the server's part of its JSON output."""
    data = _run(command, server, *args) or {}
    return data.get(server, data)


def check(server, reuse=False):
    """
    Run ``barman check`` and return ``{item: {"status": "OK"|"FAILED", "hint": ...}}``.
    ``reuse``: return this job's last check of ``server`` instead, if no barman command
    that may change it (backup, switch-wal, cron, receive-wal...) ran since (a state run's
    final verification after states that changed nothing).

    CLI Example:

    .. code-block:: bash

        salt backup barman.check master-streaming
    """
    last = __context__.get("barman.last_checks") or {}
    if reuse and server in last:
        return last[server]
    data = _run("check", server)
    if not isinstance(data, dict) or server not in data:
        raise CommandExecutionError(f"barman check {server}: no result")
    __context__.setdefault("barman.last_checks", {})[server] = data[server]
    return data[server]


def failed_checks(server, reuse=False):
    """
    Names of the ``barman check`` items that are not OK (``reuse``: see ``barman.check``).

    CLI Example:

    .. code-block:: bash

        salt backup barman.failed_checks master-streaming
    """
    return sorted(item for item, res in check(server, reuse=reuse).items() if res.get("status") != "OK")


# The Nagios plugin exit codes, by the status word that starts the plugin's line.
NAGIOS_STATUS = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
NAGIOS_LINE_RE = re.compile(r"^BARMAN (OK|WARNING|CRITICAL|UNKNOWN) - ")


def health(server):
    """
    ``barman check`` for monitoring: Barman's own Nagios plugin answer (``barman check
    --nagios``): its exit ``code`` (0 OK, 2 CRITICAL: something failed), ``status`` (the
    code's name) and ``line``, the first line of its output (``BARMAN OK - Ready to serve the
    Espresso backup for <server>``, or ``BARMAN CRITICAL - server <server> has issues * ...``
    naming the failed checks); and ``checks`` (``{item: {"status", "hint"}}``, from ``barman
    -f json check``). CRITICAL (code 2) with the reason in ``line`` when Barman could not run.

    CLI Example:

    .. code-block:: bash

        salt backup barman.health master-streaming
        salt backup barman.health master-streaming --out=newline_values_only
    """
    failure = None
    try:
        checks = check(server)
    except CommandExecutionError as exc:
        checks, failure = {}, str(exc)
    try:
        nagios = _run_all(["check", "--nagios", server], json_output=False)
    except CommandExecutionError as exc:  # no barman command
        nagios, failure = None, failure or str(exc)
    drill = __salt__["barman.drill_health"](server) if "barman.drill_health" in __salt__ else None
    return _with_drill(_nagios_health(server, nagios, checks, failure), drill)


def _with_drill(health_, drill):
    """:func:`health` with the last restore drill's (``barman.drill_health``: None when
    no drill is configured): a failed drill, or none recorded though drills are scheduled,
    makes it CRITICAL, its message on the line (pure)."""
    if drill is None:
        return health_
    health_ = dict(health_, drill=drill)
    if drill["code"] >= 2:
        if health_["code"] == 2:
            line = f"{health_['line']} * {drill['message']}"
        else:
            line = f"BARMAN CRITICAL - {drill['message']}"
        health_.update(status="CRITICAL", code=2, line=line)
    return health_


def _nagios_health(server, nagios, checks, failure=None):
    """The :func:`health` of ``server`` from the answer of ``barman check --nagios`` (``{"stdout",
    "stderr", "retcode"}``, None if it could not run) and its ``barman check`` items (pure)."""
    lines = (nagios or {}).get("stdout", "").strip().splitlines()
    if lines and NAGIOS_LINE_RE.match(lines[0]):
        code = nagios["retcode"]
        return {"server": server, "status": NAGIOS_STATUS.get(code, "UNKNOWN"), "code": code, "line": lines[0],
                "checks": checks}  # fmt: skip
    # Not Barman's plugin line (it could not run, or failed before its check).
    if not failure:
        said = ((nagios or {}).get("stderr") or "").strip() or "\n".join(lines) or "no output"
        failure = f"barman check --nagios failed ({(nagios or {}).get('retcode')}): {said}"
    line = f"BARMAN CRITICAL - {server}: {failure}".splitlines()[0]
    return {"server": server, "status": "CRITICAL", "code": 2, "line": line, "checks": checks}


def switch_wal(server, force=False, archive=False, archive_timeout=60):
    """
    Force PostgreSQL to switch WAL file; with ``archive`` wait until Barman has it.

    CLI Example:

    .. code-block:: bash

        salt backup barman.switch_wal master-streaming force=True archive=True
    """
    args = ["switch-wal"]
    if force:
        args.append("--force")
    if archive:
        args += ["--archive", "--archive-timeout", str(archive_timeout)]
    _run(*args, server, parse=False, timeout=archive_timeout + 60)
    return True


def archive_wal(server):
    """
    Archive the WAL segments Barman has received and that are complete (``barman
    archive-wal``, what ``barman cron`` does every minute), now.

    CLI Example:

    .. code-block:: bash

        salt backup barman.archive_wal master-streaming
    """
    _run("archive-wal", server, parse=False, timeout=120)
    return True


def backup(server, wait=True, timeout=1800):
    """
    Take a backup; with ``wait`` (the default) return once it is DONE: the WAL segments it
    needs are archived. Return the new backup's description.

    CLI Example:

    .. code-block:: bash

        salt backup barman.backup master-streaming
    """
    before = {b["backup_id"] for b in list_backups(server)}
    deadline = time.monotonic() + timeout
    _run("backup", server, parse=False, timeout=timeout)
    new = [b for b in list_backups(server) if b["backup_id"] not in before]
    if not new:
        raise CommandExecutionError(f"barman backup {server}: no new backup was recorded")
    return _wait_for_wals(server, new[0], deadline) if wait else new[0]


def _wait_for_wals(server, new, deadline):
    """Bring a WAITING_FOR_WALS backup to DONE: close the segment it ends in
    (:func:`close_segment`), then have Barman archive what is complete (``archive-wal``) and
    check the backup (``check-backup``) until it is DONE.

    ``barman backup --wait`` is not used: a backup that ends exactly at a segment boundary
    waits for the next segment (seen with Barman 3.13 and PostgreSQL 17), which an idle
    primary never completes. Nor is ``switch-wal --archive``: it waits for the segment it
    closed, which Barman's streaming archiver holds back until pg_receivewal opens the next
    one (up to 15 s on an idle primary)."""
    found = {"backup": new, "closed": False}

    # Through __salt__: the poll runs this in the utils loader, where this module's own
    # __utils__ is not packed.
    def done():
        try:
            if not found["closed"]:
                __salt__["barman.close_segment"](server)
                found["closed"] = True
            __salt__["barman.archive_wal"](server)
            found["backup"] = __salt__["barman.check_backup"](server, new["backup_id"]) or found["backup"]
        except CommandExecutionError as exc:
            log.debug("closing and archiving the WAL of backup %s of %s: %s", new["backup_id"], server, exc)
        return found["backup"].get("status") != "WAITING_FOR_WALS"

    if new.get("status") == "WAITING_FOR_WALS":
        __utils__["pg_replication_poll.until"](done, max(deadline - time.monotonic(), 0), interval=0.5)
    return found["backup"]


def check_backup(server, backup_id):
    """
    Have Barman check that backup ``backup_id`` has every WAL segment it needs (``barman
    check-backup``: a WAITING_FOR_WALS backup that has them becomes DONE); return the
    backup's entry in :func:`list_backups`, or None.

    CLI Example:

    .. code-block:: bash

        salt backup barman.check_backup master-streaming 20261126T230409
    """
    _run("check-backup", server, backup_id, parse=False, timeout=120)
    return next((b for b in list_backups(server) if b["backup_id"] == backup_id), None)


def list_backups(server):
    """
    The server's backups, newest first: ``[{"backup_id", "status", "end_time", "size_bytes", ...}]``.

    CLI Example:

    .. code-block:: bash

        salt backup barman.list_backups master-streaming
    """
    # "list-backup": Barman 2 knows only that name, Barman 3 both.
    data = _run("list-backup", server) or {}
    return list(data.get(server, []))


def show_backup(server, backup_id="latest"):
    """
    Details of one backup (``latest``, ``first`` or an id).

    CLI Example:

    .. code-block:: bash

        salt backup barman.show_backup master-streaming latest
    """
    return _server_section("show-backup", server, backup_id)


def keep_status(server, backup_id):
    """
    What ``barman keep`` holds backup ``backup_id`` for: ``full``, ``standalone``, or
    ``nokeep``.

    CLI Example:

    .. code-block:: bash

        salt backup barman.keep_status master-streaming 20261207T101500
    """
    found = _server_section("keep", server, "--status", backup_id)
    return str((found.get("keep_status") or {}).get("message") or "nokeep")


def keep(server, backup_id, target="full"):
    """
    Hold backup ``backup_id`` past the retention policy (``barman keep --target``, ``full`` or
    ``standalone``), or release it with ``target=none``.

    CLI Example:

    .. code-block:: bash

        salt backup barman.keep master-streaming 20261207T101500 target=standalone
    """
    args = ["--release"] if target == "none" else ["--target", target]
    _run("keep", *args, server, backup_id, parse=False)
    return keep_status(server, backup_id)


def status(server):
    """
    ``barman status`` as a dict.

    CLI Example:

    .. code-block:: bash

        salt backup barman.status master-streaming
    """
    return _server_section("status", server)


def replication_status(server):
    """
    The streaming clients of the server's primary, as Barman sees them.

    CLI Example:

    .. code-block:: bash

        salt backup barman.replication_status master-streaming
    """
    return _server_section("replication-status", server)


def receive_wal_running(server):
    """
    True if ``barman check`` finds receive-wal running for the server.

    CLI Example:

    .. code-block:: bash

        salt backup barman.receive_wal_running master-streaming
    """
    return check(server).get("receive_wal_running", {}).get("status") == "OK"


def cron():
    """
    Run ``barman cron`` once now (starts receive-wal for streaming servers).

    CLI Example:

    .. code-block:: bash

        salt backup barman.cron
    """
    _run("cron", parse=False, timeout=120)
    return True


def receive_wal_stop(server):
    """
    Stop the server's receive-wal process (``barman receive-wal --stop``), e.g. one still
    waiting on a primary that is gone; ``barman cron`` starts it again from the server's
    current ``streaming_conninfo``.

    CLI Example:

    .. code-block:: bash

        salt backup barman.receive_wal_stop master-streaming
    """
    try:
        _run("receive-wal", "--stop", server, parse=False, timeout=60)
    except CommandExecutionError as exc:
        if "no such process" in str(exc):
            return True
        stuck = re.search(r"Cannot terminate process receive-wal\((\d+)\)", str(exc))
        if not stuck:
            raise
        # Blocked on a primary that vanished without closing the connection: kill it.
        _kill_tree(int(stuck.group(1)))
    return True


def _kill_tree(pid):
    try:
        process = psutil.Process(pid)
        for proc in [*process.children(recursive=True), process]:
            proc.kill()
        psutil.wait_procs([process], timeout=10)
    except psutil.NoSuchProcess:
        pass


def show_server(server):
    """
    ``barman show-server`` as a dict (conninfo, paths, settings).

    CLI Example:

    .. code-block:: bash

        salt backup barman.show_server master-streaming
    """
    return _server_section("show-server", server)


@contextlib.contextmanager
def _primary_cursor(server):
    """A cursor on the server's primary, through Barman's own ``primary_conninfo`` (backups
    from a standby) or ``conninfo``, and .pgpass (the barman role may EXECUTE
    pg_create_restore_point and pg_switch_wal)."""
    import psycopg2  # pylint: disable=import-outside-toplevel

    shown = show_server(server)
    given = [shown[k] for k in ("primary_conninfo", "conninfo") if shown.get(k) not in (None, "None", "")]
    conninfo = given[0] if given else None
    if not conninfo:
        raise CommandExecutionError(f"no conninfo for barman server {server}")
    home = __salt__["user.info"](__salt__["config.option"]("barman.user", "barman")).get("home", "/var/lib/barman")
    try:
        conn = psycopg2.connect(conninfo, passfile=f"{home}/.pgpass", connect_timeout=10)
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"cannot connect to the primary of {server}: {exc}") from exc
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            yield cur
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"on the primary of {server}: {exc}") from exc
    finally:
        conn.close()


def restore_point(server, name="pg_replication"):
    """
    Write a restore point on the server's primary. It puts a WAL record in the current
    segment, so that a plain ``switch-wal`` closes it even on an idle primary.

    CLI Example:

    .. code-block:: bash

        salt backup barman.restore_point master-streaming
    """
    with _primary_cursor(server) as cur:
        cur.execute("SELECT pg_create_restore_point(%s)::text", (name,))
        return cur.fetchone()[0]


def close_segment(server, name="pg_replication"):
    """
    Close the primary's current WAL segment so that Barman can archive it at once, on one
    connection: a restore point (a record, so that the switch has something to close),
    ``pg_switch_wal()``, and a second restore point in the next segment. Barman's streaming
    archiver keeps the newest complete segment back until pg_receivewal has opened the next
    one, which an idle primary only gives it data for at its next WAL record (the
    background writer's, up to 15 s later). Return the closed segment's file name.

    CLI Example:

    .. code-block:: bash

        salt backup barman.close_segment master-streaming
    """
    with _primary_cursor(server) as cur:
        cur.execute("SELECT pg_create_restore_point(%s)", (name,))
        cur.execute("SELECT pg_walfile_name(pg_switch_wal())")
        closed = cur.fetchone()[0]
        cur.execute("SELECT pg_create_restore_point(%s)", (name,))
    return closed


def create_slot(server):
    """
    Create the server's replication slot if it does not exist (``receive-wal --create-slot``).

    CLI Example:

    .. code-block:: bash

        salt backup barman.create_slot master-streaming
    """
    return _slot_command(server, "--create-slot", harmless="already exists")


def drop_slot(server):
    """
    Drop the server's replication slot on its primary (``receive-wal --drop-slot``); a slot
    that does not exist is fine. Stop receive-wal first: an active slot cannot be dropped.

    CLI Example:

    .. code-block:: bash

        salt backup barman.drop_slot other-streaming
    """
    return _slot_command(server, "--drop-slot", harmless="does not exist")


def _slot_command(server, option, harmless):
    """``barman receive-wal OPTION server``; an error saying ``harmless`` means done already."""
    try:
        _run("receive-wal", option, server, parse=False, timeout=60)
    except CommandExecutionError as exc:
        if harmless not in str(exc):
            raise
    return True


def verify_backup(server, backup_id="latest", timeout=1800):
    """
    Run ``barman verify-backup`` (pg_verifybackup on the backup; PostgreSQL 13+, and a
    plain-format backup: before PostgreSQL 18 pg_verifybackup reads no tarball, so a backup
    taken with ``backup_compression`` cannot be verified).

    CLI Example:

    .. code-block:: bash

        salt backup barman.verify_backup master-streaming latest
    """
    if backup_id == "latest":
        backups = list_backups(server)
        if not backups:
            raise CommandExecutionError(f"no backup of {server} to verify")
        backup_id = backups[0]["backup_id"]
    return _run("verify-backup", server, backup_id, parse=False, timeout=timeout)


def restore(
    server,
    destination,
    backup_id="latest",
    target_immediate=False,
    target_action=None,
    target_tli="latest",
    timeout=3600,
    **targets,
):
    """
    Restore a backup into ``destination`` (``barman recover``), optionally to a target:
    ``target_time``, ``target_xid``, ``target_lsn``, ``target_name`` or ``target_immediate``.
    ``target_tli``: the timeline to recover along, ``latest`` (default: across the timeline
    switches of switchovers and failovers since the backup, as PostgreSQL 12+ does),
    ``current`` (the backup's) or a number. Barman 2 knows numbers only: there ``latest``
    leaves Barman's default, the backup's own timeline. The copy opens once its recovery is
    over: a backup taken from a standby leaves its standby.signal behind. A retired server
    (``barman:retired``, inactive) restores too, also on Barman before 3.17.

    CLI Example:

    .. code-block:: bash

        salt backup barman.restore master-streaming /var/lib/barman/restore latest target_time='2026-11-25 14:00:00+00'
    """
    args = ["recover"]
    for key in RECOVERY_TARGETS:
        if targets.get(key):
            args += ["--" + key.replace("_", "-"), targets[key]]
    if target_tli and (str(target_tli).isdigit() or _major_version() >= 3):
        args += ["--target-tli", target_tli]
    if target_immediate:
        args.append("--target-immediate")
    if target_action:
        args += ["--target-action", target_action]
    args += [server, backup_id, destination]
    with _recovering_config(server) as config:
        out = _run(*args, parse=False, timeout=timeout, config=config)
    _ensure_empty_dirs(destination)
    _without_standby_signal(destination)
    return out


def _without_standby_signal(destination):
    """A backup taken from a standby (barman:backup_from) holds that standby's standby.signal,
    which Barman copies along: the restored copy would then wait for more WAL as a standby
    forever instead of opening at the end of its recovery. A restore here is a recovery."""
    path = os.path.join(destination, "standby.signal")
    if os.path.isfile(path):
        os.unlink(path)


# `barman recover` of an inactive server (barman:retired) works from Barman 3.17 on; before,
# it skips the server without a word.
RECOVERS_INACTIVE = (3, 17)
INACTIVE_RE = re.compile(r"^active\s*=\s*(false|off|no|0)\s*$", re.IGNORECASE | re.MULTILINE)


@contextlib.contextmanager
def _recovering_config(server):
    """The configuration ``barman recover`` of ``server`` runs with: Barman's own, or, for a
    retired (inactive) server on Barman before 3.17, a temporary one under Barman's home that
    holds only that server, active. Cron never reads it; it is removed after the restore."""
    config = _config_file()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config)
    directory = parser.get("barman", "configuration_files_directory", fallback=None)
    home = parser.get("barman", "barman_home", fallback="/var/lib/barman")
    try:
        with salt.utils.files.fopen(os.path.join(directory or "", f"{server}.conf"), "r") as fh:
            section = fh.read()
    except OSError:
        section = ""
    if not INACTIVE_RE.search(section) or _version() >= RECOVERS_INACTIVE:
        yield config
        return
    owner = __salt__["config.option"]("barman.user", "barman")
    scratch = tempfile.mkdtemp(prefix=".pg_replication-recover-", dir=home)
    try:
        os.mkdir(os.path.join(scratch, "servers"))
        parser.set("barman", "configuration_files_directory", os.path.join(scratch, "servers"))
        with salt.utils.files.fopen(os.path.join(scratch, "barman.conf"), "w") as fh:
            parser.write(fh)
        with salt.utils.files.fopen(os.path.join(scratch, "servers", f"{server}.conf"), "w") as fh:
            fh.write(INACTIVE_RE.sub("active = true", section))
        for path in (scratch, os.path.join(scratch, "servers")):
            __salt__["file.chown"](path, owner, owner)
        yield os.path.join(scratch, "barman.conf")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# Directories every data directory has, which Barman's local recover of an incremental
# backup (3.11-3.13) leaves out when it moves the combined copy into place: PostgreSQL will
# not start without pg_wal (Barman's own WAL goes to barman_wal or through get-wal).
RECOVERED_DIRS = ("pg_wal", "pg_tblspc")


def _ensure_empty_dirs(destination):
    owner = __salt__["config.option"]("barman.user", "barman")
    for name in RECOVERED_DIRS:
        path = os.path.join(destination, name)
        if os.path.isdir(destination) and not os.path.lexists(path):
            __salt__["file.mkdir"](path, user=owner, group=owner, mode="0700")


def _version():
    """Barman's version as numbers (``barman --version``; (0,) if it says none)."""
    if "barman.version" not in __context__:
        out = __salt__["cmd.run_stdout"](_base()[:1] + ["--version"], python_shell=False, ignore_retcode=True)
        found = re.search(r"(\d+)\.(\d+)", out or "")
        __context__["barman.version"] = tuple(int(n) for n in found.groups()) if found else (0,)
    return __context__["barman.version"]


def _major_version():
    """Barman's major version (``barman --version``)."""
    return _version()[0]
