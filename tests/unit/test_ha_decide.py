"""The master's HA decisions (_utils/pg_replication_ha.py) and the one day-2 lock
(_utils/pg_replication_lock.py): pure logic, a fake clock and fake member answers."""

import multiprocessing
import os

import pytest

from tests.conftest import load_util

HA = {"mode": "automatic", "check_interval": 1, "fence_timeout": 6, "failover_timeout": 12, "fence_margin": 2,
      "max_lag_on_failover": 1000, "failover_cooldown": 600, "auto_rejoin": False}  # fmt: skip
STANDBYS = ["standby", "standby2"]


@pytest.fixture(scope="module")
def ha():
    return load_util("pg_replication_ha")


@pytest.fixture(scope="module")
def lock():
    return load_util("pg_replication_lock")


def primary(lsn="0/5000", watchdog=True):
    return {"running": True, "in_recovery": False, "lsn": lsn, "watchdog": watchdog}


def standby(lsn="0/5000", streams=True):
    return {"running": True, "in_recovery": True, "lsn": lsn,
            "receiver": {"status": "streaming" if streams else "waiting"}}  # fmt: skip


def obs(servers, reaches=None, mode="automatic", pillar_primary="master", **ha):
    return {"primary": pillar_primary, "standbys": STANDBYS, "servers": servers, "reaches": reaches or {},
            "ha": dict(HA, mode=mode, **ha)}  # fmt: skip


HEALTHY = {"master": primary(), "standby": standby(), "standby2": standby("0/4F00")}
DEAD = {"master": None, "standby": standby(streams=False), "standby2": standby("0/4F00", streams=False)}
LOST_BY_ALL = {"standby": False, "standby2": False}


def run(decider, timeline, start=0.0, interval=1.0):
    """Feed ``timeline`` (observations, one a second); every event and failover."""
    events, failovers, now = [], [], start
    for o in timeline:
        evs, chosen = decider.step(now, o)
        events += evs
        if chosen:
            failovers.append((now, chosen))
            events += decider.failover_result(now, {"result": True, "comment": "ok"}, retry_after=12)
        now += interval
    return events, failovers


def names(events):
    return [name for name, _ in events]


def test_a_dead_primary_is_failed_over_after_failover_timeout_to_the_most_advanced_eligible(ha):
    d = ha.Decider(0)
    events, failovers = run(d, [obs(HEALTHY)] * 3 + [obs(DEAD, LOST_BY_ALL)] * 20)
    assert failovers == [(15.0, "standby")]  # lost at 3 s, failover_timeout 12 s
    assert names(events) == ["healthy", "primary_suspected", "primary_lost", "candidate_chosen", "promoted"]
    assert d.state == ha.COOLDOWN
    assert d.promoted == "standby"


def test_manual_mode_promotes_nothing_and_says_so_once(ha):
    d = ha.Decider(0)
    events, failovers = run(d, [obs(HEALTHY)] + [obs(DEAD, LOST_BY_ALL, mode="manual")] * 30)
    assert failovers == []
    assert names(events) == ["healthy", "primary_suspected", "primary_lost", "manual"]
    assert "salt-run pg_replication.failover" in events[-1][1]["comment"]


def test_a_restarted_master_with_a_healthy_primary_does_nothing(ha):
    d = ha.Decider(100, remembered=None)
    events, failovers = run(d, [obs(HEALTHY)] * 60, start=100)
    assert failovers == []
    assert names(events) == ["healthy"]


def test_a_restarted_master_counts_the_silence_from_its_own_start_and_knows_no_eligible_standby(ha):
    d = ha.Decider(0)
    events, failovers = run(d, [obs(DEAD, LOST_BY_ALL)] * 30)
    assert failovers == []
    assert names(events) == ["primary_suspected", "primary_lost", "refused"]
    assert "never seen healthy" in events[-1][1]["comment"]


