"""Barman streaming backup host in the reference scenario, driven by a real salt-master,
over TLS (pg_replication:tls, a throw-away CA): every TCP connection of the reference
cluster is encrypted and verified."""

import json
import pathlib
import time

import psycopg2
import pytest

from lab.results import changed_states, state_errors, state_ids
from lab.s3 import ObjectStore
from lab.scenario import converge, ensure_otus, restore_check, row_on_standby, wait_for
from lab.tls import CertificateAuthority
from tests.cmdline_scanner import CmdlineScanner

pytestmark = pytest.mark.integration
LAB_IMAGE = ("bookworm", "provisioned")
SERVER = "master-streaming"
# `other` is the primary of a second cluster that the same backup host backs up.
LAB_HOSTS = ("master", "standby", "backup", "other")
OTHER = "other-streaming"
LAB_TLS = True


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


def test_the_standby_and_barman_stream_over_tls_and_a_row_reaches_the_standby(converged):
    rows = converged.lab["master"].psql(
        "SELECT r.application_name || ':' || s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) ORDER BY 1"
    )
    assert rows.splitlines() == ["barman_receive_wal:true", "standby:true"]
    assert row_on_standby(converged, "over-tls", timeout=10) == "over-tls"


def test_clear_text_and_a_certificate_from_another_ca_are_refused(converged, tmp_path):
    """From the machine (an address the pillar's network admits): without TLS no pg_hba line
    matches; verifying against another CA fails; against the cluster's CA it connects."""
    ours, theirs = tmp_path / "ours.crt", tmp_path / "theirs.crt"
    ours.write_text(converged.pillar["tls"]["ca_cert"])
    theirs.write_text(CertificateAuthority("another CA").pem)
    login = {"host": converged.lab["master"].address, "user": "barman", "dbname": "postgres",
             "password": converged.pillar["barman"]["password"], "connect_timeout": 10}  # fmt: skip
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        psycopg2.connect(sslmode="disable", **login)
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        psycopg2.connect(sslmode="verify-full", sslrootcert=str(theirs), **login)
    conn = psycopg2.connect(sslmode="verify-full", sslrootcert=str(ours), channel_binding="require", **login)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cur.fetchone() == (True,)
    finally:
        conn.close()


def test_a_backup_taken_over_tls_restores_to_a_point_in_time_row_for_row(converged):
    assert restore_check(converged) == ["before-backup:3", "before-target:2"]


def pillar_secrets(pillar):
    """What must never be seen outside the pillar: the passwords and a line of the TLS key's body."""
    return [pillar["tls"]["hosts"]["master"]["key"].splitlines()[1], pillar["replication"]["password"],
            pillar["barman"]["password"]]  # fmt: skip


def test_no_secret_in_lowstate_the_job_cache_logs_or_argv(converged):
    """The TLS key and the passwords reach the minions from the pillar: none is in
    state.show_sls / show_lowstate, the master's job cache, a minion's log, or the command
    line of any process while a highstate runs."""
    secrets = pillar_secrets(converged.pillar)
    scanner = CmdlineScanner(secrets)
    scanner.start()
    try:
        assert state_errors(converged.highstate().data) == {}
    finally:
        scanner.stop.set()
        scanner.join()
    assert scanner.scans > 0
    assert scanner.hits == []
    for fun in ("state.show_sls", "state.show_lowstate"):
        shown = converged.salt(fun, *(["pg_replication"] if fun.endswith("sls") else []), target="master", timeout=120)
        assert shown.returncode == 0
        assert "pg_replication:tls:hosts:master:key" in shown.stdout  # the pillar key, not the secret
        assert [s for s in secrets if s in shown.stdout] == []
    jobs = pathlib.Path(converged.master.config["cachedir"]) / "jobs"
    cached = [path for path in jobs.rglob("*") if path.is_file()]
    assert cached, "the job cache is empty"
    assert [p for p in cached if any(s.encode() in p.read_bytes() for s in secrets)] == []
    for name in ("master", "standby", "backup"):
        log = converged.minion_log(name)
        assert [s for s in secrets if s in log] == []


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


DRILL_DIR = "/var/lib/barman/pg_replication-drill"
MARKER_HOOK = "/usr/local/lib/pg_replication/barman-backup-marker"
# A schedule that never fires during the test: the test runs the cron line's command itself.
# The table is this cluster's (the second primary's drill checks its catalog only).
DRILL = {"schedule": "59 23 31 12 *", "tables": {SERVER: ["otus.public.drill_probe"]}, "timeout": 300}


