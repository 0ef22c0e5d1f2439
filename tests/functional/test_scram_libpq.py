"""New SCRAM verifiers come from libpq (PQencryptPasswordConn on the state run's cached
connection); the formula's own derivation only compares a stored verifier with the pillar's
password. Against a real PostgreSQL: real logins over TCP with SCRAM, the stored verifiers
read from pg_authid, the statements read from the server's own log."""

import contextlib
import uuid

import psycopg2
import psycopg2.extensions
import pytest

PASSWORD = "libpq-made-Pa55word"
NEW_PASSWORD = "libpq-changed-Pa55word"

# Passwords whose SASLprep (RFC 4013) is not the identity: libpq and the server prepare
# them, and the formula's re-derivation must prepare them the same way, or an unchanged
# password would look changed on every run (or a changed one unchanged).
UNICODE_PASSWORDS = [
    "pässwörd-ünïcode-1",
    "no\u00a0break\u00adsoft-hyphen",  # mapped: a non-ASCII space, a character mapped to nothing
    "\ufb01ne e\u0301",  # NFKC: the ligature and a combining accent
    "\ufb01 \U0001f418 elephant",  # unassigned in Unicode 3.2: the raw bytes, no NFKC
    "\u05d0\u05d1\u05d2",  # right-to-left text
    "\u05d0abc",  # mixed directions: prohibited, the raw bytes
]


