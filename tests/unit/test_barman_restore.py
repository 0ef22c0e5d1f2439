"""barman.restore's own steps around `barman recover` (pure file handling, no Barman run):
the configuration a retired (inactive) server is restored with before Barman 3.17, and the
standby.signal a backup taken from a standby leaves in the copy."""

import pytest

from tests.conftest import REPO_ROOT, load_file

SERVER_FILE = """; Managed by Salt (pg_replication): streaming backup of master.
[master-streaming]
description = "retired: PostgreSQL 15 backups of master, kept for restores"
; barman:retired: its backups and WAL stay restorable; nothing is backed up, streamed or removed.
active = false
conninfo = host=192.0.2.1 port=5432 user=barman dbname=postgres
"""


@pytest.fixture
def barman_module(tmp_path):
    module = load_file("barman_module_restore", REPO_ROOT / "_modules/barman.py")
    (tmp_path / "barman.d").mkdir()
    (tmp_path / "barman.d" / "master-streaming.conf").write_text(SERVER_FILE)
    (tmp_path / "barman.d" / "live.conf").write_text("[live]\nconninfo = host=192.0.2.2\n")
    (tmp_path / "barman.conf").write_text(
        f"[barman]\nbarman_user = barman\nconfiguration_files_directory = {tmp_path}/barman.d\n"
        f"barman_home = {tmp_path}\nlog_level = INFO\n"
    )
    chowned = []
    module.__salt__ = {
        "config.option": lambda key, default=None: {"barman.config_file": str(tmp_path / "barman.conf")}.get(
            key, default
        ),
        "file.chown": lambda path, user, group: chowned.append(path),
    }
    module.__context__ = {}
    module.__pillar__ = {}
    module.chowned = chowned
    return module


@pytest.mark.parametrize(("version", "own"), [((3, 13), True), ((3, 17), False), ((3, 20), False)])
def test_a_retired_server_is_restored_from_a_config_where_it_is_active_before_3_17(barman_module, tmp_path,
                                                                                   version, own):  # fmt: skip
    barman_module.__context__["barman.version"] = version
    with barman_module._recovering_config("master-streaming") as config:
        if not own:
            assert config == str(tmp_path / "barman.conf")
            return
        scratch = tmp_path / config.split("/")[-2]
        assert scratch.name.startswith(".pg_replication-recover-")
        text = (scratch / "barman.conf").read_text()
        assert f"configuration_files_directory = {scratch}/servers" in text
        assert f"barman_home = {tmp_path}" in text
        assert [p.name for p in (scratch / "servers").iterdir()] == ["master-streaming.conf"]
        section = (scratch / "servers" / "master-streaming.conf").read_text()
        assert "\nactive = true\n" in section
        assert section.replace("active = true", "active = false") == SERVER_FILE
    assert not scratch.exists()  # removed after the restore
    assert str(scratch) in barman_module.chowned


def test_an_active_server_uses_barmans_own_configuration(barman_module, tmp_path):
    barman_module.__context__["barman.version"] = (3, 13)
    for server in ("live", "unknown"):
        with barman_module._recovering_config(server) as config:
            assert config == str(tmp_path / "barman.conf")


def test_the_standby_signal_of_a_standby_backup_is_removed(barman_module, tmp_path):
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "standby.signal").write_text("")
    (tmp_path / "copy" / "recovery.signal").write_text("")
    barman_module._without_standby_signal(str(tmp_path / "copy"))
    assert [p.name for p in (tmp_path / "copy").iterdir()] == ["recovery.signal"]
