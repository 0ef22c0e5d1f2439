"""Pillar validation and derivation (pg_replication.plan)."""

import copy
import pathlib

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def config():
    defaults = yaml.safe_load((REPO / "pg_replication/defaults.yaml").read_text())["pg_replication"]
    debian = yaml.safe_load((REPO / "pg_replication/osfamilymap.yaml").read_text())["Debian"]
    pillar = yaml.safe_load((REPO / "pillar.example").read_text())["pg_replication"]
    merged = copy.deepcopy(defaults)
    merged.update(debian)
    for key, value in pillar.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def test_pillar_example_plans_each_role(plan_mod, config):
    roles = {mid: plan_mod.build(config, mid)["role"] for mid in ("master", "standby", "backup", "other")}
    assert roles == {"master": "primary", "standby": "standby", "backup": "barman", "other": None}
    plan = plan_mod.build(config, "standby")
    assert plan["primary"]["address"] == "192.168.11.101"
    assert plan["me"]["slot"] == "standby_slot"
    assert plan["data_dir"] == "/var/lib/postgresql/15/main"
    assert plan["bin_dir"] == "/usr/lib/postgresql/15/bin"
    assert plan["standby_signal"] is True
    # one standby + one backup host (2 senders) + 2 spare
    assert plan["settings"]["max_wal_senders"] == 5
    assert plan["settings"]["max_replication_slots"] == 4
    assert plan["barman_servers"] == [
        {"name": "master-streaming", "primary": "master", "address": "192.168.11.101", "slot_name": "barman_slot"}
    ]


def test_hba_is_scram_on_every_tcp_line_and_never_trust(plan_mod, config):
    hba = plan_mod.build(config, "master")["hba"]
    tcp = [line for line in hba if line["type"] != "local"]
    assert tcp
    assert all(line["method"] == "scram-sha-256" for line in tcp)
    assert not any("trust" in line["method"] for line in hba)
    assert [line["user"] for line in hba if line["type"] == "local"] == ["postgres"]
    assert {"type": "host", "database": "replication", "user": "replicator", "address": "192.168.11.102/32",
            "method": "scram-sha-256"} in hba  # fmt: skip
    assert {"type": "host", "database": "replication", "user": "barman_streaming", "address": "192.168.11.103/32",
            "method": "scram-sha-256"} in hba  # fmt: skip


def test_version_paths_and_standby_style(plan_mod, config):
    config["version"] = 11
    plan = plan_mod.build(config, "standby")
    assert plan["bin_dir"] == "/usr/lib/postgresql/11/bin"
    assert plan["standby_signal"] is False
    assert "max_slot_wal_keep_size" not in plan["settings"]


def _mutate(config, path, value):
    node = config
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("hosts", "master", "role"), "standby", "pg_replication:hosts: no host has role primary"),
        (("hosts", "standby", "role"), "primary", "more than one primary"),
        (("hosts", "backup", "role"), "witness", "pg_replication:hosts:backup:role: unknown role 'witness'"),
        (("hosts", "standby", "address"), "192.168.11.300", "pg_replication:hosts:standby:address"),
        (("network",), "192.168.11.0/33", "pg_replication:network"),
        (("network",), "192.168.11.1/24", "pg_replication:network"),
        (("replication", "password"), None, "pg_replication:replication:password: a password is required"),
        (("replication", "password"), "short", "pg_replication:replication:password: the password is too weak"),
        (("hosts", "standby", "slot"), "barman_slot", "duplicate slot name 'barman_slot'"),
        (("hosts", "standby", "slot"), "Bad-Slot", "pg_replication:hosts:standby:slot"),
        (("barman", "slot_name"), "barman-slot", "pg_replication:barman:slot_name"),
        (("barman", "primary"), "nowhere", "pg_replication:barman:primary: 'nowhere' is not a host"),
        (("barman", "streaming_password"), KeyError, "pg_replication:barman:streaming_password"),
        (("version",), "fifteen", "pg_replication:version"),
        (("hosts",), {}, "pg_replication:hosts: at least one host"),
    ],
)
def test_invalid_pillar_names_the_key(plan_mod, config, path, value, message):
    with pytest.raises(plan_mod.PlanError) as exc:
        plan_mod.build(_mutate(config, path, value), "master")
    assert message in str(exc.value)
