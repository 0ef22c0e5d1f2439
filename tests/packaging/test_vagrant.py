"""The Vagrantfile: `vagrant validate` passes (no VM can boot here), catches a broken option,
makes Salt-loadable minion keys, and describes the same hosts as pillar.example."""

import os
import re
import shutil
import subprocess

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from tests.conftest import REPO_ROOT

VAGRANT = shutil.which("vagrant")
pytestmark = pytest.mark.skipif(VAGRANT is None, reason="vagrant is not installed (lab/install-deps.sh installs it)")
FILES = ("Vagrantfile", "vagrant", "pillar.example", "pg_replication", "_modules", "_states", "_utils", "_runners",
         "_beacons")  # fmt: skip


@pytest.fixture
def project(tmp_path):
    """A copy of what the Vagrantfile reads, so that .vagrant/ stays out of the checkout."""
    for name in FILES:
        src = REPO_ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    return tmp_path


def validate(project, provider=None, **env):
    """``vagrant validate``: of the provider-independent configuration, or of ``provider``'s."""
    env = dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_HOME=str(project / ".vagrant.d"), **env)
    args = ["--ignore-provider"] if provider is None else []
    if provider:
        env["VAGRANT_DEFAULT_PROVIDER"] = provider
    return subprocess.run(
        [VAGRANT, "validate", *args], cwd=project, env=env, capture_output=True, text=True, timeout=180
    )


def test_validate_passes(project):
    res = validate(project)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "validated successfully" in res.stdout
    for machine in ("salt", "master", "standby", "backup", "solo"):
        assert f"==> {machine}:" in res.stdout


def test_validate_passes_for_the_lxc_provider_with_another_network(project):
    """vagrant-lxc's configuration (second NIC, bind mounts, the box) on a network of the
    user's choice; the generated Salt configuration and pillars use that network."""
    (project / "repo").mkdir()
    res = validate(project, "lxc", PG_REPLICATION_NETWORK="10.47.41", PG_REPLICATION_LXC_REPO=str(project / "repo"))
    assert res.returncode == 0, res.stdout + res.stderr
    generated = project / ".vagrant" / "pg_replication-config"
    assert yaml.safe_load((generated / "minion.conf").read_text())["master"] == "10.47.41.10"
    assert yaml.safe_load((generated / "master.conf").read_text())["interface"] == "10.47.41.10"
    solo = yaml.safe_load((generated / "solo" / "pg_replication.sls").read_text())["pg_replication"]
    assert solo["hosts"]["solo"]["address"] == "10.47.41.110"
    bad = validate(project, "lxc", PG_REPLICATION_NETWORK="10.47.41.0/24")
    assert bad.returncode != 0
    assert "PG_REPLICATION_NETWORK must be" in bad.stdout + bad.stderr


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("salt.run_highstate = true", "salt.run_highstate = true\n        salt.no_such_option = 1", "no_such_option"),
        ('salt_config("minion.conf")', 'salt_config("minion.cfg")', "minion.cfg"),
    ],
)
def test_validate_catches_a_broken_option(project, old, new, message):
    vagrantfile = project / "Vagrantfile"
    text = vagrantfile.read_text()
    assert old in text
    vagrantfile.write_text(text.replace(old, new, 1))
    res = validate(project)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr


def test_minion_keys_are_made_once_and_load_as_rsa_pairs(project):
    assert validate(project).returncode == 0
    keys = project / ".vagrant" / "pg_replication-keys"
    first = {p.name: p.read_bytes() for p in keys.iterdir()}
    assert sorted(first) == sorted(
        f"{i}.{e}" for i in ("salt-master", "master", "standby", "backup") for e in ["pem", "pub"]
    )
    for minion in ("salt-master", "master", "standby", "backup"):
        private = serialization.load_pem_private_key(first[f"{minion}.pem"], password=None)
        public = serialization.load_pem_public_key(first[f"{minion}.pub"])
        assert private.public_key().public_numbers() == public.public_numbers()
        assert (keys / f"{minion}.pem").stat().st_mode & 0o077 == 0
    assert validate(project).returncode == 0
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == first


def test_vagrant_hosts_match_pillar_example_and_master_config():
    vagrantfile = (REPO_ROOT / "Vagrantfile").read_text()
    network = re.search(r'NETWORK = ENV.fetch\("PG_REPLICATION_NETWORK", "([\d.]+)"\)', vagrantfile).group(1)
    minions = dict(re.findall(r'"(\w+)" => "#\{NETWORK\}\.(\d+)"', vagrantfile))
    hosts = yaml.safe_load((REPO_ROOT / "pillar.example").read_text())["pg_replication"]["hosts"]
    assert {name: f"{network}.{last}" for name, last in minions.items()} == {n: h["address"] for n, h in hosts.items()}
    # Vagrant provisions in definition order: the primary first, so its standby and backup
    # host find it when their highstate runs.
    assert hosts[next(iter(minions))]["role"] == "primary"
    salt_master = re.search(r'SALT_MASTER = \{ name: "salt", ip: "#\{NETWORK\}\.(\d+)" \}', vagrantfile).group(1)
    master_conf = yaml.safe_load((REPO_ROOT / "vagrant/master.conf").read_text())
    minion_conf = yaml.safe_load((REPO_ROOT / "vagrant/minion.conf").read_text())
    assert master_conf["interface"] == minion_conf["master"] == f"{network}.{salt_master}"
    assert "/srv/formulas/pg_replication" in master_conf["file_roots"]["base"]


def test_solo_pillar_plans_a_primary(plan_mod, merged_config):
    solo = yaml.safe_load((REPO_ROOT / "vagrant/solo/pg_replication.sls").read_text())["pg_replication"]
    plan = plan_mod.build(merged_config(solo), "solo")
    assert plan["role"] == "primary"
    assert plan["standbys"] == []
