"""barman.health's classification of `barman check` results (pure: no Barman is run)."""

import pytest

from tests.conftest import REPO_ROOT, load_file


@pytest.fixture(scope="module")
def barman_module():
    return load_file("barman_module", REPO_ROOT / "_modules/barman.py")


def checks(**failed):
    items = {"postgresql": {}, "wal_archive": {}, "backup_maximum_age": {}, "minimum_redundancy_requirements": {}}
    return {item: {"status": "FAILED", "hint": failed[item]} if item in failed else {"status": "OK", "hint": ""}
            for item in items}  # fmt: skip


def test_all_ok(barman_module):
    health = barman_module._summarize_health("db", checks())
    assert (health["status"], health["code"], health["line"]) == ("OK", 0, "BARMAN OK - db: 4 checks OK")


def test_only_a_backup_due_is_a_warning(barman_module):
    health = barman_module._summarize_health("db", checks(backup_maximum_age="interval provided: 1 day"))
    assert (health["status"], health["code"]) == ("WARNING", 1)
    assert health["line"] == "BARMAN WARNING - db: backup_maximum_age FAILED (interval provided: 1 day)"


def test_anything_else_is_critical_and_named(barman_module):
    health = barman_module._summarize_health("db", checks(wal_archive="", minimum_redundancy_requirements="have 0"))
    assert (health["status"], health["code"]) == ("CRITICAL", 2)
    assert health["line"] == "BARMAN CRITICAL - db: minimum_redundancy_requirements FAILED (have 0), wal_archive FAILED"


def test_a_reused_check_is_the_jobs_last_unless_a_command_since_may_have_changed_it(barman_module, monkeypatch):
    """barman.check(reuse=True) (a state run's final verification): the last check of that
    server in this job, run again after any command that is not read-only."""
    calls = []

    def run_all(cmd, **kwargs):
        calls.append(cmd[cmd.index("json") + 1])
        out = {cmd[-1]: checks()} if calls[-1] == "check" else {}
        return {"stdout": __import__("json").dumps(out), "stderr": "", "retcode": 0}

    monkeypatch.setattr(barman_module, "_base", lambda: ["barman", "-c", "/etc/barman.conf", "-f", "json"])
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
