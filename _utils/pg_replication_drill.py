# SPDX-License-Identifier: Apache-2.0
"""Restore drills on the backup host (``pg_replication:barman:drill``): the plan's part (the
pillar's values checked and completed, the drill's files and cron line), and what a drill
decides without running anything: which backup it restores, the command lines of its steps,
its result, and what that result means for ``barman.health`` (its metrics:
``pg_replication_barman_metrics.drill_samples``).

A drill restores the latest DONE backup of a Barman server (``barman recover``, locally) into
a scratch directory under Barman's home, starts it on a private port with no TCP listener,
checks it (it reaches the end of its WAL or the target and leaves recovery; ``pg_amcheck`` on
the catalog and the pillar's tables), records the result and the measured restore time (RTO)
in a JSON file, and always removes the scratch copy. The module is
``_modules/barman_drill.py``.

Functions append ``"pillar:key: message"`` to ``errors`` for each fault. Pure logic; runs on
the minion's Python (3.9 on Debian 11).
"""

import datetime
import os
import re
import runpy
import shlex

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
syntax = _sibling("pg_replication_syntax")
KEY = "pg_replication:barman:drill"
# The pillar's drill, completed: schedule null runs drills on demand only.
DEFAULTS = {"schedule": None, "target": "latest", "tables": [], "timeout": 1800, "port": 54329}
# The drill's directory under Barman's home: its configuration, results, lock and scratch copies.
DIR_NAME = "pg_replication-drill"
CONFIG_NAME = "drill.json"
# A point in time: ISO date and time with an explicit zone (Z, +HH, +HH:MM).
TARGET_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(Z|[+-]\d{2}(:?\d{2})?)$")
# A table pg_amcheck checks: schema.table (in every database) or database.schema.table.
IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
TABLE_RE = re.compile(rf"^({IDENT}\.)?{IDENT}\.{IDENT}$")
# The role the scratch copy is checked as (the restored cluster's bootstrap superuser on Debian
# and in the PGDG packages), over its Unix socket with trust: the copy has no TCP listener.
SUPERUSER = "postgres"
CRON_IDENTIFIER = "pg_replication-barman-drill"
# The backup marker: before each backup of this cluster's Barman server, Barman's
# pre_backup_script (MARKER_HOOK, as the barman user) writes a row for it on the primary and
# records how many rows the server's markers had then; a drill counts them in the restored
# copy. The primary's highstate creates the table (owned by postgres; the barman role may
# only read and insert).
MARKER_HOOK = "/usr/local/lib/pg_replication/barman-backup-marker"
# (A schema name may not begin with pg_: those are the system's.)
MARKER_DATABASE, MARKER_SCHEMA, MARKER_TABLE = "postgres", "pgr_drill", "backup_marker"
MARKER_PRIVILEGES = ("SELECT", "INSERT")
# Rows of the markers up to and including a backup's own (ids only grow, across failovers:
# a promoted standby's sequence is ahead of what it replayed).
MARKER_COUNT_SQL = (
    "SELECT count(*) FROM pgr_drill.backup_marker WHERE server = %(server)s AND id <="
    " (SELECT id FROM pgr_drill.backup_marker WHERE server = %(server)s AND backup_id = %(backup_id)s)"
)
SPECIAL_SCHEDULES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *"}


def config_path(home):
    """The drill's configuration file under Barman's ``home``."""
    return f"{home}/{DIR_NAME}/{CONFIG_NAME}"


def superuser():
    return SUPERUSER


def parse_target(value):
    """The POSIX timestamp of a target ``YYYY-MM-DD HH:MM:SS+ZZ`` (None for ``latest``); raise
    ValueError for anything else."""
    if value in (None, "latest"):
        return None
    match = TARGET_RE.fullmatch(str(value))
    if not match:
        raise ValueError(f"{value!r} is not latest or a time YYYY-MM-DD HH:MM:SS with a zone (Z, +00, +01:00)")
    zone = match.group(3)
    if zone == "Z":
        zone = "+00:00"
    elif len(zone) == 3:
        zone += ":00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        moment = datetime.datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}{zone}")
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from exc
    return moment.timestamp()


def check_target(value):
    """Schema check of ``drill:target``: a message, or None."""
    try:
        parse_target(value)
    except ValueError as exc:
        return str(exc)
    return None


def check_table(value):
    if not isinstance(value, str) or not TABLE_RE.fullmatch(value):
        return f"{value!r} is not schema.table or database.schema.table (letters, digits, _)"
    return None


