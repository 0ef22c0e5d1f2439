"""Automatic failover, the self-fencing side (issue #28): the ``ha`` pillar in the plan, its
timings' invariant, and the watchdog's decision driven by a fake clock."""

import copy
import json
import pathlib

import pytest
import yaml

from tests.conftest import load_util

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def config(merged_config):
    # A copy: the merge may share the defaults' nested mappings, which the tests change.
    return copy.deepcopy(merged_config(yaml.safe_load((REPO / "pillar.example").read_text())["pg_replication"]))


@pytest.fixture(scope="module")
def fence():
    return load_util("pg_replication_fence")


def test_manual_by_default_and_no_watchdog(plan_mod, config):
    ha = plan_mod.build(config, "master")["ha"]
    assert ha["mode"] == "manual"
    assert ha["watchdog"] is False
    assert (ha["check_interval"], ha["fence_timeout"], ha["failover_timeout"], ha["fence_margin"]) == (1, 8, 12, 2)
    assert ha["auto_rejoin"] is False
    assert ha["failover_cooldown"] == 600


def test_automatic_runs_the_watchdog_on_every_server_with_every_other_server_as_peer(plan_mod, config):
    config["ha"]["mode"] = "automatic"
    plans = {h: plan_mod.build(config, h)["ha"] for h in ("master", "standby", "backup")}
    assert {h: p["watchdog"] for h, p in plans.items()} == {"master": True, "standby": True, "backup": False}
    assert plans["master"]["peers"] == [{"id": "standby", "address": "192.168.11.102", "port": 5432}]
    assert plans["standby"]["peers"] == [{"id": "master", "address": "192.168.11.101", "port": 5432}]
    assert plans["backup"]["peers"] == []
    assert plans["master"]["marker"] == "/var/lib/pg_replication/fenced"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "auto"}, "pg_replication:ha:mode: 'auto' is not one of manual, automatic"),
        ({"check_interval": 0}, "pg_replication:ha:check_interval"),
        ({"fence_timeout": -3}, "pg_replication:ha:fence_timeout"),
        ({"failover_timeout": "30s"}, "pg_replication:ha:failover_timeout"),
        ({"fence_margin": 0}, "pg_replication:ha:fence_margin"),
        ({"max_lag_on_failover": -1}, "pg_replication:ha:max_lag_on_failover"),
        ({"failover_cooldown": "ten"}, "pg_replication:ha:failover_cooldown"),
        ({"auto_rejoin": "yes"}, "pg_replication:ha:auto_rejoin"),
        ({"typo_timeout": 3}, "pg_replication:ha:typo_timeout"),
        # The invariant: 8 + 2 + 2 * 1 = 12 > 11.
        ({"failover_timeout": 11}, "pg_replication:ha:failover_timeout: 11 s must be at least .* = 12 s"),
        ({"fence_timeout": 40}, "pg_replication:ha:failover_timeout: 12 s must be at least"),
        ({"check_interval": 5, "fence_timeout": 9, "failover_timeout": 60},
         "pg_replication:ha:fence_timeout: 9 s is shorter than two checks"),
    ],
)  # fmt: skip
def test_bad_ha_values_fail_naming_the_key(plan_mod, config, change, message):
    config["ha"].update(change)
    with pytest.raises(plan_mod.PlanError, match=message):
        plan_mod.build(config, "master")


def test_the_invariant_holds_exactly_at_the_bound(plan_mod, config):
    config["ha"].update(check_interval=1, fence_timeout=6, fence_margin=3, failover_timeout=11, mode="automatic")
    assert plan_mod.build(config, "standby")["ha"]["failover_timeout"] == 11


def test_watchdog_config_names_the_master_the_peers_and_the_unit(plan_mod, config, fence):
    config["ha"]["mode"] = "automatic"
    plan = plan_mod.build(config, "master", grains={"init": "systemd"})
    args = (plan["ha"], plan["minion_id"], plan["data_dir"], plan["service_name"])
    text = json.loads(fence.watchdog_config(*args, "10.47.11.1", 4506))
    assert text["masters"] == [{"address": "10.47.11.1", "port": 4506}]
    assert text["service"] == "postgresql@15-main"
    assert text["data_dir"] == "/var/lib/postgresql/15/main"
    assert text["peers"][0]["address"] == "192.168.11.102"
    assert len(json.loads(fence.watchdog_config(*args, ["m1", "m2"], 4506))["masters"]) == 2


