# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: this server's state (recovery, replication status,
WAL position, pg_control), the settings that wait for a restart, promotion and checkpoint.
Part of ``pg_replication`` (see pg_replication.py).
"""

import os
import struct

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    # One of the files of the pg_replication module (Salt merges the functions of files
    # that share a virtual name); loads without psycopg2, like pg_replication.py.
    return __virtualname__


def in_recovery(**kwargs):
    """
    True if the server is a standby (``pg_is_in_recovery()``).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.in_recovery
    """
    return _query("SELECT pg_is_in_recovery() AS r", **kwargs)[0]["r"]


def status(**kwargs):
    """
    The replication picture of this server as a plain dict: its role (primary/standby) and
    timeline, pg_stat_replication rows with lag, its slots, and on a standby the WAL
    receiver and replay lag in bytes and seconds.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.status
    """
    return _status(position(**kwargs), **kwargs)


def _status(where, **kwargs):
    """status() of a server whose :py:func:`position` is ``where``."""
    standby = where["in_recovery"]
    wal_end = __utils__["pg_replication_postgres.wal_end_sql"]()
    out = {
        "role": "standby" if standby else "primary",
        "timeline": where["timeline"],
        "slots": __salt__["pg_replication.slots"](**kwargs),
    }
    out["replication"] = _query(
        "SELECT pid, usename, application_name, client_addr::text AS client_addr, state, sync_state,"  # noqa: S608
        " sent_lsn::text AS sent_lsn, flush_lsn::text AS flush_lsn, replay_lsn::text AS replay_lsn,"
        # WAL-only clients (pg_receivewal, Barman) never replay: their lag is to what they flushed.
        f" pg_wal_lsn_diff({wal_end}, COALESCE(replay_lsn, flush_lsn, sent_lsn))::bigint AS lag_bytes,"
        " EXTRACT(EPOCH FROM replay_lag)::float AS lag_seconds"
        " FROM pg_stat_replication ORDER BY application_name, pid",
        **kwargs,
    )
    if standby:
        receiver = _query(
            "SELECT status, sender_host, sender_port, slot_name, received_tli,"
            " flushed_lsn::text AS flushed_lsn FROM pg_stat_wal_receiver",
            **kwargs,
        )
        out["wal_receiver"] = receiver[0] if receiver else None
        out["lag"] = _query(
            "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint AS bytes,"
            " COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)::float AS seconds",
            **kwargs,
        )[0]
    return out


def pending_restart(**kwargs):
    """
    Names of settings changed in the configuration that need a server restart.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.pending_restart
    """
    return sorted(pending_settings(**kwargs))


PENDING_SQL = """
SELECT s.name, s.setting AS running,
       COALESCE((SELECT f.setting FROM pg_file_settings f
                  WHERE f.name = s.name AND f.error IS NULL ORDER BY f.seqno DESC LIMIT 1),
                s.boot_val) AS configured
  FROM pg_settings s WHERE s.pending_restart ORDER BY 1
"""


def pending_settings(**kwargs):
    """
    Settings whose configured value waits for a restart: ``{name: {"running", "configured"}}``
    (a setting no longer in any file returns to its built-in default).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.pending_settings
    """
    return {
        row["name"]: {"running": row["running"], "configured": row["configured"]}
        for row in _query(PENDING_SQL, **kwargs)
    }


def lowered_minimums(**kwargs):
    """
    The hot-standby minimums (max_connections, max_worker_processes, max_wal_senders,
    max_prepared_transactions, max_locks_per_transaction) whose configured value, waiting for
    a restart, is lower than the running one: ``{name: [running, configured]}``. On a
    primary, such a change must restart the primary before its standbys.

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.lowered_minimums
    """
    pending = pending_settings(**kwargs)
    lowered = __utils__["pg_replication_settings.lowered_minimums"](
        {name: p["configured"] for name, p in pending.items()},
        {name: p["running"] for name, p in pending.items()},
    )
    return {name: list(values) for name, values in lowered.items()}


# Restart-only settings: those a postgresql.conf sets (``settings``), and those it set and no
# longer does, which return to their built-in default (boot_val) at the next restart.
# postgresql.auto.conf (ALTER SYSTEM) wins over postgresql.conf: what it sets is not the
# rendered file's to predict (a pending restart for it shows in pending_restart).
UPCOMING_SQL = """
SELECT name, setting, unit, vartype, boot_val FROM pg_settings
 WHERE context = 'postmaster'
   AND (name = ANY(%(names)s) OR (source = 'configuration file' AND sourcefile NOT LIKE %(auto)s))
   AND name NOT IN (SELECT name FROM pg_file_settings WHERE sourcefile LIKE %(auto)s AND error IS NULL)