def drill_result(salt_lab):
    backup = salt_lab.lab["backup"]
    return json.loads(backup.run(["cat", f"{DRILL_DIR}/{SERVER}.result.json"]).stdout)


def scratch_exists(salt_lab):
    return salt_lab.lab["backup"].run(["test", "-e", f"{DRILL_DIR}/{SERVER}.scratch"], check=False).returncode == 0


def test_restore_drills_on_demand_and_from_cron_pass_and_a_corrupted_backup_fails_them(converged):
    """barman:drill: the primary gets the backup marker table, the backup host the hook that
    writes a row in it before each backup; a drill on demand restores the latest DONE backup,
    starts and checks it (7 rows of the listed table, committed before it; every backup
    marker written up to it), records its RTO, and removes the copy; a record expecting one
    marker more fails the drill on its count;
    the command root's cron line runs (in cron's bare environment, no highstate) records a
    drill too; barman.health reports it. A backup the test takes and corrupts (bytes flipped
    in a data file) fails the drill (barman verify-backup) and makes the health CRITICAL; the
    copy is gone in both cases; the backup is deleted afterwards. No secret of the pillar
    shows in the drill's command lines, return, files or the minion's log."""
    started = time.monotonic()
    good, backup, master = converged.pillar, converged.lab["backup"], converged.lab["master"]
    ensure_otus(master)
    master.psql("DROP TABLE IF EXISTS drill_probe", dbname="otus")
    master.psql("CREATE TABLE drill_probe AS SELECT n FROM generate_series(1, 7) AS n", dbname="otus")
    barman(converged, "restore_point", SERVER)
    barman(converged, "switch_wal", SERVER, "archive=True")
    converged.set_pillar(dict(good, barman=dict(good["barman"], drill=DRILL)))
    corrupt = None
    try:
        # The drill's files and cron line on the backup host, the backup marker's hook in its
        # server file, and the marker table on the primary.
        ret = converged.highstate()
        assert state_errors(ret.data) == {}
        changed = [sid.split("_|-")[1] for sid in changed_states(ret.data).get("master", {})]
        assert changed == ["pg_replication-backup-marker-table"], changed_states(ret.data)
        mode = backup.run(["stat", "-c", "%U %G %a", DRILL_DIR]).stdout.split()
        assert mode == ["barman", "barman", "750"]
        grants = master.psql(
            "SELECT string_agg(privilege_type, ',' ORDER BY privilege_type) FROM information_schema.role_table_grants"
            " WHERE table_schema = 'pgr_drill' AND table_name = 'backup_marker' AND grantee = 'barman'"
        )
        assert grants == "INSERT,SELECT"
        conf = backup.run(["cat", f"/etc/barman.d/{SERVER}.conf"]).stdout
        assert f"pre_backup_script = /usr/bin/python3 {MARKER_HOOK} " in conf
        assert "pre_backup_script" not in backup.run(["cat", f"/etc/barman.d/{OTHER}.conf"]).stdout
        # A backup now: the hook writes its marker on the primary before it starts.
        marked = barman(converged, "backup", SERVER)["backup_id"]
        markers = json.loads(backup.run(["cat", f"{DRILL_DIR}/{SERVER}.markers.json"]).stdout)
        on_primary = int(master.psql(f"SELECT count(*) FROM pgr_drill.backup_marker WHERE server = '{SERVER}'"))
        assert markers[marked] == on_primary >= 1, (markers, on_primary)

        scanner = CmdlineScanner(pillar_secrets(good))
        scanner.start()
        try:
            ret = converged.salt("barman.drill", SERVER, target="backup", timeout=600)
        finally:
            scanner.stop.set()
            scanner.join()
        assert ret.returncode == 0, ret.stdout
        result = ret.data[SERVER]
        assert result["ok"], result
        assert result["backup_id"] == backup_ids(converged)[-1] == marked
        assert result["rows"] == {"otus.public.drill_probe": 7}
        # Every marker written up to the backup, counted in the restored copy.
        assert result["marker"] == {"expected": on_primary, "found": on_primary}
        assert 0 < result["rto_seconds"] < 120
        assert drill_result(converged) == result
        assert not scratch_exists(converged)
        print(f"restore drill on demand: RTO {result['rto_seconds']} s, steps {result['steps']}")
        health = barman(converged, "health", SERVER)
        assert (health["status"], health["code"]) == ("OK", 0), health["line"]
        assert f"RTO {result['rto_seconds']}s" in health["drill"]["message"]

        # What cron runs: the command of root's cron line, in cron's environment.
        crontab = backup.run(["crontab", "-l", "-u", "root"]).stdout.splitlines()
        (line,) = [x for x in crontab if "barman.drill" in x and not x.startswith("#")]
        assert line.startswith("59 23 31 12 * ")
        run = backup.run(["env", "-i", "PATH=/usr/bin:/bin", "HOME=/root", "SHELL=/bin/sh", "sh", "-c",
                          line.split(None, 5)[5]], check=False)  # fmt: skip
        scheduled = drill_result(converged)
        other = json.loads(backup.run(["cat", f"{DRILL_DIR}/{OTHER}.result.json"]).stdout)
        # Both servers of the backup host drilled, quietly (cron would mail any output).
        assert (scheduled["ok"], other["ok"]) == (True, True), (
            scheduled,
            other,
            run.stdout[-2000:],
            run.stderr[-2000:],
        )
        assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
        print(f"restore drills from cron: RTO {scheduled['rto_seconds']} s and {other['rto_seconds']} s")
        assert scheduled["finished"] > result["finished"]
        assert not scratch_exists(converged)
        # No secret of the pillar in any command line while the drill ran, its return, its
        # configuration and result files, or the backup host's minion log.
        assert scanner.scans > 0
        assert scanner.hits == []
        files = backup.run(["sh", "-c", f"cat {DRILL_DIR}/*.json"]).stdout
        seen = [ret.stdout, run.stdout, run.stderr, files, converged.minion_log("backup")]
        assert [s for s in pillar_secrets(good) if any(s in text for text in seen)] == []

        # A record that expects one marker more than the copy holds (as a restore that lost
        # the last committed rows would): the drill fails on the count.
        record = f"{DRILL_DIR}/{SERVER}.markers.json"
        backup.run(["cp", "-p", record, f"{record}.good"])
        backup.run(["sh", "-c", f'sed -i \'s/"{marked}": {on_primary}/"{marked}": {on_primary + 1}/\' {record}'])
        ret = converged.salt("barman.drill", SERVER, target="backup", timeout=600)
        backup.run(["mv", f"{record}.good", record])
        lost = drill_result(converged)
        assert (ret.returncode != 0, lost["ok"]) == (True, False), lost
        assert lost["marker"] == {"expected": on_primary + 1, "found": on_primary}
        assert "the restore lost committed rows" in lost["reason"]
        assert not scratch_exists(converged)

        # A backup of the test's own, corrupted: the drill fails, health is CRITICAL.
        corrupt = barman(converged, "backup", SERVER)["backup_id"]
        data = f"/var/lib/barman/{SERVER}/base/{corrupt}/data"
        victim = backup.run(["sh", "-c", f"ls -S {data}/base/1/* | head -n 1"]).stdout.strip()
        backup.run(["sh", "-c", f"printf 'DRILL-CORRUPTION' | dd of={victim} bs=1 seek=100 conv=notrunc status=none"])
        ret = converged.salt("barman.drill", SERVER, target="backup", timeout=600)
        assert ret.returncode != 0
        failed = drill_result(converged)
        assert (failed["ok"], failed["backup_id"]) == (False, corrupt), failed
        assert "verify-backup" in failed["reason"]
        assert not scratch_exists(converged)
        health = barman(converged, "health", SERVER)
        assert (health["status"], health["code"]) == ("CRITICAL", 2), health
        assert health["line"].startswith(f"BARMAN CRITICAL - restore drill of {SERVER} failed"), health["line"]
    finally:
        if corrupt:
            backup.run(["runuser", "-u", "barman", "--", "barman", "delete", SERVER, corrupt], check=False)
        master.psql("DROP TABLE IF EXISTS drill_probe", dbname="otus")
        converged.set_pillar(good)
        assert state_errors(converged.highstate(target="backup").data) == {}
    assert corrupt not in backup_ids(converged)
    assert "pre_backup_script" not in backup.run(["cat", f"/etc/barman.d/{SERVER}.conf"]).stdout
    assert backup.run(["test", "-e", MARKER_HOOK], check=False).returncode == 1
    assert "barman.drill" not in backup.run(["crontab", "-l", "-u", "root"], check=False).stdout
    assert "drill" not in barman(converged, "health", SERVER)  # no drill configured any more
    print(f"restore drill test: {time.monotonic() - started:.1f} s")


