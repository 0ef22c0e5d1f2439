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
