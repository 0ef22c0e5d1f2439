"""PgBouncer in front of a real PostgreSQL (issue #29): the lookup role and function made by
the states (both modes), a client logging in with SCRAM through auth_query, the admin
console driven by the execution module (PAUSE, RESUME, repoint + RELOAD), a superuser and a
wrong password refused. Needs the pgbouncer binary (Debian's package)."""

import concurrent.futures
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

import psycopg2
import psycopg2.sql
import pytest

from tests.conftest import load_util

AUTH_PASSWORD = "lookup-role-password-1234"
APP_PASSWORD = "app-password-123456"
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
ODD_DB = 'odd "db" name'


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pgbouncer(request, postgres, tmp_path):
    """PgBouncer as the formula configures it, in front of ``postgres``; its pool_mode is
    the test's indirect parameter (default: transaction, the pillar's)."""
    if not pathlib.Path(PGBOUNCER).exists():
        pytest.skip("needs pgbouncer")
    routing = load_util("pg_replication_routing")
    root = tmp_path / "pgbouncer"
    root.mkdir()
    os.chmod(tmp_path, 0o755)  # noqa: S103 - pgbouncer runs as postgres
    files = {"hba": str(root / "hba.conf"), "auth": str(root / "userlist.txt"), "listen": str(root / "listen.ini"),
             "ini": str(root / "pgbouncer.ini")}  # fmt: skip
    port = _free_port()
    pool_mode = getattr(request, "param", "transaction")
    pooler = {"port": port, "auth_user": "pgbouncer_auth", "pool_mode": pool_mode, "default_pool_size": 5,
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


@pytest.fixture
def lookup_and_app_role(postgres, states):
    """The lookup role and function, and a client role; the function dropped after (the
    test of its states wants none to begin with)."""
    conn = {"host": postgres.conn["host"], "port": postgres.port}
    assert states.pg_replication.role_present(name="pgbouncer_auth", password=AUTH_PASSWORD, groups=[], **conn).result
    assert states.pg_replication.pooler_lookup(name="pgbouncer_auth", **conn).result is True
    postgres.execute("DROP ROLE IF EXISTS app")
    postgres.execute(f"SET password_encryption = 'scram-sha-256'; CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")
    yield
    for dbname in ("postgres", "template1"):
        with psycopg2.connect(**dict(postgres.conn, dbname=dbname)) as c, c.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS pgbouncer_lookup CASCADE")
        c.close()


def _client(pgbouncer, dbname="postgres"):
    return psycopg2.connect(host="127.0.0.1", port=pgbouncer["port"], user="app", password=APP_PASSWORD,
                            dbname=dbname, connect_timeout=5)  # fmt: skip


@pytest.mark.parametrize("pgbouncer", ["session"], indirect=True)
@pytest.mark.usefixtures("lookup_and_app_role")
def test_in_session_mode_a_pause_is_bounded_and_kills_the_sessions_it_waited_for(modules, states, pgbouncer, postgres):
    """A client idle in its session holds its server connection: PAUSE would wait for it to
    leave. pooler_pause gives up waiting after ``wait`` seconds, KILLs those databases (their
    clients are disconnected; a name with a quote and spaces too), and returns paused; a new
    client waits until RESUME, which ends each database's own pause."""
    admin = {"port": pgbouncer["port"], "socket_dir": pgbouncer["socket_dir"]}
    mod = modules.pg_replication
    # A second database whose name the admin console takes only quoted, with its lookup
    # function (the state puts it in every database).
    postgres.execute(psycopg2.sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(psycopg2.sql.Identifier(ODD_DB)))
    try:
        conn = {"host": postgres.conn["host"], "port": postgres.port}
        made = states.pg_replication.pooler_lookup(name="pgbouncer_auth", **conn)
        assert list(made.changes["lookup function"]) == [ODD_DB]
        held = [_client(pgbouncer), _client(pgbouncer, ODD_DB)]
        for client in held:
            with client.cursor() as cur:
                cur.execute("SELECT 1")
            client.commit()
        started = time.monotonic()
        paused = mod.pooler_pause(wait=1, **admin)
        took = time.monotonic() - started
        assert paused["killed"] == sorted(["postgres", ODD_DB])
        assert 1 <= took < 5, took
        for client in held:
            with pytest.raises(psycopg2.Error), client.cursor() as cur:  # its session is gone
                cur.execute("SELECT 1")
        _held_until_resumed(mod, admin, pgbouncer)
        with _client(pgbouncer, ODD_DB) as c, c.cursor() as cur:  # its own pause ended too
            cur.execute("SELECT current_database()")
            assert cur.fetchone()[0] == ODD_DB
        c.close()
    finally:
        postgres.execute(psycopg2.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            psycopg2.sql.Identifier(ODD_DB)))  # fmt: skip


def _held_until_resumed(mod, admin, pgbouncer):
    # A new client is held while paused, and served after RESUME.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: _client(pgbouncer).cursor().execute("SELECT 1") or time.monotonic())
        time.sleep(1.5)
        assert not waiting.done()
        resumed = time.monotonic()
        assert mod.pooler_admin("RESUME", **admin) == "RESUME"
        assert waiting.result(timeout=10) >= resumed
    with _client(pgbouncer) as c, c.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app"


@pytest.mark.usefixtures("lookup_and_app_role")
def test_in_transaction_mode_an_idle_client_does_not_hold_a_pause(modules, pgbouncer):
    admin = {"port": pgbouncer["port"], "socket_dir": pgbouncer["socket_dir"]}
    held = _client(pgbouncer)
    with held.cursor() as cur:
        cur.execute("SELECT 1")
    held.commit()
    paused = modules.pg_replication.pooler_pause(wait=5, **admin)
    assert paused["killed"] == []
    assert paused["waited"] < 1
    assert modules.pg_replication.pooler_admin("RESUME", **admin) == "RESUME"
    with held.cursor() as cur:  # the same client, its session kept
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app"
    held.close()


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
