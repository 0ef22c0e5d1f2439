"""_utils/pg_replication_jobs.py: one job on one minion, with a bound on the whole wait, over
a client that plays the salt-master's side (what the minion answers is made up)."""

import time
import types

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_util

JOBS = load_util("pg_replication_jobs")


class Client:
    """The parts of salt.client.LocalClient that ``ask`` uses. ``returns_after``: polls before
    the job's return arrives (None: never); ``running``: what find_job says meanwhile."""

    def __init__(self, returns_after=None, running=True, connected=True):
        self.returns_after, self.running, self.connected = returns_after, running, connected
        self.calls, self.unsubscribed = [], []
        self.event = types.SimpleNamespace(unsubscribe=self.unsubscribed.append)

    def run_job(self, tgt, fun, arg=(), kwarg=None, timeout=None, listen=False):
        self.calls.append((fun, tgt))
        return {"jid": "42", "minions": [tgt] if self.connected else []}

    def get_returns_no_block(self, tag):
        assert tag == "salt/job/42/ret/master"
        polls = 0
        while True:
            polls += 1
            ready = self.returns_after is not None and polls > self.returns_after
            yield {"data": {"return": "stopped", "retcode": 0}} if ready else None

    def cmd(self, tgt, fun, arg=None, timeout=None):
        self.calls.append((fun, tgt))
        return {tgt: {"jid": arg[0]} if fun == "saltutil.find_job" and self.running else {}}


def test_a_return_is_the_minions_return_event():
    client = Client(returns_after=3)
    assert JOBS.ask(client, "master", "service.stop", ["postgresql"]) == {"return": "stopped", "retcode": 0}
    assert client.calls == [("service.stop", "master")]
    assert client.unsubscribed == ["salt/job/42"]


def test_a_job_that_still_runs_at_the_limit_is_stopped_and_named():
    client = Client(returns_after=None, running=True)
    with pytest.raises(CommandExecutionError, match=r"master: service.stop still ran after 0.3s: the job \(42\)"):
        JOBS.ask(client, "master", "service.stop", timeout=0.1, limit=0.3)
    assert ("saltutil.find_job", "master") in client.calls
    assert client.calls[-1] == ("saltutil.term_job", "master")
    assert client.unsubscribed == ["salt/job/42"]


def test_a_job_that_ended_without_a_return_or_a_minion_not_connected_is_no_answer(monkeypatch):
    monkeypatch.setattr(JOBS, "LATE_RETURN_GRACE", 0.1)
    assert JOBS.ask(Client(returns_after=None, running=False), "master", "test.ping", timeout=0.1, limit=60) is None
    assert JOBS.ask(Client(connected=False), "master", "test.ping") is None


class BusClient:
    """The parts of LocalClient that ``gather`` and ``collect`` use: each published job gets
    the next jid; ``answers[fun]``: ``{minion: (poll at which it returns, return)}``; a
    minion missing there never returns."""

    def __init__(self, answers, matched=None):
        self.answers, self.matched, self.jobs, self.unsubscribed = answers, matched, {}, []
        self.event = types.SimpleNamespace(unsubscribe=self.unsubscribed.append)

    def run_job(self, tgt, fun, arg=(), kwarg=None, tgt_type="list", listen=False):
        jid = str(len(self.jobs) + 1)
        self.jobs[jid] = fun
        minions = self.matched if self.matched is not None else list(tgt)
        return {"jid": jid, "minions": minions} if minions else {}

    def get_returns_no_block(self, tag):
        assert tag == "salt/job/"
        polls = 0
        while True:
            polls += 1
            events = [
                {"data": {"jid": jid, "id": minion, "return": ret, "retcode": 0}}
                for jid, fun in self.jobs.items()
                for minion, (at, ret) in self.answers.get(fun, {}).items()
                if at == polls
            ]
            yield from events or [None]


