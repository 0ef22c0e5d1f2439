"""Restore drills (pg_replication_drill): the pillar's barman:drill planned, the backup a drill
restores, its command lines, result, health and metrics (pure: nothing is run; the lab's
backup host runs real drills, tests/integration/test_barman.py)."""

import pathlib

import pytest
import yaml

from tests.conftest import REPO_ROOT, load_file

REPO = pathlib.Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def drill():
    return load_file("pg_replication_drill", REPO_ROOT / "_utils/pg_replication_drill.py")


@pytest.fixture
def config(merged_config):
    return merged_config(yaml.safe_load((REPO / "pillar.example").read_text())["pg_replication"])


def test_no_drill_by_default(plan_mod, config):
    assert plan_mod.build(config, "backup")["barman"]["drill"] is None


def test_a_drill_is_completed_with_its_files_cron_and_server_binaries(plan_mod, config):
    config["barman"]["drill"] = {"schedule": "30 4 * * 0", "tables": ["public.orders", "app.public.t"]}
    drill = plan_mod.build(config, "backup")["barman"]["drill"]
    assert (drill["target"], drill["timeout"], drill["port"]) == ("latest", 1800, 54329)
    assert drill["dir"] == "/var/lib/barman/pg_replication-drill"
    assert drill["cron"] == {"minute": "30", "hour": "4", "daymonth": "*", "month": "*", "dayweek": "0"}
    assert drill["command"] == (
        "--local --out=json --out-file=/dev/null --log-level=quiet barman.drill"
        " config=/var/lib/barman/pg_replication-drill/drill.json"
    )
    assert drill["pkgs"] == ["postgresql-15"]
    assert drill["file"]["servers"] == {
        "master-streaming": {"bin_dir": "/usr/lib/postgresql/15/bin", "version": 15, "verify": True,
                             "tables": ["public.orders", "app.public.t"], "marker": True}
    }  # fmt: skip
    assert "tables" not in drill["file"]


def test_this_clusters_server_gets_the_marker_hook_another_clusters_does_not(plan_mod, config):
    """The pre_backup_script writes the marker on the primary (its conninfo; the barman
    user's password file), with the barman package's Python; another cluster's server has
    no marker table, so no hook and nothing to count."""
    config["barman"]["servers"] = {"other": {"address": "192.0.2.9", "slot_name": "barman_slot"}}
    config["barman"]["drill"] = {}
    plan = plan_mod.build(config, "backup")
    hooks = {s["name"]: s["marker_script"] for s in plan["barman_servers"]}
    assert hooks == {
        "master-streaming": "/usr/bin/python3 /usr/local/lib/pg_replication/barman-backup-marker"
        " /var/lib/barman/pg_replication-drill/master-streaming.markers.json"
        " 'host=192.168.11.101 port=5432 user=barman dbname=postgres' /var/lib/barman/.pgpass",
        "other": None,
    }
    servers = plan["barman"]["drill"]["file"]["servers"]
    assert {name: s["marker"] for name, s in servers.items()} == {"master-streaming": True, "other": False}
    # On the primary: the table the hook writes in.
    assert [s["name"] for s in plan_mod.build(config, "master")["barman_servers"] if s["marker_script"]] == [
        "master-streaming"
    ]
    config["barman"]["drill"] = None
    assert [s["marker_script"] for s in plan_mod.build(config, "backup")["barman_servers"]] == [None, None]


@pytest.mark.parametrize(
    ("expected", "found", "ok"),
    [(3, 3, True), (None, None, True), (None, 2, True), (3, 2, False), (3, None, False), (1, 0, False)],
)
def test_marker_verdict_fails_only_a_copy_that_lost_a_recorded_marker(drill, expected, found, ok):
    counted, why = drill.marker_verdict("20261207T101010", expected, found)
    assert counted is ok
    assert (why is None) is ok
    if not ok:
        assert f"holds {found or 0} of the {expected} backup markers" in why
        assert "20261207T101010" in why


