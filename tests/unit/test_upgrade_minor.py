"""salt-run pg_replication.upgrade_minor (issue #31) on made-up member answers: its pure side
(_utils/pg_replication_upgrade.py: the moves, the health checks, the order, the run through
fake operations) and the runner's wiring over a fake salt client (no minion is asked)."""

import copy
import types

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_util
from tests.fake_salt import FakeClient, wired_runner

HOSTS = {
    "master": {"id": "master", "role": "primary", "address": "10.0.0.1"},
    "standby": {"id": "standby", "role": "standby", "address": "10.0.0.2", "slot": "standby_slot"},
    "standby2": {"id": "standby2", "role": "standby", "address": "10.0.0.4", "slot": "standby2_slot"},
    "backup": {"id": "backup", "role": "barman", "address": "10.0.0.3"},
}
SERVERS = ("master", "standby", "standby2")
PKGS = {"server": "postgresql-15", "client": "postgresql-client-15", "arping": "iputils-arping"}
OLD, NEW = "15.20-0+deb12u1", "15.20-0+deb12u1+pgr1"
SLOTS = {"standby_slot": {"active": True}, "standby2_slot": {"active": True}}
PRIMARY = {"running": True, "in_recovery": False, "lsn": "0/5000000", "timeline": 1, "wal_log_hints": "on",
           "data_checksums": "off", "slots": SLOTS}  # fmt: skip


def standby(lsn="0/5000000", sender="10.0.0.1", slot="standby_slot", status="streaming"):
    return {"running": True, "in_recovery": True, "lsn": lsn, "replay_lsn": lsn, "timeline": 1, "slots": {},
            "max_wal_senders": 10, "max_replication_slots": 10, "lag": {"bytes": 0, "seconds": 1.5},
            "receiver": {"status": status, "sender_host": sender, "slot_name": slot}}  # fmt: skip


def records(servers, hosts=HOSTS, switch_back=False):
    keys = load_util("pg_replication_member").PLAN_KEYS
    out = {}
    for host in hosts:
        plan = dict.fromkeys(keys)
        plan.update(minion_id=host, role=hosts[host]["role"], hosts=copy.deepcopy(hosts), socket_dir="/run/pg",
                    port=5432, service_name="postgresql@15-main", pkgs=PKGS, upgrade={"switch_back": switch_back},
                    barman_pillar={"primary": None, "server_name": None}, replication={"user": "replicator"},
                    home="/var/lib/postgresql", peer_tls={})  # fmt: skip
        if host == "backup":
            plan["barman_servers"] = [{"name": "master-streaming", "external": False, "conninfo": "host=10.0.0.1",
                                       "streaming_conninfo": "host=10.0.0.1"}]  # fmt: skip
        out[host] = {"plan": plan}
        if host in servers:
            out[host]["server"] = copy.deepcopy(servers[host])
    return out


def healthy(**servers):
    return {"master": PRIMARY, "standby": standby(), "standby2": standby(slot="standby2_slot"), **servers}


def versions(old=OLD, new=NEW, hosts=SERVERS):
    installed = {h: {"postgresql-15": old, "postgresql-client-15": old} for h in hosts}
    latest = {h: {"postgresql-15": new if new != old else "", "postgresql-client-15": ""} for h in hosts}
    return installed, latest


def failed(checks):
    return [c["check"] for c in checks if not c["ok"]]


@pytest.fixture(scope="module")
def up():
    return load_util("pg_replication_upgrade")


@pytest.fixture(scope="module")
def model():
    return load_util("pg_replication_cluster")


def cluster(model, servers=None, **kwargs):
    return model.Cluster(records(servers or healthy(), **kwargs))


# --------------------------------------------------------------------------- pure side


