"""Replication slots against a real PostgreSQL: module functions and states, both modes."""

import os
import pwd
import signal
import subprocess
import time

import pytest
from salt.exceptions import CommandExecutionError

from lab.pgserver import PG_BIN


def test_slot_create_list_drop(modules):
    mod = modules.pg_replication
    assert "fn_slot" not in mod.slots()
    assert mod.slot_create("fn_slot") is True
    slot = mod.slots()["fn_slot"]
    assert slot["slot_type"] == "physical"
    assert slot["active"] is False
    assert slot["restart_lsn"]  # WAL reserved immediately
    assert slot["retained_bytes"] >= 0
    assert slot["wal_status"] == "reserved"
    with pytest.raises(CommandExecutionError, match="already exists"):
        mod.slot_create("fn_slot")
    assert mod.slot_drop("fn_slot") is True
    assert "fn_slot" not in mod.slots()
    with pytest.raises(CommandExecutionError, match="does not exist"):
        mod.slot_drop("fn_slot")


def test_slot_without_reserved_wal(modules):
    modules.pg_replication.slot_create("lazy_slot", reserve_wal=False)
    assert modules.pg_replication.slots()["lazy_slot"]["restart_lsn"] is None
    modules.pg_replication.slot_drop("lazy_slot")


def test_slot_present_then_absent_in_both_modes(states, modules):
    ret = states.pg_replication.slot_present("st_slot", test=True)
    assert ret.result is None
    assert ret.changes == {"slot": "st_slot", "created": True}
    assert "st_slot" not in modules.pg_replication.slots()

    ret = states.pg_replication.slot_present("st_slot")
    assert ret.result is True
    assert ret.changes == {"slot": "st_slot", "created": True}
    ret = states.pg_replication.slot_present("st_slot")
    assert ret.result is True
    assert ret.changes == {}
    assert states.pg_replication.slot_present("st_slot", test=True).changes == {}

    ret = states.pg_replication.slot_absent("st_slot", test=True)
    assert ret.result is None
    assert ret.changes == {"slot": "st_slot", "dropped": True}
    assert "st_slot" in modules.pg_replication.slots()
    ret = states.pg_replication.slot_absent("st_slot")
    assert ret.result is True
    assert ret.changes == {"slot": "st_slot", "dropped": True}
    assert states.pg_replication.slot_absent("st_slot").changes == {}