# --------------------------------------------------------------------------- the decision


class Clock:
    def __init__(self):
        self.now = 1000.0

    def advance(self, seconds):
        self.now += seconds
        return self.now


def test_an_isolated_primary_fences_after_fence_timeout_not_before(fence):
    clock = Clock()
    dog = fence.Watchdog(20, clock.now)
    assert dog.tick(clock.now, True, True, 2, 2)[0] == fence.OK
    decisions = [dog.tick(clock.advance(2), True, False, 0, 2)[0] for _ in range(9)]
    assert decisions == [fence.ISOLATED] * 9  # 18 s alone
    decision, reason = dog.tick(clock.advance(2), True, False, 0, 2)
    assert decision == fence.FENCE
    assert "for 20.0 s" in reason
    assert "0 of 2" in reason


def test_never_fences_while_it_sees_the_master_or_a_majority(fence):
    clock = Clock()
    dog = fence.Watchdog(6, clock.now)
    for _ in range(100):  # the master stopped, the standbys answer
        assert dog.tick(clock.advance(1), True, False, 2, 3)[0] == fence.OK
    for _ in range(100):  # the standbys gone, the master answers
        assert dog.tick(clock.advance(1), True, True, 0, 3)[0] == fence.OK


def test_half_of_the_peers_is_not_a_majority(fence):
    assert fence.majority(1, 2) is False
    assert fence.majority(2, 3) is True
    assert fence.majority(2, 4) is False
    assert fence.majority(0, 0) is False


def test_a_moment_of_contact_restarts_the_count(fence):
    clock = Clock()
    dog = fence.Watchdog(6, clock.now)
    for _ in range(5):
        assert dog.tick(clock.advance(1), True, False, 0, 2)[0] == fence.ISOLATED
    assert dog.tick(clock.advance(1), True, False, 2, 2)[0] == fence.OK
    for _ in range(5):
        assert dog.tick(clock.advance(1), True, False, 0, 2)[0] == fence.ISOLATED
    assert dog.tick(clock.advance(1), True, False, 0, 2)[0] == fence.FENCE


def test_a_standby_never_fences_and_its_promotion_starts_a_fresh_count(fence):
    clock = Clock()
    dog = fence.Watchdog(6, clock.now)
    for _ in range(30):
        assert dog.tick(clock.advance(1), False, False, 0, 2)[0] == fence.IDLE
    # Promoted while cut off: a whole fence_timeout from the promotion.
    for _ in range(5):
        assert dog.tick(clock.advance(1), True, False, 0, 2)[0] == fence.ISOLATED
    assert dog.tick(clock.advance(1), True, False, 0, 2)[0] == fence.FENCE


def test_a_lone_primary_never_fences(fence):
    clock = Clock()
    dog = fence.Watchdog(6, clock.now)
    for _ in range(30):
        assert dog.tick(clock.advance(1), True, False, 0, 0)[0] == fence.OK


def test_a_fenced_server_running_as_primary_is_stopped_again(fence):
    clock = Clock()
    dog = fence.Watchdog(6, clock.now)
    assert dog.tick(clock.advance(1), True, True, 2, 2, fenced=True)[0] == fence.STOP_AGAIN
    assert dog.tick(clock.advance(1), False, True, 2, 2, fenced=True)[0] == fence.IDLE


def test_a_long_check_counts_its_whole_duration(fence):
    clock = Clock()
    dog = fence.Watchdog(6, clock.now)
    assert dog.tick(clock.advance(7), True, False, 0, 2)[0] == fence.FENCE


def test_marker_round_trip_and_foreign_content(fence):
    text = fence.marker_text("2026-12-06T12:00:00Z", "cut off", "master")
    assert fence.read_marker(text) == {"fenced_at": "2026-12-06T12:00:00Z", "reason": "cut off", "minion_id": "master"}
    assert fence.read_marker("garbage")["reason"] == "unreadable fence marker"
