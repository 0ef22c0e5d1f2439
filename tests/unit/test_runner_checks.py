"""The runners' preflight logic on made-up member answers (pure: no minion is asked):
_utils/pg_replication_checks.py over the model of _utils/pg_replication_cluster.py."""

import copy

import pytest

from tests.conftest import REPO_ROOT, load_file, load_util

HOSTS = {
    "master": {"id": "master", "role": "primary", "address": "10.0.0.1"},
    "standby": {"id": "standby", "role": "standby", "address": "10.0.0.2", "slot": "standby_slot"},
    "backup": {"id": "backup", "role": "barman", "address": "10.0.0.3"},
}
PRIMARY = {"running": True, "in_recovery": False, "lsn": "0/5000000", "wal_log_hints": "on", "data_checksums": "off",
           "timeline": 1}  # fmt: skip
STANDBY = {
    "running": True, "in_recovery": True, "lsn": "0/5000000", "replay_lsn": "0/5000000", "timeline": 1,
    "max_wal_senders": 5, "max_replication_slots": 4,
    "receiver": {"status": "streaming", "sender_host": "10.0.0.1", "slot_name": "standby_slot"},
}  # fmt: skip


@pytest.fixture(scope="module")
def runner():
    module = load_file("pg_replication_runner", REPO_ROOT / "_runners/pg_replication.py")
    # What Salt's loader gives the runner: the shared _utils it calls.
    module.__utils__ = {"pg_replication_postgres.lsn_bytes": load_util("pg_replication_postgres").lsn_bytes}
    return module


def cluster(model, master=PRIMARY, standby=STANDBY):
    hosts = copy.deepcopy(HOSTS)
    plan = {"hosts": hosts}
    members = {"master": {"plan": plan, "server": dict(master)}, "standby": {"plan": plan, "server": dict(standby)},
               "backup": {"plan": plan}}  # fmt: skip
    return model.Cluster(members)


def failed(made):
    return [c["check"] for c in made if not c["ok"]]


def test_a_healthy_pair_passes_every_check(ops, model):
    assert failed(ops.switchover_checks(cluster(model), "master", "standby", 16 << 20)) == []


def test_rewind_needs_wal_log_hints_or_checksums(ops, model):
    checks = ops.switchover_checks(
        cluster(model, master=dict(PRIMARY, wal_log_hints="off")), "master", "standby", 16 << 20
    )
    assert failed(checks) == ["pg_rewind can rejoin master (wal_log_hints or data checksums)"]


def test_lag_counts_what_is_not_replayed(ops, model):
    lagging = dict(STANDBY, replay_lsn="0/3000000")  # received everything, replayed 32 MiB less
    checks = ops.switchover_checks(cluster(model, standby=lagging), "master", "standby", 16 << 20)
    assert failed(checks) == ["standby is at most 16777216 bytes behind (WAL not replayed)"]


def test_two_primaries_or_a_target_streaming_elsewhere_are_refused(ops, model):
    promoted = dict(STANDBY, in_recovery=False, receiver=None)
    checks = ops.switchover_checks(cluster(model, standby=promoted), "master", "standby", 16 << 20)
    assert "exactly one primary runs, the pillar's (master)" in failed(checks)
    assert "standby streams from master on its slot" in failed(checks)


def test_a_target_too_small_for_its_new_standbys(ops, model):
    small = dict(STANDBY, max_wal_senders=2)
    checks = ops.switchover_checks(cluster(model, standby=small), "master", "standby", 16 << 20)
    assert failed(checks) == ["standby has the WAL senders and slots the new topology needs (3 and 2)"]


def test_lsn_arithmetic(runner):
    assert runner._lsn("16/B374D848") - runner._lsn("16/B3000000") == 0x74D848
    assert runner._lsn("1/0") == 1 << 32


def with_barman(made, primary=None, server_name=None, name="master-streaming"):
    made.plan["barman_pillar"] = {"primary": primary, "server_name": server_name}
    made.members["backup"] = {"plan": {"barman_servers": [{"name": name, "external": False}]}}
    return made


def test_a_switchover_keeps_barman_server_name_when_the_pillar_leaves_it_unset(model):
    change = model.change(with_barman(cluster(model)), {"master": "standby", "standby": "primary"})
    assert model.pillar_change(change) == [
        "pg_replication:barman:server_name: master-streaming",  # not standby-streaming: the same archive
        "pg_replication:hosts:master:role: standby",
        "pg_replication:hosts:standby:role: primary",
    ]


def test_a_switchover_moves_an_explicit_barman_primary(model):
    made = with_barman(cluster(model), primary="master", server_name="main")
    change = model.change(made, {"master": "standby", "standby": "primary"})
    assert change == {"hosts": {"master": {"role": "standby"}, "standby": {"role": "primary"}},
                      "barman": {"primary": "standby"}}  # fmt: skip


def test_without_barman_only_roles_change(model):
    change = model.change(cluster(model), {"master": "standby", "standby": "primary"})
    assert list(change) == ["hosts"]


def test_a_standby_naming_the_old_primary_as_upstream_blocks_switchover_and_failover_candidacy(ops, model):
    made = cluster(model)
    made.hosts["standby2"] = {"id": "standby2", "role": "standby", "address": "10.0.0.4", "upstream": "master"}
    made.hosts["standby3"] = {"id": "standby3", "role": "standby", "address": "10.0.0.5", "upstream": "standby"}
    checks = ops.switchover_checks(made, "master", "standby", 16 << 20)
    assert "no standby names master as its upstream" in failed(checks)
    assert "remove pg_replication:hosts:<host>:upstream: master from standby2 first" in str(checks)
    # Where each standby streams from once standby leads: its own upstream, else the primary.
    assert {h: made.upstream(h, "standby") for h in ("master", "standby2", "standby3")} == {
        "master": "standby", "standby2": "master", "standby3": "standby",
    }  # fmt: skip
    assert made.cascading_from("standby") == ["standby3"]
