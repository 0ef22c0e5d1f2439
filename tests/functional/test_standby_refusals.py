"""A standby's highstate never wipes a data directory on its own: against a real primary,
standby_bootstrapped (no wipe_unrelated_data) refuses a directory holding other files, or a
copy of the primary that is not a standby (a former primary left down), and leaves every
file as it was."""

import hashlib
import os
import pwd
import shutil

import pytest

from lab.pgserver import PG_BIN

PASSWORD = "bootstrap-password-123"


@pytest.fixture
def replication_login(modules, postgres, tmp_path):
    modules.pg_replication.role_create("bootclient", password=PASSWORD, login=True, replication=True)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres.port}:*:bootclient:{PASSWORD}\n")
    pw = pwd.getpwnam("postgres")
    os.chown(passfile, pw.pw_uid, pw.pw_gid)
    passfile.chmod(0o600)
    yield {"primary_host": "127.0.0.1", "primary_port": postgres.port, "user": "bootclient", "passfile": str(passfile)}
    modules.pg_replication.role_drop("bootclient")


def digest(directory):
    """Every file under ``directory`` with its checksum: what a wipe would change."""
    out = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, directory)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def bootstrap(states, datadir, login, **flags):
    return states.pg_replication.standby_bootstrapped(
        str(datadir), slot="boot_slot", version=15, service="postgresql-nonexistent", bin_dir=str(PG_BIN),
        timeout=5, **login, **flags,
    )  # fmt: skip


def assert_refused_and_kept(states, datadir, replication_login, before, *phrases, **flags):
    """The bootstrap fails saying each of ``phrases``, changes nothing, and every file of
    ``datadir`` has the checksum it had (``before``)."""
    ret = bootstrap(states, datadir, replication_login, **flags)
    assert ret.result is False
    for phrase in phrases:
        assert phrase in ret.comment
    assert ret.changes == {}
    assert digest(datadir) == before


def test_a_directory_of_other_files_is_refused_and_kept(states, tmp_path, replication_login):
    datadir = tmp_path / "data"
    datadir.mkdir()
    for i in range(3):
        (datadir / f"precious-{i}").write_text(f"row {i}\n")
    before = digest(datadir)
    assert_refused_and_kept(states, datadir, replication_login, before,
                            "files that are not a cluster", "refusing to overwrite it")  # fmt: skip
    assert len(before) == 3


def test_a_former_primary_left_down_is_refused_with_the_rejoin_command(states, tmp_path, postgres, replication_login):
    datadir = tmp_path / "data"
    (datadir / "global").mkdir(parents=True)
    shutil.copy(postgres.datadir / "global" / "pg_control", datadir / "global" / "pg_control")
    (datadir / "PG_VERSION").write_text("15\n")
    before = digest(datadir)
    assert_refused_and_kept(states, datadir, replication_login, before,
                            "a non-standby copy of system", "salt-run pg_replication.rejoin host=")  # fmt: skip


def former_primary(datadir, postgres):
    """A directory holding a non-standby copy of the primary's system (its pg_control)."""
    (datadir / "global").mkdir(parents=True)
    shutil.copy(postgres.datadir / "global" / "pg_control", datadir / "global" / "pg_control")
    (datadir / "PG_VERSION").write_text("15\n")


def test_a_promoted_copy_needs_its_own_flag_not_wipe_unrelated_data(states, tmp_path, postgres, replication_login):
    datadir = tmp_path / "data"
    former_primary(datadir, postgres)
    before = digest(datadir)
    assert_refused_and_kept(states, datadir, replication_login, before,
                            "pg_replication:standby:wipe_promoted_copy: True", wipe_unrelated_data=True)  # fmt: skip


def test_a_system_directory_is_never_wiped(states, tmp_path, replication_login):
    """Through a link to /, whatever the flags (were the guard missing, only the link would go)."""
    link = tmp_path / "data"
    link.symlink_to("/")
    ret = bootstrap(states, link, replication_login, wipe_unrelated_data=True, wipe_promoted_copy=True)
    assert ret.result is False
    assert "refusing to wipe" in ret.comment
    assert "a system directory" in ret.comment
    assert link.is_symlink()


def test_the_wipe_path_empties_the_directory_and_bootstraps_a_standby(modules, states, tmp_path, replication_login):
    """With the flag, a directory of other files is emptied (its server is not running) and
    filled with a base backup: a standby of the primary."""
    datadir = tmp_path / "data"
    datadir.mkdir()
    (datadir / "stray").write_text("not a cluster\n")
    pw = pwd.getpwnam("postgres")
    os.chown(tmp_path, pw.pw_uid, pw.pw_gid)
    modules.pg_replication.slot_create("boot_slot")
    try:
        ret = bootstrap(states, datadir, replication_login, wipe_unrelated_data=True)
        assert ret.result is True, ret.comment
        assert ret.changes["wiped"] is True
        files = digest(datadir)
        assert "stray" not in files
        assert "PG_VERSION" in files
        assert (datadir / "standby.signal").exists()
        assert modules.pg_replication.datadir_system_identifier(str(datadir)) is not None
    finally:
        modules.pg_replication.slot_drop("boot_slot", force=True)


def lose_the_slot(postgres, slot):
    """Make the primary invalidate ``slot`` (wal_status lost): a tiny max_slot_wal_keep_size,
    then WAL segments switched and checkpoints until the slot's WAL is gone."""
    postgres.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
    postgres.execute("SELECT pg_reload_conf()")
    try:
        postgres.execute("CREATE TABLE IF NOT EXISTS wal_filler (x int)")
        for _ in range(20):
            postgres.execute("INSERT INTO wal_filler SELECT generate_series(1, 1000)")
            postgres.execute("SELECT pg_switch_wal()")
            postgres.execute("CHECKPOINT")
            if postgres.fetch_one(f"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'") == "lost":
                return
        raise AssertionError(f"slot {slot} never lost its WAL")
    finally:
        postgres.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
        postgres.execute("SELECT pg_reload_conf()")
        postgres.execute("DROP TABLE IF EXISTS wal_filler")


def test_a_standby_whose_slot_lost_its_wal_is_kept_when_rebuild_lost_slot_is_off(
    modules, states, postgres, tmp_path, replication_login
):
    """rebuild_lost_slot false: a standby whose slot on the primary lost its WAL (it can never
    catch up) is reported with the flag that would rebuild it, and left as it is: no file
    changed, the slot not renewed."""
    datadir = tmp_path / "data"
    pw = pwd.getpwnam("postgres")
    os.chown(tmp_path, pw.pw_uid, pw.pw_gid)
    modules.pg_replication.slot_create("boot_slot")
    try:
        assert bootstrap(states, datadir, replication_login).result is True
        lose_the_slot(postgres, "boot_slot")
        before = digest(datadir)
        assert_refused_and_kept(states, datadir, replication_login, before,
                                "slot boot_slot on 127.0.0.1 lost the WAL this standby needs",
                                "pg_replication:standby:rebuild_lost_slot: True", rebuild_lost_slot=False)  # fmt: skip
        assert postgres.fetch_one("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'boot_slot'") == "lost"
    finally:
        modules.pg_replication.slot_drop("boot_slot", force=True)