def test_one_standby_isolated_causes_no_failover(ha):
    isolated = dict(HEALTHY, standby2=None)
    d = ha.Decider(0)
    events, failovers = run(d, [obs(HEALTHY)] + [obs(isolated)] * 60)
    assert failovers == []
    assert names(events) == ["healthy"]


def test_a_silent_primary_that_its_standbys_still_stream_from_is_not_lost(ha):
    """The master is cut off from the primary only: the standbys still stream."""
    cut_off = dict(HEALTHY, master=None)
    d = ha.Decider(0)
    events, failovers = run(d, [obs(HEALTHY)] + [obs(cut_off, {"standby": True, "standby2": True})] * 60)
    assert failovers == []
    assert names(events) == ["healthy", "primary_suspected", "no_majority"]


def test_no_majority_when_one_of_two_standbys_is_silent(ha):
    half = dict(DEAD, standby2=None)
    d = ha.Decider(0)
    _, failovers = run(d, [obs(HEALTHY)] + [obs(half, {"standby": False})] * 60)
    assert failovers == []


def test_a_master_cut_off_from_everyone_decides_nothing(ha):
    d = ha.Decider(0)
    _, failovers = run(d, [obs(HEALTHY)] + [obs({"master": None, "standby": None, "standby2": None})] * 60)
    assert failovers == []


def test_a_flapping_primary_is_never_failed_over_while_its_silences_are_short(ha):
    timeline = [obs(HEALTHY)] * 2
    for _ in range(6):  # a minute: 5 s silent, 5 s back
        timeline += [obs(DEAD, LOST_BY_ALL)] * 5 + [obs(HEALTHY)] * 5
    events, failovers = run(ha.Decider(0), timeline)
    assert failovers == []
    assert names(events).count("primary_back") == 6


def test_a_flapping_primary_with_long_silences_is_failed_over_at_most_once(ha):
    timeline = [obs(HEALTHY)] * 2
    for _ in range(5):  # silent 14 s, back 4 s: longer than failover_timeout
        timeline += [obs(DEAD, LOST_BY_ALL)] * 14 + [obs(HEALTHY)] * 4
    d = ha.Decider(0)
    events, failovers = run(d, timeline)
    assert len(failovers) == 1
    assert "waiting_for_pillar" not in names(events)  # still in cooldown at the end


def test_no_eligible_candidate_no_failover_and_an_event(ha):
    behind = {"master": primary("0/9000"), "standby": standby("0/1000"), "standby2": standby("0/1000")}
    d = ha.Decider(0)
    events, failovers = run(d, [obs(behind)] * 2 + [obs(DEAD, LOST_BY_ALL)] * 20)
    assert failovers == []
    assert names(events)[-1] == "refused"
    assert "max_lag_on_failover" in events[-1][1]["comment"]


def test_eligibility_is_the_one_seen_when_the_primary_was_lost(ha):
    """standby2 was behind when the primary was lost; it received more later (from
    Barman, say): still not eligible. The eligible standby is chosen though it has less."""
    before = {"master": primary("0/9000"), "standby": standby("0/8F00"), "standby2": standby("0/1000")}
    after = {"master": None, "standby": standby("0/8F00", False), "standby2": standby("0/9100", False)}
    _, failovers = run(ha.Decider(0), [obs(before)] * 2 + [obs(after, LOST_BY_ALL)] * 20)
    assert [h for _, h in failovers] == ["standby"]


def test_postgresql_down_on_an_answering_primary_counts_as_silence(ha):
    down = dict(DEAD, master={"running": False, "error": "connection refused"})
    events, failovers = run(ha.Decider(0), [obs(HEALTHY)] + [obs(down, LOST_BY_ALL)] * 20)
    assert len(failovers) == 1
    assert "PostgreSQL is down" in events[1][1]["why"]