def test_compressed_wal_and_base_backup_restore_to_a_point_in_time_row_for_row(converged):
    """backup_compression gzip from the pillar (the WAL is gzip by default): the server file
    says so, the new base backup is a gzip tarball, the archived WAL is gzip, `barman check`
    is all OK, and a point-in-time restore from them holds exactly the expected rows. (After
    the verify-backup test: pg_verifybackup before PostgreSQL 18 reads no tarball.)"""
    good, backup = converged.pillar, converged.lab["backup"]
    converged.set_pillar(dict(good, barman=dict(good["barman"], backup_compression="gzip")))
    try:
        ret = converged.highstate(target="backup")
        assert state_errors(ret.data) == {}
        conf = backup.run(["cat", f"/etc/barman.d/{SERVER}.conf"]).stdout
        assert "\ncompression = gzip\nbackup_compression = gzip\nbackup_compression_format = tar" in conf
        assert restore_check(converged) == ["before-backup:3", "before-target:2"]
        newest = backup_ids(converged)[-1]  # restore_check's backup
        tarballs = backup.run(["find", f"/var/lib/barman/{SERVER}/base/{newest}", "-name", "*.tar*"])
        assert [pathlib.PurePath(p).name for p in tarballs.stdout.split()] == ["base.tar.gz"]
        wal = backup.run(["tail", "-n", "1", f"/var/lib/barman/{SERVER}/wals/xlog.db"]).stdout.split("\t")
        assert wal[3].strip() == "gzip", wal
        check = barman(converged, "check", SERVER)
        assert {item: r["status"] for item, r in check.items() if r["status"] != "OK"} == {}
    finally:
        converged.set_pillar(good)
        converged.highstate(target="backup")


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