def test_salts_answers_become_versions_by_package_and_only_newer_builds_are_moves(up):
    assert up.packages({"pkgs": PKGS}) == ["postgresql-15", "postgresql-client-15"]
    assert up.packages({"pkgs": None}) == []
    assert up.by_name(["a"], "1.0") == {"a": "1.0"}
    assert up.by_name(["a", "b"], {"a": "1.0", "b": ""}) == {"a": "1.0", "b": ""}
    installed, latest = versions()
    latest["standby2"]["postgresql-15"] = ""  # already the newest
    assert up.upgrades(installed, latest) == {
        "master": {"postgresql-15": {"old": OLD, "new": NEW}},
        "standby": {"postgresql-15": {"old": OLD, "new": NEW}},
    }


def test_the_standbys_go_first_then_one_switchover_then_the_old_primary(up, model):
    checks, moves, order, steps = up.preflight(cluster(model), "master", *versions())
    assert failed(checks) == []
    assert set(moves) == set(SERVERS)
    assert order == [("upgrade", "standby"), ("upgrade", "standby2"), ("switchover", "master", "standby"),
                     ("upgrade", "master")]  # fmt: skip
    assert steps[0] == f"upgrade standby: postgresql-15 {OLD} -> {NEW}; restart; wait until it streams and caught up"
    assert steps[2] == "switchover master -> standby (salt-run pg_replication.switchover to=standby)"
    assert steps[-1] == (
        "then change the pillar: pg_replication:barman:server_name: master-streaming, "
        "pg_replication:hosts:master:role: standby, pg_replication:hosts:standby:role: primary"
    )
    # The pillar option (or the runner's argument) adds the switchover back, and no pillar change.
    _, _, order, steps = up.preflight(cluster(model, switch_back=True), "master", *versions())
    assert order[-1] == ("switchover", "standby", "master")
    assert not any(s.startswith("then change the pillar") for s in steps)
    assert up.preflight(cluster(model), "master", *versions(), to="standby2", switch_back=True)[2] == [
        ("upgrade", "standby"), ("upgrade", "standby2"), ("switchover", "master", "standby2"), ("upgrade", "master"),
        ("switchover", "standby2", "master"),
    ]  # fmt: skip


def test_a_cascading_standby_follows_its_upstream_and_a_delayed_one_is_no_target(up, model):
    hosts = copy.deepcopy(HOSTS)
    hosts["standby"]["upstream"] = "standby2"  # standby cascades from standby2
    hosts["standby2"]["settings"] = {"recovery_min_apply_delay": "5min"}
    servers = healthy(standby=standby(sender="10.0.0.4"), standby2=standby(lsn="0/1000000", slot="standby2_slot"))
    checks, _, order, _ = up.preflight(model.Cluster(records(servers, hosts)), "master", *versions())
    # standby2 streams from the primary but is delayed (its lag is by design); standby cascades
    assert order[:2] == [("upgrade", "standby2"), ("upgrade", "standby")]
    assert failed(checks) == ["an upgraded standby can take over from master"]


def test_nothing_to_upgrade_is_no_step(up, model):
    checks, moves, order, steps = up.preflight(cluster(model), "master", *versions(new=OLD))
    assert (failed(checks), moves, order) == ([], {}, [])
    assert steps == ["every server has the newest PostgreSQL packages of the repository"]


def test_only_the_primary_left_after_a_partial_run_switches_over_and_upgrades_it(up, model):
    installed, latest = versions()
    for host in ("standby", "standby2"):
        installed[host]["postgresql-15"], latest[host]["postgresql-15"] = NEW, ""
    _, moves, order, _ = up.preflight(cluster(model), "master", installed, latest)
    assert list(moves) == ["master"]
    assert order == [("switchover", "master", "standby"), ("upgrade", "master")]


@pytest.mark.parametrize(
    ("servers", "refusal"),
    [
        (healthy(master=dict(PRIMARY, running=False)), "exactly one primary runs, the pillar's (master)"),
        (healthy(standby2={"running": False, "state": "shut down"}), "every server runs"),
        (healthy(standby2=standby(slot="standby2_slot", status="catchup")), "standby2 streams from master"),
        (healthy(standby=standby(lsn="0/1000000")), "standby is at most 1048576 bytes behind (WAL not replayed)"),
    ],
)  # fmt: skip
def test_an_unhealthy_cluster_is_refused(up, model, servers, refusal):
    checks, _, _, _ = up.preflight(model.Cluster(records(servers)), "master", *versions(), max_lag=1 << 20)
    assert refusal in failed(checks)