def plan_drill(barman, servers, errors):
    """``barman:drill`` completed (None: no drills), with its files, cron fields and command,
    and each server's ``drill`` part (its server binaries' directory and package)."""
    drill = barman.get("drill")
    if drill is None:
        return None
    drill = dict(DEFAULTS, **drill)
    drill["tables"] = tables_by_server(drill.get("tables"), servers, errors)
    home = barman["home"]
    drill["dir"] = f"{home}/{DIR_NAME}"
    drill["config"] = config_path(home)
    if not servers:
        errors.append(f"{KEY}: there is no Barman server to drill")
    drill["cron"] = cron_fields(drill["schedule"])
    # After salt-call (the state picks the one beside the minion's Python): no pillar needed.
    # The return is recorded in the result files: none on stdout (cron would mail it; Salt
    # 3008 has no "quiet" outputter any more, so --out-file, not --out=quiet).
    drill["command"] = syntax.shell_words(["--local", "--out=json", "--out-file=/dev/null", "--log-level=quiet",
                                           "barman.drill", f"config={drill['config']}"])  # fmt: skip
    drill["identifier"] = CRON_IDENTIFIER
    # The server binaries (pg_ctl, postgres) of each backed-up major version.
    drill["pkgs"] = sorted({s["server_pkg"] for s in servers})
    for server in servers:
        server["marker_script"] = None if server["external"] else marker_script(barman, drill, server)
    drill["file"] = config_file(drill, servers)
    return drill


def marker():
    """The backup marker table's names and the drill's count query (for the modules: the
    loader passes functions only)."""
    return {"database": MARKER_DATABASE, "schema": MARKER_SCHEMA, "table": MARKER_TABLE,
            "privileges": list(MARKER_PRIVILEGES), "count_sql": MARKER_COUNT_SQL}  # fmt: skip


def marker_script(barman, drill, server):
    """The server's pre_backup_script: the marker hook with the Python that has psycopg2 (the
    barman package's, or the pip install's virtualenv), where it records, the primary's
    conninfo, and the barman user's password file."""
    install = barman.get("install") or {}
    python = f"{install['venv']}/bin/python3" if install.get("method") == "pip" else "/usr/bin/python3"
    words = [python, MARKER_HOOK, marker_record_path(drill["dir"], server["name"]), server["marker_conninfo"],
             f"{barman['home']}/.pgpass"]  # fmt: skip
    return syntax.shell_words(words)


def marker_record_path(drill_dir, server):
    """Where the marker hook records each backup's marker count (``{backup_id: rows}``)."""
    return f"{drill_dir}/{server}.markers.json"


def marker_verdict(backup_id, expected, found):
    """``(ok, reason)`` of a restored copy's marker count: ``expected`` (what the hook
    recorded for ``backup_id``; None: no marker was written for it, nothing to compare) and
    ``found`` (the count in the copy; None: no marker table)."""
    if expected is None or expected == found:
        return True, None
    return False, (
        f"the restored copy holds {found or 0} of the {expected} backup markers written up to backup"
        f" {backup_id} (before it started): the restore lost committed rows"
    )


def tables_by_server(tables, servers, errors):
    """``drill:tables`` per Barman server: a list is every server's; a mapping names the
    servers (a server it does not name: the catalog only)."""
    names = [s["name"] for s in servers]
    if isinstance(tables, dict):
        for name in sorted(set(tables) - set(names)):
            errors.append(f"{KEY}:tables:{name}: not a Barman server of this backup host ({', '.join(names)})")
        return {name: list(tables.get(name) or []) for name in names}
    return {name: list(tables or []) for name in names}


def cron_fields(schedule):
    """Salt's ``cron.present`` arguments for a schedule (five fields or @name), or None."""
    if not schedule:
        return None
    # As five fields: cron.absent then finds the line whatever the schedule was.
    schedule = SPECIAL_SCHEDULES.get(schedule, schedule)
    minute, hour, daymonth, month, dayweek = schedule.split()
    return {"minute": minute, "hour": hour, "daymonth": daymonth, "month": month, "dayweek": dayweek}


def config_file(drill, servers):
    """What the drill's configuration file holds: everything a drill needs without the pillar
    (cron runs it with ``salt-call --local``)."""
    return {
        "dir": drill["dir"],
        "schedule": drill["schedule"],
        "target": drill["target"],
        "timeout": int(drill["timeout"]),
        "port": int(drill["port"]),
        "servers": {
            s["name"]: {
                "bin_dir": s["bin_dir"],
                "version": s["version"],
                "verify": verifiable(s),
                "tables": drill["tables"].get(s["name"], []),
                "marker": bool(s["marker_script"]),
            }
            for s in servers
        },
    }


def verifiable(server):
    """``barman verify-backup`` runs pg_verifybackup: PostgreSQL 13+, and before 18 a plain
    (not tarball) backup."""
    return server["version"] >= 13 and (server.get("backup_compression") in (None, "none") or server["version"] >= 18)


# --------------------------------------------------------------------------- one drill


