"""The reference scenario on each supported Debian release with the PostgreSQL and Barman it
ships: Debian 11 + PostgreSQL 13 (Barman 2.12), Debian 13 + 17 (Barman 3.13), Debian 14 + 18
(Barman 3.20), each on hosts booted from that release's provisioned image. One lab per
release, shared by its tests: the reference scenario, then a switchover through the runner,
with a client committing throughout (and back on Debian 13 only: the way back's slow stop
is the runner's, not the release's, and CI's time is better spent elsewhere). Debian 12 +
15 (Barman 3.4) is every other integration module's release: the same scenario runs there
in test_barman.py (restores row for row) and test_day2.py (switchovers with a client
committing, Barman following), so it is not run a second time here.

One more lab, ``trixie-pg15-upgrade``, runs only the major upgrade's tests: hosts booted from
the upgrade image (bookworm's PostgreSQL 15 beside trixie's 17, as Debian's release upgrade
leaves a server), the cluster built on 15. ``salt-run pg_replication.upgrade_major to=17``
is refused with nothing changed while an extension 17 lacks is installed, then runs with a
client committing: every row it saw committed is on the upgraded primary and its standby,
which streams on its slot on 17; with the new pillar (a new Barman server for the new
system, the old one retired) a highstate sets Barman up, takes its first backup, and a
second one changes nothing; a backup of the old system, taken before the upgrade, restores
from the retired server to a point in time, row for row.
(Debian 14's 18.6 is older than the registry's 17.12 and refuses the column option
pg_attver that 17.12 stores, so 17 -> 18 is only refused: README.)"""

import contextlib
import pathlib
import secrets
import time

import pytest

from lab.hosts import Lab
from lab.results import changed_states, state_errors
from lab.salt import SaltLab, reference_pillar
from lab.scenario import (
    SERVER,
    Writer,
    apply_pillar_change,
    barman,
    converge,
    ensure_otus,
    following,
    restore_check,
    restored_rows,
    row_on_standby,
    rows_around_a_backup,
    wait_for,
)

pytestmark = pytest.mark.integration
HOSTS = ("master", "standby", "backup")
SERVERS = ("master", "standby")
WRITER_PASSWORD = secrets.token_urlsafe(18)
# (Debian release, its PostgreSQL): the README's support table lists these and bookworm + 15.
# In the background build's order (lab/image.py BUILD_ORDER).
# The third: the version an upgrade lab builds its cluster on (it runs the upgrade's tests only).
MATRIX = [("bullseye", 13, None), ("trixie", 17, None), ("forky", 18, None), ("trixie", 17, 15)]
IDS = [f"{release}-pg{old}-upgrade" if old else f"{release}-pg{version}" for release, version, old in MATRIX]


@pytest.fixture(scope="module", params=MATRIX, ids=IDS)
def cluster(request, salt_factories, tmp_path_factory):
    release, version, old = request.param
    image = (release, "upgrade" if old else "provisioned")
    with Lab(tmp_path_factory.mktemp(f"lab-{release}"), HOSTS, image=image) as lab:
        # Barman 2.12 (Debian 11) checks for REPLICATION on its backup role.
        barman = {"user_replication": True} if release == "bullseye" else {}
        salt_lab = SaltLab(salt_factories, lab, reference_pillar(lab, version=old or version, barman=barman))
        salt_lab.upgrade_to = version if old else None
        with salt_lab.started():
            yield converge(salt_lab)


@pytest.fixture
def scenario(cluster):
    """The cluster of a lab that runs the reference scenario (not an upgrade lab's)."""
    if cluster.upgrade_to:
        pytest.skip("an upgrade lab runs the upgrade's tests only")
    return cluster


@pytest.fixture
def upgrade_lab(cluster):
    if not cluster.upgrade_to:
        pytest.skip("no major upgrade in this lab")
    return cluster


# An extension only the old version has: upgrade_major refuses while it is installed.
OLD_ONLY = "pgr_old_only"


def refusals(ret):
    """``{check: detail}`` of the checks that refused an upgrade_major."""
    assert ret.returncode == 1, ret.stdout + ret.stderr
    assert ret.data["result"] is False
    assert ret.data["comment"].startswith("upgrade_major refused, nothing changed: ")
    return {c["check"]: c["detail"] for c in ret.data["checks"] if not c["ok"]}


