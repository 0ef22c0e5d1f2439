"""Roles with SCRAM passwords against a real PostgreSQL: functions and states, both modes."""

import pytest
from salt.exceptions import CommandExecutionError

PASSWORD = "first-password-1234"


@pytest.fixture
def clean_role(modules):
    names = []
    yield names.append
    for name in names:
        if modules.pg_replication.role_get(name) is not None:
            modules.pg_replication.role_drop(name)


def test_role_create_get_alter_drop(modules, clean_role):
    mod = modules.pg_replication
    clean_role("fn_role")
    assert mod.role_get("fn_role") is None
    mod.role_create("fn_role", password=PASSWORD, login=True, replication=True, connlimit=5)
    role = mod.role_get("fn_role")
    assert role == {
        "superuser": False, "createdb": False, "createrole": False, "inherit": True, "login": True,
        "replication": True, "bypassrls": False, "connlimit": 5, "has_password": True, "groups": [],
    }  # fmt: skip
    assert mod.role_password_matches("fn_role", PASSWORD) is True
    assert mod.role_password_matches("fn_role", PASSWORD + "x") is False
    mod.role_alter("fn_role", replication=False, createdb=True, connlimit=-1)
    role = mod.role_get("fn_role")
    assert (role["replication"], role["createdb"], role["connlimit"]) == (False, True, -1)
    mod.role_alter("fn_role", password="second-password-99")
    assert mod.role_password_matches("fn_role", "second-password-99") is True
    mod.role_grant("pg_read_all_settings", "fn_role")
    assert mod.role_get("fn_role")["groups"] == ["pg_read_all_settings"]
    mod.role_revoke("pg_read_all_settings", "fn_role")
    assert mod.role_get("fn_role")["groups"] == []
    mod.role_drop("fn_role")
    assert mod.role_get("fn_role") is None
    with pytest.raises(CommandExecutionError, match="does not exist"):
        mod.role_drop("fn_role")


def test_verifier_matches_one_made_by_postgresql(modules, postgres, clean_role):
    """The server hashes this one itself (password_encryption = scram-sha-256)."""
    clean_role("server_hashed")
    postgres.execute("CREATE ROLE server_hashed LOGIN PASSWORD 'pässwörd-ünïcode-1'")
    assert modules.pg_replication.role_password_matches("server_hashed", "pässwörd-ünïcode-1") is True
    assert modules.pg_replication.role_password_matches("server_hashed", "passwörd-ünïcode-1") is False


def test_md5_password_never_matches(modules, postgres, clean_role):
    clean_role("md5_role")
    postgres.execute("SET password_encryption = 'md5'; CREATE ROLE md5_role LOGIN PASSWORD 'an-md5-password-1'")
    assert modules.pg_replication.role_password_matches("md5_role", "an-md5-password-1") is False


def test_function_grants(modules, postgres, clean_role):
    mod = modules.pg_replication
    clean_role("backup_role")
    mod.role_create("backup_role", login=True)
    sigs = ["pg_backup_start(text, boolean)", "pg_switch_wal()", "no_such_function()"]
    assert mod.function_privileges("backup_role", sigs) == {sigs[0]: False, sigs[1]: False, sigs[2]: None}
    mod.function_grant("backup_role", "pg_switch_wal()")
    assert mod.function_privileges("backup_role", sigs[:2]) == {sigs[0]: False, sigs[1]: True}
    with pytest.raises(CommandExecutionError, match="does not exist"):
        mod.function_grant("backup_role", "no_such_function()")
    postgres.execute("REVOKE EXECUTE ON FUNCTION pg_switch_wal() FROM backup_role")


def test_role_present_first_run_changes_second_does_not(states, modules, clean_role):
    clean_role("st_role")
    kwargs = {"password": PASSWORD, "replication": True}
    predicted = states.pg_replication.role_present("st_role", test=True, **kwargs)
    assert predicted.result is None
    assert modules.pg_replication.role_get("st_role") is None
    ret = states.pg_replication.role_present("st_role", **kwargs)
    assert ret.result is True
    assert ret.changes == predicted.changes
    assert ret.changes["created"] is True
    assert ret.changes["password"] == "set"
    assert modules.pg_replication.role_password_matches("st_role", PASSWORD)
    again = states.pg_replication.role_present("st_role", **kwargs)
    assert again.result is True
    assert again.changes == {}
    assert states.pg_replication.role_present("st_role", test=True, **kwargs).changes == {}


