"""A SIGTERM or SIGHUP (a CI time-out, a closed terminal) tears every lab down, as a failure
does: ``make test``'s own command (lab/testrun.py) holding a lab with a salt-master and
booted hosts through a pytest-xdist worker, and ``make demo`` in the middle of its highstate.
Afterwards nothing of theirs is left: no network namespace, link, bridge, root overlay
mount, container, salt daemon or temporary directory."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lab.hosts import REPO_ROOT, Lab

pytestmark = pytest.mark.integration

HELD_LAB = """
import json, os, pathlib, time
import pytest
from lab.hosts import Lab
from lab.salt import SaltLab, reference_pillar


@pytest.fixture(scope="module")
def salt_lab(salt_factories, tmp_path_factory):
    hosts = ("master", "standby", "backup")
    with Lab(tmp_path_factory.mktemp("lab"), hosts, image=("bookworm", "provisioned")) as lab:
        salt_lab = SaltLab(salt_factories, lab, reference_pillar(lab))
        with salt_lab.started():
            yield salt_lab


def test_hold(salt_lab):
    assert salt_lab.salt("test.ping", target="master").data is True
    held = {"prefix": salt_lab.lab.prefix, "salt_master": salt_lab.master.pid}
    pathlib.Path(os.environ["PGR_HELD"]).write_text(json.dumps(held))
    time.sleep(600)
"""


def _environment(**extra):
    """This worker's environment without what makes a process a pytest-xdist worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PGR_LAB_WORKER"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


def _processes_naming(text):
    """Processes whose command line contains ``text`` (this test's directories)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:160]}")
    return found


def _wait_for(predicate, timeout, what, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"exited ({proc.returncode}) before {what}")
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout} s")
    return None


def _stop(proc, sig, timeout=240):
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"still running {timeout} s after {sig.name}")
    return None


def _default_dispositions():
    """In the child: SIGHUP and SIGTERM as a terminal session has them. A run under nohup
    inherits SIGHUP ignored, and lab.signals leaves an ignored signal ignored."""
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_to_make_test_tears_down_a_workers_lab(tmp_path):
    """SIGTERM to lab/testrun.py (what make passes it on to) while an xdist worker's test
    holds three booted hosts, their salt-minions and a salt-master."""
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pytest.ini").write_text("[pytest]\n")
    (inner / "test_held.py").write_text(textwrap.dedent(HELD_LAB))
    held, basetemp = tmp_path / "held", tmp_path / "basetemp"
    cmd = [sys.executable, "-m", "lab.testrun", "--no-images", "--no-lint", "--jobs", "1",
           "-p", "lab.pytest_signals", "-p", "no:cacheprovider", "-c", str(inner / "pytest.ini"),
           f"--rootdir={inner}", f"--basetemp={basetemp}", str(inner)]  # fmt: skip
    env = _environment(PGR_LAB_WORKER_SLOTS="pgs:30", PGR_HELD=str(held))
    out = tmp_path / "out.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        lab = json.loads(_wait_for(lambda: held.exists() and held.read_text(), 300, "lab held by the inner test", proc))
        assert lab["prefix"] == "pgs0"
        assert _alive(lab["salt_master"])
        assert any("systemd-nspawn" in p for p in _processes_naming(str(basetemp)))
        assert Lab.leftovers(lab["prefix"]), "the held lab should be up"
        code = _stop(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGTERM)

    output = out.read_text(errors="replace")
    assert code != 0, output[-3000:]
    assert "no lab left behind" in output, output[-3000:]
    assert Lab.leftovers(lab["prefix"]) == []
    assert _processes_naming(str(basetemp)) == []
    assert not _alive(lab["salt_master"])


def test_sighup_to_make_demo_mid_highstate_tears_its_lab_down(tmp_path):
    """SIGHUP to ``make demo``'s command while the salt-master's highstate installs
    PostgreSQL and Barman on its three booted hosts."""
    cmd = [sys.executable, "-m", "lab.demo", "--with-backup", "--log", str(tmp_path / "demo.log")]
    proc = subprocess.Popen(  # noqa: S603
        cmd,
        cwd=REPO_ROOT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_dispositions,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "salt '*' state.apply" in line:
                break
        assert proc.poll() is None, "".join(lines)
        time.sleep(5)
        assert any("systemd-nspawn" in p for p in _processes_naming("pgr-demo-"))
        assert Lab.leftovers("pgr"), "the demo's lab should be up"
        code = _stop(proc, signal.SIGHUP)
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGTERM)
    lines += proc.stdout.readlines()
    assert code != 0, "".join(lines[-40:])
    assert Lab.leftovers("pgr") == []
    assert _processes_naming("pgr-demo-") == []
    assert not list(pathlib.Path("/tmp").glob("pgr-demo-*"))
