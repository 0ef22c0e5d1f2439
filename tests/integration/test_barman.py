"""Barman streaming backup host in the reference scenario, driven by a real salt-master."""

import json

import pytest

from lab.results import changed_states, state_errors, state_ids
from lab.scenario import converge

pytestmark = pytest.mark.integration
LAB_IMAGE = ("bookworm", "provisioned")
SERVER = "master-streaming"
# `other` is the primary of a second cluster that the same backup host backs up.
LAB_HOSTS = ("master", "standby", "backup", "other")
OTHER = "other-streaming"


@pytest.fixture(scope="module")
def converged(backup_lab):
    # test=True on the fresh hosts first: it must run cleanly and predict the real run.
    return converge(backup_lab, predict=True)


def test_test_mode_on_fresh_hosts_predicts_the_first_run(converged):
    prediction = converged.prediction
    assert state_errors(prediction.data) == {}, json.dumps(prediction.data, default=str)[-6000:]
    assert state_ids(prediction.data, test=True) == state_ids(converged.first_run.data)


def barman(salt_lab, fun, *args):
    ret = salt_lab.salt(f"barman.{fun}", *args, target="backup", timeout=600)
    assert ret.returncode == 0, ret.stdout
    return ret.data


def test_both_streaming_clients_on_active_slots(converged):
    rows = (
        converged.lab["master"]
        .psql(
            "SELECT r.application_name || ':' || r.state || ':' || s.slot_name || ':' || s.active"
            " FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid ORDER BY 1"
        )
        .splitlines()
    )
    assert rows == ["barman_receive_wal:streaming:barman_slot:true", "standby:streaming:standby_slot:true"]


def test_barman_check_all_ok_and_one_done_backup(converged):
    check = barman(converged, "check", SERVER)
    assert {item: r["status"] for item, r in check.items() if r["status"] != "OK"} == {}
    assert len(check) > 10
    backups = barman(converged, "list_backups", SERVER)
    assert [b["status"] for b in backups] == ["DONE"]


def test_one_backup_host_backs_up_a_second_primary(converged):
    assert (
        converged.lab["other"].psql(
            "SELECT r.application_name || ':' || s.slot_name || ':' || s.active"
            " FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid"
        )
        == "barman_receive_wal:barman_slot:true"
    )
    check = barman(converged, "check", OTHER)
    assert {item: r["status"] for item, r in check.items() if r["status"] != "OK"} == {}
    assert [b["status"] for b in barman(converged, "list_backups", OTHER)] == ["DONE"]
    conf = converged.lab["backup"].run(["cat", f"/etc/barman.d/{OTHER}.conf"]).stdout
    assert f"host={converged.lab['other'].address} port=5432 user=barman dbname=postgres" in conf
    pgpass = converged.lab["backup"].run(["stat", "-c", "%U %a", "/var/lib/barman/.pgpass"]).stdout.split()
    assert pgpass == ["barman", "600"]
    # every base backup and WAL segment: private to barman
    dirs = converged.lab["backup"].run(["stat", "-c", "%n %U %G %a", "/var/lib/barman", "/var/log/barman"]).stdout
    assert dirs.splitlines() == ["/var/lib/barman barman barman 750", "/var/log/barman barman barman 750"]


def test_replication_status_lists_both_clients(converged):
    status = barman(converged, "replication_status", SERVER)
    assert '"application_name": "standby"' in json.dumps(status)
    assert "barman_receive_wal" in json.dumps(status)


def test_second_highstate_changes_nothing_and_takes_no_backup(converged):
    before = barman(converged, "list_backups", SERVER)
    ret = converged.highstate()
    assert ret.returncode == 0
    assert changed_states(ret.data) == {}
    assert barman(converged, "list_backups", SERVER) == before


def test_verify_backup_passes(converged):
    ret = converged.salt("barman.verify_backup", SERVER, target="backup", timeout=600)
    assert ret.returncode == 0, ret.stdout


