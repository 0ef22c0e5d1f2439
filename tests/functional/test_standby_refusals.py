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


def bootstrap(states, datadir, login):
    return states.pg_replication.standby_bootstrapped(
        str(datadir), slot="boot_slot", version=15, service="postgresql-nonexistent", bin_dir=str(PG_BIN),
        timeout=5, **login,
    )  # fmt: skip


def assert_refused_and_kept(states, datadir, replication_login, before, *phrases):
    """The bootstrap fails saying each of ``phrases``, changes nothing, and every file of
    ``datadir`` has the checksum it had (``before``)."""
    ret = bootstrap(states, datadir, replication_login)
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
