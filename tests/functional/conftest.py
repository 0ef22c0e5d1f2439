"""Functional fixtures: a real PostgreSQL 15 made with initdb in a temporary directory and
listening on loopback, and Salt loaders with our execution and state modules."""

import os
import pathlib
import pwd
import shutil
import socket
import subprocess

import psycopg2
import pytest
import salt.config
from saltfactories.utils.functional import Loaders

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(cmd, **kwargs):
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, **kwargs)


class PostgresServer:
    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.datadir = self.root / "data"
        self.socket_dir = self.root / "run"
        self.port = _free_port()

    def start(self):
        pg = pwd.getpwnam("postgres")
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        for path in (self.root, self.socket_dir):
            os.chown(path, pg.pw_uid, pg.pw_gid)
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth-local=trust",
                      "--auth-host=scram-sha-256", "--locale=C.UTF-8"])  # fmt: skip
        conf = (
            f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.socket_dir}'\n"
            "wal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 60\nlog_statement = 'none'\n"
            "fsync = off\n"
        )
        with open(self.datadir / "postgresql.auto.conf", "a") as fh:
            fh.write(conf)
        with open(self.datadir / "pg_hba.conf", "a") as fh:
            fh.write("host replication all 127.0.0.1/32 scram-sha-256\n")
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.root / "log"), "-w", "start"])
        return self

    def stop(self):
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate",
             "-w", "stop"],
            check=False, capture_output=True,
        )  # fmt: skip

    def execute(self, statement):
        """Run one statement as postgres on a connection of the test's own."""
        self.fetch_one(statement, fetch=False)

    def fetch_one(self, statement, fetch=True):
        conn = psycopg2.connect(**self.conn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchone()[0] if fetch else None
        finally:
            conn.close()

    @property
    def conn(self):
        return {"host": str(self.socket_dir), "port": self.port, "user": "postgres", "dbname": "postgres"}


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    if os.geteuid() != 0 or not (PG_BIN / "initdb").exists():
        pytest.skip("needs root and PostgreSQL 15 server binaries")
    root = tmp_path_factory.mktemp("pg")
    # postgres must traverse pytest's (root-owned, 0700) temporary directories.
    for parent in (root.parent, root.parent.parent):
        os.chmod(parent, 0o755)  # noqa: S103
    server = PostgresServer(root).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def minion_opts(tmp_path_factory, postgres):
    root = tmp_path_factory.mktemp("minion")
    opts = salt.config.minion_config(None)
    opts.update(
        {
            "id": "functional",
            "root_dir": str(root),
            "cachedir": str(root / "cache"),
            "pki_dir": str(root / "pki"),
            "sock_dir": str(root / "sock"),
            "file_client": "local",
            "module_dirs": [str(REPO_ROOT / "_modules")],
            "states_dirs": [str(REPO_ROOT / "_states")],
            "utils_dirs": [str(REPO_ROOT / "_utils")],
            "log_file": str(root / "minion.log"),
            "pg_replication.connection": postgres.conn,
        }
    )
    return opts


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
