"""pg_replication.member as the runners ask it: the plan map.jinja makes on the minion (the
formula's own files, served as salt://), with the runners' pillar change, and no secret."""

import json

PLAN_KEYS = {
    "minion_id", "role", "me", "hosts", "version", "port", "data_dir", "conf_dir", "bin_dir", "socket_dir", "home",
    "service_name", "replication", "barman_servers", "switchover", "served_slots", "peer_tls", "routing",
    "pkgs", "upgrade", "barman_pillar", "initdb_command",
}  # fmt: skip


def test_member_of_a_backup_host_is_its_plan(formula, example_pillar):
    out = formula("backup", example_pillar).loaders.modules.pg_replication.member()
    assert set(out) == {"plan"}
    assert set(out["plan"]) == PLAN_KEYS
    assert (out["plan"]["minion_id"], out["plan"]["role"]) == ("backup", "barman")
    assert out["plan"]["barman_pillar"] == {"primary": None, "server_name": "master-streaming", "backup_max_age": 86400}
    assert "change-me" not in json.dumps(out)


def test_member_plans_with_the_runners_change(formula, example_pillar):
    change = {
        "hosts": {"master": {"role": "standby"}, "standby": {"role": "primary"}},
        "barman": {"primary": "standby"},
    }
    out = formula("backup", example_pillar).loaders.modules.pg_replication.member(change=change)
    roles = {host: spec["role"] for host, spec in out["plan"]["hosts"].items()}
    assert roles == {"master": "standby", "standby": "primary", "backup": "barman"}
    assert out["plan"]["barman_pillar"]["primary"] == "standby"
    assert "change-me" not in json.dumps(out)


def test_member_plans_with_upgrade_majors_version(formula, example_pillar):
    # upgrade_major asks every member for its plan with the new version: its paths and packages.
    version = example_pillar["version"]
    out = formula("backup", example_pillar).loaders.modules.pg_replication.member(change={"version": version - 2})
    assert out["plan"]["version"] == version - 2
    assert f"/{version - 2}/" in out["plan"]["bin_dir"]
    assert f"/{version - 2}/" in out["plan"]["data_dir"]