def test_major_upgrade_refused_changes_nothing(upgrade_lab):
    cluster, new = upgrade_lab, upgrade_lab.upgrade_to
    master = cluster.lab["master"]
    old = int(cluster.pillar["version"])
    extension_dir = f"/usr/share/postgresql/{old}/extension"
    control = "default_version = '1.0'\nrelocatable = true\n"
    master.run(["sh", "-c", f'printf "{control}" > {extension_dir}/{OLD_ONLY}.control'])
    master.run(["sh", "-c", f"echo 'SELECT 1;' > {extension_dir}/{OLD_ONLY}--1.0.sql"])
    Writer.prepare(master, WRITER_PASSWORD)
    master.psql(f"CREATE EXTENSION {OLD_ONLY}", dbname="otus")
    master.psql("INSERT INTO writes (id) SELECT generate_series(1, 100)", dbname="otus")
    tree = ["find", "/var/lib/postgresql", "/etc/postgresql", "-maxdepth", "2"]
    before = {h: sorted(cluster.lab[h].run(tree).stdout.split()) for h in SERVERS}
    # The highstate's first backup is older than a backup_max_age of 1 s: refused for that.
    good = cluster.pillar
    cluster.set_pillar(dict(good, barman=dict(good.get("barman") or {}, backup_max_age=1)))
    try:
        too_old = refusals(cluster.run("pg_replication.upgrade_major", f"to={new}"))
    finally:
        cluster.set_pillar(good)
    recent = "backup holds a DONE backup of master-streaming younger than pg_replication:barman:backup_max_age"
    assert list(too_old) == [f"{recent} (1 s)"], too_old
    assert "s old: take one (`salt backup barman.backup master-streaming`)" in too_old[f"{recent} (1 s)"]
    started = time.monotonic()
    ret = cluster.run("pg_replication.upgrade_major", f"to={new}")
    print(f"upgrade_major to={new} (refused): {time.monotonic() - started:.1f} s")
    failed = refusals(ret)
    assert set(failed) == {f"every extension is there for PostgreSQL {new}"}, failed
    assert f"otus: {OLD_ONLY}" in failed[f"every extension is there for PostgreSQL {new}"]
    # What passed on these hosts: binaries, empty new data directories, space, the column
    # options (15.20's pg_attver, which 17.12's server accepted), pg_upgrade --check.
    passed = [c["check"] for c in ret.data["checks"] if c["ok"]]
    assert f"master has PostgreSQL {new}'s binaries" in passed
    assert f"every column option in use is one PostgreSQL {new} knows" in passed
    assert "pg_upgrade --check --link passes on master" in passed
    assert f"{recent} (86400 s)" in passed
    after = {h: sorted(cluster.lab[h].run(tree).stdout.split()) for h in SERVERS}
    assert after == before
    assert master.psql("SHOW server_version_num").startswith(str(old))
    assert master.psql("SELECT count(*) FROM writes", dbname="otus") == "100"
    assert following(cluster, "master", SERVERS), "the standby no longer streams from the primary"


