"""The highstate's first state on a server, against a real PostgreSQL primary: it passes when
the server runs as the pillar says, and fails (naming the command that reconciles) when the
pillar makes it a standby; the module functions the runners build on."""

import pytest
from salt.exceptions import CommandExecutionError

from lab.pgserver import PG_BIN


def test_a_primary_the_pillar_calls_a_primary_passes(states):
    ret = states.pg_replication.role_agrees("db1", role="primary", primary="db1", peers={"db2": "127.0.0.99"})
    assert ret.result is True
    assert "runs as the pillar's primary (timeline 1)" in ret.comment
    assert ret.changes == {}


def test_a_primary_the_pillar_calls_a_standby_is_refused(states, modules):
    before = modules.pg_replication.position()
    ret = states.pg_replication.role_agrees("db1", role="standby", primary="db2")
    assert ret.result is False
    assert "db1 runs a primary (timeline 1) but the pillar makes it a standby of db2" in ret.comment
    assert "salt-run pg_replication.rejoin host=db1" in ret.comment
    assert ret.changes == {}
    after = modules.pg_replication.position()
    assert (after["in_recovery"], after["started"]) == (before["in_recovery"], before["started"])


def test_no_running_server_has_nothing_to_disagree_with(states):
    ret = states.pg_replication.role_agrees("db1", role="standby", primary="db2", port=1)
    assert ret.result is True
    assert "No running server" in ret.comment


def test_position_and_controldata_agree(modules, postgres):
    position = modules.pg_replication.position()
    assert position["in_recovery"] is False
    assert position["timeline"] == 1
    assert position["data_checksums"] in ("on", "off")
    control = modules.pg_replication.controldata(str(postgres.datadir), str(PG_BIN))
    assert control["Database cluster state"] == "in production"
    assert control["Latest checkpoint's TimeLineID"] == "1"
    assert modules.pg_replication.controldata("/nonexistent") == {}


def test_promote_refuses_a_primary(modules):
    with pytest.raises(CommandExecutionError, match="not in recovery"):
        modules.pg_replication.promote()