def test_health_is_ok_with_barmans_nagios_line(converged):
    health = barman(converged, "health", SERVER)
    assert (health["status"], health["code"]) == ("OK", 0), health["line"]
    # Barman's own (`barman check --nagios`), with its performance data after the "|".
    assert health["line"].startswith(f"BARMAN OK - Ready to serve the Espresso backup for {SERVER}")
    assert len(health["checks"]) > 10
    assert {item for item, check in health["checks"].items() if check["status"] != "OK"} == set()


def backup_ids(salt_lab):
    return sorted(b["backup_id"] for b in barman(salt_lab, "list_backups", SERVER) if b["status"] == "DONE")


def test_a_backup_the_pillar_keeps_outlives_the_retention_policy_until_released(converged):
    """barman:keep: the oldest backup, kept (full) by the pillar's highstate (test=True
    first), survives two newer backups and `barman cron` under REDUNDANCY 2, while the one
    after it goes; released by the pillar (none), the next `barman cron` removes it. The
    host's own cron is stopped meanwhile, so that only the test's `barman cron` runs."""
    good, backup = converged.pillar, converged.lab["backup"]

    def keep(target):
        converged.set_pillar(dict(good, barman=dict(good["barman"], keep={kept: target})))
        predicted = converged.highstate("test=True", target="backup")
        ret = converged.highstate(target="backup")
        assert state_errors(ret.data) == {}
        assert state_ids(predicted.data, test=True) == state_ids(ret.data)
        assert changed_states(converged.highstate(target="backup").data) == {}
        return barman(converged, "keep_status", SERVER, kept)

    backup.run(["systemctl", "stop", "cron"])
    try:
        while len(backup_ids(converged)) < 2:
            barman(converged, "backup", SERVER)
        kept, after = backup_ids(converged)[:2]
        assert keep("full") == "full"
        barman(converged, "backup", SERVER)
        barman(converged, "backup", SERVER)
        barman(converged, "cron")
        ids = backup_ids(converged)
        assert kept in ids  # held past REDUNDANCY 2...
        assert after not in ids  # ...while the backup after it, not kept, went
        assert keep("none") == "nokeep"
        barman(converged, "cron")
        assert kept not in backup_ids(converged)
    finally:
        backup.run(["systemctl", "start", "cron"])
        converged.set_pillar(good)
        converged.highstate(target="backup")


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

        # This cluster's server only: the second cluster's keeps its one backup enough.
        servers = {name: dict(spec, minimum_redundancy=1) for name, spec in good["barman"]["servers"].items()}
        converged.set_pillar(dict(good, barman=dict(good["barman"], minimum_redundancy=3, servers=servers)))
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
        assert follow["changes"] == {"removed": [OTHER], "slots_dropped": [OTHER]}, json.dumps(follow)
        conf = backup.run(["sh", "-c", "cd /etc/barman.d && ls *.conf"]).stdout.split()
        assert conf == ["by-hand.conf", f"{SERVER}.conf"]
        assert backup.run(["pgrep", "-f", OTHER], check=False).stdout == ""
        assert converged.lab["other"].psql("SELECT count(*) FROM pg_replication_slots") == "0"
        assert backup.run(["ls", f"/var/lib/barman/{OTHER}/base"]).stdout.split()  # its backups stay
        again = converged.highstate(target="backup")
        assert changed_states(again.data) == {}
    finally:
        converged.set_pillar(good)
        backup.run(["rm", "-f", "/etc/barman.d/by-hand.conf"])


