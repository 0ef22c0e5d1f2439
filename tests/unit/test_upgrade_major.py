"""salt-run pg_replication.upgrade_major (issue #31) on made-up member answers: the pure side
(_utils/pg_replication_upgrade_major.py: the command lines, the preflight, the steps and the
run through fake operations, its undo before the new primary starts)."""

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_util
from tests.unit.test_upgrade_minor import failed, healthy, records, standby

SERVERS = ("master", "standby", "standby2")
GIB = 1 << 30


def plans(version):
    return {
        h: {
            "bin_dir": f"/usr/lib/postgresql/{version}/bin",
            "data_dir": f"/var/lib/postgresql/{version}/main",
            "conf_dir": f"/etc/postgresql/{version}/main",
            "socket_dir": "/run/pg",
            "port": 5432,
            "home": "/var/lib/postgresql",
            "service_name": f"postgresql@{version}-main",
            "pkgs": {"server": f"postgresql-{version}", "client": f"postgresql-client-{version}"},
            "initdb_command": f"/usr/lib/postgresql/{version}/bin/initdb -D /var/lib/postgresql/{version}/main "
            "-U postgres --auth-local=peer --data-checksums",
        }
        for h in SERVERS
    }


def facts(**override):
    out = {
        h: {"binaries": {"postgres": True, "pg_upgrade": True}, "new_data_dir_empty": True,
            "data_bytes": 2 * GIB, "free_bytes": 10 * GIB}
        for h in SERVERS
    }  # fmt: skip
    for host, changes in override.items():
        out[host] = dict(out[host], **changes)
    return out


PASSED = {"ok": True, "output": "Clusters are compatible"}


@pytest.fixture(scope="module")
def major():
    return load_util("pg_replication_upgrade_major")


@pytest.fixture(scope="module")
def model():
    return load_util("pg_replication_cluster")


def cluster(model, servers=None, version=17, mode=None, barman_server=None, backup_max_age=None):
    answers = records(servers or healthy())
    for record in answers.values():
        record["plan"].update(version=version, upgrade={"switch_back": False, "major_mode": mode})
        record["plan"]["barman_pillar"] = {"backup_max_age": backup_max_age}
        if record["plan"]["role"] != "barman":
            record["plan"].update(plans(version)["master"])
        elif barman_server:
            record["plan"]["barman_servers"] = [{"name": barman_server}]
    return model.Cluster(answers)


# --------------------------------------------------------------------------- command lines


def test_initdb_keeps_the_old_clusters_checksums(major):
    command = "/usr/lib/postgresql/18/bin/initdb -D /var/lib/postgresql/18/main -U postgres --data-checksums"
    assert major.initdb_args(command, "/scratch", True, 18) == [
        "/usr/lib/postgresql/18/bin/initdb", "-D", "/scratch", "-U", "postgres", "--data-checksums",
    ]  # fmt: skip
    # 18's initdb turns them on by default: an old cluster without them needs them off.
    assert major.initdb_args(command, "/scratch", False, 18)[-1] == "--no-data-checksums"
    assert "--no-data-checksums" not in major.initdb_args(command, "/scratch", False, 17)
    assert major.initdb_args("/bin/initdb --pgdata=/old -k", "/new", False, 16) == ["/bin/initdb", "--pgdata=/new"]
    assert major.initdb_args("/bin/initdb -U postgres", "/new", True, 16) == [
        "/bin/initdb", "-U", "postgres", "-D", "/new", "--data-checksums",
    ]  # fmt: skip


def test_pg_upgrade_checks_the_live_cluster_on_its_port_and_upgrades_on_another(major):
    args = ("/o/bin", "/n/bin", "/o/data", "/n/data", "/etc/o/postgresql.conf", "link", "/run/pg")
    check = major.pg_upgrade_args(*args, check=True, old_port=5433)
    assert check[0] == "/n/bin/pg_upgrade"
    assert {"--link", "--check", "--old-port=5433", "--new-port=50432"} <= set(check)
    assert "--old-options=-c config_file=/etc/o/postgresql.conf" in check
    run = major.pg_upgrade_args(*args[:5], "clone", "/run/pg")
    assert "--check" not in run
    assert {"--clone", "--old-port=50432", "--new-port=50432"} <= set(run)
    with pytest.raises(ValueError, match="mode: one of link, clone"):
        major.pg_upgrade_args(*args[:5], "copy", "/run/pg")


