"""The HA engine's tick (_engines/pg_replication_ha.py): what it fires and runs, in which
order, from the real decisions (_utils/pg_replication_ha.py); the master's bus and the
runners replaced by a recorder (the engine's I/O; its integration is test_day2's)."""

import pytest

from tests.conftest import REPO_ROOT, load_file, load_util
from tests.unit.test_ha_decide import DEAD, HA, HEALTHY, LOST_BY_ALL, obs, primary, standby


class Recorder:
    """The engine's ``_Watch`` as the tick uses it: every call, in order."""

    def __init__(self, failover=None, rejoin=None):
        self.calls = []
        self.answers = {"failover": failover or {"result": True, "comment": "ok"},
                        "rejoin": rejoin or {"result": True, "comment": "master streams from standby"}}  # fmt: skip

    def fire(self, name, data):
        self.calls.append(("fire", name))

    def remember(self, decider, ha):
        self.calls.append(("remember", decider.state))

    def failover(self, to):
        self.calls.append(("failover", to))
        return self.answers["failover"]

    def rejoin(self, host):
        self.calls.append(("rejoin", host))
        return self.answers["rejoin"]

    def topology(self, now, force=False):
        self.calls.append(("topology", force))


@pytest.fixture(scope="module")
def engine():
    module = load_file("pg_replication_ha_engine", REPO_ROOT / "_engines/pg_replication_ha.py")
    module.__utils__ = {}
    return module


@pytest.fixture(scope="module")
def ha():
    return load_util("pg_replication_ha")


def test_a_chosen_candidate_is_announced_before_the_failover_runs(engine, ha):
    decider, watch = ha.Decider(0), Recorder()
    engine._decide(watch, decider, obs(HEALTHY), HA)
    decider.lost_since = decider.agreed_since = -100.0  # lost and agreed long ago
    engine._decide(watch, decider, obs(DEAD, LOST_BY_ALL), HA)
    assert watch.calls == [("fire", "healthy"), ("fire", "primary_lost"), ("fire", "candidate_chosen"),
                           ("remember", ha.PROMOTING), ("failover", "standby"), ("topology", True),
                           ("fire", "promoted")]  # fmt: skip
    assert decider.rejoin == "master"


def test_auto_rejoin_is_announced_then_run_then_reported(engine, ha):
    decider = ha.Decider(0)
    decider.rejoin, decider.state = "master", ha.COOLDOWN
    servers = {"master": {"running": False}, "standby": primary(), "standby2": standby()}
    after = {"primary": "standby", "standbys": ["master", "standby2"], "peers": ["master", "standby2"],
             "servers": servers, "reaches": {}, "ha": dict(HA, auto_rejoin=True)}  # fmt: skip
    watch = Recorder()
    engine._rejoin(watch, decider, after, after["ha"])
    assert watch.calls == [("fire", "rejoining"), ("remember", ha.COOLDOWN), ("rejoin", "master"),
                           ("fire", "rejoined"), ("topology", True)]  # fmt: skip
    watch = Recorder()
    engine._rejoin(watch, decider, after, after["ha"])
    assert watch.calls == []
