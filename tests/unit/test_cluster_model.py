"""The runners' pure side on made-up member answers: the member record's shape
(_utils/pg_replication_member.py), the cluster model (_utils/pg_replication_cluster.py),
each operation's checks, steps and returns and the status rows (_utils/pg_replication_checks.py);
and the runner's wiring of them over a fake salt client (no minion is asked)."""

import copy

import pytest

from tests.conftest import load_util
from tests.fake_salt import FakeClient, wired_runner

HOSTS = {
    "master": {"id": "master", "role": "primary", "address": "10.0.0.1"},
    "standby": {"id": "standby", "role": "standby", "address": "10.0.0.2", "slot": "standby_slot"},
    "standby2": {"id": "standby2", "role": "standby", "address": "10.0.0.4", "slot": "standby2_slot"},
    "backup": {"id": "backup", "role": "barman", "address": "10.0.0.3"},
}
PRIMARY = {"running": True, "in_recovery": False, "lsn": "0/5000000", "timeline": 1, "wal_log_hints": "on",
           "data_checksums": "off", "slots": {"standby_slot": {"active": True, "retained_bytes": 0}}}  # fmt: skip
DOWN = {"running": False, "error": "no socket", "state": "shut down", "timeline": 1, "checkpoint": "0/4000000"}


def standby(lsn="0/5000000", sender="10.0.0.1", slot="standby_slot"):
    return {"running": True, "in_recovery": True, "lsn": lsn, "replay_lsn": lsn, "timeline": 1, "slots": {},
            "max_wal_senders": 10, "max_replication_slots": 10, "lag": {"bytes": 0, "seconds": 1.5},
            "receiver": {"status": "streaming", "sender_host": sender, "slot_name": slot}}  # fmt: skip


@pytest.fixture(scope="module")
def shape():
    return load_util("pg_replication_member")


def plan(host, hosts=HOSTS):
    keys = load_util("pg_replication_member").PLAN_KEYS
    out = dict.fromkeys(keys)
    out.update(minion_id=host, role=hosts[host]["role"], hosts=hosts, socket_dir="/run/pg", port=5432,
               service_name="postgresql@15-main", barman_pillar={"primary": None, "server_name": None})  # fmt: skip
    out.update(replication={"user": "replicator"}, home="/var/lib/postgresql", peer_tls={})
    if host == "backup":
        out["barman_servers"] = [{"name": "master-streaming", "external": False,
                                  "conninfo": "host=10.0.0.1 user=barman",
                                  "streaming_conninfo": "host=10.0.0.1 user=streaming_barman"}]  # fmt: skip
    return out


def records(servers, hosts=HOSTS):
    hosts = copy.deepcopy(hosts)
    out = {h: {"plan": plan(h, hosts)} for h in hosts}
    for host, server in servers.items():
        out[host]["server"] = copy.deepcopy(server)
    return out


def make(model, **servers):
    servers = {"master": PRIMARY, "standby": standby(), "standby2": standby(slot="standby2_slot"), **servers}
    return model.Cluster(records({h: s for h, s in servers.items() if s is not None}))


def failed(checks):
    return [c["check"] for c in checks if not c["ok"]]


# --------------------------------------------------------------------------- the member record


def test_a_record_of_a_running_server_a_down_one_and_a_backup_host(shape):
    full = dict(plan("standby"), barman={"primary": "master", "server_name": None, "other": 1}, secret="x")
    status = {"slots": {}, "wal_receiver": {"status": "streaming"}, "lag": {"bytes": 0}, "replication": []}
    running = shape.record(full, {"in_recovery": True, "lsn": "0/1"}, status)
    assert set(running["plan"]) == {*shape.PLAN_KEYS, "barman_pillar"}  # no secret, nothing else
    assert running["plan"]["barman_pillar"] == {"primary": "master", "server_name": None, "backup_max_age": None}
    assert running["server"] == {"in_recovery": True, "lsn": "0/1", "running": True, "slots": {},
                                 "receiver": {"status": "streaming"}, "lag": {"bytes": 0}}  # fmt: skip
    control = {"Database cluster state": "shut down", "Latest checkpoint's TimeLineID": "3",
               "Latest checkpoint location": "0/4000000"}  # fmt: skip
    down = shape.record(full, control=control, error="no socket")
    assert down["server"] == dict(DOWN, timeline=3)
    assert shape.record(full, control={}, error="gone")["server"]["timeline"] is None
    assert "server" not in shape.record(plan("backup"))
    assert all(shape.problems(r) == [] for r in (running, down, shape.record(plan("backup"))))


