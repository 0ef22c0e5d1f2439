"""barman.health from Barman's own Nagios answer (`barman check --nagios`) and its JSON
check items (pure: no Barman is run; the answers are as Barman 3.4 prints them)."""

import pytest

from tests.conftest import REPO_ROOT, load_file


@pytest.fixture(scope="module")
def barman_module():
    return load_file("barman_module", REPO_ROOT / "_modules/barman.py")


def checks(**failed):
    items = {"postgresql": {}, "wal_archive": {}, "backup_maximum_age": {}, "minimum_redundancy_requirements": {}}
    return {item: {"status": "FAILED", "hint": failed[item]} if item in failed else {"status": "OK", "hint": ""}
            for item in items}  # fmt: skip


def nagios(stdout, retcode, stderr=""):
    return {"stdout": stdout, "stderr": stderr, "retcode": retcode}


def test_all_ok_is_barmans_line_and_code(barman_module):
    answer = nagios("BARMAN OK - Ready to serve the Espresso backup for db\n", 0)
    health = barman_module._nagios_health("db", answer, checks())
    assert health == {"server": "db", "status": "OK", "code": 0, "checks": checks(),
                      "line": "BARMAN OK - Ready to serve the Espresso backup for db"}  # fmt: skip


def test_a_failed_check_is_barmans_first_line_and_code(barman_module):
    """Barman's answer names the failed checks on its first line, one per line after it."""
    answer = nagios(
        "BARMAN CRITICAL - server db has issues * db FAILED: backup maximum age, minimum redundancy requirements\n"
        "db.backup maximum age: FAILED (interval provided: 1 day, latest backup age: No available backups)\n"
        "db.minimum redundancy requirements: FAILED (have 0 backups, expected at least 1)\n",
        2,
    )
    failed = checks(backup_maximum_age="interval provided: 1 day", minimum_redundancy_requirements="have 0")
    health = barman_module._nagios_health("db", answer, failed)
    assert (health["status"], health["code"], health["checks"]) == ("CRITICAL", 2, failed)
    assert health["line"] == (
        "BARMAN CRITICAL - server db has issues * db FAILED: backup maximum age, minimum redundancy requirements"
    )


def test_the_status_is_the_name_of_barmans_exit_code(barman_module):
    for code, status in ((0, "OK"), (1, "WARNING"), (2, "CRITICAL"), (3, "UNKNOWN"), (4, "UNKNOWN")):
        health = barman_module._nagios_health("db", nagios(f"BARMAN {status} - db\n", code), {})
        assert (health["status"], health["code"]) == (status, code)


def test_barman_that_could_not_run_is_critical_with_the_reason(barman_module):
    missing = "barman: the barman command is not installed (not on the PATH)"
    health = barman_module._nagios_health("db", None, {}, missing)
    assert health == {"server": "db", "status": "CRITICAL", "code": 2, "checks": {},
                      "line": f"BARMAN CRITICAL - db: {missing}"}  # fmt: skip
    # Not the plugin's line (a crash): its first line of stderr, and the exit code.
    crash = nagios("", 1, stderr="Traceback (most recent call last):\n  File ...")
    health = barman_module._nagios_health("db", crash, {})
    assert (health["status"], health["code"]) == ("CRITICAL", 2)
    assert (
        health["line"] == "BARMAN CRITICAL - db: barman check --nagios failed (1): Traceback (most recent call last):"
    )


def test_health_runs_barmans_nagios_check_besides_the_json_one(barman_module, monkeypatch):
    calls = []

    def run_all(cmd, **kwargs):
        calls.append(cmd[1:])
        if "--nagios" in cmd:
            return nagios("BARMAN CRITICAL - server db has issues * db FAILED: wal archive\n", 2)
        return {"stdout": __import__("json").dumps({"db": checks(wal_archive="")}), "stderr": "", "retcode": 1}

    monkeypatch.setattr(barman_module, "_binary", lambda: "barman")
    barman_module.__context__ = {}
    barman_module.__salt__ = {"cmd.run_all": run_all, "config.option": lambda key, default=None: default}
    barman_module.__pillar__ = {}
    barman_module.__utils__ = {"pg_replication_pillar.lookup": lambda pillar, key, default: default}
    try:
        health = barman_module.health("db")
    finally:
        for name in ("__context__", "__salt__", "__pillar__", "__utils__"):
            delattr(barman_module, name)
    assert calls == [["-c", "/etc/barman.conf", "-f", "json", "check", "db"],
                     ["-c", "/etc/barman.conf", "check", "--nagios", "db"]]  # fmt: skip
    assert (health["status"], health["code"]) == ("CRITICAL", 2)
    assert health["line"] == "BARMAN CRITICAL - server db has issues * db FAILED: wal archive"
    assert health["checks"]["wal_archive"]["status"] == "FAILED"


def test_a_reused_check_is_the_jobs_last_unless_a_command_since_may_have_changed_it(barman_module, monkeypatch):
    """barman.check(reuse=True) (a state run's final verification): the last check of that
    server in this job, run again after any command that is not read-only."""
    calls = []

    def run_all(cmd, **kwargs):
        calls.append(cmd[cmd.index("json") + 1])
        out = {cmd[-1]: checks()} if calls[-1] == "check" else {}
        return {"stdout": __import__("json").dumps(out), "stderr": "", "retcode": 0}

    monkeypatch.setattr(
        barman_module, "_base", lambda json_output=True, config=None: ["barman", "-c", "/etc/barman.conf", "-f", "json"]
    )
    barman_module.__context__ = {}
    barman_module.__salt__ = {"cmd.run_all": run_all, "config.option": lambda key, default=None: default}
    try:
        barman_module.check("db")
        barman_module.check("db", reuse=True)
        barman_module.list_backups("db")  # read-only
        assert barman_module.failed_checks("db", reuse=True) == []
        assert calls == ["check", "list-backup"]
        barman_module.switch_wal("db")
        barman_module.check("db", reuse=True)
        assert calls == ["check", "list-backup", "switch-wal", "check"]
        barman_module.check("other", reuse=True)  # never checked in this job
        assert calls == ["check", "list-backup", "switch-wal", "check", "check"]
    finally:
        for name in ("__context__", "__salt__"):
            delattr(barman_module, name)


def test_a_failed_or_missing_drill_is_critical_and_a_good_one_is_reported(barman_module):
    """A restore drill (barman.drill_health's answer) on top of Barman's answer."""
    ok = barman_module._nagios_health("db", nagios("BARMAN OK - Ready to serve the Espresso backup for db\n", 0), {})
    assert barman_module._with_drill(ok, None) == ok
    good = {"code": 0, "message": "restore drill of db OK 60s ago, backup b2, RTO 12.3s", "result": {"ok": True}}
    assert barman_module._with_drill(ok, good) == dict(ok, drill=good)
    bad = {"code": 2, "message": "restore drill of db failed 5s ago: verify-backup", "result": {"ok": False}}
    health = barman_module._with_drill(ok, bad)
    assert (health["status"], health["code"]) == ("CRITICAL", 2)
    assert health["line"] == "BARMAN CRITICAL - restore drill of db failed 5s ago: verify-backup"
    failing = barman_module._nagios_health("db", nagios("BARMAN CRITICAL - server db has issues\n", 2), {})
    assert barman_module._with_drill(failing, bad)["line"] == (
        "BARMAN CRITICAL - server db has issues * restore drill of db failed 5s ago: verify-backup"
    )