def test_vacuumdb_builds_only_missing_statistics_from_18_on(major):
    assert "--missing-stats-only" in major.vacuumdb_args("/n", 18, "/run/pg", 5432)
    assert major.vacuumdb_args("/n", 17, "/run/pg", 5432) == [
        "/n/vacuumdb", "--all", "--analyze-in-stages", "--host=/run/pg", "--port=5432", "--username=postgres",
    ]  # fmt: skip


# --------------------------------------------------------------------------- preflight


def test_a_healthy_cluster_passes_and_the_steps_end_with_the_pillar_change(major, model):
    checks, steps = major.preflight(cluster(model), "master", 18, plans(18), facts(), PASSED, [])
    assert failed(checks) == []
    assert steps[0].startswith("stop the standby")
    assert any("pg_upgrade --link from /var/lib/postgresql/17/main (kept)" in s for s in steps)
    assert steps[-1] == "then change the pillar: " + ", ".join(CHANGE_TO_18)
    clone = major.preflight(cluster(model, mode="clone"), "master", 18, plans(18), facts(), PASSED, [])[1]
    assert any("pg_upgrade --clone" in s for s in clone)


@pytest.mark.parametrize(
    ("kwargs", "refusal"),
    [
        ({"new_version": 17}, "PostgreSQL 17 is newer than the cluster's 17"),
        ({"facts": facts(standby2={"binaries": {"postgres": False, "pg_upgrade": True}})},
         "standby2 has PostgreSQL 18's binaries"),
        ({"facts": facts(master={"new_data_dir_empty": False})}, "master's new data directory is empty"),
        # A standby keeps its old copy beside a whole new one: the primary's data plus the margin.
        ({"facts": facts(standby={"free_bytes": 2 * GIB})},
         f"standby has {2 * GIB + (256 << 20)} bytes free for the new cluster"),
        ({"missing": ["otus: pgr_old_only"]}, "every extension is there for PostgreSQL 18"),
        ({"upgrade_check": {"ok": False, "output": "Checking for incompatible polymorphic functions fatal"}},
         "pg_upgrade --check --link passes on master"),
        ({"mode": "copy"}, "pg_replication:upgrade:major_mode is one of link, clone"),
    ],
)  # fmt: skip
def test_each_preflight_refusal_is_named(major, model, kwargs, refusal):
    args = {"new_version": 18, "new_plans": plans(18), "facts": facts(), "upgrade_check": PASSED, "missing": []}
    args.update(kwargs)
    checks, _ = major.preflight(cluster(model), "master", **args)
    assert failed(checks) == [refusal]


def test_a_lagging_or_stopped_standby_is_refused(major, model):
    lagging = healthy(standby=standby(lsn="0/3000000"))
    checks, _ = major.preflight(cluster(model, lagging), "master", 18, plans(18), facts(), PASSED, [])
    assert failed(checks) == ["standby is at most 16777216 bytes behind (WAL not replayed)"]
    down = healthy(standby2={"running": False})
    checks, _ = major.preflight(cluster(model, down), "master", 18, plans(18), facts(), PASSED, [])
    assert failed(checks) == ["every server runs"]