def test_gather_takes_the_returns_and_gives_a_silent_minion_up_at_the_deadline():
    client = BusClient({"test.ping": {"standby": (1, True), "standby2": (3, True)}})
    started = time.monotonic()
    out = JOBS.gather(client, ["master", "standby", "standby2"], "test.ping", wait=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    assert out == {"standby": {"ret": True, "retcode": 0}, "standby2": {"ret": True, "retcode": 0}}
    assert client.unsubscribed == ["salt/job/1"]


def test_gather_returns_as_soon_as_every_minion_answered():
    client = BusClient({"test.ping": {"master": (2, True)}})
    started = time.monotonic()
    assert JOBS.gather(client, ["master"], "test.ping", wait=30) == {"master": {"ret": True, "retcode": 0}}
    assert time.monotonic() - started < 1


def test_collect_sorts_two_jobs_returns_and_a_target_that_matched_nothing_is_no_answer():
    client = BusClient({"pg_replication.health": {"standby": (1, {"running": True})},
                        "network.connect": {"standby": (2, {"result": False})}})  # fmt: skip
    jobs = [JOBS.publish(client, ["standby"], fun) for fun in ("pg_replication.health", "network.connect")]
    health, reached = JOBS.collect(client, jobs, 5)
    assert health == {"standby": {"ret": {"running": True}, "retcode": 0}}
    assert reached == {"standby": {"ret": {"result": False}, "retcode": 0}}
    assert JOBS.gather(BusClient({}, matched=[]), "nobody*", "test.ping", tgt_type="compound") == {}


def test_answering_with_waits_the_ping_for_a_silent_minion_and_the_job_of_those_that_answer():
    # standby answers the ping at once, its refresh takes longer than the ping's wait
    client = BusClient({"test.ping": {"standby": (1, True), "standby2": (2, True)},
                        "saltutil.refresh_pillar": {"standby": (40, True), "standby2": (3, True)}})  # fmt: skip
    started = time.monotonic()
    alive, refreshed = JOBS.answering_with(client, ["master", "standby", "standby2"], "saltutil.refresh_pillar",
                                           ping_wait=0.2, wait=30)  # fmt: skip
    assert alive == ["standby", "standby2"]
    assert refreshed == {"standby": {"ret": True, "retcode": 0}, "standby2": {"ret": True, "retcode": 0}}
    assert 0.2 <= time.monotonic() - started < 5
    assert sorted(client.unsubscribed) == ["salt/job/1", "salt/job/2"]


def test_answering_with_returns_as_soon_as_everyone_answered_both():
    client = BusClient({"test.ping": {"master": (1, True)}, "saltutil.refresh_pillar": {"master": (2, True)}})
    started = time.monotonic()
    assert JOBS.answering_with(client, ["master"], "saltutil.refresh_pillar", ping_wait=30, wait=60) == (
        ["master"], {"master": {"ret": True, "retcode": 0}})  # fmt: skip
    assert time.monotonic() - started < 1


def test_answering_with_gives_up_a_job_that_never_returns_at_its_wait():
    client = BusClient({"test.ping": {"master": (1, True)}})
    started = time.monotonic()
    assert JOBS.answering_with(client, ["master"], "saltutil.refresh_pillar", ping_wait=0.1, wait=0.3) == (
        ["master"], {})  # fmt: skip
    assert 0.3 <= time.monotonic() - started < 2


def test_answering_with_takes_a_return_of_the_job_as_an_answer_when_the_ping_comes_late():
    # standby's ping is slower than the ping's wait; its refresh came before it
    client = BusClient({"test.ping": {"master": (1, True), "standby": (40, True)},
                        "saltutil.refresh_pillar": {"master": (2, True), "standby": (3, True)}})  # fmt: skip
    alive, refreshed = JOBS.answering_with(client, ["master", "standby"], "saltutil.refresh_pillar", ping_wait=0.2)
    assert alive == ["master", "standby"]
    assert sorted(refreshed) == ["master", "standby"]
