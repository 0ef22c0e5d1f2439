"""The HA engine's tick (_engines/pg_replication_ha.py): what it fires and runs, in which
order, from the real decisions (_utils/pg_replication_ha.py); the master's bus and the
runners replaced by a recorder (the engine's I/O; its integration is test_day2's)."""

import types

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


class Client:
    """The master's LocalClient as ``pg_replication_jobs`` uses it for ``_Watch.topology``:
    what it was asked, and whom; every minion of ``minions`` answers at once."""

    def __init__(self, minions=("master", "standby", "standby2"), lost_after_ping=()):
        self.asked, self.minions, self.returns, self.lost = [], list(minions), [], set(lost_after_ping)
        self.event = types.SimpleNamespace(unsubscribe=lambda tag: None)

    def run_job(self, tgt, fun, arg=(), kwarg=None, tgt_type="list", listen=False):
        self.asked.append((fun, tgt))
        jid = str(len(self.asked))
        matched = self.minions if tgt_type == "compound" else [m for m in tgt if m in self.minions]
        ret = True if fun in ("test.ping", "saltutil.refresh_pillar") else {}
        answering = [m for m in matched if fun == "test.ping" or m not in self.lost]
        self.returns += [{"data": {"jid": jid, "id": m, "return": ret, "retcode": 0}} for m in answering]
        return {"jid": jid, "minions": matched}

    def get_returns_no_block(self, tag):
        while True:
            yield self.returns.pop(0) if self.returns else None


class Picture:
    """A cluster model as far as the engine's re-read compares them: its pillar's primary."""

    def __init__(self, primary):
        self.primary = primary

    def pillar_primary(self):
        return self.primary


def watching(engine, monkeypatch, read_primary):
    """A ``_Watch`` whose last picture names ``master`` and whose next read names ``read_primary``."""
    watch = engine._Watch.__new__(engine._Watch)
    watch.tgt, watch.topology_every, watch.read_at, watch.cluster = "*", 30, 0.0, Picture("master")
    watch.client, watch.said_no_cluster, watch.answered = Client(), False, ["standby", "standby2"]
    read = Picture(read_primary)
    jobs = load_util("pg_replication_jobs")
    monkeypatch.setattr(engine, "__utils__", {
        "pg_replication_cluster.from_answers": lambda answers: read,
        "pg_replication_jobs.answering_with": jobs.answering_with, "pg_replication_jobs.gather": jobs.gather,
    })  # fmt: skip
    return watch, read


def test_the_cluster_is_re_read_in_cooldown_so_that_the_pillar_change_is_seen(engine, ha, monkeypatch):
    """With the former primary down, the pillar's primary is not healthy; in cooldown the
    engine re-reads its picture when due (the pillar change it waits for, and
    ``auto_rejoin``, come from that re-read), every minion that answers a ping."""
    watch, read = watching(engine, monkeypatch, "standby")
    decider = ha.Decider(0)
    decider.state = ha.COOLDOWN
    watch.rereads = decider.rereads()
    assert watch.topology(10.0) is not read  # not due
    assert watch.client.asked == []
    assert watch.topology(40.0) is read
    assert watch.client.asked == [("test.ping", "*"), ("saltutil.refresh_pillar", "*"),
                                  ("pg_replication.member", ["master", "standby", "standby2"])]  # fmt: skip


def test_a_minion_lost_in_the_middle_of_a_re_read_holds_it_up_for_read_wait_only(engine, ha, monkeypatch):
    """The bench found it: the primary lost just after the re-read's ping held the engine's
    ticks up for 36 s (LocalClient.cmd's timeouts and find_job), and the failover with them."""
    watch, read = watching(engine, monkeypatch, "master")
    watch.client, watch.rereads = Client(lost_after_ping=["master"]), True
    monkeypatch.setattr(engine, "READ_WAIT", 0.5)
    started = engine.time.monotonic()
    assert watch.topology(40.0) is read
    assert 0.5 <= engine.time.monotonic() - started < 3
    assert watch.client.asked[-1] == ("pg_replication.member", ["standby", "standby2"])


def test_in_the_middle_of_a_failure_the_picture_stays_unless_the_pillar_names_another_primary(engine, ha, monkeypatch):
    """Suspected: only the servers that answered the last check asked (the silent primary
    would hold the read up); the same primary named keeps the picture decided on."""
    watch, read = watching(engine, monkeypatch, "master")
    decider = ha.Decider(0)
    decider.state = ha.SUSPECTED
    watch.rereads = decider.rereads()
    last = watch.cluster
    assert watch.topology(40.0) is last
    assert watch.client.asked == [("test.ping", ["standby", "standby2"]),
                                  ("saltutil.refresh_pillar", ["standby", "standby2"]),
                                  ("pg_replication.member", ["standby", "standby2"])]  # fmt: skip


