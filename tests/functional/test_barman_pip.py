"""barman.install.method pip: the formula's install state puts Barman from PyPI into a
virtualenv, for real, with a local salt-call (needs root and network access to PyPI)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

from lab.minion import formula_tree, masterless_options

REPO = pathlib.Path(__file__).resolve().parents[2]
SALT_CALL = pathlib.Path(sys.executable).with_name("salt-call")


@pytest.fixture(scope="module")
def salt_call(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("installs packages and a system user: needs root")
    root = tmp_path_factory.mktemp("pip-minion")
    venv, link = root / "barman-venv", root / "bin" / "barman"
    pillar_dir = root / "pillar"
    pillar_dir.mkdir()
    (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - pg_replication\n")
    pillar = {
        "hosts": {
            "db": {"role": "primary", "address": "127.0.0.1"},
            "pip-backup": {"role": "barman", "address": "127.0.0.2"},
        },
        "barman": {
            "password": "a-long-enough-secret",
            "streaming_password": "another-long-secret",
            "install": {"method": "pip", "venv": str(venv), "link": str(link)},
        },
    }
    (pillar_dir / "pg_replication.sls").write_text(yaml.safe_dump({"pg_replication": pillar}))
    config = masterless_options(
        root,
        "pip-backup",
        file_roots={"base": [str(formula_tree(root / "states"))]},
        pillar_roots={"base": [str(pillar_dir)]},
    )
    # The virtualenv's Python here is the test's own (under /root): only root may run it.
    config["barman.user"] = "root"
    (root / "minion").write_text(yaml.safe_dump(config))

    def run(*args):
        res = subprocess.run(
            [str(SALT_CALL), "--local", "-c", str(root), "--out", "json", *args],
            capture_output=True,
            text=True,
            timeout=900,
        )
        return res.returncode, json.loads(res.stdout or "{}").get("local"), res.stderr

    run.venv, run.link = venv, link
    return run


def _changed(states):
    return sorted(s["__id__"] for s in states.values() if s["changes"] or s["result"] is None)


def test_pip_install_predicts_installs_and_is_idempotent(salt_call):
    code, states, err = salt_call("state.sls", "pg_replication.barman.install", "test=True")
    assert code == 0, err
    assert _changed(states) == ["pg_replication-barman-link", "pg_replication-barman-pip", "pg_replication-barman-venv"]
    assert not salt_call.venv.exists()

    code, states, err = salt_call("state.sls", "pg_replication.barman.install")
    assert code == 0, (err, states)
    assert all(s["result"] for s in states.values())
    assert _changed(states) == ["pg_replication-barman-link", "pg_replication-barman-pip", "pg_replication-barman-venv"]

    version = subprocess.run([str(salt_call.link), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.split()[0].split(".")[0] == "3"
    assert salt_call.link.resolve() == (salt_call.venv / "bin" / "barman").resolve()

    code, states, err = salt_call("state.sls", "pg_replication.barman.install")
    assert code == 0, err
    assert _changed(states) == []
    # The execution module runs the pillar's Barman (the link), not the machine's own.
    code, module_version, err = salt_call("barman.version")
    assert code == 0, err
    assert module_version == version.stdout.split()[0]