def test_major_upgrade_keeps_every_acknowledged_row_and_the_standby_streams(upgrade_lab):
    cluster, new = upgrade_lab, upgrade_lab.upgrade_to
    lab, master, standby = upgrade_lab.lab, upgrade_lab.lab["master"], upgrade_lab.lab["standby"]
    master.psql(f"DROP EXTENSION IF EXISTS {OLD_ONLY}", dbname="otus")
    if master.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'writer'") == "0":
        Writer.prepare(master, WRITER_PASSWORD)  # the refusal's test made it, unless run alone
    # A backup of the old system with rows around it and a target time: after the upgrade the
    # retired server still restores it, to that time, row for row.
    old_version = int(cluster.pillar["version"])
    old_backup, old_target = rows_around_a_backup(cluster)
    rows = int(master.psql("SELECT count(*) FROM writes", dbname="otus"))
    writer = Writer([lab[h].address for h in SERVERS], WRITER_PASSWORD).start()
    time.sleep(1)
    started = time.monotonic()
    ret = cluster.run("pg_replication.upgrade_major", f"to={new}")
    took = time.monotonic() - started
    resumed = wait_for(lambda: writer.resumed, timeout=30)
    time.sleep(0.5)
    writer.stop()
    assert ret.returncode == 0, ret.stdout + ret.stderr
    assert ret.data["result"] is True, ret.data
    # Every attempt takes the next id: the first gap in the acknowledged ids is the stop.
    ids = writer.committed
    gap = next((n for n in range(1, len(ids)) if ids[n] != ids[n - 1] + 1), len(ids))
    before_stop = ids[:gap]
    print(
        f"upgrade_major to={new}: {took:.1f} s; write_downtime_seconds {ret.data['write_downtime_seconds']}; "
        f"the client's longest pause between two commits {writer.longest_pause:.1f} s; "
        f"{len(ids)} commits acknowledged, {len(before_stop)} before the stop, {writer.errors} failed attempts"
    )
    assert resumed, "the client never wrote again after the upgrade"
    assert master.psql("SHOW server_version_num").startswith(str(new))
    assert len(before_stop) > 20
    assert writer.missing_on(master) == []
    total = master.psql("SELECT count(*) FROM writes", dbname="otus")
    assert int(total) >= rows + len(ids)
    print(f"rows on the upgraded primary: {total} ({rows} before the client + {len(ids)} it saw committed), 0 lost")
    new_server = f"master-pg{new}"
    assert ret.data["pillar_change"] == [
        f"pg_replication:version: {new}", f"pg_replication:barman:server_name: {new_server}",
        f"pg_replication:barman:retired:{SERVER}: {old_version}"]  # fmt: skip
    apply_pillar_change(cluster, ret.data["pillar_change"])
    assert following(cluster, "master", SERVERS), "the standby does not stream from the upgraded primary"
    slot = master.psql(
        "SELECT s.slot_name FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid"
        " WHERE r.state = 'streaming' AND r.application_name = 'standby'"
    )  # fmt: skip
    assert slot, "the standby streams on no slot"
    assert standby.psql("SHOW server_version_num").startswith(str(new))
    assert wait_for(lambda: writer.missing_on(standby) == [], timeout=10)
    # Barman: a server of its own for the new system (its system identifier changed; the
    # runner's pillar change names it), set up by the highstate with its first backup; the
    # old server's backups stay on disk. Then a highstate changes nothing.
    started = time.monotonic()
    first = cluster.highstate()
    print(f"highstate with the new pillar: {time.monotonic() - started:.1f} s")
    assert first.returncode == 0, first.stdout[-4000:]
    assert changed_states(cluster.highstate().data) == {}
    check = barman(cluster, "check", new_server)
    assert {item: r["status"] for item, r in check.items() if r["status"] != "OK"} == {}
    assert [b["status"] for b in barman(cluster, "list_backups", new_server)] == ["DONE"]
    # The old server, retired: inactive (nothing taken or streamed; Barman's listings skip
    # it), its backups kept and restorable with the old version's binaries.
    backup = cluster.lab["backup"]
    conf = backup.run(["cat", f"/etc/barman.d/{SERVER}.conf"]).stdout
    assert "\nactive = false\n" in conf, conf
    # (backup.info: under meta/ since Barman 3.13.2, in the backup's directory before.)
    home = f"/var/lib/barman/{SERVER}"
    info = backup.run(
        ["sh", "-c", f"cat {home}/meta/{old_backup}-backup.info || cat {home}/base/{old_backup}/backup.info"]
    )
    assert "status=DONE" in info.stdout.splitlines()
    assert barman(cluster, "receive_wal_running", new_server) is True
    restored = restored_rows(cluster, old_backup, old_target, server=SERVER, version=old_version)
    print(f"backup {old_backup} of the retired {SERVER} (PostgreSQL {old_version}) restored: {restored}")
    assert restored == ["before-backup:3", "before-target:2"]
    master.psql("DROP TABLE IF EXISTS restore_check", dbname="otus")


def test_highstate_converged(scenario):
    cluster = scenario
    assert cluster.first_run.returncode == 0


def test_standby_and_barman_stream_on_their_slots(scenario):
    cluster = scenario
    rows = cluster.lab["master"].psql(
        "SELECT string_agg(r.application_name || ':' || s.slot_name, ',' ORDER BY r.application_name)"
        " FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.state = 'streaming'"
    )
    assert rows == "barman_receive_wal:barman_slot,standby:standby_slot"
    version = cluster.lab["master"].psql("SHOW server_version_num")
    assert version.startswith(str(cluster.pillar["version"]))


def test_row_on_standby(scenario):
    cluster = scenario
    assert row_on_standby(cluster, "matrix-row", timeout=10) == "matrix-row"