def test_the_primary_needs_room_for_its_catalogs_only(major, model):
    # pg_upgrade links or clones the data files: a tenth of the data plus the margin.
    tight = facts(master={"free_bytes": (256 << 20) + (2 * GIB) // 10})
    assert failed(major.preflight(cluster(model), "master", 18, plans(18), tight, PASSED, [])[0]) == []
    tighter = facts(master={"free_bytes": (256 << 20) + (2 * GIB) // 10 - 1})
    assert failed(major.preflight(cluster(model), "master", 18, plans(18), tighter, PASSED, [])[0]) != []


# --------------------------------------------------------------------------- the run


class Ops:
    """The minions as the run sees them: each call recorded; ``failing``: {(host, fun): error}."""

    def __init__(self, failing=None):
        self.calls, self.failing, self.clock = [], failing or {}, 100.0

    def call(self, host, fun, *args, **kwargs):
        self.calls.append((host, fun))
        if (host, fun) in self.failing:
            raise CommandExecutionError(self.failing[(host, fun)])
        if fun == "pg_replication.controldata":
            return {"Database cluster state": "shut down", "Latest checkpoint location": "0/6000028"}
        if fun == "pg_replication.upgrade_cluster":
            self.clock += 20
            return "Upgrade Complete"
        if fun == "pg_replication.upgrade_undo":
            return ["/var/lib/postgresql/18/main emptied"]
        return True

    def apply(self, host, change):
        self.calls.append((host, "apply", change["version"]))
        if (host, "apply") in self.failing:
            raise CommandExecutionError(self.failing[(host, "apply")])
        self.clock += 5
        return ["pg_replication-service"]

    def wait_streaming(self, cluster, host, source, timeout):
        self.calls.append((host, "streams from", source))

    def now(self):
        return self.clock


def run(major, model, ops):
    return major.run(ops, cluster(model), "master", 18, plans(18), [], timeout=30)


def test_the_run_stops_everything_upgrades_the_primary_then_recreates_the_standbys(major, model):
    ops = Ops()
    ret = run(major, model, ops)
    assert ret["result"] is True, ret
    assert ret["pillar_change"] == CHANGE_TO_18
    assert ret["write_downtime_seconds"] == 25.0
    assert ops.calls[:6] == [
        ("standby", "service.stop"), ("standby2", "service.stop"), ("master", "service.stop"),
        ("master", "pg_replication.controldata"), ("master", "pg_replication.upgrade_cluster"), ("master", "apply", 18),
    ]  # fmt: skip
    assert ops.calls[6] == ("master", "pg_replication.analyze_new_cluster")
    assert ("standby", "apply", 18) in ops.calls
    assert ("standby", "streams from", "master") in ops.calls
    # The old clusters stay, never started at boot again.
    assert ops.calls.count(("standby2", "service.disable")) == 1
    assert ops.calls.count(("master", "file.write")) == 1


def test_a_failed_pg_upgrade_is_undone_and_the_old_cluster_started_again(major, model):
    ops = Ops(failing={("master", "pg_replication.upgrade_cluster"): "pg_upgrade failed: could not load library"})
    ret = run(major, model, ops)
    assert ret["result"] is False
    assert "before the new primary started, undone: the old cluster runs as before" in ret["comment"]
    assert "pillar_change" not in ret
    assert ops.calls[-4:] == [
        ("master", "pg_replication.upgrade_undo"), ("master", "service.start"), ("standby", "service.start"),
        ("standby2", "service.start"),
    ]  # fmt: skip
    assert not any(call[1] == "apply" for call in ops.calls)


def test_a_primary_not_shut_down_cleanly_is_started_again_untouched(major, model):
    ops = Ops()
    plain = ops.call

    def call(host, fun, *args, **kwargs):
        if fun == "pg_replication.controldata":
            ops.calls.append((host, fun))
            return {"Database cluster state": "in production"}
        return plain(host, fun, *args, **kwargs)

    ops.call = call
    ret = run(major, model, ops)
    assert ret["result"] is False
    assert "not shut down cleanly" in ret["comment"]
    assert ("master", "pg_replication.upgrade_cluster") not in ops.calls
    assert ("master", "service.start") in ops.calls


def test_a_standby_that_fails_after_the_point_of_no_return_is_left_with_the_pillar_change(major, model):
    ops = Ops(failing={("standby2", "apply"): "pg_basebackup: could not connect"})
    ret = run(major, model, ops)
    assert ret["result"] is False
    assert "the primary runs PostgreSQL 18 (no way back)" in ret["comment"]
    assert "standby2 re-created on PostgreSQL 18" in ret["comment"]
    assert ret["pillar_change"] == CHANGE_TO_18
    assert ("standby", "apply", 18) in ops.calls  # the others went on
    assert not any(call[1] == "pg_replication.upgrade_undo" for call in ops.calls)


def test_the_plan_takes_the_new_version_on_a_release_that_kept_the_old_one():
    plan_mod = load_util("pg_replication_plan")
    errors = []
    plan = {"role": "primary", "version": 17, "barman_servers": []}
    plan_mod._check_distribution(plan, {"os": "Debian", "osmajorrelease": 14}, errors)
    assert errors == []
    plan_mod._check_distribution(dict(plan, version=15), {"os": "Debian", "osmajorrelease": 14}, errors)
    assert len(errors) == 1
    assert "Debian 14 ships PostgreSQL 18, not 15" in errors[0]


def test_a_column_option_the_new_version_does_not_know_is_refused(major, model):
    # Seen: Debian's PostgreSQL 17.12 stores pg_attver on every column; 18.6 refuses it when
    # pg_upgrade's dump sets it again (pg_upgrade --check passes).
    options = {"otus": ["n_distinct", "pg_attver"], "postgres": ["pg_attver"], "template1": []}
    assert major.unknown_column_options(options) == ["otus: pg_attver", "postgres: pg_attver"]
    checks, _ = major.preflight(cluster(model), "master", 18, plans(18), facts(), PASSED, [], column_options=options)
    assert failed(checks) == ["every column option in use is one PostgreSQL 18 knows"]
    assert "otus: pg_attver, postgres: pg_attver" in checks[-2]["detail"]
    known = {"otus": ["n_distinct"], "postgres": ["n_distinct_inherited"]}
    assert (
        failed(major.preflight(cluster(model), "master", 18, plans(18), facts(), PASSED, [], column_options=known)[0])
        == []
    )


def test_the_new_servers_answer_decides_which_column_options_it_knows(major, model):
    # Seen: Debian's 15.20 stores pg_attver too, and 17.12 knows it: 15 -> 17 upgrades (a new
    # version that knows the option: its server accepted it on the throw-away cluster).
    options = {"otus": ["n_distinct", "pg_attver"], "postgres": ["pg_attver"]}
    assert major.option_names(options) == ["n_distinct", "pg_attver"]
    assert major.probe_options(["n_distinct", "pg_attver", "pg_attver", 'a"b', "x\ny", ""]) == ["pg_attver"]
    knows = dict(PASSED, options_refused=[])
    checks, _ = major.preflight(cluster(model), "master", 18, plans(18), facts(), knows, [], column_options=options)
    assert failed(checks) == []
    output = 'backend> 2026-12-06 UTC [9] ERROR:  unrecognized parameter "pg_attver"\nbackend> '
    refused = major.options_refused(["n_distinct", "pg_attver", 'a"b'], output)
    assert refused == ['a"b', "pg_attver"]
    assert major.options_refused(["n_distinct", "pg_attver"], "backend> backend> ") == []
    checks, _ = major.preflight(
        cluster(model), "master", 18, plans(18), facts(), dict(PASSED, options_refused=["pg_attver"]), [],
        column_options=options,
    )  # fmt: skip
    assert failed(checks) == ["every column option in use is one PostgreSQL 18 knows"]
    detail = next(c["detail"] for c in checks if not c["ok"])
    assert detail.startswith("refused by PostgreSQL 18's server (tried on a throw-away cluster): otus: pg_attver")


def listed(*backups):
    return [{"backup_id": b, "status": status, "end_time_timestamp": str(end)} for b, status, end in backups]


def test_each_backup_host_must_hold_a_done_backup_younger_than_backup_max_age(major, model):
    """The way back: a DONE backup of the cluster's Barman server that ended within
    barman:backup_max_age (the pillar's seconds) before the upgrade; a silent backup host,
    no backup, a failed newest one or an old one is a refusal naming the host."""
    c = cluster(model, barman_server="master-streaming", backup_max_age=3600)
    args = {"new_version": 18, "new_plans": plans(18), "facts": facts(), "upgrade_check": PASSED, "missing": []}
    what = "backup holds a DONE backup of master-streaming younger than pg_replication:barman:backup_max_age (3600 s)"
    now = 100_000
    fresh = listed(("b1", "DONE", now - 7200), ("b2", "DONE", now - 600), ("b3", "FAILED", now - 60))
    checks, _ = major.preflight(c, "master", **args, backups={"backup": fresh}, now=now)
    assert failed(checks) == []
    assert any(ch["check"] == what and "b2, 600 s old" in ch["detail"] for ch in checks), checks
    for backups in ({"backup": None}, {"backup": []}, {"backup": listed(("b1", "DONE", now - 7200))},
                    {"backup": listed(("b1", "FAILED", now - 60))}):  # fmt: skip
        checks, _ = major.preflight(c, "master", **args, backups=backups, now=now)
        assert failed(checks) == [what], backups
    # No Barman in the cluster: nothing to hold.
    assert failed(major.preflight(c, "master", **args, backups=None, now=now)[0]) == []


CHANGE_TO_18 = ["pg_replication:version: 18", "pg_replication:barman:server_name: master-pg18",
                "pg_replication:barman:retired:master-streaming: 17"]  # fmt: skip


def test_the_pillar_change_gives_the_new_system_a_barman_server_of_its_own(major, model):
    """Its system identifier changed: Barman's server for it is <primary>-pg<version>, and the
    old one is retired (its backups stay restorable); no Barman server, or one named so
    already, no line."""
    assert major.pillar_change(cluster(model, barman_server="db-streaming"), "master", 18) == [
        "pg_replication:version: 18", "pg_replication:barman:server_name: master-pg18",
        "pg_replication:barman:retired:db-streaming: 17"]  # fmt: skip
    assert major.pillar_change(cluster(model, barman_server="master-pg18"), "master", 18) == [
        "pg_replication:version: 18"]  # fmt: skip
    without = cluster(model)
    without.members["backup"]["plan"]["barman_servers"] = []
    assert major.pillar_change(without, "master", 18) == ["pg_replication:version: 18"]