def test_a_server_without_its_packages_is_refused(up, model):
    installed, latest = versions()
    installed["standby"]["postgresql-15"] = ""
    checks = up.preflight(cluster(model), "master", installed, latest)[0]
    assert failed(checks) == ["standby has its PostgreSQL packages installed"]


# --------------------------------------------------------------------------- the run


class Ops:
    """The runner's operations, logged; ``fail``: ``{(fun, host): message}``."""

    def __init__(self, model, fail=None, switch_result=True):
        self.model, self.fail, self.log, self.switch_result = model, fail or {}, [], switch_result
        self.versions = {h: OLD for h in SERVERS}

    def call(self, host, fun, *args, **kwargs):
        self.log.append((fun, host))
        if (fun, host) in self.fail:
            raise CommandExecutionError(self.fail[(fun, host)])
        if fun == "pkg.install":
            self.versions[host] = kwargs["pkgs"][0]["postgresql-15"]
        if fun == "pkg.version":
            return {"postgresql-15": self.versions[host], "postgresql-client-15": OLD}
        return True

    def position(self, cluster, host):
        self.log.append(("position", host))
        return "0/6000000"

    def wait_streaming(self, cluster, host, source, timeout, replayed):
        self.log.append(("wait_streaming", host, source, replayed))

    def switchover(self, cluster, old, new):
        self.log.append(("switchover", old, new, cluster.pillar_primary()))
        if not self.switch_result:
            return {"result": False, "comment": "switchover refused, nothing changed: x"}
        return {"result": True, "comment": f"{new} is the primary", "done": [f"promoted {new}"]}

    def cluster(self, change):
        self.log.append(("cluster", change.get("hosts")))
        servers = healthy()
        if change:
            servers = healthy(master=standby(sender="10.0.0.2", slot="master_slot"), standby=PRIMARY,
                              standby2=standby(sender="10.0.0.2", slot="standby2_slot"))  # fmt: skip
        members = records(servers)
        for host, spec in (change.get("hosts") or {}).items():
            for record in members.values():
                record["plan"]["hosts"][host].update(spec)
        return self.model.Cluster(members)


def test_the_run_upgrades_each_server_in_order_and_prints_the_pillar_change(up, model):
    made = cluster(model)
    checks, moves, order, _ = up.preflight(made, "master", *versions())
    ops = Ops(model)
    ret = up.run(ops, made, "master", moves, order, checks)
    assert ret["result"] is True, ret
    assert ret["comment"].endswith("standby is the primary")
    assert ret["pillar_change"][-1] == "pg_replication:hosts:standby:role: primary"
    assert ops.versions == dict.fromkeys(SERVERS, NEW)
    steps = [
        entry for entry in ops.log if entry[0] in ("pkg.install", "service.restart", "wait_streaming", "switchover")
    ]
    assert steps == [
        ("pkg.install", "standby"), ("service.restart", "standby"), ("wait_streaming", "standby", "master", 0x6000000),
        ("pkg.install", "standby2"), ("service.restart", "standby2"),
        ("wait_streaming", "standby2", "master", 0x6000000),
        ("switchover", "master", "standby", "master"),
        # the old primary, upgraded as a standby of the new one
        ("pkg.install", "master"), ("service.restart", "master"), ("wait_streaming", "master", "standby", 0x6000000),
    ]  # fmt: skip
    assert ret["done"][0] == (f"upgraded standby: postgresql-15 {OLD} -> {NEW}; it streams from master and caught up")