def test_a_receiver_that_still_says_streaming_but_heard_nothing_for_long_agrees(ha):
    """A primary killed with its link down sent no FIN: the receivers say "streaming"."""
    zombie = {"status": "streaming", "last_msg_age": 7.0}
    fresh = {"status": "streaming", "last_msg_age": 0.5}
    stale = dict(DEAD, standby=dict(standby(), receiver=zombie), standby2=dict(standby("0/4F00"), receiver=zombie))
    _, failovers = run(ha.Decider(0), [obs(HEALTHY)] + [obs(stale, LOST_BY_ALL)] * 20)
    assert len(failovers) == 1
    alive = dict(stale, standby2=dict(standby("0/4F00"), receiver=fresh))
    _, failovers = run(ha.Decider(0), [obs(HEALTHY)] + [obs(alive, LOST_BY_ALL)] * 20)
    assert failovers == []


def test_a_standby_that_still_reaches_the_port_does_not_agree(ha):
    _, failovers = run(ha.Decider(0), [obs(HEALTHY)] + [obs(DEAD, {"standby": False, "standby2": True})] * 30)
    assert failovers == []


def test_a_refused_failover_is_tried_again_later_and_a_failed_one_is_not(ha):
    d = ha.Decider(0)
    run(d, [obs(HEALTHY)])
    for now in range(1, 14):
        _, chosen = d.step(now, obs(DEAD, LOST_BY_ALL))
    assert chosen == "standby"
    events = d.failover_result(13, {"result": False, "comment": "failover refused, nothing changed: x"}, 12)
    assert names(events) == ["failover_failed"]
    assert d.state == ha.LOST
    assert d.step(20, obs(DEAD, LOST_BY_ALL))[1] is None
    assert d.step(25, obs(DEAD, LOST_BY_ALL))[1] == "standby"
    d.failover_result(25, {"result": False, "comment": "failover failed: promote timed out"}, 12)
    assert d.state == ha.COOLDOWN
    assert all(d.step(t, obs(DEAD, LOST_BY_ALL))[1] is None for t in range(26, 2000, 7))


def test_after_the_cooldown_it_waits_until_the_pillar_names_the_promoted_standby(ha):
    d = ha.Decider(0)
    run(d, [obs(HEALTHY)] + [obs(DEAD, LOST_BY_ALL)] * 14)
    assert d.promoted == "standby"
    promoted = {"master": None, "standby": primary("0/6000"), "standby2": standby("0/6000")}
    events, _ = d.step(700, obs(promoted))
    assert names(events) == ["waiting_for_pillar"]
    new = {"primary": "standby", "standbys": ["master", "standby2"], "servers": promoted, "reaches": {}, "ha": HA}
    events, _ = d.step(701, new)
    assert names(events) == ["healthy"]
    assert d.state == ha.HEALTHY
    assert d.promoted is None


def test_the_cooldown_survives_a_restart_of_the_master(ha, tmp_path):
    d = ha.Decider(0)
    run(d, [obs(HEALTHY)] + [obs(DEAD, LOST_BY_ALL)] * 14)
    ha.write_state(str(tmp_path), d.remembered())
    again = ha.Decider(100, remembered=ha.read_state(str(tmp_path)))
    assert again.state == ha.COOLDOWN
    assert again.step(101, obs(DEAD, LOST_BY_ALL)) == ([], None)
    assert ha.read_state(str(tmp_path / "none")) is None


def test_config_fills_the_defaults_and_never_acts_on_what_it_cannot_read(ha):
    assert ha.config({"mode": "automatic"})["failover_timeout"] == 12
    assert ha.config(None)["mode"] == "manual"
    masked = ha.config({"mode": "**********", "check_interval": "**********", "failover_timeout": 20})
    assert masked["mode"] == "manual"
    assert masked["check_interval"] == 1
    assert masked["failover_timeout"] == 20


# --------------------------------------------------------------------------- the lock


def _hold_then_wait(path, ready, release):
    lock = load_util("pg_replication_lock")
    with lock.held(path, "switchover"):
        ready.set()
        release.wait(30)


