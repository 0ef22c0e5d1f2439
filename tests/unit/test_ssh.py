"""standby:restore_from_barman: the SSH link's plan (pg_replication_ssh) and the backup
host's forced command (barman-forced-command)."""

import os
import pathlib
import runpy

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
FORCED_COMMAND = REPO / "pg_replication" / "barman" / "files" / "barman-forced-command"
BARMAN = ["/usr/bin/barman", "/etc/barman.conf"]


@pytest.fixture
def config(merged_config):
    config = merged_config(yaml.safe_load((REPO / "pillar.example").read_text())["pg_replication"])
    config["standby"]["restore_from_barman"] = True
    return config


def test_standbys_restore_from_the_backup_hosts_barman_over_ssh(plan_mod, config):
    standby = plan_mod.build(config, "standby")
    command = "barman-wal-restore --partial -U barman 192.168.11.103 master-streaming %f %p"
    assert standby["conf_settings"]["restore_command"] == command
    assert standby["ssh"] == {
        "mine": "pg_replication_ssh",
        "pkgs": ["barman-cli", "openssh-client"],
        "home": "/var/lib/postgresql",
        "key_file": "/var/lib/postgresql/.ssh/id_ed25519",
        "keygen": "ssh-keygen -q -t ed25519 -N '' -C pg_replication@standby -f /var/lib/postgresql/.ssh/id_ed25519",
        "barman_id": "backup",
        "barman_address": "192.168.11.103",
        "bootstrap": None,
    }
    assert (standby["cloud_pkgs"], standby["cloud_credentials"]) == ([], None)  # no barman-cloud tool runs
    # A switchover makes the primary a standby: it has its key and the pinned host key too.
    assert plan_mod.build(config, "master")["ssh"]["barman_id"] == "backup"


def test_the_backup_host_authorizes_the_servers_for_get_wal_of_this_cluster_only(plan_mod, config):
    ssh = plan_mod.build(config, "backup")["ssh"]
    assert ssh["clients"] == ["master", "standby"]
    assert (ssh["pkgs"], ssh["service"]) == (["openssh-server"], "ssh")
    forced = "/usr/local/lib/pg_replication/barman-forced-command /usr/bin/barman /etc/barman.conf master-streaming"
    assert ssh["options"] == ["restrict", f'command="{forced}"']
    # Salt's ssh module splits an authorized_keys line's options at commas, and takes its key
    # from the first "ssh-" or "ecds": neither may be in the command, or no run is idempotent.
    assert [part for part in (",", "ssh-", "ecds") if part in forced] == []


def test_without_the_switch_nothing_uses_ssh(plan_mod, config):
    config["standby"]["restore_from_barman"] = False
    assert {plan_mod.build(config, m)["ssh"] for m in ("master", "standby", "backup", "other")} == {None}
    assert "restore_command" not in plan_mod.build(config, "standby")["conf_settings"]


def test_with_the_switch_off_the_backup_host_revokes_what_it_authorized(plan_mod, config):
    assert plan_mod.build(config, "backup")["ssh_revoked"] is None  # on: it authorizes
    config["standby"]["restore_from_barman"] = False
    assert plan_mod.build(config, "backup")["ssh_revoked"] == {"user": "barman", "mine": "pg_replication_ssh"}
    assert plan_mod.build(config, "standby")["ssh_revoked"] is None


def test_the_switch_needs_a_backup_host(plan_mod, config):
    config["hosts"] = {k: v for k, v in config["hosts"].items() if v["role"] != "barman"}
    with pytest.raises(Exception, match="restore_from_barman: needs a barman host backing up this cluster"):
        plan_mod.build(config, "standby")


@pytest.fixture(scope="module")
def allowed():
    return runpy.run_path(str(FORCED_COMMAND))["allowed"]


@pytest.mark.parametrize(
    "asked",
    [
        "barman get-wal 'master-streaming' '000000010000000000000003'",
        "barman get-wal --gzip --partial 'master-streaming' '000000010000000000000003.partial'",
        "barman get-wal --test 'master-streaming' 'dummy_wal_name'",
        "barman get-wal --peek '3' 'master-streaming' '000000010000000000000003'",
        "barman get-wal 'master-streaming' '00000002.history'",
    ],
)
def test_the_forced_command_runs_what_barman_wal_restore_asks(allowed, asked):
    argv = allowed(asked, BARMAN, ["master-streaming"])
    assert argv[:4] == ["/usr/bin/barman", "-c", "/etc/barman.conf", "get-wal"]
    assert argv[-2] == "master-streaming"


@pytest.mark.parametrize(
    "asked",
    [
        "",
        "sh -c id",
        "barman recover 'master-streaming' latest /tmp/x",
        "barman --config /tmp/evil.conf get-wal 'master-streaming' '000000010000000000000003'",
        "barman get-wal 'other-streaming' '000000010000000000000003'",  # another cluster's
        "barman get-wal 'master-streaming' '../../etc/shadow'",
        "barman get-wal --output-directory /tmp 'master-streaming' '000000010000000000000003'",
        "barman get-wal --peek 'x; id' 'master-streaming' '000000010000000000000003'",
        "barman get-wal 'master-streaming' '000000010000000000000003' ; id",
        "barman get-wal 'master-streaming",
    ],
)
def test_the_forced_command_refuses_anything_else(allowed, asked):
    assert allowed(asked, BARMAN, ["master-streaming"]) is None


def test_the_forced_command_is_executable():
    assert os.access(FORCED_COMMAND, os.X_OK)


def test_the_forced_command_sends_a_backup_of_its_servers_only(allowed):
    assert allowed("pg_replication-send-backup master-streaming", BARMAN, ["master-streaming"]) == [
        "pg_replication-send-backup",
        "master-streaming",
    ]
    for asked in ("pg_replication-send-backup other-streaming", "pg_replication-send-backup master-streaming x"):
        assert allowed(asked, BARMAN, ["master-streaming"]) is None


def test_bootstrap_from_barman_pulls_the_backup_over_the_same_link(plan_mod, config):
    assert plan_mod.build(config, "standby")["ssh"]["bootstrap"] is None  # from the primary by default
    config["standby"]["bootstrap_from"] = "barman"
    bootstrap = {"barman_host": "192.168.11.103", "server": "master-streaming"}
    assert plan_mod.build(config, "standby")["ssh"]["bootstrap"] == bootstrap


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"standby": {"restore_from_barman": False}}, "bootstrap_from: barman needs pg_replication:standby:restore_"),
        ({"barman": {"backup_compression": "gzip"}}, "set pg_replication:barman:backup_compression none"),
    ],
)
def test_bootstrap_from_barman_needs_the_link_and_plain_backups(plan_mod, config, change, message):
    config["standby"]["bootstrap_from"] = "barman"
    for section, values in change.items():
        config[section].update(values)
    with pytest.raises(Exception, match=message):
        plan_mod.build(config, "standby")
