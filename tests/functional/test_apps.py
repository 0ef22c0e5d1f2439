"""Application objects against a real PostgreSQL: databases (extensions, schemas), roles
from the pillar, privileges (database, schema, tables, sequences, functions, default
privileges) and roles or databases dropped only through ``absent``. Each state: test mode
predicts exactly the real run's changes, a second run changes nothing."""

import psycopg2
import pytest

PASSWORD = "app-role-Pa55word-long"
CONN = {}


def _run(state, *args, **kwargs):
    """The state in test mode, then for real: the prediction equals the change; then again: none."""
    predicted = state(*args, test=True, **kwargs)
    ret = state(*args, **kwargs)
    assert ret.result is True, ret.comment
    assert predicted.changes == ret.changes, (predicted.changes, ret.changes)
    again = state(*args, **kwargs)
    assert again.result is True
    assert again.changes == {}
    return ret


def _fetch(postgres, statement, dbname="postgres"):
    conn = psycopg2.connect(**dict(postgres.conn, dbname=dbname))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


@pytest.fixture
def app(loaders, postgres, modules):
    loaders.opts["pillar"] = {"pg_replication": {"roles": {"app_owner": {"password": PASSWORD}}}}
    yield loaders
    for db in ("app_db", "app_db2"):
        if modules.pg_replication.database_get(db) is not None:
            modules.pg_replication.database_drop(db)
    for role in ("app_reader", "app_owner", "app_other"):
        if modules.pg_replication.role_get(role) is not None:
            _fetch(postgres, f"DROP OWNED BY {role}")
            modules.pg_replication.role_drop(role)


def _roles(states):
    owner = _run(
        states.pg_replication.role_present, "app_owner", password_pillar="pg_replication:roles:app_owner:password",
        connlimit=20, valid_until="2099-01-01", groups=[],
    )  # fmt: skip
    assert owner.changes["created"] is True
    assert owner.changes["password"] == "set"
    assert PASSWORD not in str(owner.changes) + owner.comment
    _run(states.pg_replication.role_present, "app_reader", groups=["pg_read_all_stats"])


def test_a_database_with_extensions_and_schemas_is_created_changed_and_left_alone(app, postgres):
    states, mod = app.states, app.modules.pg_replication
    _roles(states)
    _run(states.pg_replication.role_present, "app_other")
    ret = _run(
        states.pg_replication.database_present, "app_db", owner="app_owner", encoding="UTF8", lc_collate="C.UTF-8",
        lc_ctype="C.UTF-8", template="template0", connlimit=10,
        extensions={"citext": {"version": "1.5"}, "pg_trgm": None}, schemas={"app": "app_owner", "audit": None},
    )  # fmt: skip
    assert ret.changes["created"] is True
    assert ret.changes["extensions_created"] == {"citext": "1.5", "pg_trgm": "default"}
    assert mod.database_get("app_db") == {"owner": "app_owner", "encoding": "UTF8", "lc_collate": "C.UTF-8",
                                          "lc_ctype": "C.UTF-8", "connlimit": 10}  # fmt: skip
    assert mod.extensions("app_db")["citext"]["version"] == "1.5"
    assert mod.schemas("app_db")["app"] == "app_owner"
    # Changed: owner, connection limit, an extension's version, a schema's owner.
    ret = _run(
        states.pg_replication.database_present, "app_db", owner="app_other", connlimit=-1,
        extensions={"citext": {"version": "1.6"}}, schemas={"app": "app_other"},
    )  # fmt: skip
    assert ret.changes == {
        "owner": {"old": "app_owner", "new": "app_other"},
        "connlimit": {"old": 10, "new": -1},
        "schema_owners": {"app": {"old": "app_owner", "new": "app_other"}},
        "extensions_updated": {"citext": {"old": "1.5", "new": "1.6"}},
    }
    # What the pillar no longer names is left alone (pg_trgm, the audit schema).
    assert "pg_trgm" in mod.extensions("app_db")
    assert "audit" in mod.schemas("app_db")
    # Encoding cannot change in place: refused, nothing done.
    bad = states.pg_replication.database_present("app_db", encoding="LATIN1")
    assert bad.result is False
    assert "cannot change" in bad.comment


