"""Restarts under control, against a real PostgreSQL 15: the restart a configuration change
will need is known before the file is written (test mode predicts it), a manual mode only
reports it, and a standby never restarts below its primary's hot-standby minimums."""

import contextlib
import subprocess

import pytest

from lab.pgserver import PG_BIN

SERVICE = "postgresql@15-main"


@pytest.fixture
def started(postgres):
    return lambda: postgres.fetch_one("SELECT pg_postmaster_start_time()")


@contextlib.contextmanager
def pending(postgres, name, value):
    """``name`` changed in the configuration and reloaded: it waits for a restart."""
    postgres.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    postgres.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        postgres.execute(f"ALTER SYSTEM RESET {name}")
        postgres.execute("SELECT pg_reload_conf()")


def test_restart_needed_reads_values_as_postgresql_does(modules, postgres):
    connections = postgres.fetch_one("SHOW max_connections")
    unchanged = {
        "shared_buffers": "128MB",  # running: 16384 of 8kB
        "max_wal_senders": 10,
        "max_connections": connections,
        "wal_level": "REPLICA",  # enums ignore case
        "logging_collector": False,
        "max_replication_slots": "60",
        "work_mem": "64MB",  # differs, but a reload applies it
    }
    assert modules.pg_replication.restart_needed(unchanged) == []
    changed = dict(unchanged, shared_buffers="0.25GB", max_locks_per_transaction=128, logging_collector="on")
    assert modules.pg_replication.restart_needed(changed) == [
        "logging_collector", "max_locks_per_transaction", "shared_buffers"
    ]  # fmt: skip
    # This server's postgresql.auto.conf sets wal_level (lab/pgserver.py): ALTER SYSTEM wins
    # over the file, so the file's value predicts nothing.
    assert modules.pg_replication.restart_needed(dict(unchanged, wal_level="logical")) == []


def restart(postgres):
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(postgres.datadir), "-w",
                    "-l", str(postgres.root / "log"), "restart"], check=True, capture_output=True)  # fmt: skip


def test_a_setting_the_file_no_longer_holds_returns_to_its_default(modules, postgres):
    conf = postgres.datadir / "postgresql.conf"
    original = conf.read_text()
    conf.write_text(original + "max_locks_per_transaction = 128\n")
    restart(postgres)
    try:
        assert modules.pg_replication.restart_needed({"max_locks_per_transaction": 128}) == []
        # A file without the line: back to the built-in 64 at the next restart.
        assert modules.pg_replication.restart_values({}) == {"max_locks_per_transaction": "64"}
    finally:
        conf.write_text(original)
        restart(postgres)


def test_test_mode_predicts_the_restart_before_the_file_changes(states, started):
    before = started()
    ret = states.pg_replication.restarted_if_pending(SERVICE, settings={"shared_buffers": "256MB"}, test=True)
    assert ret.result is None
    assert ret.changes == {"restarted": SERVICE, "settings": ["shared_buffers"]}
    same = states.pg_replication.restarted_if_pending(SERVICE, settings={"shared_buffers": "128MB"}, test=True)
    assert (same.result, same.changes) == (True, {})
    assert started() == before


def test_manual_mode_reports_the_pending_restart_without_failing_or_restarting(states, postgres, started):
    before = started()
    with pending(postgres, "shared_buffers", "256MB"):
        for test in (True, False):
            ret = states.pg_replication.restarted_if_pending(
                SERVICE, mode="manual", role="primary", settings={"shared_buffers": "256MB"}, test=test
            )
            assert ret.result is True
            assert ret.changes == {}
            assert "needs a restart for shared_buffers, not made: pg_replication:restart:primary is manual" in (
                ret.comment
            )
            assert "salt-run pg_replication.rolling_restart" in ret.comment
    assert started() == before


def test_a_standby_is_not_restarted_below_its_primarys_minimums(states, modules, postgres, started):
    recorded = modules.pg_replication.primary_minimums(str(postgres.datadir), str(PG_BIN))
    assert set(recorded) == {"max_connections", "max_worker_processes", "max_wal_senders",
                             "max_prepared_transactions", "max_locks_per_transaction"}  # fmt: skip
    lower = int(recorded["max_connections"]) - 10
    before = started()
    with pending(postgres, "max_connections", lower):
        ret = states.pg_replication.restarted_if_pending(
            SERVICE, mode="auto", role="standby", settings={"max_connections": lower},
            data_dir=str(postgres.datadir), bin_dir=str(PG_BIN),
        )  # fmt: skip
    assert ret.result is True
    assert ret.changes == {}
    assert f"lower settings below the primary's (max_connections {lower} < {recorded['max_connections']})" in (
        ret.comment
    )
    assert started() == before
