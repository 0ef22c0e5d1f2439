"""role_present reads the password from the pillar key it is given (never from its args)."""

import pytest

PASSWORD = "pillar-secret-Pa55word"


@pytest.fixture
def pillar_loaders(loaders):
    # The pillar the state and execution loaders (made on first use) give the modules.
    loaders.opts["pillar"] = {"pg_replication": {"replication": {"password": PASSWORD}}}
    return loaders


def test_role_password_comes_from_the_pillar_key(pillar_loaders):
    states, modules = pillar_loaders.states, pillar_loaders.modules
    try:
        ret = states.pg_replication.role_present("pillar_role", password_pillar="pg_replication:replication:password")
        assert ret.result is True
        assert ret.changes["password"] == "set"
        assert modules.pg_replication.role_password_matches("pillar_role", PASSWORD) is True
        again = states.pg_replication.role_present("pillar_role", password_pillar="pg_replication:replication:password")
        assert again.changes == {}
        missing = states.pg_replication.role_present("pillar_role", password_pillar="pg_replication:nowhere")
        assert missing.result is False
        assert "pg_replication:nowhere holds no password" in missing.comment
    finally:
        modules.pg_replication.role_drop("pillar_role")