@pytest.fixture
def streaming_client(modules, postgres, tmp_path):
    """A real walsender on slot ``busy_slot``: pg_receivewal as a replication role."""
    password = "receivewal-password-123"
    modules.pg_replication.role_create("walclient", password=password, login=True, replication=True)
    modules.pg_replication.slot_create("busy_slot")
    os.chown(tmp_path, *_postgres_ids())
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres.port}:replication:walclient:{password}\n")
    os.chown(passfile, *_postgres_ids())
    passfile.chmod(0o600)
    proc = subprocess.Popen(
        ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_receivewal"), "-D", str(tmp_path), "-S", "busy_slot",
         "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "walclient", "--no-password"],
        env={**os.environ, "PGPASSFILE": str(passfile)},
        start_new_session=True,  # so that teardown ends runuser and pg_receivewal together
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not modules.pg_replication.slots()["busy_slot"]["active"]:
        assert time.monotonic() < deadline, "pg_receivewal did not attach to its slot"
        time.sleep(0.2)
    yield {"proc": proc, "passfile": str(passfile), "user": "walclient"}
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(50):
        if not modules.pg_replication.slots().get("busy_slot", {}).get("active"):
            break
        time.sleep(0.1)
    if "busy_slot" in modules.pg_replication.slots():
        modules.pg_replication.slot_drop("busy_slot", force=True)
    modules.pg_replication.role_drop("walclient")


def _postgres_ids():
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def test_dropping_an_active_slot_is_refused(streaming_client, modules, states):
    with pytest.raises(CommandExecutionError, match="is active"):
        modules.pg_replication.slot_drop("busy_slot")
    ret = states.pg_replication.slot_absent("busy_slot")
    assert ret.result is False
    assert "is active" in ret.comment
    assert modules.pg_replication.slots()["busy_slot"]["active"] is True
    # status shows the walsender and the active slot
    status = modules.pg_replication.status()
    assert status["role"] == "primary"
    assert status["slots"]["busy_slot"]["active"] is True
    assert [r["usename"] for r in status["replication"]] == ["walclient"]
    assert status["replication"][0]["state"] == "streaming"
    assert status["replication"][0]["lag_bytes"] >= 0
    # forced: the walsender is terminated and the slot dropped
    assert modules.pg_replication.slot_drop("busy_slot", force=True) is True
    assert "busy_slot" not in modules.pg_replication.slots()


def test_system_identifier_from_file_and_from_replication_protocol(modules, postgres, streaming_client):
    from_file = modules.pg_replication.datadir_system_identifier(str(postgres.datadir))
    assert from_file
    assert from_file.isdigit()
    assert modules.pg_replication.datadir_system_identifier("/nonexistent") is None
    over_replication = modules.pg_replication.primary_system_identifier(
        "127.0.0.1", port=postgres.port, user="walclient", passfile=streaming_client["passfile"]
    )
    assert over_replication == from_file
    with pytest.raises(CommandExecutionError, match="cannot reach primary"):
        modules.pg_replication.primary_system_identifier("127.0.0.1", port=postgres.port, user="nobody", timeout=2)


def test_no_server_yet_is_predicted_in_test_mode_and_fails_for_real(states):
    # A port nothing listens on: the server of a fresh host that earlier states will start.
    nowhere = {"host": "127.0.0.1", "port": 1}
    ret = states.pg_replication.slot_present("new_slot", test=True, **nowhere)
    assert ret.result is None
    assert ret.changes == {"slot": "new_slot", "created": True}
    ret = states.pg_replication.role_present("new_role", password="a-long-enough-secret", test=True, **nowhere)
    assert ret.result is None
    assert ret.changes["created"] is True
    assert ret.changes["password"] == "set"
    assert "a-long-enough-secret" not in str(ret.raw)
    follow = states.pg_replication.slots_follow("/nonexistent/record.json", slots=["new_slot"], test=True, **nowhere)
    assert (follow.result, follow.changes) == (None, {"record": ["new_slot"]})
    lone = states.pg_replication.slots_follow("/nonexistent/record.json", slots=[], test=True, **nowhere)
    assert (lone.result, lone.changes) == (True, {})  # a primary without standbys: no record to write
    ret = states.pg_replication.restarted_if_pending("postgresql", test=True, **nowhere)
    assert ret.result is True
    assert ret.changes == {}
    for state in (
        states.pg_replication.slot_present("new_slot", **nowhere),
        states.pg_replication.role_present("new_role", password="a-long-enough-secret", **nowhere),
    ):
        assert state.result is False
        assert "cannot connect to PostgreSQL at 127.0.0.1:1" in state.comment


def test_slots_follow_the_pillar_only_for_slots_made_here(states, modules, tmp_path, streaming_client):
    record = str(tmp_path / "slots.json")
    modules.pg_replication.slot_create("kept_slot")
    modules.pg_replication.slot_create("ops_slot")  # made by someone else: never dropped
    try:
        first = states.pg_replication.slots_follow(record, slots=["kept_slot", "busy_slot"], user="root")
        assert first.result is True
        assert first.changes == {"record": ["busy_slot", "kept_slot"]}
        assert "left alone (not made by this formula): ops_slot" in first.comment
        again = states.pg_replication.slots_follow(record, slots=["kept_slot", "busy_slot"], user="root")
        assert (again.result, again.changes) == (True, {})

        # Both leave the pillar: the inactive one is dropped (predicted first), the active one
        # fails the state naming who streams from it, and stays recorded.
        predicted = states.pg_replication.slots_follow(record, slots=[], user="root", test=True)
        assert predicted.result is None
        assert predicted.changes == {"dropped": ["kept_slot"], "record": ["busy_slot"]}
        assert "kept_slot" in modules.pg_replication.slots()
        ret = states.pg_replication.slots_follow(record, slots=[], user="root")
        assert ret.result is False
        assert ret.changes == {"dropped": ["kept_slot"], "record": ["busy_slot"]}
        assert "still streamed from: busy_slot (pg_receivewal@127.0.0.1)" in ret.comment
        assert set(modules.pg_replication.slots()) >= {"busy_slot", "ops_slot"}
        assert "kept_slot" not in modules.pg_replication.slots()
        assert modules.pg_replication.slots_record(record) == ["busy_slot"]
        assert oct(os.stat(record).st_mode & 0o777) == "0o600"
    finally:
        for slot in ("kept_slot", "ops_slot"):
            if slot in modules.pg_replication.slots():
                modules.pg_replication.slot_drop(slot)