def _stored(postgres, name):
    return postgres.fetch_one(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{name}'")  # noqa: S608


def _login(postgres, user, password):
    """A real libpq login over TCP (pg_hba: scram-sha-256 for 127.0.0.1); with libpq 16+ the
    client also refuses any other authentication method."""
    extra = {"require_auth": "scram-sha-256"} if psycopg2.extensions.libpq_version() >= 160000 else {}
    conn = psycopg2.connect(
        host="127.0.0.1", port=postgres.port, user=user, password=password, dbname="postgres", **extra
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            return cur.fetchone()[0]
    finally:
        conn.close()


def _login_fails(postgres, user, password):
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        _login(postgres, user, password)


@pytest.fixture
def roles(postgres):
    """``roles(name)`` registers a role to drop at the end; ``roles.admin(**settings)`` makes
    a superuser that the module can connect as (``user=``), with these role settings."""
    names = []

    class Roles:
        def __call__(self, name):
            names.append(name)
            return name

        def admin(self, **settings):
            name = self(f"admin_{uuid.uuid4().hex[:8]}")
            postgres.execute(f"CREATE ROLE {name} SUPERUSER LOGIN")
            for setting, value in settings.items():
                postgres.execute(f"ALTER ROLE {name} SET {setting} = '{value}'")
            return name

    yield Roles()
    for name in reversed(names):
        postgres.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture
def libpq_calls(monkeypatch):
    """What psycopg2.extensions.encrypt_password (libpq) was asked and answered: a spy, the
    real function still does the work. The password itself is not kept."""
    calls = []
    real = psycopg2.extensions.encrypt_password

    def spy(password, user=None, scope=None, algorithm=None):
        verifier = real(password, user, scope, algorithm)
        calls.append({"user": user, "scope": scope, "algorithm": algorithm, "verifier": verifier})
        return verifier

    monkeypatch.setattr(psycopg2.extensions, "encrypt_password", spy)
    return calls


def test_a_new_roles_verifier_is_made_by_libpq_and_logs_in(states, modules, postgres, roles, libpq_calls):
    name = roles("libpq_new")
    ret = states.pg_replication.role_present(name, password=PASSWORD)
    assert ret.result is True
    assert ret.changes["password"] == "set"
    stored = _stored(postgres, name)
    # Made by libpq, once, on the state run's own cached connection, as SCRAM-SHA-256 ...
    assert len(libpq_calls) == 1
    (call,) = libpq_calls
    assert (call["user"], call["algorithm"]) == (name, "scram-sha-256")
    conn = call["scope"]
    assert isinstance(conn, psycopg2.extensions.connection)
    assert not conn.closed  # still cached for the rest of the state run
    # ... the very connection whose last statement stored it, as libpq made it (a salt
    # drawn anywhere else would differ).
    last = postgres.fetch_one(
        f"SELECT query FROM pg_stat_activity WHERE pid = {conn.info.backend_pid}"  # noqa: S608
        " AND application_name = 'salt-pg_replication'"
    )
    assert last.startswith(f'CREATE ROLE "{name}" WITH')
    assert f"PASSWORD '{call['verifier']}'" in last
    assert stored == call["verifier"]
    assert stored.startswith("SCRAM-SHA-256$4096:")
    # The user logs in with the password, over SCRAM; another password is refused.
    assert _login(postgres, name, PASSWORD) == name
    _login_fails(postgres, name, PASSWORD + "x")
    # The formula's re-derivation recognises libpq's verifier.
    assert modules.pg_replication.role_password_matches(name, PASSWORD) is True
    assert modules.pg_replication.role_password_matches(name, NEW_PASSWORD) is False


def test_an_unchanged_password_is_never_set_again_and_a_changed_one_is(states, postgres, roles, libpq_calls):
    name = roles("libpq_idem")
    read_only = roles.admin(default_transaction_read_only="on")
    assert states.pg_replication.role_present(name, password=PASSWORD, replication=True).changes["password"] == "set"
    first = _stored(postgres, name)
    assert len(libpq_calls) == 1

    # The second run connects as a superuser whose every transaction is read-only: any
    # write it tried would fail the state. It finds nothing to do, in both modes.
    for test in (True, False):
        again = states.pg_replication.role_present(name, password=PASSWORD, replication=True, user=read_only, test=test)
        assert again.result is True, again.comment
        assert again.changes == {}
    assert _stored(postgres, name) == first
    assert len(libpq_calls) == 1  # no new verifier was even made
    # The guard bites: the same read-only run with a changed password cannot write it.
    refused = states.pg_replication.role_present(name, password=NEW_PASSWORD, replication=True, user=read_only)
    assert refused.result is False
    assert "read-only transaction" in refused.comment
    assert _stored(postgres, name) == first

    # A changed password is set again, by libpq, with a new salt; the old one stops working.
    changed = states.pg_replication.role_present(name, password=NEW_PASSWORD, replication=True)
    assert changed.result is True
    assert changed.changes == {"password": "changed"}
    second = _stored(postgres, name)
    assert second == libpq_calls[-1]["verifier"] != first
    assert _login(postgres, name, NEW_PASSWORD) == name
    _login_fails(postgres, name, PASSWORD)
    final = states.pg_replication.role_present(name, password=NEW_PASSWORD, replication=True, user=read_only)
    assert (final.result, final.changes) == (True, {})


def test_an_md5_password_is_replaced_by_a_scram_verifier(states, postgres, roles):
    name = roles("libpq_md5")
    postgres.execute(f"SET password_encryption = 'md5'; CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'")
    assert _stored(postgres, name).startswith("md5")
    ret = states.pg_replication.role_present(name, password=PASSWORD)
    assert ret.changes == {"password": "changed"}
    assert _stored(postgres, name).startswith("SCRAM-SHA-256$")
    assert _login(postgres, name, PASSWORD) == name
    assert states.pg_replication.role_present(name, password=PASSWORD).changes == {}


def test_scram_even_when_the_server_would_hash_with_md5(states, postgres, roles):
    """libpq is told the algorithm: a session whose password_encryption is md5 still gets a
    SCRAM verifier (an md5 one would never match, and be set again on every run)."""
    name = roles("libpq_not_md5")
    md5_admin = roles.admin(password_encryption="md5")
    ret = states.pg_replication.role_present(name, password=PASSWORD, user=md5_admin)
    assert ret.result is True, ret.comment
    assert _stored(postgres, name).startswith("SCRAM-SHA-256$")
    assert states.pg_replication.role_present(name, password=PASSWORD, user=md5_admin).changes == {}


def test_libpq_and_the_formula_prepare_unicode_passwords_alike(modules, postgres, roles):
    for i, password in enumerate(UNICODE_PASSWORDS):
        name = roles(f"libpq_unicode_{i}")
        modules.pg_replication.role_create(name, password=password, login=True)
        assert _login(postgres, name, password) == name, i
        assert modules.pg_replication.role_password_matches(name, password) is True, i
        assert modules.pg_replication.role_password_matches(name, password + "x") is False, i


def test_the_sql_carries_the_verifier_never_the_password(states, postgres, roles):
    """The server logs every statement of this run: the verifier is there, the password not."""
    name = roles("libpq_logged")
    logged = roles.admin(log_statement="all")
    log = postgres.root / "log"
    start = log.stat().st_size
    ret = states.pg_replication.role_present(name, password=PASSWORD, user=logged)
    assert ret.result is True, ret.comment
    ret = states.pg_replication.role_present(name, password=NEW_PASSWORD, user=logged)
    assert ret.changes == {"password": "changed"}
    with open(log, encoding="utf-8", errors="replace") as fh:
        fh.seek(start)
        text = fh.read()
    assert f'CREATE ROLE "{name}"' in text or f"CREATE ROLE {name}" in text
    assert _stored(postgres, name) in text  # the ALTER ROLE that set it was logged
    for secret in (PASSWORD, NEW_PASSWORD):
        assert secret not in text


def test_libpq_follows_the_servers_scram_iterations(states, postgres, roles):
    """PostgreSQL 16+ reports scram_iterations to the client; libpq 16+ uses it."""
    with contextlib.closing(psycopg2.connect(**postgres.conn)) as conn:
        if conn.server_version < 160000 or psycopg2.extensions.libpq_version() < 160000:
            pytest.skip("scram_iterations needs PostgreSQL 16+ and libpq 16+")
    name = roles("libpq_iterations")
    admin = roles.admin(scram_iterations="10000")
    assert states.pg_replication.role_present(name, password=PASSWORD, user=admin).result is True
    assert _stored(postgres, name).startswith("SCRAM-SHA-256$10000:")
    assert _login(postgres, name, PASSWORD) == name
    # The formula compares with the stored count: the default run finds nothing to change.
    assert states.pg_replication.role_present(name, password=PASSWORD).changes == {}