def test_privileges_exact_on_every_kind_with_default_privileges(app, postgres):
    states = app.states
    _roles(states)
    _run(states.pg_replication.database_present, "app_db", owner="app_owner", schemas={"app": "app_owner"})
    _fetch(postgres, "SET ROLE app_owner; CREATE TABLE app.orders (id serial PRIMARY KEY);"
           " CREATE FUNCTION app.answer(integer) RETURNS integer LANGUAGE sql AS 'SELECT 42'", "app_db")  # fmt: skip
    present = states.pg_replication.privileges_present
    db = _run(present, "db", role="app_reader", database="app_db", on="database", privileges=["CONNECT", "TEMPORARY"])
    assert db.changes == {"app_db": {"granted": ["CONNECT", "TEMPORARY"]}}
    _run(present, "schema", role="app_reader", database="app_db", on="schema", schema="app", privileges=["USAGE"])
    tables = _run(present, "t", role="app_reader", database="app_db", on="tables", schema="app",
                  privileges=["INSERT", "SELECT"])  # fmt: skip
    assert tables.changes == {"app.orders": {"granted": ["INSERT", "SELECT"]}}
    seqs = _run(present, "s", role="app_reader", database="app_db", on="sequences", schema="app", privileges=["USAGE"])
    assert seqs.changes == {"app.orders_id_seq": {"granted": ["USAGE"]}}
    funcs = _run(present, "f", role="app_reader", database="app_db", on="functions", schema="app",
                 objects=["answer(integer)"], privileges=["EXECUTE"])  # fmt: skip
    assert funcs.changes == {"app.answer(integer)": {"granted": ["EXECUTE"]}}
    default = _run(present, "d", role="app_reader", database="app_db", on="tables", schema="app",
                   default_for="app_owner", privileges=["SELECT"])  # fmt: skip
    assert default.changes == {"default for app_owner in app": {"granted": ["SELECT"]}}
    _fetch(postgres, "SET ROLE app_owner; CREATE TABLE app.later (id int)", "app_db")
    assert _fetch(postgres, "SELECT has_table_privilege('app_reader', 'app.later', 'SELECT')", "app_db") == [(True,)]
    # Revoked: INSERT leaves the list; the new table got SELECT by default, now exactly SELECT.
    revoked = _run(present, "t", role="app_reader", database="app_db", on="tables", schema="app", privileges=["SELECT"])
    assert revoked.changes == {"app.orders": {"revoked": ["INSERT"]}}
    assert _fetch(postgres, "SELECT has_table_privilege('app_reader', 'app.orders', 'INSERT')", "app_db") == [(False,)]
    # A listed object that does not exist fails, naming it.
    missing = present("m", role="app_reader", database="app_db", on="tables", schema="app", objects=["nope"],
                      privileges=["SELECT"])  # fmt: skip
    assert missing.result is False
    assert "app.nope" in missing.comment


def test_test_mode_predicts_grants_in_a_database_this_run_makes(app):
    states = app.states
    _roles(states)
    present = states.pg_replication.privileges_present
    kwargs = {"role": "app_reader", "database": "app_db2", "on": "database", "privileges": ["CONNECT"]}
    predicted = present("p", test=True, **kwargs)
    assert predicted.result is None
    assert predicted.changes == {"app_db2": {"granted": ["CONNECT"]}}
    _run(states.pg_replication.database_present, "app_db2", owner="app_owner")
    assert present("p", **kwargs).changes == predicted.changes


def test_absent_drops_a_database_and_a_role_with_its_privileges_only_when_asked(app, postgres):
    states, mod = app.states, app.modules.pg_replication
    _roles(states)
    _run(states.pg_replication.database_present, "app_db", owner="app_owner")
    _run(states.pg_replication.privileges_present, "g", role="app_reader", database="app_db", on="database",
         privileges=["CONNECT"])  # fmt: skip
    _fetch(postgres, "ALTER DEFAULT PRIVILEGES FOR ROLE app_owner GRANT SELECT ON TABLES TO app_reader", "app_db")
    # A role that owns something is not dropped: the state says what it owns.
    owns = states.pg_replication.app_role_absent("app_owner")
    assert owns.result is False
    assert "database app_db" in owns.comment
    dropped = _run(states.pg_replication.app_role_absent, "app_reader")
    assert dropped.changes == {"role": "app_reader", "dropped": True, "privileges_revoked_in": ["app_db"]}
    assert mod.role_get("app_reader") is None
    gone = _run(states.pg_replication.database_absent, "app_db")
    assert gone.changes == {"database": "app_db", "dropped": True}
    assert mod.database_get("app_db") is None


def test_valid_until_and_connlimit_change_and_are_left_alone(app):
    states, mod = app.states, app.modules.pg_replication
    _roles(states)
    ret = _run(states.pg_replication.role_present, "app_owner", connlimit=5, valid_until="infinity", groups=[],
               password_pillar="pg_replication:roles:app_owner:password")  # fmt: skip
    assert ret.changes == {"connlimit": {"old": 20, "new": 5}, "valid_until": "infinity"}
    assert mod.role_valid_until_matches("app_owner", "infinity") is True
