"""Barman's metrics in Prometheus' text format (pg_replication_monitoring), from ``barman -f
json``'s check items and list-backups entries as Barman 3.4 prints them (pure: no Barman is
run; the lab's backup host runs the real one, tests/integration/test_booted.py)."""

import pytest

from tests.conftest import REPO_ROOT, load_file

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def monitoring():
    return load_file("pg_replication_monitoring", REPO_ROOT / "_utils/pg_replication_monitoring.py")


def backup(backup_id, status, end=None, size=0):
    entry = {"backup_id": backup_id, "status": status, "size_bytes": size, "end_time": "Sat Dec  5 03:00:00 2026"}
    if end is not None:
        entry["end_time_timestamp"] = str(int(end))
    return entry


def test_a_server_with_backups_and_a_failed_check(monitoring):
    checks = {"postgresql": {"status": "OK", "hint": ""}, "wal_archive": {"status": "FAILED", "hint": "no WAL yet"},
              "receive_wal_running": {"status": "OK", "hint": ""}}  # fmt: skip
    backups = [backup("b3", "FAILED"), backup("b2", "DONE", NOW - 600, 2048), backup("b1", "DONE", NOW - 90000, 1024)]
    text = monitoring.barman_metrics(monitoring.server_samples("db1-streaming", checks, backups, 86400, NOW), NOW)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        'barman_backup_max_age_seconds{server="db1-streaming"} 86400',
        'barman_backups{server="db1-streaming",status="DONE"} 2',
        'barman_backups{server="db1-streaming",status="FAILED"} 1',
        'barman_check_ok{check="postgresql",server="db1-streaming"} 1',
        'barman_check_ok{check="receive_wal_running",server="db1-streaming"} 1',
        'barman_check_ok{check="wal_archive",server="db1-streaming"} 0',
        'barman_checks_failed{server="db1-streaming"} 1',
        'barman_last_backup_age_seconds{server="db1-streaming"} 600',
        'barman_last_backup_size_bytes{server="db1-streaming"} 2048',
        "barman_metrics_timestamp_seconds 1800000000",
        'barman_receive_wal_running{server="db1-streaming"} 1',
        'barman_up{server="db1-streaming"} 1',
    ]
    assert "# TYPE barman_check_ok gauge" in text
    assert "no WAL yet" not in text


def test_a_server_barman_does_not_answer_for(monitoring):
    samples = monitoring.server_samples('we"ird', None, None, 60, NOW)
    text = monitoring.barman_metrics(samples, NOW)
    assert 'barman_up{server="we\\"ird"} 0' in text
    assert 'barman_backups{server="we\\"ird",status="DONE"} 0' in text
    assert "barman_last_backup_age_seconds" not in text
    assert "barman_check_ok" not in text


def test_the_last_restore_drill_from_its_result_file(monitoring, tmp_path):
    """The metrics script's barman_drill_* samples from the result a drill recorded (the
    standalone code: pg_replication_barman_metrics, which the script loads)."""
    metrics = load_file("pg_replication_barman_metrics", REPO_ROOT / "_utils/pg_replication_barman_metrics.py")
    (tmp_path / "db.result.json").write_text('{"ok": false, "finished": 1799999990, "reason": "x"}')
    (tmp_path / "torn.result.json").write_text('{"ok": tr')
    assert metrics.read_drill_result(str(tmp_path), "none") is None
    assert metrics.read_drill_result(str(tmp_path), "torn") is None
    failed = metrics.read_drill_result(str(tmp_path), "db")
    text = monitoring.barman_metrics(metrics.drill_samples("db", failed, NOW), NOW)
    assert 'barman_drill_ok{server="db"} 0' in text.splitlines()
    assert 'barman_drill_age_seconds{server="db"} 10' in text.splitlines()
    assert "# HELP barman_drill_ok 1 if the last restore drill of the server passed, 0 if it failed." in text
    assert "barman_drill_rto_seconds" not in text
    assert metrics.drill_samples("db", None, NOW) == []