def test_the_lock_refuses_a_second_operation_and_names_the_holder(lock, tmp_path):
    path = lock.path(str(tmp_path))
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_then_wait, args=(path, ready, done))
    other.start()
    try:
        assert ready.wait(30)
        assert lock.holder(path)["operation"] == "switchover"
        release, line = lock.acquire(path, "failover")
        assert release is None
        assert line.startswith("switchover (pid ")
        assert "holds the cluster lock" in line
    finally:
        done.set()
        other.join(30)
    assert lock.holder(path) is None
    release, line = lock.acquire(path, "failover")
    assert line is None
    assert lock.holder(path)["operation"] == "failover"
    release()
    assert lock.holder(path) is None


def test_a_killed_holder_leaves_the_lock_free(lock, tmp_path):
    path = lock.path(str(tmp_path))
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_then_wait, args=(path, ready, release))
    other.start()
    assert ready.wait(30)
    other.kill()
    other.join(30)
    assert lock.holder(path) is None
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_the_lock_is_reentrant_within_a_process(lock, tmp_path):
    path = lock.path(str(tmp_path))
    with lock.held(path, "follow"):
        release, line = lock.acquire(path, "rejoin")
        assert line is None
        release()
        assert lock.holder(path)["operation"] == "follow"
    assert lock.holder(path) is None


def test_a_silent_minion_whose_postgresql_port_the_master_reaches_is_not_lost(ha):
    """Its salt-minion died, its links to the standbys are down, but its host answers the
    master: its watchdog reaches the master and does not fence, so nothing is promoted."""
    seen = [obs(HEALTHY)] + [dict(obs(DEAD, LOST_BY_ALL), master_reaches=True)] * 40
    events, failovers = run(ha.Decider(0), seen)
    assert failovers == []
    assert "the master reaches its PostgreSQL port" in events[-1][1]["why"]
    unreachable = [obs(HEALTHY)] + [dict(obs(DEAD, LOST_BY_ALL), master_reaches=False)] * 20
    assert len(run(ha.Decider(0), unreachable)[1]) == 1


def test_barmans_host_reaching_a_silent_primarys_port_holds_the_failover_until_the_fence(ha):
    """Barman's host is a further witness: while it still reaches the silent primary's port
    (the primary cut off from the master and its standbys only), nothing is promoted; once
    the fence has stopped PostgreSQL it reaches the port no more and the failover goes on.
    A witness that did not answer holds nothing."""
    held = dict(obs(DEAD, LOST_BY_ALL), master_reaches=False, witnesses={"backup": True})
    events, failovers = run(ha.Decider(0), [obs(HEALTHY)] + [held] * 40)
    assert failovers == []
    assert events[-1][1]["why"] == "its minion is silent, but backup reaches its PostgreSQL port"
    both = dict(held, master_reaches=True)
    assert "but backup and the master reach its" in run(ha.Decider(0), [obs(HEALTHY), both])[0][-1][1]["why"]
    fenced = dict(held, witnesses={"backup": False})
    events, failovers = run(ha.Decider(0), [obs(HEALTHY)] + [held] * 10 + [fenced] * 20)
    assert [at for at, _ in failovers] == [11 + HA["failover_timeout"]]  # counted from the fence
    silent = dict(held, witnesses={})
    assert len(run(ha.Decider(0), [obs(HEALTHY)] + [silent] * 20)[1]) == 1


def test_the_majority_is_of_every_other_server_as_the_watchdog_counts_cascades_included(ha):
    """standby2 is a cascade (it streams from standby): the primary's watchdog counts it, so
    the master does too. The primary still reaches standby2: standby alone is no majority
    (the primary sees 1 of 2 peers and keeps running)."""
    cascade = dict(DEAD, standby2=standby("0/4F00", streams=True))

    def seen(reaches):
        return dict(obs(cascade, reaches), standbys=["standby"], peers=["standby", "standby2"])

    _, failovers = run(ha.Decider(0), [obs(HEALTHY)] + [seen({"standby": False, "standby2": True})] * 40)
    assert failovers == []
    # Cut off from the cascade too (its receiver streams from standby: only the port counts).
    _, failovers = run(ha.Decider(0), [obs(HEALTHY)] + [seen(LOST_BY_ALL)] * 20)
    assert len(failovers) == 1