# --------------------------------------------------------------------------- barman:cloud
# moto's S3 server on the lab's bridge address stands for the object store.

STANDBY_UNIT = "postgresql@15-main"


@pytest.fixture(scope="module")
def object_store(converged):
    with ObjectStore(converged.lab.master_address, converged.lab.root / "moto.log") as store:
        yield store


def cloud_command(store, tool, *args):
    """A barman-cloud tool as the barman user, with the credentials file the formula wrote."""
    return [
        "runuser", "-u", "barman", "--", "env",
        "AWS_SHARED_CREDENTIALS_FILE=/var/lib/barman/.pg_replication-cloud-credentials", "AWS_DEFAULT_REGION=us-east-1",
        tool, "--cloud-provider", "aws-s3", "--profile", "pg_replication", "--endpoint-url", store.endpoint_url,
        *args,
    ]  # fmt: skip


def cloud_restore(store):
    """restore_check's restore from the object store: barman-cloud-restore, then recovery
    through barman-cloud-wal-restore up to the target time, then promote."""

    def restore(salt_lab, dest, backup_id, target):
        backup = salt_lab.lab["backup"]
        res = backup.run(
            cloud_command(store, "barman-cloud-restore", "s3://pg-backups/lab", SERVER, backup_id, dest), check=False
        )
        if res.returncode:
            log = backup.run(["tail", "-n", "30", "/var/log/barman/barman.log"], check=False).stdout
            raise RuntimeError(f"barman-cloud-restore: {res.stderr}\nbarman.log:\n{log}\nstore: {store.keys()}")
        wal_restore = " ".join(cloud_command(store, "barman-cloud-wal-restore", "s3://pg-backups/lab", SERVER)[4:])
        settings = (
            f"restore_command = '{wal_restore} %f %p'\n"
            f"recovery_target_time = '{target}'\nrecovery_target_action = 'promote'\n"
        )
        backup.run(["sh", "-c", f"cat >> {dest}/postgresql.auto.conf && touch {dest}/recovery.signal"], input=settings)
        backup.run(["chown", "-R", "barman:barman", dest])

    return restore


def test_backups_and_wal_copied_to_the_object_store_restore_from_it_row_for_row(converged, object_store):
    """barman:cloud: Barman's hooks copy each DONE backup and each archived WAL segment to the
    store (credentials from a 0600 file, never in argv or the server file); restored from
    the store alone (barman-cloud-restore, barman-cloud-wal-restore) to a point in time, the
    copy holds exactly the expected rows. A second highstate changes nothing."""
    good, backup = converged.pillar, converged.lab["backup"]
    assert state_errors(converged.highstate(target="backup").data) == {}  # what earlier tests left, converged
    converged.set_pillar(dict(good, barman=dict(good["barman"], cloud=object_store.pillar())))
    try:
        predicted = converged.highstate("test=True", target="backup")
        ret = converged.highstate(target="backup")
        assert state_errors(ret.data) == {}
        assert state_ids(predicted.data, test=True) == state_ids(ret.data)
        conf = backup.run(["cat", f"/etc/barman.d/{SERVER}.conf"]).stdout
        assert "pre_archive_retry_script = env AWS_SHARED_CREDENTIALS_FILE=" in conf
        assert object_store.pillar()["secret_access_key"] not in conf
        mode = backup.run(["stat", "-c", "%U %a", "/var/lib/barman/.pg_replication-cloud-credentials"]).stdout
        assert mode.split() == ["barman", "600"]
        assert changed_states(converged.highstate(target="backup").data) == {}

        assert restore_check(converged, restore=cloud_restore(object_store)) == ["before-backup:3", "before-target:2"]
        keys = object_store.keys(f"lab/{SERVER}/")
        assert any(k.endswith("/backup.info") for k in keys), keys
        assert any("/wals/" in k for k in keys), keys
        listed = backup.run(cloud_command(object_store, "barman-cloud-backup-list", "s3://pg-backups/lab", SERVER))
        assert backup_ids(converged)[-1] in listed.stdout
    finally:
        converged.set_pillar(good)