def test_what_is_not_a_member_record(shape):
    assert shape.problems(None) == ["no plan"]
    assert shape.problems({"plan": "x"}) == ["no plan"]
    assert shape.problems({"plan": dict(plan("backup"), peer_tls=None)}) == []
    without = {k: v for k, v in plan("backup").items() if k != "served_slots"}
    assert shape.problems({"plan": without}) == ["no plan key served_slots"]
    assert shape.problems({"plan": plan("standby")}) == ["no server for a standby"]


def test_the_model_keeps_only_the_members_that_answered_with_a_record(model):
    answers = {h: {"ret": r, "retcode": 0} for h, r in records({"master": PRIMARY}).items()}
    answers["standby"] = {"ret": "pillar render error", "retcode": 1}
    answers["standby2"] = {"ret": {"plan": plan("standby2")}, "retcode": 0}  # a server with no server
    made = model.from_answers(answers)
    assert sorted(made.members) == ["backup", "master"]
    assert made.hosts == HOSTS
    assert made.servers() == ["master", "standby", "standby2"]
    assert made.without_server() == ["backup"]
    assert made.backup_hosts() == ["backup"]
    assert made.server("standby") is None
    assert made.conn("standby") == {"host": "/run/pg", "port": 5432}
    assert model.from_answers({"standby": {"ret": "down", "retcode": 1}}) is None


# --------------------------------------------------------------------------- operations


def test_failover_promotes_the_standby_that_received_the_most_wal(model, ops):
    made = make(model, master=None, standby2=standby(lsn="0/6000000", slot="standby2_slot"))
    checks, chosen, alive, change, steps = ops.failover(made, "master")
    assert (failed(checks), chosen, alive) == ([], "standby2", False)
    assert change["hosts"] == {"master": {"role": "standby"}, "standby2": {"role": "primary"}}
    assert steps[0] == "create on standby2 the slots of every other member"
    assert (
        checks[1]["detail"]
        == "candidates (received WAL): {'standby': 83886080, 'standby2': 100663296}; chosen: standby2"
    )


def test_failover_refuses_a_running_primary_unless_fenced_and_skips_cascading_standbys(model, ops):
    checks, chosen, alive, _, steps = ops.failover(make(model), "master")
    assert failed(checks) == ["the old primary master does not run as a primary"]
    assert alive
    checks, _, _, _, steps = ops.failover(make(model), "master", to="standby", fence=True)
    assert failed(checks) == []
    assert steps[0] == "stop master (fence)"
    hosts = copy.deepcopy(HOSTS)
    hosts["standby2"]["upstream"] = "standby"
    made = model.Cluster(records({"standby": standby(), "standby2": standby(lsn="0/9000000")}, hosts))
    checks, chosen, _, _, _ = ops.failover(made, "master")
    assert chosen == "standby"  # standby2 is further ahead, but streams from standby
    assert ops.failover(made, "master", to="backup")[0][1]["ok"] is False


