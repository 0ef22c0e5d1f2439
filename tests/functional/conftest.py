"""Functional fixtures: a real PostgreSQL 15 made with initdb in a temporary directory and
listening on loopback, and Salt loaders with our execution and state modules."""

import os
import pathlib
import shutil
import tempfile

import pytest
from saltfactories.utils.functional import Loaders

from lab.pgserver import PG_BIN, PostgresServer, local_minion_opts


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    if os.geteuid() != 0 or not (PG_BIN / "initdb").exists():
        pytest.skip("needs root and PostgreSQL 15 server binaries")
    root = tmp_path_factory.mktemp("pg")
    # postgres must traverse pytest's (root-owned, 0700) temporary directories: the base
    # directory, and with pytest-xdist its worker's directory under it.
    for parent in root.parents:
        if parent == pathlib.Path(tempfile.gettempdir()):
            break
        os.chmod(parent, 0o755)  # noqa: S103
    server = PostgresServer(root).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def minion_opts(tmp_path_factory, postgres):
    return local_minion_opts(tmp_path_factory.mktemp("minion"), postgres.conn)


@pytest.fixture
def loaders(minion_opts):
    loaders = Loaders(minion_opts)
    yield loaders
    for conn in [v for k, v in loaders.context.items() if str(k).startswith("pg_replication.conn")]:
        conn.close()
    loaders.reset_state()


@pytest.fixture
def modules(loaders):
    return loaders.modules


@pytest.fixture
def states(loaders):
    return loaders.states