def test_tables_per_server_and_a_name_that_is_no_server(plan_mod, config):
    """A mapping names each server's tables (a server it does not name: the catalog only),
    so one backup host drills clusters whose tables differ."""
    config["barman"]["servers"] = {"other": {"address": "192.0.2.9", "slot_name": "barman_slot"}}
    config["barman"]["drill"] = {"tables": {"other": ["app.public.t"]}}
    servers = plan_mod.build(config, "backup")["barman"]["drill"]["file"]["servers"]
    assert {name: s["tables"] for name, s in servers.items()} == {"master-streaming": [], "other": ["app.public.t"]}
    config["barman"]["drill"] = {"tables": {"nope": ["public.t"]}}
    with pytest.raises(Exception, match=r"pg_replication:barman:drill:tables:nope: not a Barman server"):
        plan_mod.build(config, "backup")


def test_on_demand_only_and_special_schedules(plan_mod, config, drill):
    config["barman"]["drill"] = {}
    assert plan_mod.build(config, "backup")["barman"]["drill"]["cron"] is None
    assert drill.cron_fields("@weekly") == {"minute": "0", "hour": "0", "daymonth": "*", "month": "*", "dayweek": "0"}


def test_a_compressed_backup_before_18_is_not_verified(plan_mod, config):
    config["barman"].update(backup_compression="gzip", drill={})
    file = plan_mod.build(config, "backup")["barman"]["drill"]["file"]
    assert file["servers"]["master-streaming"]["verify"] is False


@pytest.mark.parametrize(
    ("value", "timestamp"),
    [("latest", None), ("2026-12-01 03:00:00+00", 1796094000.0), ("2026-12-01T04:00:00+01:00", 1796094000.0),
     ("2026-12-01 03:00:00Z", 1796094000.0), ("2026-12-01 04:00:00+0100", 1796094000.0)],
)  # fmt: skip
def test_targets(drill, value, timestamp):
    assert drill.parse_target(value) == timestamp


@pytest.mark.parametrize("value", ["2026-12-01 03:00:00", "yesterday", "2026-02-30 03:00:00+00", 5])
def test_bad_targets_say_why(drill, value):
    assert drill.check_target(value)


def backup(backup_id, status, end):
    return {"backup_id": backup_id, "status": status, "end_time_timestamp": str(end)}


def test_the_latest_done_backup_or_the_latest_before_the_target(drill):
    backups = [backup("b4", "FAILED", 400), backup("b3", "WAITING_FOR_WALS", 300), backup("b2", "DONE", 200),
               backup("b1", "DONE", 100)]  # fmt: skip
    assert drill.choose_backup(backups)["backup_id"] == "b2"
    assert drill.choose_backup(backups, target_ts=150)["backup_id"] == "b1"
    assert drill.choose_backup(backups, target_ts=50) is None
    assert drill.choose_backup([]) is None


def test_the_scratch_copy_is_the_only_tree_removed(drill):
    p = drill.paths("/var/lib/barman/pg_replication-drill", "db")
    assert p["scratch"] == "/var/lib/barman/pg_replication-drill/db.scratch"
    assert drill.inside(p["scratch"], "/var/lib/barman/pg_replication-drill")
    assert not drill.inside("/var/lib/barman/pg_replication-drill", "/var/lib/barman/pg_replication-drill")
    assert not drill.inside("/var/lib/barman/pg_replication-drill/../db/base", "/var/lib/barman/pg_replication-drill")
    assert not drill.inside("/var/lib/barman/pg_replication-drillx/a", "/var/lib/barman/pg_replication-drill")