def test_the_stores_retention_removes_the_oldest_copy_and_what_is_left_restores(converged, object_store):
    """barman:cloud:retention_policy: cron runs barman-cloud-backup-delete on the store. With
    REDUNDANCY 1 and two copies stored, the cron line's own command (as cron runs it)
    removes the older copy from the store; Barman's own backups stay, and a restore from the
    store alone (the copy left, and its WAL) holds every row. The host's own cron is stopped
    meanwhile (its `barman cron` applies Barman's own retention)."""
    good, backup = converged.pillar, converged.lab["backup"]
    cloud = dict(object_store.pillar(), retention_policy="REDUNDANCY 1")
    converged.set_pillar(dict(good, barman=dict(good["barman"], cloud=cloud)))
    listed = cloud_command(object_store, "barman-cloud-backup-list", "--format", "json", "s3://pg-backups/lab", SERVER)

    def stored():
        return sorted(b["backup_id"] for b in json.loads(backup.run(listed).stdout)["backups_list"])

    try:
        assert state_errors(converged.highstate(target="backup").data) == {}
        backup.run(["systemctl", "stop", "cron"])
        cron = backup.run(["cat", "/etc/cron.d/pg_replication-barman"]).stdout
        lines = [line for line in cron.splitlines() if "barman-cloud-backup-delete" in line]
        (line,) = [line for line in lines if line.endswith(f" {SERVER}")]  # one line per server
        fields = line.split(None, 6)
        assert (" ".join(fields[:5]), fields[5]) == ("0 5 * * *", "barman")
        command = fields[6]
        assert "-r 'REDUNDANCY 1'" in command
        while len(stored()) < 2:
            barman(converged, "backup", SERVER)  # its post-backup hook copies it once DONE
        oldest, *newer = stored()
        in_barman = backup_ids(converged)
        backup.run(["runuser", "-u", "barman", "--", "env", "-i", "PATH=/usr/bin:/bin", "sh", "-c", command])
        assert stored() == newer[-1:]
        assert object_store.keys(f"lab/{SERVER}/base/{oldest}/") == []
        assert backup_ids(converged) == in_barman  # Barman's own retention is its own
        rows = restore_check(converged, restore=cloud_restore(object_store), backup_id=newer[-1])
        assert rows == ["before-backup:3", "before-target:2"]
    finally:
        backup.run(["systemctl", "start", "cron"])
        converged.set_pillar(good)
        converged.highstate(target="backup")