def test_the_switch_back_runs_on_the_cluster_as_changed_and_needs_no_pillar_change(up, model):
    made = cluster(model, switch_back=True)
    checks, moves, order, _ = up.preflight(made, "master", *versions())
    ops = Ops(model)
    ret = up.run(ops, made, "master", moves, order, checks)
    assert ret["result"] is True
    assert ret["pillar_change"] == []
    switches = [entry for entry in ops.log if entry[0] == "switchover"]
    # the switch back is asked of the cluster whose pillar makes standby the primary
    assert switches == [("switchover", "master", "standby", "master"), ("switchover", "standby", "master", "standby")]


def test_a_failed_step_stops_the_run_and_says_how_to_finish(up, model):
    made = cluster(model)
    checks, moves, order, _ = up.preflight(made, "master", *versions())
    ops = Ops(model, fail={("pkg.install", "standby2"): "E: Unable to fetch"})
    ret = up.run(ops, made, "master", moves, order, checks)
    assert (ret["result"], ret["retcode"]) == (False, 1)
    assert ret["comment"].startswith("upgrade_minor stopped: E: Unable to fetch. Fix it, then run")
    assert len(ret["done"]) == 1
    assert not any(entry[0] == "switchover" for entry in ops.log)
    # a refused switchover stops it too, the old primary untouched
    ops = Ops(model, switch_result=False)
    ret = up.run(ops, made, "master", moves, order, checks)
    assert ret["result"] is False
    assert ("pkg.install", "master") not in ops.log


def test_a_version_other_than_the_planned_one_after_the_install_fails_the_step(up, model):
    made = cluster(model)
    checks, moves, order, _ = up.preflight(made, "master", *versions())
    ops = Ops(model)
    ops.call = types.MethodType(
        lambda self, host, fun, *a, **k: {"postgresql-15": OLD} if fun == "pkg.version" else True, ops
    )
    ret = up.run(ops, made, "master", moves, order, checks)
    assert ret["comment"].startswith(f"upgrade_minor stopped: standby: after the upgrade: {{'postgresql-15': '{OLD}'}}")


# --------------------------------------------------------------------------- the runner


def run_runner(answers, pkg, **kwargs):
    client = FakeClient(answers, returns=pkg)
    return wired_runner("pg_replication_runner_upgrade", client).upgrade_minor(**kwargs), client.calls


def pkg_answers(new=NEW):
    out = {}
    for host in SERVERS:
        out[("pkg.version", host)] = {"postgresql-15": OLD, "postgresql-client-15": OLD}
        out[("pkg.latest_version", host)] = {"postgresql-15": new, "postgresql-client-15": ""}
    return out


def test_the_runner_in_test_mode_lists_each_hosts_move_and_changes_nothing(up):
    ret, calls = run_runner(records(healthy()), pkg_answers(), test=True)
    assert ret["result"] is None, ret
    assert ret["comment"] == "upgrade_minor would run"
    assert ret["upgrades"] == {h: {"postgresql-15": {"old": OLD, "new": NEW}} for h in SERVERS}
    assert "switchover master -> standby (salt-run pg_replication.switchover to=standby)" in ret["steps"]
    changing = {"pkg.install", "service.restart", "service.stop", "pg_replication.promote", "state.apply"}
    assert not {fun for fun, _ in calls} & changing
    assert ("pkg.latest_version", "backup") not in calls  # Barman's host has no server


def test_the_runner_refuses_an_unhealthy_cluster_and_changes_nothing(up):
    answers = records(healthy(standby=standby(status="stopping")))
    ret, calls = run_runner(answers, pkg_answers())
    assert (ret["result"], ret["retcode"]) == (False, 1)
    assert ret["comment"].startswith("upgrade_minor refused, nothing changed: standby streams from master")
    assert not {fun for fun, _ in calls} & {"pkg.install", "service.restart", "state.apply"}


def test_the_runner_with_nothing_newer_succeeds_with_nothing_done(up):
    ret, calls = run_runner(records(healthy()), pkg_answers(new=""))
    assert ret["result"] is True
    assert ret["done"] == []
    assert ret["comment"] == "every server has the newest PostgreSQL packages of the repository"
    assert "pkg.install" not in {fun for fun, _ in calls}
