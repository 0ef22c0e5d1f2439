"""kitchen.yml cannot run in CI (no gems, no container engine): prove that everything it
and kitchen.lxc.yml name exists and that each suite's host renders on each platform's OS
family with the platform's pillar. (A `kitchen test` on vagrant-lxc is checked by hand: README.)"""

import subprocess

import pytest
import yaml

from lab import box
from tests.conftest import REPO_ROOT, deep_merge

KITCHEN = yaml.safe_load((REPO_ROOT / "kitchen.yml").read_text())
LXC = yaml.safe_load((REPO_ROOT / "kitchen.lxc.yml").read_text())
SHELL_CHECKS = REPO_ROOT / "tests/kitchen/shell"
FAMILIES = {"debian": "Debian", "rockylinux": "RedHat", "almalinux": "RedHat", "centos": "RedHat", "fedora": "RedHat"}
ROLES = {"primary": "primary", "standby": "standby", "barman": "barman"}


def provisioner(suite, platform):
    """The provisioner settings kitchen gives one instance: global < platform < suite."""
    merged = deep_merge(KITCHEN["provisioner"], platform.get("provisioner", {}))
    return deep_merge(merged, suite.get("provisioner", {}))


INSTANCES = [
    pytest.param(suite, platform, id=f"{suite['name']}-{platform['name']}")
    for suite in KITCHEN["suites"]
    for platform in KITCHEN["platforms"]
]


def test_provisioner_is_salt_solo_in_formula_mode():
    prov = KITCHEN["provisioner"]
    assert prov["name"] == "salt_solo"
    assert not prov.get("is_file_root")
    assert not prov.get("state_collection")
    assert (REPO_ROOT / prov["formula"] / "init.sls").is_file()
    for dep in prov.get("dependencies", []):
        assert (REPO_ROOT / dep["path"] / dep["name"]).is_dir(), dep
    # what formula mode copies (kitchen-salt 0.7.0+), plus any dependency, is everything the
    # formula loads
    copied = {"_modules", "_states", "_grains", "_renderers", "_returners", "_runners", "_utils"}
    copied |= {d["name"] for d in prov.get("dependencies", [])}
    # (_beacons: the opt-in monitoring:beacon, which the kitchen suites leave off; _engines: the
    # salt-master's HA engine, and kitchen's salt_solo runs no master)
    assert {p.name for p in REPO_ROOT.glob("_*") if p.is_dir()} - {"_beacons", "_engines"} <= copied


def test_platforms_cover_debian_and_redhat_families():
    assert {FAMILIES[p["name"].split("-")[0]] for p in KITCHEN["platforms"]} == {"Debian", "RedHat"}
    assert all(p["driver"]["image"] for p in KITCHEN["platforms"])


def test_suites_converge_each_role():
    assert {s["name"] for s in KITCHEN["suites"]} == set(ROLES)


@pytest.mark.parametrize(("suite", "platform"), INSTANCES)
def test_instance_files_exist_and_render(formula, suite, platform):
    prov = provisioner(suite, platform)
    for states in prov["state_top"]["base"].values():
        for sls in states:
            path = REPO_ROOT / sls.replace(".", "/")
            assert (path / "init.sls").is_file() or path.with_suffix(".sls").is_file(), sls
    pillar_files = prov.get("pillars_from_files", {})
    top = prov["pillars"]["top.sls"]["base"]["*"]
    assert {f"{name}.sls" for name in top} <= set(pillar_files) | set(prov["pillars"])
    for target in pillar_files.values():
        assert (REPO_ROOT / target).is_file(), target
    verifier = deep_merge(KITCHEN.get("verifier", {}), suite.get("verifier", {}))
    for test in verifier["inspec_tests"]:
        profile = REPO_ROOT / test["path"]
        assert (profile / "inspec.yml").is_file(), profile
        assert list((profile / "controls").glob("*.rb")), profile

    pillar = yaml.safe_load((REPO_ROOT / pillar_files["pg_replication.sls"]).read_text())["pg_replication"]
    family = FAMILIES[platform["name"].split("-")[0]]
    rendering = formula(prov["salt_minion_id"], pillar, family)
    role = pillar["hosts"][prov["salt_minion_id"]]["role"]
    assert role == ROLES[suite["name"]]
    expect = {"primary": "pg_replication-initdb", "standby": "pg_replication-standby-bootstrap"}
    assert expect.get(role, "pg_replication-barman-conf") in rendering.states
    # the distribution's PostgreSQL where it ships the version, the project's repository elsewhere
    repo = next(iter(k for k in rendering.states["pg_replication-upstream-repo"] if not k.startswith("__")))
    assert repo == ("pkgrepo" if pillar["upstream_repo"] else "test")


def test_the_vagrant_lxc_file_uses_the_lab_box_and_repository():
    """kitchen.lxc.yml replaces the platforms: the box lab/box.py adds, the repository it
    links, mounted where the box's apt source expects it."""
    assert LXC["driver"] == {"name": "vagrant", "provider": "lxc"}
    (platform,) = LXC["platforms"]
    assert platform["name"].startswith("debian-12")  # the OS family of its renders above
    assert platform["driver"]["box"] == box.BOX_NAME
    assert platform["driver"]["synced_folders"] == [[str(box.DEFAULT_REPO_LINK), box.GUEST_REPO]]
    assert "PG_REPLICATION_LXC_BRIDGE" in platform["driver"]["customize"]["net.0.link"]
    assert LXC["verifier"] == {"name": "shell", "command": "sh tests/kitchen/shell/verify.sh"}


@pytest.mark.parametrize("script", ["verify.sh", "lib.sh", "primary.sh", "untouched.sh"])
def test_the_shell_checks_parse(script):
    path = SHELL_CHECKS / script
    assert subprocess.run(["sh", "-n", str(path)], check=False).returncode == 0
    if script not in ("verify.sh", "lib.sh"):
        # one check per InSpec describe, at least
        assert sum(line.lstrip().startswith("check ") for line in path.read_text().splitlines()) >= 3