@pytest.mark.parametrize("source", ["object store", "barman over ssh"])
def test_a_standby_whose_slot_lost_its_wal_catches_up_from_the_archive(converged, request, source):
    """standby:restore_from_cloud (the object store) or standby:restore_from_barman (Barman
    itself over SSH, no object store): standbys get a restore_command. A standby stopped
    while the primary writes past max_slot_wal_keep_size (1MB, set by hand) loses its slot's
    WAL; its highstate (test=True first) makes the slot again without a base backup (its
    data directory is the same one), and it replays what it missed from the archive and
    streams on with every row."""
    good, lab = converged.pillar, converged.lab
    master, standby = lab["master"], lab["standby"]
    if source == "object store":
        pillar = dict(good, barman=dict(good["barman"], cloud=request.getfixturevalue("object_store").pillar()))
        switch = {"restore_from_cloud": True}
    else:
        pillar, switch = good, {"restore_from_barman": True}
    converged.set_pillar(dict(pillar, standby=dict(good.get("standby") or {}, **switch)))

    def alter_system(sql):
        master.psql(f"ALTER SYSTEM {sql}")
        master.psql("SELECT pg_reload_conf()")

    ensure_otus(master)
    try:
        ret = converged.highstate()
        assert state_errors(ret.data) == {}
        if source == "object store":
            assert "barman-cloud-wal-restore" in standby.psql("SHOW restore_command")
            credentials = "/var/lib/postgresql/.pg_replication-cloud-credentials"
            mode = standby.run(["stat", "-c", "%U %a", credentials]).stdout
            assert mode.split() == ["postgres", "600"]
        else:
            assert standby.psql("SHOW restore_command").startswith("barman-wal-restore --partial -U barman ")
            ssh_link_is_pinned_and_restricted(converged)
        datadir = standby.psql("SHOW data_directory")
        standby.run(["touch", f"{datadir}/pgr-not-rebuilt"])

        barman(converged, "cron")  # receive-wal streams before the writes, or its slot falls behind too
        assert wait_for(lambda: receive_wal_streams(master), 120, interval=2)
        alter_system("SET max_slot_wal_keep_size = '1MB'")
        try:
            standby.run(["systemctl", "stop", STANDBY_UNIT])
            master.psql("CREATE TABLE cloud_probe (n int)", dbname="otus")
            for n in range(4):
                master.psql(f"INSERT INTO cloud_probe VALUES ({n})", dbname="otus")
                master.psql("SELECT pg_switch_wal()")
            # Barman's slot confirms a segment when it closes it (compare segment numbers).
            barman_caught_up = (
                "SELECT floor(pg_wal_lsn_diff(restart_lsn, '0/0') / seg)"
                "       >= floor(pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') / seg)"
                " FROM pg_replication_slots,"
                "      (SELECT setting::numeric AS seg FROM pg_settings WHERE name = 'wal_segment_size') s"
                " WHERE slot_name = 'barman_slot'"
            )
            assert wait_for(lambda: master.psql(barman_caught_up) == "t", 120, interval=2)
            master.psql("CHECKPOINT")
            assert wait_for(lambda: slot_wal_status(master, "standby_slot") == "lost", 20)
            assert slot_wal_status(master, "barman_slot") != "lost"
            barman(converged, "switch_wal", SERVER, "archive=True")  # every segment archived (and stored)
        finally:
            alter_system("RESET max_slot_wal_keep_size")

        predicted = converged.highstate("test=True", target="standby")
        (boot,) = [s for s in predicted.data["standby"].values() if s["__id__"] == "pg_replication-standby-bootstrap"]
        assert (boot["result"], boot["changes"]) == (None, {"lost_slot": "standby_slot", "slot_renewed": True})
        ret = converged.highstate(target="standby")
        assert state_errors(ret.data) == {}
        (boot,) = [s for s in ret.data["standby"].values() if s["__id__"] == "pg_replication-standby-bootstrap"]
        assert boot["changes"] == {"lost_slot": "standby_slot", "slot_renewed": True}

        def probe_rows():
            try:
                return standby.psql("SELECT count(*) FROM cloud_probe", dbname="otus")
            except RuntimeError:  # not replayed yet (or the standby not up yet)
                return None

        assert wait_for(lambda: probe_rows() == "4", 120, interval=2), standby.run(
            ["sh", "-c", f"tail -n 40 {datadir}/log/*.log"], check=False
        ).stdout
        assert standby.run(["test", "-e", f"{datadir}/pgr-not-rebuilt"], check=False).returncode == 0
        # What it missed came through restore_command (PostgreSQL logs each segment it restores).
        restored = standby.run(["sh", "-c", f"grep -h 'restored log file' {datadir}/log/*.log"], check=False)
        assert "from archive" in restored.stdout, restored.stdout
        assert wait_for(lambda: slot_wal_status(master, "standby_slot") == "reserved", 60, interval=2)
        streaming = "SELECT state FROM pg_stat_replication WHERE application_name = 'standby'"
        assert wait_for(lambda: master.psql(streaming) == "streaming", 60, interval=2)
        if source == "barman over ssh":  # switched off: the backup host revokes the servers' keys
            converged.set_pillar(good)
            assert state_errors(converged.highstate(target="backup").data) == {}
            keys = lab["backup"].run(["cat", "/var/lib/barman/.ssh/authorized_keys"]).stdout
            assert " pg_replication:" not in keys, keys
    finally:
        standby.run(["systemctl", "start", STANDBY_UNIT], check=False)
        master.psql("DROP TABLE IF EXISTS cloud_probe", dbname="otus")
        converged.set_pillar(good)
        converged.highstate()