def test_a_port_counts_as_closed_only_when_network_connect_says_so(ops):
    """Salt's network.connect answers result False, with retcode 1, for a closed or silent
    port: that answer is "not reached"; no answer or any other counts as reached."""
    closed = {
        "ret": {"result": False, "comment": "Unable to connect to 10.0.0.1 (10.0.0.1) on tcp port 5432"},
        "retcode": 1,
    }
    assert ops.port_reached(closed) is False
    assert ops.port_reached({"ret": {"result": True, "comment": "Successfully connected"}, "retcode": 0}) is True
    for unknown in (None, {}, {"ret": "Minion did not return."}, {"ret": {"comment": "?"}, "retcode": 1}):
        assert ops.port_reached(unknown) is True, unknown


def test_failover_from_a_silent_minion_wants_its_port_closed_and_the_operator_to_say_it_is_fenced(model, ops):
    made = make(model, master=None, standby2=standby(slot="standby2_slot"))
    made.members.pop("master")  # its minion does not answer: cut off, or gone
    closed = {"standby": False, "standby2": False}
    assert failed(ops.failover(made, "master", reachable=closed)[0]) == [
        "master is fenced (its minion does not answer)"
    ]
    checks = ops.failover(made, "master", reachable={"standby": True, "standby2": False}, fenced=True)[0]
    assert failed(checks) == ["no standby reaches master's PostgreSQL port"]
    assert next(c["detail"] for c in checks if not c["ok"]) == "reached from standby: it runs"
    assert failed(ops.failover(made, "master", reachable={}, fenced=True)[0]) == [
        "no standby reaches master's PostgreSQL port"
    ]
    assert failed(ops.failover(made, "master", reachable=closed, fenced=True)[0]) == []


def test_failover_refuses_when_the_pillars_primary_is_not_the_one_the_standbys_follow(model, ops):
    """The pillar names standby as the primary, but master is (a switchover whose pillar
    change was not made), and master's minion is cut off: promoting standby2, which
    streams from master, would make two primaries."""
    hosts = copy.deepcopy(HOSTS)
    hosts["master"]["role"], hosts["standby"]["role"] = "standby", "primary"
    servers = {"standby": standby(), "standby2": standby(slot="standby2_slot")}
    made = model.Cluster(records(servers, hosts))
    made.members.pop("master")
    checks, chosen, _, _, _ = ops.failover(made, "standby", fenced=True)
    assert chosen == "standby2"
    assert failed(checks) == [
        "standby does not run as a standby",
        "every streaming standby streams from the server the pillar names",
    ]
    details = {c["check"]: c["detail"] for c in checks}
    assert details["every streaming standby streams from the server the pillar names"] == (
        "standby2 streams from master, not standby"
    )
    assert "does not name the running primary" in details["standby does not run as a standby"]


def test_rejoin_wants_a_standby_in_the_pillar_that_does_not_stream_yet(model, ops):
    checks, steps = ops.rejoin(make(model), "standby", "master")
    assert failed(checks) == ["standby is not already a streaming standby"]
    checks, _ = ops.rejoin(make(model), "master", "master")
    assert failed(checks) == ["master is a standby in the pillar"]
    assert steps == ["stop standby if it runs", "pg_rewind standby from master", "apply pg_replication on standby",
                     "drop the slots standby kept"]  # fmt: skip


def test_rejoin_reports_the_wal_the_former_primary_discards(ops):
    rewind = {"rewound": True, "diverged_at": "0/5000000 on timeline 1", "output": ["done"]}
    report = ops.rejoin_report(rewind, "0/5000100", ["old_slot"])
    assert report == {"rewound": True, "diverged_at": "0/5000000 on timeline 1", "dropped_slots": ["old_slot"],
                      "discarded_bytes": 0x100, "pg_rewind": ["done"]}  # fmt: skip
    assert ops.rejoin_report(dict(rewind, diverged_at=None), "0/1", [])["discarded_bytes"] == 0