def test_barman_check_all_ok_and_a_done_backup(scenario):
    cluster = scenario
    check = barman(cluster, "check", SERVER)
    assert {item: r["status"] for item, r in check.items() if r["status"] != "OK"} == {}
    assert [b["status"] for b in barman(cluster, "list_backups", SERVER)] == ["DONE"]


def test_point_in_time_restore_holds_exactly_the_rows(scenario):
    cluster = scenario
    assert restore_check(cluster) == ["before-backup:3", "before-target:2"]


def test_incremental_backups_restore_row_for_row(scenario):
    """barman:incremental_schedule (PostgreSQL 17+, Barman 3.11+): after a highstate the
    servers run summarize_wal (a reload). Cron's line, run as cron runs it, takes a full
    backup while none is eligible as a parent, then an incremental one on top of it. That
    incremental backup restores (Barman combines the chain) with the rows written between the
    two backups, and every row to the target time."""
    cluster = scenario
    if int(cluster.pillar["version"]) < 17:
        pytest.skip("incremental backups need PostgreSQL 17")
    good, master, backup = cluster.pillar, cluster.lab["master"], cluster.lab["backup"]
    ensure_otus(master)
    cluster.set_pillar(dict(good, barman=dict(good.get("barman") or {}, incremental_schedule="0 */6 * * *")))
    try:
        assert state_errors(cluster.highstate().data) == {}
        assert master.psql("SHOW summarize_wal") == "on"
        cron = backup.run(["cat", "/etc/cron.d/pg_replication-barman"]).stdout
        (line,) = [line for line in cron.splitlines() if "--incremental" in line]
        assert line.startswith("0 */6 * * * barman ")
        as_cron = [
            "runuser",
            "-u",
            "barman",
            "--",
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            "sh",
            "-c",
            line.split(None, 6)[6],
        ]
        backup.run(as_cron)
        full = barman(cluster, "show_backup", SERVER, "latest")
        assert full["backup_type"] == "full"  # no backup with WAL summaries yet: a full one
        master.psql("CREATE TABLE IF NOT EXISTS inc_probe (n int)", dbname="otus")
        master.psql("INSERT INTO inc_probe SELECT generate_series(1, 50)", dbname="otus")
        backup.run(as_cron)
        incremental = barman(cluster, "show_backup", SERVER, "latest")
        assert incremental["backup_type"] == "incremental", incremental
        assert incremental["catalog_information"]["parent_backup_id"] == full["backup_id"]
        rows, probe = restore_check(cluster, backup_id=incremental["backup_id"], query="SELECT count(*) FROM inc_probe")
        assert (rows, probe.strip()) == (["before-backup:3", "before-target:2"], "50")
    finally:
        master.psql("DROP TABLE IF EXISTS inc_probe", dbname="otus")
        cluster.set_pillar(good)
        cluster.highstate()