def test_a_rebuilt_standby_comes_from_barmans_backup_and_the_primary_sends_none(converged):
    """standby:bootstrap_from barman: a standby whose data directory is gone is restored by
    its highstate (test=True first) from Barman's latest DONE backup over the SSH link, replays
    the WAL written since from Barman, and streams on its slot with every row. The primary
    logs every replication command meanwhile (log_replication_commands): no BASE_BACKUP."""
    good, lab = converged.pillar, converged.lab
    master, standby = lab["master"], lab["standby"]
    switches = {"restore_from_barman": True, "bootstrap_from": "barman"}
    converged.set_pillar(dict(good, standby=dict(good.get("standby") or {}, **switches)))
    ensure_otus(master)
    master_log = f"{master.psql('SHOW data_directory')}/log/*.log"

    def logged(command):
        found = master.run(["sh", "-c", f"cat {master_log} | grep -c 'replication command: {command}'"], check=False)
        return int(found.stdout.strip() or 0)

    def insert(first, last):
        master.psql(f"INSERT INTO boot_probe SELECT generate_series({first}, {last})", dbname="otus")

    try:
        assert state_errors(converged.highstate().data) == {}
        master.psql("DROP TABLE IF EXISTS boot_probe", dbname="otus")
        master.psql("CREATE TABLE boot_probe (n int)", dbname="otus")
        insert(1, 100)
        backup_id = barman(converged, "backup", SERVER)["backup_id"]
        insert(101, 200)  # after the backup: from Barman's WAL
        barman(converged, "switch_wal", SERVER, "archive=True")
        master.psql("ALTER SYSTEM SET log_replication_commands = on")
        master.psql("SELECT pg_reload_conf()")
        sent, started = logged("BASE_BACKUP"), logged("START_REPLICATION")
        datadir = standby.psql("SHOW data_directory")
        standby.run(["systemctl", "stop", STANDBY_UNIT])
        standby.run(["rm", "-rf", datadir])

        predicted = converged.highstate("test=True", target="standby")
        (boot,) = [s for s in predicted.data["standby"].values() if s["__id__"] == "pg_replication-standby-bootstrap"]
        assert boot["result"] is None
        assert f"would be bootstrapped from Barman at {lab['backup'].address}" in boot["comment"]
        ret = converged.highstate(target="standby")
        assert state_errors(ret.data) == {}
        (boot,) = [s for s in ret.data["standby"].values() if s["__id__"] == "pg_replication-standby-bootstrap"]
        assert boot["changes"]["from_barman"] == SERVER, boot
        insert(201, 300)  # streamed

        def rows():
            try:
                return standby.psql("SELECT count(*) FROM boot_probe", dbname="otus")
            except RuntimeError:
                return None

        assert wait_for(lambda: rows() == "300", 120, interval=2)
        # It started from Barman's backup: its backup label names that backup's first segment.
        info = lab["backup"].run(["cat", f"/var/lib/barman/{SERVER}/base/{backup_id}/backup.info"]).stdout
        (begin_wal,) = [line.split("=", 1)[1] for line in info.splitlines() if line.startswith("begin_wal=")]
        label = standby.run(["cat", f"{datadir}/backup_label.old"]).stdout
        assert f"(file {begin_wal})" in label, label
        streaming = "SELECT state FROM pg_stat_replication WHERE application_name = 'standby'"
        assert wait_for(lambda: master.psql(streaming) == "streaming", 60, interval=2)
        assert master.psql("SELECT active FROM pg_replication_slots WHERE slot_name = 'standby_slot'") == "t"
        assert logged("START_REPLICATION") > started  # the log shows the standby's commands...
        assert logged("BASE_BACKUP") == sent  # ...and no base backup
        assert changed_states(converged.highstate(target="standby").data) == {}
    finally:
        master.psql("ALTER SYSTEM RESET log_replication_commands")
        master.psql("SELECT pg_reload_conf()")
        standby.run(["systemctl", "start", STANDBY_UNIT], check=False)
        master.psql("DROP TABLE IF EXISTS boot_probe", dbname="otus")
        converged.set_pillar(good)
        converged.highstate()


def ssh_link_is_pinned_and_restricted(salt_lab):
    """standby:restore_from_barman's SSH link, after one highstate of every host: the
    servers' keys are authorized on the backup host with the forced command only, its host
    key is pinned (StrictHostKeyChecking stays on), `barman-wal-restore --test` connects,
    anything else the key asks for is refused, and a second highstate changes nothing."""
    lab, backup = salt_lab.lab, salt_lab.lab["backup"]
    lines = backup.run(["cat", "/var/lib/barman/.ssh/authorized_keys"]).stdout.splitlines()
    ours = [line for line in lines if " pg_replication:" in line]
    assert sorted(line.rsplit(":", 1)[1] for line in ours) == ["master", "standby"]
    assert all(
        line.startswith('restrict,command="/usr/local/lib/pg_replication/barman-forced-command ') for line in ours
    )
    for name in ("master", "standby"):
        host = lab[name]
        known = host.run(["cat", "/var/lib/postgresql/.ssh/known_hosts"]).stdout
        assert known.startswith(f"{backup.address} ssh-ed25519 "), known
        as_postgres = ["runuser", "-u", "postgres", "--"]
        test = host.run(
            [*as_postgres, "barman-wal-restore", "--test", "-U", "barman", backup.address, SERVER, "x", "y"]
        )
        assert "Ready to retrieve WAL files from the server" in test.stdout + test.stderr
        refused = host.run([*as_postgres, "ssh", f"barman@{backup.address}", "id"], check=False)
        assert refused.returncode != 0
        assert "may only run barman get-wal" in refused.stderr
        other = f"barman get-wal {OTHER} 000000010000000000000001"
        assert host.run([*as_postgres, "ssh", f"barman@{backup.address}", other], check=False).returncode != 0
    assert changed_states(salt_lab.highstate().data) == {}


def slot_wal_status(host, slot):
    return host.psql(f"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'")


def receive_wal_streams(primary):
    streaming = "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'barman_receive_wal'"
    return primary.psql(streaming + " AND state = 'streaming'") == "1"