def test_a_rolling_restart_takes_the_standbys_first_unless_the_primary_lowers_a_minimum(model, ops):
    made = make(model)
    checks, up = ops.rolling_restart_checks(made, "master")
    assert failed(checks) == []
    assert up == ["master", "standby", "standby2"]
    pending = {"master": ["shared_buffers"], "standby": ["shared_buffers"], "standby2": []}
    assert ops.restart_order(made, "master", pending, {}) == (
        ["standby", "master"],
        ["restart standby (shared_buffers)", "restart master (shared_buffers)",
         "apply pg_replication on backup: Barman streams again"],
    )  # fmt: skip
    order, steps = ops.restart_order(made, "master", pending, {"max_connections": (100, 50)})
    assert order == ["master", "standby"]
    assert steps[0] == "primary first: it lowers max_connections"
    assert ops.restart_order(made, "master", {}, {}) == ([], ["nothing waits for a restart"])
    checks, up = ops.rolling_restart_checks(make(model, standby2=DOWN), "master")
    assert failed(checks) == ["every server runs"]
    assert up == ["master", "standby"]


def test_what_an_operation_returns(ops):
    checks = []
    ops.check(checks, "one", True)
    ops.check(checks, "two", 0, "why")
    assert ops.preflight("op", checks[:1], ["s"], False, "would") is None
    assert ops.preflight("op", checks[:1], ["s"], True, "would") == {"result": None, "comment": "would",
                                                                      "checks": checks[:1], "steps": ["s"]}  # fmt: skip
    assert ops.preflight("op", checks, [], True, "would")["comment"] == "op refused, nothing changed: two (why)"
    assert ops.failure("op", RuntimeError("boom"), ["a"]) == {"result": False, "retcode": 1,
                                                              "comment": "op failed: boom", "done": ["a"]}  # fmt: skip


# --------------------------------------------------------------------------- status


def test_status_rows_and_table(model, ops):
    made = make(model, standby2=DOWN, standby=standby(lsn="0/4000000"))
    rows = {"backup": ops.barman_row({"master-streaming": ["wal_archive"], "other": [], "x": RuntimeError("gone")})}
    status = ops.status(made, rows)
    assert status["members"]["backup"] == {"pillar_role": "barman", "address": "10.0.0.3", "state": "barman",
                                           "barman_check": {"master-streaming": "FAILED: wal_archive",
                                                            "other": "all OK", "x": "unknown (gone)"}}  # fmt: skip
    assert status["members"]["standby"]["lag_bytes"] == 0x1000000
    assert status["members"]["standby"]["upstream"] == "10.0.0.1"
    assert status["members"]["standby2"] == {"pillar_role": "standby", "address": "10.0.0.4",
                                             "state": "down (shut down)", "timeline": 1}  # fmt: skip
    assert status["problems"] == [
        "backup: Barman master-streaming: FAILED: wal_archive",
        "backup: Barman x: unknown (gone)",
        "standby2 does not stream from master (down (shut down), upstream None)",
    ]
    table = status["table"][len(status["problems"]) :]
    assert status["table"][0] == "! backup: Barman master-streaming: FAILED: wal_archive"
    assert table[0].startswith("member           pillar   running")
    assert table[2].split()[:5] == ["master", "primary", "primary", "1", "0/5000000"]
    assert table[3].endswith("16777216B  ")


def test_status_names_two_primaries_and_who_streams_from_the_wrong_one_first(model, ops):
    made = make(model, standby=dict(PRIMARY, timeline=2), standby2=standby(sender="10.0.0.1", slot="standby2_slot"))
    rows = {"backup": ops.barman_row({"master-streaming": []})}
    assert ops.status(made, rows)["problems"] == ["2 servers run as a primary: master, standby"]
    made = make(model, master=DOWN, standby=dict(PRIMARY, timeline=2), standby2=standby(slot="standby2_slot"))
    assert ops.status(made, rows)["problems"] == [
        "master does not stream from standby (down (shut down), upstream None)",
        "standby2 does not stream from standby (standby, upstream 10.0.0.1)",
    ]


# --------------------------------------------------------------------------- the runner's wiring


@pytest.fixture
def run():
    def run(fun, answers, failing=None, returns=None, **kwargs):
        client = FakeClient(answers, failing, returns)
        return getattr(wired_runner("pg_replication_runner_wired", client), fun)(**kwargs), client.calls

    return run