def test_a_backup_from_the_standby_restores_row_for_row_and_passes_a_drill(scenario):
    """barman:backup_from standby (Barman 3.12+; refused at render on Debian 11's 2.12, naming
    the key, nothing changed): the server file points Barman's conninfo at the standby and its
    WAL at the primary's slot; `barman check` is all OK; the base backup is the standby's
    (its backup_label says BACKUP FROM: standby) and restores to a point in time row for row.
    With barman:drill, the backup marker goes to the primary before the backup, and a drill of
    that standby backup finds every marker in its restored copy. Run on Debian 13 (Barman
    3.13, the stable release) and 11 (the refusal); Debian 14's Barman 3.20 takes it the same
    way, and CI's time is better spent elsewhere."""
    cluster = scenario
    if int(cluster.pillar["version"]) == 18:
        pytest.skip("backups from a standby: shown on Debian 13's Barman (CI's time)")
    good, master, standby, backup = cluster.pillar, *(cluster.lab[h] for h in HOSTS)
    conf_path = f"/etc/barman.d/{SERVER}.conf"
    before = backup.run(["cat", conf_path]).stdout
    barman_pillar = dict(good.get("barman") or {}, backup_from="standby", drill={})
    cluster.set_pillar(dict(good, barman=barman_pillar))
    try:
        if int(cluster.pillar["version"]) < 17:  # Debian 11: Barman 2.12
            ret = cluster.salt("state.apply", "test=True", target="backup", timeout=300)
            assert ret.returncode != 0
            assert "pg_replication:barman:backup_from: needs Barman 3.12+ (Debian 11 ships 2.12)" in str(ret.data)
            assert backup.run(["cat", conf_path]).stdout == before
            return
        assert state_errors(cluster.highstate().data) == {}
        conf = backup.run(["cat", conf_path]).stdout
        assert f"\nconninfo = host={standby.address} port=5432 user=barman dbname=postgres\n" in conf, conf
        assert f"\nwal_conninfo = host={master.address} port=5432 user=barman dbname=postgres\n" in conf, conf
        assert f"\nwal_streaming_conninfo = host={master.address} port=5432 user=barman_streaming\n" in conf, conf
        check = barman(cluster, "check", SERVER)
        assert {item: r["status"] for item, r in check.items() if r["status"] != "OK"} == {}
        streaming = "SELECT active FROM pg_replication_slots WHERE slot_name = 'barman_slot'"
        assert wait_for(lambda: master.psql(streaming) == "t", 60, interval=2)  # WAL: the primary's slot

        assert restore_check(cluster) == ["before-backup:3", "before-target:2"]
        latest = barman(cluster, "show_backup", SERVER, "latest")["backup_id"]
        label = backup.run(["cat", f"/var/lib/barman/{SERVER}/base/{latest}/data/backup_label"]).stdout
        assert "BACKUP FROM: standby" in label, label
        ret = cluster.salt("barman.drill", SERVER, target="backup", timeout=600)
        assert ret.returncode == 0, ret.stdout
        result = ret.data[SERVER]
        on_primary = int(master.psql(f"SELECT count(*) FROM pgr_drill.backup_marker WHERE server = '{SERVER}'"))
        assert (result["ok"], result["backup_id"]) == (True, latest), result
        assert result["marker"] == {"expected": on_primary, "found": on_primary}
        print(f"drill of a standby backup: RTO {result['rto_seconds']} s, {on_primary} markers")
    finally:
        cluster.set_pillar(good)
        assert state_errors(cluster.highstate().data) == {}
    assert "wal_conninfo" not in backup.run(["cat", conf_path]).stdout


# The way back finds the old primary's unit slow to stop after PostgreSQL is down (what
# trixie's systemd did on a legacy cgroup hierarchy: README): the switchover goes on.
SLOW_STOP = pathlib.PurePosixPath("/etc/systemd/system/postgresql@.service.d/zz-slow-stop.conf")


@contextlib.contextmanager
def slow_stop(host, seconds):
    """``host``'s PostgreSQL unit keeps "deactivating" ``seconds`` after PostgreSQL stopped."""
    host.run(["mkdir", "-p", str(SLOW_STOP.parent)])
    host.run(["sh", "-c", f"printf '[Service]\\nExecStopPost=/bin/sleep {seconds}\\n' > {SLOW_STOP}"])
    host.run(["systemctl", "daemon-reload"])
    try:
        yield
    finally:
        host.run(["rm", "-f", str(SLOW_STOP)])
        host.run(["systemctl", "daemon-reload"])


@pytest.mark.parametrize(("old", "new", "timeline"), [("master", "standby", 2), ("standby", "master", 3)])
def test_switchover_loses_no_acknowledged_commit_and_barman_follows(scenario, old, new, timeline):
    cluster = scenario
    lab = cluster.lab
    if old == "standby" and int(cluster.pillar["version"]) != 17:
        pytest.skip("the way back: on Debian 13 only (CI's time)")
    if old == "master":
        Writer.prepare(lab["master"], WRITER_PASSWORD)
    writer = Writer([lab[h].address for h in SERVERS], WRITER_PASSWORD).start()
    time.sleep(1)
    with slow_stop(lab[old], 40) if old == "standby" else contextlib.nullcontext():
        ret = cluster.run("pg_replication.switchover", f"to={new}", "stop_timeout=10")
    time.sleep(0.5)
    writer.stop()
    assert ret.returncode == 0, ret.stdout + ret.stderr
    unfinished = [step for step in ret.data["done"] if "had not finished stopping" in step]
    assert len(unfinished) == (old == "standby"), ret.data["done"]
    apply_pillar_change(cluster, ret.data["pillar_change"])
    assert len(writer.committed) > 20
    assert writer.missing_on(lab[new]) == []
    members = following(cluster, new, SERVERS)
    assert members, f"{old} does not stream from {new}"
    assert {members[h]["timeline"] for h in SERVERS} == {timeline}
    assert members["backup"]["barman_check"] == {SERVER: "all OK"}
    if new == "master":  # back where it started: the reference pillar, and a highstate changes nothing
        assert changed_states(cluster.highstate().data) == {}
