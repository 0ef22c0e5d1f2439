"""pg_replication.conninfo_works against a real server: a connection string tried as a client
will make it, its password from a passfile."""

import pytest
from salt.exceptions import CommandExecutionError


@pytest.fixture
def role(loaders, postgres, tmp_path):
    loaders.modules.pg_replication.role_create("probe_client", password="a-Long-enough-secret-1", login=True)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres.port}:*:probe_client:a-Long-enough-secret-1\n")
    passfile.chmod(0o600)
    yield passfile
    loaders.modules.pg_replication.role_drop("probe_client")


def test_a_connection_string_with_its_passfile_connects_and_one_without_says_why(loaders, postgres, role, tmp_path):
    conninfo = f"host=127.0.0.1 port={postgres.port} user=probe_client dbname=postgres"
    ret = loaders.modules.pg_replication.conninfo_works(conninfo=conninfo, passfile=str(role))
    assert ret["connected"] is True
    assert ret["server_version"] >= 150000
    empty = tmp_path / "empty"
    empty.write_text("")
    empty.chmod(0o600)
    with pytest.raises(CommandExecutionError, match="password"):
        loaders.modules.pg_replication.conninfo_works(conninfo=conninfo, passfile=str(empty))
