"""When the runner's failover takes a silent old primary as fenced by its own watchdog
(_utils/pg_replication_ha_proof.py): the HA engine's state file, made up, and the master's
clock passed in."""

import pytest

from tests.conftest import load_util

TIMINGS = {"check_interval": 1, "fence_timeout": 6, "fence_margin": 2, "failover_timeout": 12}
NEEDED = 6 + 2 + 2 * 1  # fence_timeout + fence_margin + 2 * check_interval
NOW = 10_000.0


@pytest.fixture(scope="module")
def proof():
    return load_util("pg_replication_ha_proof")


def state(**over):
    """The engine cut off from master for NEEDED seconds exactly, its state written 1 s ago."""
    out = {"state": "primary suspected", "primary": "master", "mode": "automatic", "timings": dict(TIMINGS),
           "updated": NOW - 1, "agreed_since": NOW - 1 - NEEDED, "watchdog": True,
           "last_decision": {"agreeing": ["standby", "standby2"]}}  # fmt: skip
    out.update(over)
    return out


def test_a_primary_cut_off_for_the_fence_window_by_the_engines_measure_is_fenced(proof):
    ok, detail = proof.watchdog_fenced(state(), "master", NOW)
    assert ok is True
    assert detail == (
        "its watchdog has fenced it: for 10.0 s (fence_timeout 6 + fence_margin 2 + 2 * check_interval 1 = 10 s"
        " needed) a majority of its peers (standby, standby2) said they lost it and the master did not reach it"
        " (the HA engine's state, 1 s old; ha:mode automatic, its watchdog seen running)"
    )
    assert proof.watchdog_fenced(state(state="primary lost"), "master", NOW)[0] is True


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"agreed_since": NOW - 1 - NEEDED + 0.5}, "cut off for 9.5 s of the 10 s its fence needs: try again in 0.5 s"),
        ({"agreed_since": NOW - 5}, "cut off for 4.0 s of the 10 s its fence needs: try again in 6.0 s"),
        ({"agreed_since": None}, "the HA engine does not see a majority of its peers say they lost it"),
        ({"mode": "manual"}, "ha:mode is manual: no watchdog fences it"),
        ({"watchdog": False}, "its watchdog was not seen running on its last healthy check (False)"),
        ({"watchdog": None}, "its watchdog was not seen running on its last healthy check (None)"),
        ({"primary": "standby"}, "the HA engine watches standby, not master"),
        ({"state": "cooldown"}, "the HA engine sees it as cooldown"),
        ({"state": "healthy"}, "the HA engine sees it as healthy"),
        ({"state": "promoting"}, "the HA engine sees it as promoting"),
        ({"updated": NOW - 19}, "the HA engine's state is 19 s old: the engine is not watching"),
        ({"timings": None}, "the HA engine's state does not say its timings (an older engine?)"),
    ],
)
def test_anything_short_of_a_measured_fresh_window_is_no_proof(proof, over, why):
    ok, detail = proof.watchdog_fenced(state(**over), "master", NOW)
    assert (ok, detail) == (False, why)


def test_no_engine_state_is_no_proof(proof):
    assert proof.watchdog_fenced(None, "master", NOW) == (
        False,
        "no HA engine state on this master: nothing measured how long it has been cut off",
    )


def test_the_window_is_measured_up_to_the_engines_last_tick_not_up_to_now(proof):
    """A state 10 s old (the engine still within its freshness) with 5 s of agreement in it
    is 5 s measured, not 15: the 10 s since may have been anything."""
    ok, detail = proof.watchdog_fenced(state(updated=NOW - 10, agreed_since=NOW - 15), "master", NOW)
    assert not ok
    assert detail.startswith("cut off for 5.0 s of the 10 s")
