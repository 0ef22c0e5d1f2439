"""Configured values against pg_settings, read as PostgreSQL reads them (pure logic; the
functional test_restarts runs it against a real server)."""

import pytest

from tests.conftest import load_util


@pytest.fixture(scope="module")
def settings():
    return load_util("pg_replication_settings")


@pytest.mark.parametrize(
    ("value", "row", "expected"),
    [
        ("1GB", {"vartype": "integer", "unit": "8kB"}, 131072),
        ("1min", {"vartype": "integer", "unit": "s"}, 60),
        ("250ms", {"vartype": "integer", "unit": "ms"}, 250),
        ("42", {"vartype": "integer", "unit": None}, 42),
        ("0.9", {"vartype": "real", "unit": None}, 0.9),
        ("yes", {"vartype": "bool"}, "on"),
        (False, {"vartype": "bool"}, "off"),
        ("'Posix'", {"vartype": "enum"}, "posix"),
        ("fast", {"vartype": "integer", "unit": "ms"}, None),  # unreadable: treated as changed
        ("5parsecs", {"vartype": "integer", "unit": "s"}, None),
    ],
)
def test_normalize(settings, value, row, expected):
    assert settings.normalize(value, row) == expected


def test_only_differences_count(settings):
    rows = {
        "shared_buffers": {"setting": "16384", "unit": "8kB", "vartype": "integer"},
        "wal_level": {"setting": "replica", "unit": None, "vartype": "enum"},
    }
    wanted = {"shared_buffers": "128MB", "wal_level": "logical", "not_a_postmaster_setting": "1"}
    assert settings.differing(wanted, rows) == ["wal_level"]


def test_lowered_minimums(settings):
    running = {"max_connections": "100", "max_wal_senders": "10"}
    assert settings.lowered_minimums({"max_connections": 50, "max_wal_senders": 20, "work_mem": "1MB"}, running) == {
        "max_connections": (100, 50)
    }