def test_failover_timeout_counts_from_the_peers_agreement_not_from_the_first_silence(ha):
    """The master lost the primary at 1 s; the standbys still reached it until 11 s (the
    primary's watchdog only then starts counting): no promotion before 11 + 12 s."""
    reached = obs(DEAD, {"standby": True, "standby2": True})
    _, failovers = run(ha.Decider(0), [obs(HEALTHY)] + [reached] * 10 + [obs(DEAD, LOST_BY_ALL)] * 20)
    assert failovers == [(23.0, "standby")]


def test_the_state_says_since_when_the_peers_agree_and_whether_the_watchdog_ran(ha):
    """What the runner's failover reads (pg_replication_ha_proof): ``agreed_since``, the
    first tick of the peers' unbroken agreement (reset when it breaks), and ``watchdog``, as
    the primary's health answer said on its last healthy tick."""
    d = ha.Decider(0)
    watched = dict(HEALTHY, master=primary())
    lost = obs(DEAD, LOST_BY_ALL, mode="manual")
    run(d, [obs(watched)] * 2 + [obs(DEAD)] * 2 + [lost] * 5)
    assert d.remembered()["watchdog"] is True
    assert d.remembered()["agreed_since"] == 4.0  # suspected from 2 s, the peers agree from 4 s
    run(d, [obs(DEAD)], start=9.0)  # one tick without the agreement
    assert d.remembered()["agreed_since"] is None
    run(d, [lost] * 2, start=10.0)
    assert d.remembered()["agreed_since"] == 10.0
    run(d, [obs(dict(HEALTHY, master=primary(watchdog=None)))], start=12.0)  # saying nothing of a watchdog
    assert (d.remembered()["agreed_since"], d.remembered()["watchdog"]) == (None, None)


def test_no_failover_when_the_primarys_watchdog_was_not_seen_running(ha):
    """ha:mode automatic in the pillar, but the primary's health never said its watchdog
    runs (its highstate has not run since): nothing would fence it, so nothing is promoted."""
    for watchdog in (None, False):
        d = ha.Decider(0)
        unwatched = dict(HEALTHY, master=primary(watchdog=watchdog))
        events, failovers = run(d, [obs(unwatched)] * 3 + [obs(DEAD, LOST_BY_ALL)] * 30)
        assert failovers == []
        refused = [data for name, data in events if name == "refused"]
        assert len(refused) == 1
        assert "watchdog was not seen running" in refused[0]["comment"]


def after_failover(ha, auto_rejoin=True):
    """A decider that failed master over to standby, and the pillar now saying so: its
    observation with master as ``old`` (None: silent)."""
    d = ha.Decider(0)
    run(d, [obs(HEALTHY, auto_rejoin=auto_rejoin)] + [obs(DEAD, LOST_BY_ALL, auto_rejoin=auto_rejoin)] * 14)
    assert d.rejoin == "master"

    def observed(old, pillar_primary="standby"):
        servers = {"master": old, "standby": primary("0/6000"), "standby2": standby("0/6000")}
        others = [h for h in servers if h != pillar_primary]
        return {"primary": pillar_primary, "standbys": others, "peers": others, "servers": servers, "reaches": {},
                "ha": dict(HA, auto_rejoin=auto_rejoin)}  # fmt: skip

    return d, observed


DOWN = {"running": False, "error": "connection refused"}