def test_role_present_detects_password_and_attribute_changes(states, modules, clean_role):
    clean_role("chg_role")
    states.pg_replication.role_present("chg_role", password=PASSWORD, replication=True)
    kwargs = {"password": "a-new-password-5678", "replication": True, "createdb": True, "connlimit": 3}
    predicted = states.pg_replication.role_present("chg_role", test=True, **kwargs)
    assert predicted.result is None
    assert predicted.changes == {
        "createdb": {"old": False, "new": True},
        "connlimit": {"old": -1, "new": 3},
        "password": "changed",
    }
    assert modules.pg_replication.role_password_matches("chg_role", PASSWORD)  # test mode changed nothing
    ret = states.pg_replication.role_present("chg_role", **kwargs)
    assert ret.result is True
    assert ret.changes == predicted.changes
    assert modules.pg_replication.role_password_matches("chg_role", "a-new-password-5678")
    assert states.pg_replication.role_present("chg_role", **kwargs).changes == {}


def test_role_present_groups_and_execute_grants(states, modules, postgres, clean_role):
    clean_role("grant_role")
    kwargs = {
        "password": PASSWORD,
        "groups": ["pg_read_all_settings", "pg_read_all_stats"],
        "execute": ["pg_backup_start(text, boolean)", "pg_backup_stop(boolean)"],
    }
    ret = states.pg_replication.role_present("grant_role", **kwargs)
    assert ret.result is True
    assert ret.changes["groups"] == {"added": ["pg_read_all_settings", "pg_read_all_stats"]}
    role = modules.pg_replication.role_get("grant_role")
    assert role["groups"] == ["pg_read_all_settings", "pg_read_all_stats"]
    assert all(modules.pg_replication.function_privileges("grant_role", kwargs["execute"]).values())
    assert states.pg_replication.role_present("grant_role", **kwargs).changes == {}
    # groups are exact: one left out is revoked
    ret = states.pg_replication.role_present("grant_role", **dict(kwargs, groups=["pg_read_all_stats"]))
    assert ret.changes["groups"] == {"added": [], "removed": ["pg_read_all_settings"]}
    for sig in kwargs["execute"]:
        postgres.execute(f"REVOKE EXECUTE ON FUNCTION {sig} FROM grant_role")


def test_role_absent_both_modes(states, modules, clean_role):
    clean_role("gone_role")
    modules.pg_replication.role_create("gone_role")
    ret = states.pg_replication.role_absent("gone_role", test=True)
    assert ret.result is None
    assert ret.changes == {"role": "gone_role", "dropped": True}
    assert modules.pg_replication.role_get("gone_role") is not None
    assert states.pg_replication.role_absent("gone_role").changes == {"role": "gone_role", "dropped": True}
    assert modules.pg_replication.role_get("gone_role") is None
    assert states.pg_replication.role_absent("gone_role").changes == {}


def test_errors_carry_postgresql_message(modules):
    with pytest.raises(CommandExecutionError, match="does not exist"):
        modules.pg_replication.role_grant("no_such_group", "postgres")


def test_one_cached_connection_per_loader(modules, loaders):
    modules.pg_replication.slots()
    modules.pg_replication.role_get("postgres")
    modules.pg_replication.status()
    conns = [k for k in loaders.context if str(k).startswith("pg_replication.conn")]
    assert len(conns) == 1


def test_one_connection_per_state_run_when_utils_have_their_own_context(minion_opts, postgres):
    """A state run loads its utils without the modules' ``__context__`` (salt/state.py): the
    connection is still one, kept in the modules' context, whichever file of the module asks."""
    import salt.loader  # pylint: disable=import-outside-toplevel

    context = {}
    utils = salt.loader.utils(minion_opts)
    mods = salt.loader.minion_mods(minion_opts, context=context, utils=utils)
    # Sessions that earlier tests' loaders left open may close meanwhile (their garbage
    # collected): count only the sessions this test opens.
    sessions = "SELECT array_agg(pid) FROM pg_stat_activity WHERE application_name = 'salt-pg_replication'"
    before = postgres.fetch_one(sessions) or []
    try:
        mods["pg_replication.slots"]()
        mods["pg_replication.role_get"]("postgres")
        mods["pg_replication.function_privileges"]("postgres", ["pg_switch_wal()"])
        mods["pg_replication.status"]()
        mods["pg_replication.pending_restart"]()
        assert len([k for k in context if str(k).startswith("pg_replication.conn")]) == 1
        assert not [k for k in utils.pack["__context__"] if str(k).startswith("pg_replication.conn")]
        assert len(set(postgres.fetch_one(sessions) or []) - set(before)) == 1
    finally:
        for key in [k for k in context if str(k).startswith("pg_replication.conn")]:
            context.pop(key).close()