"""


def restart_values(settings, **kwargs):
    """
    The restart-only settings that a server whose postgresql.conf holds exactly ``settings``
    (``{name: value}``) would run with differently after a restart: ``{name: value}``, the
    value as configured (a setting the file no longer holds: its built-in default). Known
    before the file is written; units, booleans and enums compared as PostgreSQL reads them.
    Settings postgresql.auto.conf sets are left out: ALTER SYSTEM's value wins.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.restart_values '{"shared_buffers": "256MB", "port": 5432}'
    """
    params = {"names": sorted(settings), "auto": "%postgresql.auto.conf"}
    rows = {row["name"]: row for row in _query(UPCOMING_SQL, params, **kwargs)}
    wanted = {name: settings.get(name, row["boot_val"]) for name, row in rows.items()}
    changed = __utils__["pg_replication_settings.differing"](wanted, rows)
    return {name: wanted[name] for name in changed}


def restart_needed(settings, **kwargs):
    """
    Names of the settings :py:func:`restart_values` finds: the restart a configuration
    change will need, known before the file is written.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.restart_needed '{"shared_buffers": "256MB", "port": 5432}'
    """
    return sorted(restart_values(settings, **kwargs))


def primary_minimums(datadir, bin_dir=None):
    """
    On a standby: the values of the settings it needs at least as high as its primary's, as
    the primary last recorded them in the WAL (``pg_controldata``): a restart with lower
    values would stop the standby.

    CLI Example:

    .. code-block:: bash

        salt standby pg_replication.primary_minimums /var/lib/postgresql/15/main
    """
    return __utils__["pg_replication_settings.recorded_minimums"](controldata(datadir, bin_dir))


def datadir_system_identifier(datadir):
    """
    The database system identifier recorded in ``DATADIR/global/pg_control`` (None if the
    directory holds no cluster). Read from the file, so it works with the server down.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.datadir_system_identifier /var/lib/postgresql/15/main
    """
    path = os.path.join(datadir, "global", "pg_control")
    try:
        with open(path, "rb") as fh:
            # ControlFileData starts with the uint64 system_identifier, in host byte order.
            return str(struct.unpack("=Q", fh.read(8))[0])
    except FileNotFoundError:
        return None


def position(**kwargs):
    """
    Where this server stands: in recovery or not, its timeline, its WAL position (a
    standby's: what it received), and the settings a switchover depends on.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.position
    """
    return _query(__utils__["pg_replication_postgres.position_sql"](), **kwargs)[0]


def controldata(datadir, bin_dir=None):
    """
    ``pg_controldata`` of a data directory as a dict (works with the server down): e.g.
    ``Database cluster state``, ``Latest checkpoint location``, ``Latest checkpoint's
    TimeLineID``. Empty if the directory holds no cluster.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.controldata /var/lib/postgresql/15/main bin_dir=/usr/lib/postgresql/15/bin
    """
    if datadir_system_identifier(datadir) is None:
        return {}
    res = __salt__["cmd.run_all"](
        [__utils__["pg_replication_postgres.command"](bin_dir, "pg_controldata"), datadir],
        env={"LC_ALL": "C"},
        python_shell=False,
        ignore_retcode=True,
    )
    if res["retcode"]:
        raise CommandExecutionError(f"pg_controldata {datadir} failed: {res['stderr'].strip()}")
    return __utils__["pg_replication_postgres.parse_controldata"](res["stdout"])


def promote(wait_seconds=60, **kwargs):
    """
    Promote this standby (``pg_promote(wait => true)``) and return its new position. The
    master's ``pg_replication.switchover`` and ``failover`` runners call it after their
    checks; calling it by hand makes a second primary unless the old one is gone.

    CLI Example:

    .. code-block:: bash

        salt standby pg_replication.promote
    """
    if not in_recovery(**kwargs):
        raise CommandExecutionError("this server is not in recovery; there is nothing to promote")
    if not _query("SELECT pg_promote(true, %s) AS done", (int(wait_seconds),), **kwargs)[0]["done"]:
        raise CommandExecutionError(f"the server did not finish its promotion within {wait_seconds}s")
    return position(**kwargs)


def checkpoint(**kwargs):
    """
    Run a CHECKPOINT. After a promotion, pg_rewind reads the new primary's timeline from its
    control file, which only the next checkpoint updates: without one it finds "the same
    timeline" and rewinds nothing.

    CLI Example:

    .. code-block:: bash

        salt new-primary pg_replication.checkpoint
    """
    _query("CHECKPOINT", fetch=False, **kwargs)
    return True


def _query(statement, *args, **kwargs):
    """pg_replication_connection.query with this loader's __context__ (as its dict) and settings."""
    configured = __salt__["config.option"]("pg_replication.connection", {})
    return __utils__["pg_replication_connection.query"](__context__.value(), configured, statement, *args, **kwargs)