def paths(drill_dir, server):
    """The scratch copy, its log, and the result file of ``server``'s drill."""
    scratch = f"{drill_dir}/{server}.scratch"
    return {
        "scratch": scratch,
        "data": f"{scratch}/data",
        "log": f"{scratch}/postgresql.log",
        "conf": f"{scratch}/drill.conf",
        "hba": f"{scratch}/drill_hba.conf",
        "ident": f"{scratch}/drill_ident.conf",
        "result": f"{drill_dir}/{server}.result.json",
        "lock": f"{drill_dir}/drill.lock",
    }


def inside(path, directory):
    """True if ``path`` is strictly inside ``directory`` (both normalised): the only tree a
    drill ever removes is its scratch copy."""
    path, directory = os.path.normpath(path), os.path.normpath(directory)
    return path != directory and path.startswith(directory.rstrip("/") + "/")


def choose_backup(backups, target_ts=None):
    """The newest DONE backup (that ended before ``target_ts``); None if there is none.
    ``backups``: ``barman -f json list-backup``'s entries."""
    done = [b for b in backups if b.get("status") == "DONE"]
    if target_ts is not None:
        done = [b for b in done if b.get("end_time_timestamp") and float(b["end_time_timestamp"]) < target_ts]
    done.sort(key=lambda b: (float(b.get("end_time_timestamp") or 0), b["backup_id"]), reverse=True)
    return done[0] if done else None


def restore_args(target):
    """``barman.restore``'s keyword arguments for the pillar's target."""
    if target in (None, "latest"):
        return {}
    return {"target_time": target, "target_action": "promote"}


def server_options(p, port):
    """``pg_ctl -o``: the scratch copy's own configuration file (the backup holds none on
    Debian), its private port, only a Unix socket in the scratch directory, no archiving, no
    hot standby (the primary's sizes need not be matched: it opens once recovery is over),
    no synchronous standby to wait for (an ALTER SYSTEM one would hold pg_amcheck's CREATE
    EXTENSION until the time limit). On the command line, these win over the restored
    postgresql.auto.conf."""
    options = {
        "config_file": p["conf"],
        "hba_file": p["hba"],
        "ident_file": p["ident"],
        "port": str(port),
        "listen_addresses": "",
        "unix_socket_directories": p["scratch"],
        "archive_mode": "off",
        "synchronous_standby_names": "",
        "hot_standby": "off",
        "logging_collector": "off",
    }
    return " ".join(shlex.quote(f"-c{k}={v}") if v else f"-c{k}=" for k, v in options.items())


def start_command(bin_dir, p, port, timeout):
    return [f"{bin_dir}/pg_ctl", "start", "-D", p["data"], "-w", "-t", str(max(1, int(timeout))), "-l", p["log"],
            "-o", server_options(p, port)]  # fmt: skip


def stop_command(bin_dir, p):
    return [f"{bin_dir}/pg_ctl", "stop", "-D", p["data"], "-m", "immediate", "-w", "-t", "60"]


def amcheck_command(bin_dir, p, port, tables):
    """pg_amcheck on the catalog of every database and the listed tables (a table that exists
    nowhere fails it); the amcheck extension is created in the scratch copy if missing."""
    words = [f"{bin_dir}/pg_amcheck", "-h", p["scratch"], "-p", str(port), "-U", SUPERUSER, "--all",
             "--install-missing", "-s", "pg_catalog"]  # fmt: skip
    for table in tables:
        words += ["-t", table]
    return words


def result(server, ok, reason, backup_id=None, rto=None, started=None, steps=None, now=None, rows=None,
           marker=None):  # fmt: skip
    """The JSON a drill records (``marker``: the backup markers expected and found, or None)."""
    return {
        "server": server,
        "ok": bool(ok),
        "reason": reason,
        "backup_id": backup_id,
        "rto_seconds": None if rto is None else round(rto, 1),
        "started": started,
        "finished": now,
        "steps": steps or {},
        "rows": rows or {},
        "marker": marker,
    }


def health(server, scheduled, recorded, now):
    """What the drill means for ``barman.health``: ``(code, message)`` with code 0 (OK, or no
    drill expected) or 2 (CRITICAL: a failed drill, or none recorded though scheduled)."""
    if not recorded:
        if scheduled:
            return 2, f"restore drill of {server} is scheduled but none has run"
        return 0, None
    age = int(now - (recorded.get("finished") or 0))
    if not recorded.get("ok"):
        return 2, f"restore drill of {server} failed {age}s ago: {recorded.get('reason')}"
    backup_id, rto = recorded.get("backup_id"), recorded.get("rto_seconds")
    return 0, f"restore drill of {server} OK {age}s ago, backup {backup_id}, RTO {rto}s"