def test_auto_rejoin_waits_for_the_pillar_and_the_old_primary_back_down(ha):
    d, observed = after_failover(ha)
    assert d.rejoin_due(20, observed(DOWN, pillar_primary="master")) == ([], None)  # pillar not changed
    assert d.rejoin_due(21, observed(None)) == ([], None)  # its minion is silent
    events, host = d.rejoin_due(22, observed(DOWN))
    assert (names(events), host) == (["rejoining"], "master")
    events = d.rejoin_result(40, "master", {"result": True, "comment": "master streams from standby"}, 12)
    assert names(events) == ["rejoined"]
    assert d.rejoin is None
    assert d.rejoin_due(41, observed(DOWN)) == ([], None)
    assert d.remembered()["rejoin"] is None


def test_auto_rejoin_never_rejoins_an_old_primary_that_runs_as_a_primary(ha):
    d, observed = after_failover(ha)
    events, host = d.rejoin_due(22, observed(primary("0/5100")))
    assert host is None
    assert names(events) == ["rejoin_refused"]
    assert "pg_replication.rejoin host=master" in events[0][1]["comment"]
    assert d.rejoin == "master"  # still to do, by hand or once it is down


def test_auto_rejoin_off_does_nothing_and_a_standby_already_is_forgotten(ha):
    d, observed = after_failover(ha, auto_rejoin=False)
    assert d.rejoin_due(22, observed(DOWN)) == ([], None)
    d, observed = after_failover(ha)
    assert d.rejoin_due(22, observed(standby("0/6000"))) == ([], None)  # rejoined by an operator
    assert d.rejoin is None


def test_a_failed_rejoin_is_tried_again_after_the_failover_timeout_and_survives_a_restart(ha, tmp_path):
    d, observed = after_failover(ha)
    assert d.rejoin_due(22, observed(DOWN))[1] == "master"
    events = d.rejoin_result(30, "master", {"result": False, "comment": "rejoin refused, nothing changed"}, 12)
    assert names(events) == ["rejoin_failed"]
    assert d.rejoin_due(35, observed(DOWN)) == ([], None)
    events, host = d.rejoin_due(42, observed(DOWN))
    assert (names(events), host) == (["rejoining"], "master")
    ha.write_state(str(tmp_path), d.remembered())
    assert ha.Decider(100, remembered=ha.read_state(str(tmp_path))).rejoin == "master"


def test_the_cluster_is_re_read_except_while_the_primary_is_suspected_or_lost_but_again_in_cooldown(ha):
    """In cooldown the former primary is down or silent, and the engine waits for the pillar
    change: it must go on re-reading the pillar, or it never sees it (nor rejoins)."""
    d = ha.Decider(0)
    assert d.rereads()  # not seen yet
    run(d, [obs(HEALTHY)])
    assert (d.state, d.rereads()) == (ha.HEALTHY, True)
    run(d, [obs(DEAD, LOST_BY_ALL)] * 5, start=1.0)
    assert (d.state, d.rereads()) == (ha.SUSPECTED, False)
    run(d, [obs(DEAD, LOST_BY_ALL)] * 15, start=6.0)
    assert (d.state, d.rereads()) == (ha.COOLDOWN, True)


def test_another_primary_named_while_the_old_one_is_lost_is_healthy_not_back(ha):
    """The operator failed over and changed the pillar while the engine had the old primary
    suspected: the new one's first healthy tick says ``healthy`` about it, not
    ``primary_back``, and nothing from the old one's failure is kept."""
    d = ha.Decider(0)
    events, _ = run(d, [obs(HEALTHY), obs(DEAD, LOST_BY_ALL, mode="manual")])
    assert names(events) == ["healthy", "primary_suspected"]
    now_primary = {"master": None, "standby": primary("0/6000"), "standby2": standby("0/6000")}
    after = dict(obs(now_primary, pillar_primary="standby", mode="manual"), standbys=["master", "standby2"])
    events, failovers = run(d, [after], start=5.0)
    assert names(events) == ["healthy"]
    assert failovers == []
    assert (events[0][1]["primary"], d.state, d.lost_since, d.agreed_since) == ("standby", ha.HEALTHY, None, None)