def test_the_runner_previews_a_switchover_without_changing_anything(run):
    ret, calls = run("switchover", records({"master": PRIMARY, "standby": standby(), "standby2": standby()}),
                     to="standby", test=True)  # fmt: skip
    assert ret["result"] is None
    assert ret["comment"] == "switchover master -> standby would run"
    assert failed(ret["checks"]) == []
    assert ret["steps"][-1] == (
        "then change the pillar: pg_replication:barman:server_name: master-streaming, "
        "pg_replication:hosts:master:role: standby, pg_replication:hosts:standby:role: primary"
    )
    assert calls == [
        ("test.ping", "*"), ("saltutil.refresh_pillar", "*"),
        ("pg_replication.member", ["backup", "master", "standby", "standby2"]),
        # the new primary's and the backup host's plans after the change, at once
        ("pg_replication.member", ["standby", "backup"]),
        # every connection the new topology needs, tried as it will be made
        ("pg_replication.primary_system_identifier", "master"),
        ("pg_replication.primary_system_identifier", "standby2"),
        ("pg_replication.conninfo_works", "backup"), ("pg_replication.conninfo_works", "backup"),
    ]  # fmt: skip


def test_a_member_that_cannot_plan_the_new_topology_refuses_the_switchover(run):
    answers = records({"master": PRIMARY, "standby": standby(), "standby2": standby()})
    failing = {("pg_replication.member", "backup", "change"): "Rendering SLS failed"}
    ret, calls = run("switchover", answers, failing=failing, to="standby")
    assert ret["result"] is False
    assert ret["comment"].startswith("switchover refused, nothing changed: standby, backup plan the new topology")
    assert "Rendering SLS failed" in ret["comment"]
    assert not {fun for fun, _ in calls} & {"service.stop", "pg_replication.promote", "pg_replication.slot_create"}


def test_a_connection_the_new_topology_needs_that_fails_refuses_the_switchover(run):
    answers = records({"master": PRIMARY, "standby": standby(), "standby2": standby()})
    failing = {("pg_replication.primary_system_identifier", "standby2"): "SSL error: certificate verify failed"}
    ret, calls = run("switchover", answers, failing=failing, to="standby")
    assert ret["result"] is False
    assert ret["comment"].startswith(
        "switchover refused, nothing changed: standby2 reaches standby as its standby will"
    )
    assert "certificate verify failed" in ret["comment"]
    assert not {fun for fun, _ in calls} & {"service.stop", "pg_replication.promote", "pg_replication.slot_create"}


def test_a_refused_switchover_keeps_its_reason_when_the_old_primary_does_not_start_again(run):
    answers = records({"master": PRIMARY, "standby": standby(), "standby2": standby()})
    answers["standby"]["plan"]["served_slots"] = []
    control = {"Database cluster state": "shutting down"}
    ret, calls = run("switchover", answers, to="standby",
                     failing={("service.start", "master"): "Job for postgresql@15-main.service failed"},
                     returns={("pg_replication.controldata", "master"): control,
                              ("pg_replication.slots", "standby"): []})  # fmt: skip
    assert ret["result"] is False
    assert "master did not shut down cleanly (shutting down); starting master again failed too" in ret["comment"]
    assert "Job for postgresql@15-main.service failed" in ret["comment"]
    assert ("service.start", "master") in calls
    assert "pg_replication.promote" not in {fun for fun, _ in calls}


