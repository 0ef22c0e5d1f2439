"""A throw-away PostgreSQL server made with initdb in a directory, listening on loopback
(used by the functional tests and the benchmarks)."""

import os
import pathlib
import pwd
import socket
import subprocess

import psycopg2

from lab.minion import masterless_opts

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
            "wal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 120\nlog_statement = 'none'\n"
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


def local_minion_opts(root, connection):
    """Masterless minion options that load this checkout's _modules, _states and _utils and
    point pg_replication at ``connection``."""
    return masterless_opts(root, "functional", **{"pg_replication.connection": connection})