def test_unknown_primary_or_bad_slot_fails_validation(converged):
    good = converged.pillar
    for key, bad in (("primary", "nowhere"), ("slot_name", "Barman-Slot")):
        converged.set_pillar(dict(good, barman=dict(good["barman"], **{key: bad})))
        try:
            ret = converged.salt("state.apply", "test=True", target="backup", timeout=300)
            assert ret.returncode != 0
            assert f"pg_replication:barman:{key}" in str(ret.data)
        finally:
            converged.set_pillar(good)


def test_health_is_ok_with_a_nagios_line(converged):
    health = barman(converged, "health", SERVER)
    assert (health["status"], health["code"]) == ("OK", 0), health["line"]
    assert health["line"].startswith(f"BARMAN OK - {SERVER}: ")
    assert health["checks"]["wal_archive"]["status"] == "OK"


def backup_ids(salt_lab):
    return sorted(b["backup_id"] for b in barman(salt_lab, "list_backups", SERVER) if b["status"] == "DONE")


def test_retention_keeps_two_backups_and_minimum_redundancy_keeps_more(converged):
    """REDUNDANCY 2 (the default): after a third backup, `barman cron` removes the oldest.
    With minimum_redundancy 3 (more than the policy keeps), a third backup is kept. The host's
    own cron is stopped meanwhile, so that only the test's `barman cron` runs."""
    good, backup = converged.pillar, converged.lab["backup"]
    backup.run(["systemctl", "stop", "cron"])
    try:
        while len(backup_ids(converged)) < 3:
            barman(converged, "backup", SERVER)
        oldest, *newer = backup_ids(converged)
        barman(converged, "cron")
        assert backup_ids(converged) == newer  # the oldest is gone, two remain

        converged.set_pillar(dict(good, barman=dict(good["barman"], minimum_redundancy=3)))
        barman(converged, "backup", SERVER)
        ret = converged.highstate(target="backup")
        assert state_errors(ret.data) == {}
        assert "minimum_redundancy = 3" in backup.run(["cat", f"/etc/barman.d/{SERVER}.conf"]).stdout
        kept = backup_ids(converged)
        barman(converged, "cron")
        assert len(kept) == 3
        assert backup_ids(converged) == kept  # nothing removed
    finally:
        converged.set_pillar(good)
        converged.highstate(target="backup")
        backup.run(["systemctl", "start", "cron"])


def test_a_server_removed_from_the_pillar_stops_streaming_loses_its_slot_and_keeps_its_backups(converged):
    """The second cluster's server leaves the backup host's pillar: its receive-wal stops,
    Barman drops its slot on that primary, its server file goes; its backups stay on disk.
    A server file the formula did not write is left alone."""
    good, backup = converged.pillar, converged.lab["backup"]
    backup.run(["sh", "-c", "printf '[by-hand]\\ndescription = \"mine\"\\n' > /etc/barman.d/by-hand.conf"])
    converged.set_pillar(dict(good, barman={k: v for k, v in good["barman"].items() if k != "servers"}))
    try:
        ret = converged.highstate(target="backup")
        assert state_errors(ret.data) == {}
        follow = next(
            s for s in ret.data["backup"].values() if s["__id__"] == "pg_replication-barman-servers-follow-the-pillar"
        )
        assert follow["changes"] == {"removed": [OTHER], "slots_dropped": [OTHER]}, follow
        assert backup.run(["ls", "/etc/barman.d"]).stdout.split() == ["by-hand.conf", f"{SERVER}.conf"]
        assert backup.run(["pgrep", "-f", OTHER], check=False).stdout == ""
        assert converged.lab["other"].psql("SELECT count(*) FROM pg_replication_slots") == "0"
        assert backup.run(["ls", f"/var/lib/barman/{OTHER}/base"]).stdout.split()  # its backups stay
        again = converged.highstate(target="backup")
        assert changed_states(again.data) == {}
    finally:
        converged.set_pillar(good)
        backup.run(["rm", "-f", "/etc/barman.d/by-hand.conf"])