def test_a_switchover_checkpoints_the_primary_before_its_stop_and_a_failed_one_changes_nothing(run):
    """The CHECKPOINT comes after the target's slots and before the poolers' pause and the
    stop; if it fails, the slots made on the target are dropped and nothing is stopped."""
    answers = records({"master": PRIMARY, "standby": standby(), "standby2": standby()})
    answers["standby"]["plan"]["served_slots"] = ["master_slot"]
    returns = {("pg_replication.slots", "standby"): []}
    # The stop then finds it not shut down cleanly: started again, refused (the order is what counts).
    stopped = {**returns, ("pg_replication.controldata", "master"): {"Database cluster state": "in production"}}
    ret, calls = run("switchover", answers, to="standby", returns=stopped)
    funs = [fun for fun, _ in calls]
    assert funs.index("pg_replication.slot_create") < funs.index("pg_replication.checkpoint") < funs.index(
        "service.stop")  # fmt: skip
    assert ("pg_replication.checkpoint", "master") in calls
    failing = {("pg_replication.checkpoint", "master"): "canceling statement due to statement timeout"}
    ret, calls = run("switchover", answers, to="standby", returns=returns, failing=failing)
    assert ret["result"] is False
    assert "statement timeout" in ret["comment"]
    assert ("pg_replication.slot_drop", "standby") in calls
    assert not {fun for fun, _ in calls} & {"service.stop", "pg_replication.promote"}


def test_an_operation_past_its_promotion_reports_what_is_left_and_how_to_finish(ops, model):
    change = {"hosts": {"master": {"role": "standby"}, "standby": {"role": "primary"}}}
    ret = ops.finished("switchover", "standby", "done", [], ["promoted standby"], ["standby2: applied: boom"], change)
    assert (ret["result"], ret["retcode"], ret["left"]) == (False, 1, ["standby2: applied: boom"])
    assert ret["finish"] == "salt-run pg_replication.follow primary=standby"
    assert "standby is the primary and takes writes, but 1 step(s) failed: standby2: applied: boom" in ret["comment"]
    assert ops.finished("switchover", "standby", "done", [], [], [], change)["result"] is True


def test_follow_rejoins_the_former_primary_unless_it_streams_already(ops, model):
    made = make(model, master=DOWN, standby=dict(PRIMARY, timeline=2), standby2=standby(sender="10.0.0.2"))
    checks, change, rejoining, _ = ops.follow(made, "standby")
    assert (failed(checks), rejoining) == ([], ["master"])
    assert change["hosts"] == {"master": {"role": "standby"}, "standby": {"role": "primary"}}
    made = make(model, master=standby(sender="10.0.0.2"), standby=dict(PRIMARY, timeline=2))
    assert ops.follow(made, "standby")[2] == []
    assert failed(ops.follow(made, "standby2")[0]) == ["standby2 is the one server running as a primary"]


def test_the_runner_reports_status_and_asks_barman(run):
    ret, calls = run("cluster_status", records({"master": PRIMARY, "standby": standby(), "standby2": DOWN}))
    assert ret["members"]["backup"]["barman_check"] == {"master-streaming": "all OK"}
    assert ("barman.failed_checks", "backup") in calls
    with pytest.raises(Exception, match="no minion matching '\\*' answered with a pg_replication pillar"):
        run("cluster_status", {"master": {"plan": None}})


# --------------------------------------------------------------------------- delayed standbys


def _delayed_hosts(delay="5min"):
    hosts = copy.deepcopy(HOSTS)
    hosts["standby2"]["settings"] = {"recovery_min_apply_delay": delay}
    return hosts


def test_a_delayed_standby_is_refused_as_a_switchover_target_and_never_a_failover_candidate(model, ops):
    servers = {"master": PRIMARY, "standby": standby(), "standby2": standby(lsn="0/6000000", slot="standby2_slot")}
    made = model.Cluster(records(servers, hosts=_delayed_hosts()))
    checks, _change, _steps = ops.switchover(made, "master", "standby2")
    assert failed(checks) == ["standby2 is not a delayed standby"]
    assert next(c for c in checks if c["check"] == "standby2 is not a delayed standby")["detail"] == (
        "recovery_min_apply_delay: 300.0 s"
    )
    assert failed(ops.switchover(made, "master", "standby")[0]) == []
    down = model.Cluster(records({**servers, "master": DOWN}, hosts=_delayed_hosts()))
    # standby2 received more WAL, but lags by design: standby is chosen.
    assert ops.failover(down, "master")[1] == "standby"
    assert "standby2 is not a delayed standby" in failed(ops.failover(down, "master", to="standby2")[0])


