"""A pillar value is checked as a whole: ``$`` in a pattern also matches before a final
newline, so ``re.match`` let ``"work_mem\\n"`` through as a setting name (and postgresql.conf
got a line ``work_mem`` and a line `` = '4MB'``)."""

import pathlib

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def config(merged_config):
    return merged_config(yaml.safe_load((REPO / "pillar.example").read_text())["pg_replication"])


def test_the_generic_checks_refuse_a_trailing_newline(plan_mod):
    syntax = plan_mod.syntax
    assert syntax.check_pattern("standby", syntax.APPLICATION_NAME_RE, "a name") is None
    assert syntax.check_pattern("standby\n", syntax.APPLICATION_NAME_RE, "a name") == "'standby\\n' is not a name"
    assert syntax.check_path("/var/lib/postgresql") is None
    assert syntax.check_path("/var/lib/postgresql\n") is not None
    assert syntax.check_host("db.example.com") is None
    assert syntax.check_host("db.example.com\n") is not None


@pytest.mark.parametrize(
    ("over", "minion", "key"),
    [
        ({"settings": {"work_mem\n": "4MB"}}, "master", "pg_replication:settings"),
        ({"replication": {"user": "replicator\n"}}, "standby", "pg_replication:replication:user"),
        ({"barman": {"backup_schedule": "@daily\n"}}, "backup", "pg_replication:barman:backup_schedule"),
        (
            {
                "barman": {
                    "servers": {"db2\n": {"address": "10.0.0.9", "password": "x" * 16, "streaming_password": "y" * 16}}
                }
            },
            "backup",
            "db2",
        ),  # fmt: skip
    ],
)
def test_the_plan_refuses_a_value_with_a_trailing_newline(plan_mod, config, over, minion, key):
    from tests.conftest import deep_merge  # pylint: disable=import-outside-toplevel

    with pytest.raises(plan_mod.PlanError) as exc:
        plan_mod.build(deep_merge(config, over), minion)
    assert key in str(exc.value)
