"""PgBouncer in front of a real PostgreSQL (issue #29): the lookup role and function made by
the states (both modes), a client logging in with SCRAM through auth_query, the admin
console driven by the execution module (PAUSE, RESUME, repoint + RELOAD), a superuser and a
wrong password refused. Needs the pgbouncer binary (Debian's package)."""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

import psycopg2
import pytest

from tests.conftest import load_util

AUTH_PASSWORD = "lookup-role-password-1234"
APP_PASSWORD = "app-password-123456"
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pgbouncer(postgres, tmp_path):
    if not pathlib.Path(PGBOUNCER).exists():
        pytest.skip("needs pgbouncer")
    routing = load_util("pg_replication_routing")
    root = tmp_path / "pgbouncer"
    root.mkdir()
    os.chmod(tmp_path, 0o755)  # noqa: S103 - pgbouncer runs as postgres
    files = {"hba": str(root / "hba.conf"), "auth": str(root / "userlist.txt"), "listen": str(root / "listen.ini"),
             "ini": str(root / "pgbouncer.ini")}  # fmt: skip
    port = _free_port()
    pooler = {"port": port, "auth_user": "pgbouncer_auth", "pool_mode": "transaction", "default_pool_size": 5,
              "max_client_conn": 50}  # fmt: skip
    ini = routing.ini_lines(pooler, files, "127.0.0.1", postgres.port, str(root))
    ini = [f"logfile = {root}/log" if line.startswith("logfile") else line for line in ini]
    contents = {
        "ini": ini,
        "listen": ["listen_addr = 127.0.0.1", f"listen_port = {port}", f"unix_socket_dir = {root}"],
        "hba": routing.hba_lines(False),
        "auth": routing.auth_file_lines("pgbouncer_auth", AUTH_PASSWORD),
    }
    for name, lines in contents.items():
        pathlib.Path(files[name]).write_text("\n".join(lines) + "\n")
    subprocess.run(["chown", "-R", "postgres", str(root)], check=True)
    proc = subprocess.Popen(["runuser", "-u", "postgres", "--", PGBOUNCER, files["ini"]])  # noqa: S603
    for _ in range(50):
        if (root / f".s.PGSQL.{port}").exists():
            break
        time.sleep(0.1)
    yield {"port": port, "socket_dir": str(root), "ini": files["ini"]}
    os.kill(int((root / "pgbouncer.pid").read_text()), signal.SIGINT)
    proc.wait(timeout=10)


def test_scram_through_auth_query_and_the_admin_console(postgres, modules, states, pgbouncer):
    conn = {"host": postgres.conn["host"], "port": postgres.port}
    assert states.pg_replication.role_present(name="pgbouncer_auth", password=AUTH_PASSWORD, groups=[], **conn).result
    predicted = states.pg_replication.pooler_lookup(name="pgbouncer_auth", test=True, **conn)
    assert predicted.result is None
    assert sorted(predicted.changes["lookup function"]) == ["postgres", "template1"]
    made = states.pg_replication.pooler_lookup(name="pgbouncer_auth", **conn)
    assert made.result is True
    assert made.changes == predicted.changes
    again = states.pg_replication.pooler_lookup(name="pgbouncer_auth", **conn)
    assert (again.result, again.changes) == (True, {})
    postgres.execute("DROP ROLE IF EXISTS app")
    postgres.execute(f"SET password_encryption = 'scram-sha-256'; CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")

    def client(user="app", password=APP_PASSWORD):
        return psycopg2.connect(host="127.0.0.1", port=pgbouncer["port"], user=user, password=password,
                                dbname="postgres", connect_timeout=5)  # fmt: skip

    with client() as c, c.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app"
    with pytest.raises(psycopg2.OperationalError):
        client(password="wrong-password-123")
    with pytest.raises(psycopg2.OperationalError):
        client(user="postgres", password="anything-at-all")  # superusers are not looked up
    admin = {"port": pgbouncer["port"], "socket_dir": pgbouncer["socket_dir"]}
    mod = modules.pg_replication
    assert mod.pooler_admin("PAUSE", **admin) == "PAUSE"
    assert mod.pooler_admin("RESUME", **admin) == "RESUME"
    done = mod.pooler_repoint(pgbouncer["ini"], "127.0.0.1", postgres.port, then="RECONNECT", **admin)
    assert done[1:] == ["RELOAD", "RECONNECT"]
    assert any(row["database"] == "postgres" for row in mod.pooler_admin("SHOW POOLS", **admin))
    with client() as c, c.cursor() as cur:
        cur.execute("SELECT 1")
    with pytest.raises(Exception, match="not an admin command"):
        mod.pooler_admin("SHUTDOWN", **admin)