def test_an_operators_failover_in_the_middle_of_a_failure_is_seen_at_the_next_due_read(engine, ha, monkeypatch):
    """The bench found it: after ``salt-run pg_replication.failover`` and its pillar change,
    the engine watched the former primary (suspected) until the master restarted, so that a
    later ``ha:mode: automatic`` never saw the new primary healthy."""
    watch, read = watching(engine, monkeypatch, "standby")
    decider = ha.Decider(0)
    decider.state = ha.LOST
    watch.rereads = decider.rereads()
    assert watch.topology(40.0) is read
    assert {str(tgt) for _, tgt in watch.client.asked} == {str(["standby", "standby2"])}


class Ring:
    """The cluster model as ``_Watch.observe`` reads it: master and its two standbys."""

    hosts = {"master": {"address": "192.0.2.1"}, "standby": {"address": "192.0.2.2"}, "standby2": {}}
    plan = {"port": 5432}

    def pillar_primary(self):
        return "master"

    def servers(self):
        return ["master", "standby", "standby2"]

    def upstream(self, host, primary):
        return primary

    def conn(self, host):
        return {"host": host}

    def backup_hosts(self):
        return self.witnesses

    witnesses = []


class Bus:
    """The master's LocalClient as ``pg_replication_jobs`` uses it: each job published
    (function, target), answered at once by the standbys; the master's minion is silent."""

    def __init__(self):
        self.published, self.returns = [], []
        self.event = type("Event", (), {"unsubscribe": staticmethod(lambda tag: None)})()

    def run_job(self, tgt, fun, arg=(), kwarg=None, tgt_type="list", listen=False):
        jid = str(len(self.published) + 1)  # unique: the list only grows within a tick
        self.published.append((fun, list(tgt)))
        ret = {"pg_replication.health": standby(streams=False), "network.connect": {"result": False}}[fun]
        self.returns += [{"data": {"jid": jid, "id": m, "return": ret, "retcode": 0}} for m in tgt if m != "master"]
        return {"jid": jid, "minions": list(tgt)}

    def get_returns_no_block(self, tag):
        self.published.append("collected")
        while True:
            yield self.returns.pop(0) if self.returns else None


@pytest.mark.parametrize("witnesses", [[], ["backup"]], ids=["no barman", "barman's host a witness"])
def test_a_suspected_primarys_port_is_asked_after_the_first_tick_and_with_the_health_check_after(
    engine, ha, monkeypatch, witnesses
):
    monkeypatch.setattr(engine, "PROBE_WAIT", 0.2)
    monkeypatch.setattr(engine, "_port_answers", lambda address, port: (address, port) == ("no", 0))
    jobs = load_util("pg_replication_jobs")
    monkeypatch.setattr(engine, "__utils__", {
        "pg_replication_jobs.publish": jobs.publish, "pg_replication_jobs.collect": jobs.collect,
        "pg_replication_ha.primary_ok": ha.primary_ok,
        "pg_replication_checks.port_reached": load_util("pg_replication_checks").port_reached,
    })  # fmt: skip
    watch = engine._Watch.__new__(engine._Watch)
    watch.client, watch.suspecting, watch.ha = Bus(), False, lambda found: dict(HA, check_interval=0.1)
    watch.pool = engine.concurrent.futures.ThreadPoolExecutor(max_workers=1)
    servers, peers = ["master", "standby", "standby2"], ["standby", "standby2"]
    health, probe = ("pg_replication.health", servers), ("network.connect", peers + witnesses)
    # the first tick that suspects the primary asks the peers once it has the health answers;
    # the next ticks ask them in the same breath as the health check
    for published in ([health, "collected", probe, "collected"], [health, probe, "collected"]):
        watch.client.published.clear()
        ring = Ring()
        ring.witnesses = witnesses
        seen = watch.observe(ring, HA)
        assert seen["reaches"] == {"standby": False, "standby2": False}
        assert seen["witnesses"] == dict.fromkeys(witnesses, False)
        assert seen["master_reaches"] is False
        assert (watch.silent, watch.answered, watch.suspecting) == (["master"], peers, True)
        assert watch.client.published == published
