# SPDX-License-Identifier: Apache-2.0
"""What the formula knows of PostgreSQL itself, shared by its modules, states, runner and
plan: WAL positions and the statements that read them, the standby marker of each version,
where its commands are, what pg_controldata and pg_rewind print, and the functions
pg_rewind's source role must run.

Pure logic; runs on the minion's Python (3.9 on Debian 11).
"""

import os

# The connection keywords every execution function and state of the formula accepts.
CONN_KEYS = ("host", "port", "user", "dbname")

# What pg_rewind needs of its source server's role (PostgreSQL docs, pg_rewind): given to the
# replication role, which may already copy the whole data directory with pg_basebackup.
REWIND_GRANTS = [
    "pg_ls_dir(text, boolean, boolean)",
    "pg_stat_file(text, boolean)",
    "pg_read_binary_file(text)",
    "pg_read_binary_file(text, bigint, bigint, boolean)",
]

# The server's end of WAL: a standby's received position, a primary's current one.
WAL_END_SQL = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END"

# Where a server stands (role, timeline, WAL position, what a switchover depends on): asked
# of this server (pg_replication.position) and of a peer (pg_replication.peer_position).
POSITION_SQL = (
    "SELECT pg_is_in_recovery() AS in_recovery,"
    " CASE WHEN pg_is_in_recovery() THEN COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
    "   ELSE pg_current_wal_lsn() END::text AS lsn,"
    " pg_last_wal_replay_lsn()::text AS replay_lsn,"
    " CASE WHEN pg_is_in_recovery()"
    "   THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver),"
    "                 (SELECT timeline_id FROM pg_control_checkpoint()))"
    "   ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,"
    " current_setting('wal_log_hints') AS wal_log_hints, current_setting('data_checksums') AS data_checksums,"
    " current_setting('max_wal_senders')::int AS max_wal_senders,"
    " current_setting('max_replication_slots')::int AS max_replication_slots,"
    " pg_postmaster_start_time()::text AS started"
)


def wal_end_sql():
    """:data:`WAL_END_SQL`, for a statement of the execution module."""
    return WAL_END_SQL


def position_sql():
    """:data:`POSITION_SQL`, for the execution module."""
    return POSITION_SQL


def conn_kwargs(kwargs):
    """The connection keywords (:data:`CONN_KEYS`) that ``kwargs`` sets."""
    return {k: kwargs[k] for k in CONN_KEYS if kwargs.get(k) is not None}


def lsn_bytes(text):
    """A WAL position ('16/B374D848') as a number of bytes."""
    high, low = str(text).split("/")
    return (int(high, 16) << 32) + int(low, 16)


def uses_standby_signal(version):
    """Whether a standby of PostgreSQL ``version`` is marked by standby.signal (12 and later;
    None: a current version) rather than by recovery.conf."""
    return version is None or int(version) >= 12


def standby_marker(datadir, version):
    """``(path, contents)`` of the file that makes the cluster in ``datadir`` a standby:
    standby.signal (empty), or before PostgreSQL 12 recovery.conf with standby_mode on."""
    if uses_standby_signal(version):
        return os.path.join(datadir, "standby.signal"), ""
    return os.path.join(datadir, "recovery.conf"), "standby_mode = 'on'\n"


def command(bin_dir, name):
    """PostgreSQL's command ``name`` in ``bin_dir`` (None: looked up on the PATH)."""
    return os.path.join(bin_dir, name) if bin_dir else name


def parse_controldata(stdout):
    """pg_controldata's output (run with LC_ALL=C) as ``{field: value}``."""
    out = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_rewind(lines):
    """What pg_rewind's output lines say: ``{"rewound", "diverged_at", "output"}``."""
    diverged = next((line.split("diverged at WAL location ", 1)[1] for line in lines if "diverged at" in line), None)
    return {"rewound": not any("no rewind required" in line for line in lines), "diverged_at": diverged,
            "output": lines}  # fmt: skip
