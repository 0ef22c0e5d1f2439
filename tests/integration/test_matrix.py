"""The reference scenario on each supported Debian release with the PostgreSQL and Barman it
ships: Debian 11 + PostgreSQL 13 (Barman 2.12), Debian 13 + 17 (Barman 3.13), Debian 14 + 18
(Barman 3.20), each on hosts booted from that release's provisioned image. One lab per
release, shared by its tests: the reference scenario, then a switchover and back through the
runner, with a client committing throughout. Debian 12 + 15 (Barman 3.4) is every other
integration module's release: the same scenario runs there in test_barman.py (restores row
for row) and test_day2.py (switchovers with a client committing, Barman following), so it
is not run a second time here."""

import contextlib
import pathlib
import secrets
import time

import pytest

from lab.hosts import Lab
from lab.results import changed_states
from lab.salt import SaltLab, reference_pillar
from lab.scenario import (
    SERVER,
    Writer,
    apply_pillar_change,
    barman,
    converge,
    following,
    restore_check,
    row_on_standby,
)

pytestmark = pytest.mark.integration
HOSTS = ("master", "standby", "backup")
SERVERS = ("master", "standby")
WRITER_PASSWORD = secrets.token_urlsafe(18)
# (Debian release, its PostgreSQL): the README's support table lists these and bookworm + 15.
# In the background build's order (lab/image.py BUILD_ORDER).
MATRIX = [("bullseye", 13), ("trixie", 17), ("forky", 18)]


@pytest.fixture(scope="module", params=MATRIX, ids=[f"{release}-pg{version}" for release, version in MATRIX])
def cluster(request, salt_factories, tmp_path_factory):
    release, version = request.param
    with Lab(tmp_path_factory.mktemp(f"lab-{release}"), HOSTS, image=(release, "provisioned")) as lab:
        # Barman 2.12 (Debian 11) checks for REPLICATION on its backup role.
        barman = {"user_replication": True} if release == "bullseye" else {}
        salt_lab = SaltLab(salt_factories, lab, reference_pillar(lab, version=version, barman=barman))
        with salt_lab.started():
            yield converge(salt_lab)


def test_highstate_converged(cluster):
    assert cluster.first_run.returncode == 0


def test_standby_and_barman_stream_on_their_slots(cluster):
    rows = cluster.lab["master"].psql(
        "SELECT string_agg(r.application_name || ':' || s.slot_name, ',' ORDER BY r.application_name)"
        " FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.state = 'streaming'"
    )
    assert rows == "barman_receive_wal:barman_slot,standby:standby_slot"
    version = cluster.lab["master"].psql("SHOW server_version_num")
    assert version.startswith(str(cluster.pillar["version"]))


def test_row_on_standby(cluster):
    assert row_on_standby(cluster, "matrix-row", timeout=10) == "matrix-row"


def test_barman_check_all_ok_and_a_done_backup(cluster):
    check = barman(cluster, "check", SERVER)
    assert {item: r["status"] for item, r in check.items() if r["status"] != "OK"} == {}
    assert [b["status"] for b in barman(cluster, "list_backups", SERVER)] == ["DONE"]


def test_point_in_time_restore_holds_exactly_the_rows(cluster):
    assert restore_check(cluster) == ["before-backup:3", "before-target:2"]


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
def test_switchover_loses_no_acknowledged_commit_and_barman_follows(cluster, old, new, timeline):
    lab = cluster.lab
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