def test_cluster_status_shows_a_delayed_standbys_delay(model, ops):
    servers = {"master": PRIMARY, "standby": standby(), "standby2": standby(slot="standby2_slot")}
    made = model.Cluster(records(servers, hosts=_delayed_hosts("1500ms")))
    status = ops.status(made, {"backup": {"state": "barman", "barman_check": {}}})
    assert status["members"]["standby2"]["apply_delay_seconds"] == 1.5
    assert "apply_delay_seconds" not in status["members"]["standby"]
    assert "delayed: 1.5 s" in next(line for line in status["table"] if line.startswith("standby2"))


def test_failover_from_a_silent_minion_takes_its_watchdogs_fence_as_proof_when_measured(model, ops):
    """pg_replication_ha_proof's answer stands in for fenced=True; its reason is told when it
    does not; the standbys must still not reach the port."""
    made = make(model, master=None, standby2=standby(slot="standby2_slot"))
    made.members.pop("master")
    closed = {"standby": False, "standby2": False}
    checks = ops.failover(made, "master", reachable=closed, proof=(True, "its watchdog has fenced it: ..."))[0]
    assert failed(checks) == []
    assert next(c["detail"] for c in checks if c["check"] == "master is fenced (its minion does not answer)") == (
        "its watchdog has fenced it: ..."
    )
    checks = ops.failover(made, "master", reachable=closed, proof=(False, "ha:mode is manual: no watchdog fences it"))[
        0
    ]
    assert failed(checks) == ["master is fenced (its minion does not answer)"]
    assert next(c["detail"] for c in checks if not c["ok"]) == (
        "cut off, it may still take writes: stop or power off master, then pass fenced=True;"
        " not known fenced by its watchdog: ha:mode is manual: no watchdog fences it"
    )
    opened = {"standby": True, "standby2": False}
    assert failed(ops.failover(made, "master", reachable=opened, proof=(True, "fenced"))[0]) == [
        "no standby reaches master's PostgreSQL port"
    ]


def test_the_runner_reads_the_ha_engines_state_for_a_silent_old_primary(tmp_path):
    """The wiring: the HA engine's state file in the master's cachedir, the silent old
    primary's port closed to both standbys: the preview passes with the watchdog's proof;
    the same state 30 s older (the engine not watching) is refused, saying so."""
    import json  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel

    answers = records({"standby": standby(), "standby2": standby(slot="standby2_slot")})
    del answers["master"]
    closed = {
        ("network.connect", s): {"result": False, "comment": "Unable to connect"} for s in ("standby", "standby2")
    }
    for age, ok in ((1, True), (30, False)):
        client = FakeClient(answers, returns=closed)
        runner = wired_runner("pg_replication_runner_wired", client)
        now = time.time()
        state = {"state": "primary lost", "primary": "master", "mode": "automatic", "watchdog": True,
                 "timings": {"check_interval": 1, "fence_timeout": 6, "fence_margin": 2, "failover_timeout": 12},
                 "updated": now - age, "agreed_since": now - age - 12}  # fmt: skip
        path = tmp_path / "cachedir" / "pg_replication" / "ha.json"
        runner.__opts__["cachedir"] = str(tmp_path / "cachedir")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state))
        ret = runner.failover(test=True)
        fence = next(c for c in ret["checks"] if c["check"] == "master is fenced (its minion does not answer)")
        assert fence["ok"] is ok, fence
        if ok:
            assert ret["result"] is None, ret["comment"]
            assert fence["detail"].startswith("its watchdog has fenced it: for 12.0 s")
        else:
            assert ret["result"] is False
            assert "the HA engine's state is 30 s old: the engine is not watching" in fence["detail"]
