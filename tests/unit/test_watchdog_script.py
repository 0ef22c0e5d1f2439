"""The watchdog's own file (pg_replication/server/files/watchdog.py): what it observes and the
marker it writes, on this machine (no PostgreSQL needed: the decision is test_fence.py's)."""

import importlib.util
import json
import os
import pathlib
import socket
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def watchdog():
    sys.path.insert(0, str(REPO / "_utils"))  # installed beside it on the servers
    try:
        spec = importlib.util.spec_from_file_location("watchdog", REPO / "pg_replication/server/files/watchdog.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "_utils"))
    return module


def test_a_host_answers_when_it_accepts_or_refuses(watchdog):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        port = listening.getsockname()[1]
        assert watchdog.answers("127.0.0.1", port, 0.5, refused_counts=False) is True
    # Closed now: refused, an answer for a peer (the host is there), not for the master.
    assert watchdog.answers("127.0.0.1", port, 0.5, refused_counts=True) is True
    assert watchdog.answers("127.0.0.1", port, 0.5, refused_counts=False) is False
    # Not an address this host can connect to: no answer.
    assert watchdog.answers("0.0.0.0.1", 5432, 0.2, refused_counts=True) is False


def test_only_a_live_postmaster_without_recovery_files_is_a_primary(watchdog, tmp_path):
    assert watchdog.runs_as_primary(str(tmp_path)) is False  # no postmaster.pid
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n/var/lib/postgresql/15/main\n")
    assert watchdog.runs_as_primary(str(tmp_path)) is False  # alive, but not a postgres process
    (tmp_path / "postmaster.pid").write_text("not-a-pid\n")
    assert watchdog.runs_as_primary(str(tmp_path)) is False


def test_the_marker_is_written_whole_with_when_and_why(watchdog, tmp_path):
    path = tmp_path / "pg_replication" / "fenced"
    watchdog.write_marker(str(path), "cut off", "master")
    marker = json.loads(path.read_text())
    assert marker["reason"] == "cut off"
    assert marker["minion_id"] == "master"
    assert marker["fenced_at"].endswith("Z")
    assert not (tmp_path / "pg_replication" / "fenced.new").exists()


def test_no_vip_script_no_drop(watchdog, tmp_path):
    assert watchdog.drop_vip(None) == ""
    assert watchdog.drop_vip(str(tmp_path / "absent")) == ""
