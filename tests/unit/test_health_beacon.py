"""The pg_replication_health beacon's logic (pure: _utils/pg_replication_health.py): the
items it flattens from pg_replication.status's and barman.check's answers, the events for
what changed between two looks, its configuration check; and the sample reactor in docs
renders to a notification only."""

import jinja2
import pytest
import yaml

from tests.conftest import REPO_ROOT, load_file


@pytest.fixture(scope="module")
def health():
    return load_file("pg_replication_health", REPO_ROOT / "_utils/pg_replication_health.py")


PRIMARY = {
    "role": "primary",
    "timeline": 1,
    "slots": [{"slot_name": "standby_slot", "slot_type": "physical", "active": True},
              {"slot_name": "barman", "slot_type": "physical", "active": True}],
    "replication": [{"pid": 10, "application_name": "standby", "state": "streaming"},
                    {"pid": 11, "application_name": "barman_receive_wal", "state": "streaming"}],
}  # fmt: skip
STANDBY = {"role": "standby", "timeline": 1, "slots": [], "replication": [],
           "wal_receiver": {"status": "streaming"}, "lag": {"bytes": 0, "seconds": 0.0}}  # fmt: skip


def test_a_primarys_items(health):
    assert health.server_items(PRIMARY) == {
        "role": "primary",
        "streaming:standby": True,
        "streaming:barman_receive_wal": True,
        "slot_active:standby_slot": True,
        "slot_active:barman": True,
    }


def test_the_slots_as_pg_replication_status_gives_them(health):
    """pg_replication.status's ``slots`` is pg_replication.slots' answer, keyed by slot name
    (the lab's beacon saw no slot item while the items read only a list)."""
    slots = {"standby_slot": {"slot_type": "physical", "active": False, "active_pid": None},
             "barman": {"slot_type": "physical", "active": True, "active_pid": 42}}  # fmt: skip
    items = health.server_items(dict(PRIMARY, slots=slots))
    assert (items["slot_active:standby_slot"], items["slot_active:barman"]) == (False, True)


def test_a_standbys_items_and_a_server_that_does_not_answer(health):
    assert health.server_items(STANDBY) == {"role": "standby", "wal_receiver": "streaming"}
    assert health.server_items(dict(STANDBY, wal_receiver=None)) == {"role": "standby", "wal_receiver": "stopped"}
    assert health.server_items(None, error="connection refused") == {"role": "down"}


def test_barman_items(health):
    checks = {"db-streaming": {"wal_archive": {"status": "OK"}, "backup maximum age": {"status": "FAILED"}},
              "other": None}  # fmt: skip
    assert health.barman_items(checks) == {
        "barman:db-streaming:backup maximum age": "FAILED",
        "barman:db-streaming:wal_archive": "OK",
        "barman:other": "unknown",
    }


def test_the_first_look_is_the_baseline(health):
    assert health.changes(None, health.server_items(PRIMARY)) == []
    same = health.server_items(PRIMARY)
    assert health.changes(same, dict(same)) == []


def test_a_standby_that_stops_streaming_and_its_slot(health):
    before = health.server_items(PRIMARY)
    after = health.server_items(
        dict(PRIMARY, replication=PRIMARY["replication"][1:],
             slots=[dict(PRIMARY["slots"][0], active=False), PRIMARY["slots"][1]])
    )  # fmt: skip
    assert health.changes(before, after) == [
        {"tag": "pg_replication/health/slot_active", "item": "slot_active:standby_slot", "old": True, "new": False},
        {"tag": "pg_replication/health/streaming", "item": "streaming:standby", "old": True, "new": None},
    ]


def test_a_promotion_and_a_server_going_down(health):
    standby = health.server_items(STANDBY)
    promoted = health.server_items(dict(STANDBY, role="primary", wal_receiver=None))
    assert health.changes(standby, promoted) == [
        {"tag": "pg_replication/health/role", "item": "role", "old": "standby", "new": "primary"},
        {"tag": "pg_replication/health/wal_receiver", "item": "wal_receiver", "old": "streaming", "new": None},
    ]
    assert [e["new"] for e in health.changes(promoted, health.server_items(None)) if e["item"] == "role"] == ["down"]


def test_a_barman_check_that_fails(health):
    before = health.barman_items({"db": {"wal_archive": {"status": "OK"}}})
    after = health.barman_items({"db": {"wal_archive": {"status": "FAILED"}}})
    assert health.changes(before, after) == [
        {"tag": "pg_replication/health/barman", "item": "barman:db:wal_archive", "old": "OK", "new": "FAILED"}
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([{"interval": 30}, {"port": 5432}, {"host": "/var/run/postgresql"}], "valid"),
        ([{"barman_servers": ["db-streaming"]}], "valid"),
        ({"port": 5432}, "valid"),
        ([{"interval": 30}], "give port (a PostgreSQL server) or barman_servers"),
        ([{"port": 5432}, {"barman_servers": ["db"]}], "give port (a PostgreSQL server) or barman_servers"),
        ([{"port": "5432; rm"}], "is not a port number"),
        ([{"port": True}], "is not a port number"),
        ([{"barman_servers": "db"}], "barman_servers must be a list"),
        ([{"prot": 5432}], "unknown key(s) prot"),
        (["port"], "each entry must be a mapping"),
        ("port", "must be a list of mappings"),
    ],
)
def test_the_beacons_configuration_is_checked(health, config, message):
    ok, said = health.validate(config)
    assert ok == (message == "valid")
    assert message in said


def test_the_sample_reactor_only_notifies():
    source = (REPO_ROOT / "docs/reactor-health.sls").read_text()
    data = {"id": "standby", "item": "role", "old": "standby", "new": "primary", "_stamp": "2026-12-06T12:00:00"}
    rendered = yaml.safe_load(jinja2.Environment(autoescape=False).from_string(source).render(data=data))  # noqa: S701
    assert list(rendered) == ["pg_replication-health-notice"]
    (function,) = rendered["pg_replication-health-notice"]
    assert function == "runner.event.send"
    (args,) = rendered["pg_replication-health-notice"][function]
    tag, payload = args["args"]
    assert tag == {"tag": "pg_replication/health/notice"}
    assert payload["data"] == {"minion": "standby", "item": "role", "old": "standby", "new": "primary",
                               "summary": "standby: role changed from standby to primary"}  # fmt: skip


def test_the_beacon_fires_what_changed_since_its_last_look(health):
    """_beacons/pg_replication_health.py with its loader's __salt__ (the execution module's
    functions as pg_replication_health.py defines them over the pure logic)."""
    beacon = load_file("pg_replication_health_beacon", REPO_ROOT / "_beacons/pg_replication_health.py")
    answers = iter([PRIMARY, PRIMARY, dict(PRIMARY, replication=PRIMARY["replication"][1:])])
    beacon.__salt__ = {
        "pg_replication.health_items": lambda port, host, barman_servers: health.server_items(next(answers)),
        "pg_replication.health_changes": health.changes,
        "pg_replication.health_validate": health.validate,
    }
    config = [{"interval": 30}, {"port": 5432}, {"host": "/var/run/postgresql"}]
    assert beacon.validate(config) == (True, "valid")
    assert beacon.beacon(config) == []
    assert beacon.beacon(config) == []
    assert beacon.beacon(config) == [
        {"tag": "pg_replication/health/streaming", "item": "streaming:standby", "old": True, "new": None}
    ]