def test_the_copy_starts_on_its_private_socket_only(drill):
    p = drill.paths("/d", "db")
    words = drill.start_command("/usr/lib/postgresql/15/bin", p, 54329, 100.7)
    assert words[:8] == ["/usr/lib/postgresql/15/bin/pg_ctl", "start", "-D", "/d/db.scratch/data", "-w", "-t", "100",
                         "-l"]  # fmt: skip
    options = words[-1]
    assert "-cport=54329" in options
    assert "-clisten_addresses= " in options
    assert "-cunix_socket_directories=/d/db.scratch" in options
    assert "-carchive_mode=off" in options
    assert "-csynchronous_standby_names= " in options
    assert drill.restore_args("latest") == {}
    assert drill.restore_args("2026-12-01 03:00:00+00") == {"target_time": "2026-12-01 03:00:00+00",
                                                            "target_action": "promote"}  # fmt: skip


def test_amcheck_checks_the_catalog_and_each_table(drill):
    words = drill.amcheck_command("/b", drill.paths("/d", "db"), 54329, ["public.t", "app.s.u"])
    assert words == ["/b/pg_amcheck", "-h", "/d/db.scratch", "-p", "54329", "-U", "postgres", "--all",
                     "--install-missing", "-s", "pg_catalog", "-t", "public.t", "-t", "app.s.u"]  # fmt: skip


def test_health_of_a_drill(drill):
    good = drill.result("db", True, None, "b2", rto=12.34, started=NOW - 100, now=NOW - 60)
    assert good["rto_seconds"] == 12.3
    assert drill.health("db", True, good, NOW) == (0, "restore drill of db OK 60s ago, backup b2, RTO 12.3s")
    bad = drill.result("db", False, "verify-backup: checksum mismatch", "b2", now=NOW - 5)
    code, message = drill.health("db", False, bad, NOW)
    assert (code, message) == (2, "restore drill of db failed 5s ago: verify-backup: checksum mismatch")
    assert drill.health("db", True, None, NOW)[0] == 2
    assert drill.health("db", False, None, NOW) == (0, None)


def test_metrics_of_a_drill(drill):
    metrics = load_file("pg_replication_barman_metrics", REPO_ROOT / "_utils/pg_replication_barman_metrics.py")
    good = drill.result("db", True, None, "b2", rto=12.34, now=NOW - 60)
    assert metrics.drill_samples("db", good, NOW) == [
        ("barman_drill_ok", {"server": "db"}, 1),
        ("barman_drill_age_seconds", {"server": "db"}, 60),
        ("barman_drill_rto_seconds", {"server": "db"}, 12.3),
    ]
    assert metrics.drill_samples("db", None, NOW) == []


def test_the_module_reads_the_configuration_and_the_last_result(drill, tmp_path):
    """barman.drill_last / .health on files as a drill leaves them (the module's
    own code, its Salt dunders given the pure module's functions)."""
    import json  # pylint: disable=import-outside-toplevel

    module = load_file("barman_drill_module", REPO_ROOT / "_modules/barman_drill.py")
    metrics = load_file("pg_replication_barman_metrics", REPO_ROOT / "_utils/pg_replication_barman_metrics.py")
    module.__utils__ = {f"pg_replication_drill.{name}": getattr(drill, name) for name in dir(drill)}
    module.__utils__["pg_replication_barman_metrics.read_drill_result"] = metrics.read_drill_result
    config = tmp_path / "drill.json"
    config.write_text(json.dumps({"dir": str(tmp_path), "schedule": "0 4 * * *", "servers": {"db": {}}}))
    assert module.drill_last("other", config=str(config)) is None
    assert module.drill_last("db", config=str(config)) == {"scheduled": True, "result": None}
    assert module.drill_health("db", config=str(config))["code"] == 2  # scheduled, none recorded
    recorded = drill.result("db", True, None, "b1", rto=3.0, now=NOW)
    (tmp_path / "db.result.json").write_text(json.dumps(recorded))
    health = module.drill_health("db", config=str(config))
    assert (health["code"], health["result"]) == (0, recorded)
    assert module.drill_last("db", config=str(tmp_path / "none.json")) is None
