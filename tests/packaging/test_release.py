"""The release's metadata agrees with itself: LICENSE, FORMULA, the changelog, version tags,
the oldest Salt the tests run, and pre-commit's hooks with `make lint`."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from lab import image
from tests.conftest import REPO_ROOT

FORMULA = yaml.safe_load((REPO_ROOT / "FORMULA").read_text())
CHANGELOG = (REPO_ROOT / "CHANGELOG.md").read_text()
RELEASED = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", CHANGELOG, re.MULTILINE)


def _version_key(version):
    return tuple(int(part) for part in version.split("."))


def test_the_license_is_apache_2():
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_the_changelog_opens_with_unreleased_then_dated_versions_newest_first():
    headings = re.findall(r"^## (.+)$", CHANGELOG, re.MULTILINE)
    assert headings[0] == "[Unreleased]"
    assert len(headings) == len(RELEASED) + 1, headings  # every other heading is a dated release
    versions = [version for version, _ in RELEASED]
    assert versions == sorted(versions, key=_version_key, reverse=True)
    dates = [date for _, date in RELEASED]
    assert dates == sorted(dates, reverse=True)


def test_formula_version_is_the_newest_release():
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(FORMULA["version"]))
    assert str(FORMULA["version"]) == RELEASED[0][0]


def _tags():
    if not (REPO_ROOT / ".git").exists() or shutil.which("git") is None:
        return []
    out = subprocess.run(["git", "-C", str(REPO_ROOT), "tag", "--list", "v*"], capture_output=True, text=True)
    return out.stdout.split()


def test_every_version_tag_names_a_release_whose_formula_says_it():
    """A clone may carry no tags (then there is nothing to compare); each one it carries is
    vX.Y.Z, on a commit whose FORMULA has that version, with a changelog section."""
    released = {version for version, _ in RELEASED}
    for tag in _tags():
        assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"{tag} is not vX.Y.Z"
        shown = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "show", f"{tag}:FORMULA"], capture_output=True, text=True, check=True
        )
        assert str(yaml.safe_load(shown.stdout)["version"]) == tag[1:], tag
        assert tag[1:] in released, f"{tag} has no section in CHANGELOG.md"


def test_minimum_version_is_the_oldest_salt_the_tests_run():
    tested = {image.salt_version(release) for release in ("bookworm", *image.MINION_SALT)}
    assert str(FORMULA["minimum_version"]) == min(tested, key=_version_key)


def _make_lint_commands():
    """The commands of the Makefile's ``lint`` recipe, without the venv's path."""
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    commands = set()
    for line in recipe.splitlines():
        line = line.strip().replace("$(VENV)/bin/", "")
        if line.startswith("find pg_replication -name '*.sls'"):
            line = "salt-lint " + r"^pg_replication/.*\.sls$"  # find | xargs over the formula's SLS files
        commands.add(line)
    return commands


def _hook_commands():
    config = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())
    (repo,) = config["repos"]
    assert repo["repo"] == "local"  # no hook fetched from the network
    commands = set()
    for hook in repo["hooks"]:
        assert hook["language"] == "system", hook["id"]
        if hook.get("pass_filenames", True):
            commands.add(f"{hook['entry']} {hook['files']}")
        else:
            assert hook["always_run"] is True, hook["id"]
            commands.add(hook["entry"])
    return commands


def test_pre_commit_runs_what_make_lint_runs():
    assert _hook_commands() == _make_lint_commands()


@pytest.mark.skipif(shutil.which("git") is None, reason="pre-commit needs git")
def test_pre_commit_passes_on_the_checkout():
    bin_dir = os.path.dirname(sys.executable)
    if not os.path.exists(os.path.join(bin_dir, "pre-commit")):
        pytest.fail("pre-commit is not installed in the test environment (requirements-dev.txt)")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    res = subprocess.run(
        [os.path.join(bin_dir, "pre-commit"), "run", "--all-files"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def test_salt_3008_everywhere_the_formula_is_installed_for_tests():
    """Salt 3008 LTS: the lab's master and minions (Debian 11's minions excepted, lab/image.py
    says why), Vagrant's default and kitchen's bootstrap; kitchen.lxc.yml's box is the lab's."""
    assert image.salt_version().startswith("3008.")
    assert set(image.MINION_SALT) == {"bullseye"}
    assert re.search(r'ENV\.fetch\("PG_REPLICATION_SALT_VERSION", "3008"\)', (REPO_ROOT / "Vagrantfile").read_text())
    kitchen = yaml.safe_load((REPO_ROOT / "kitchen.yml").read_text())["provisioner"]
    assert kitchen["salt_install"] == "bootstrap"
    assert str(kitchen["salt_version"]) == "3008"
    assert kitchen["salt_bootstrap_options"].split()[-2:] == ["onedir", "3008"]
    lxc = yaml.safe_load((REPO_ROOT / "kitchen.lxc.yml").read_text())["provisioner"]
    assert lxc["salt_install"] == "none"


def _formula_sources():
    for folder in ("_modules", "_states", "_utils", "_runners", "_beacons", "_engines"):
        yield from sorted((REPO_ROOT / folder).glob("*.py"))
    yield from sorted((REPO_ROOT / "pg_replication").rglob("*.sls"))


@pytest.mark.parametrize("path", list(_formula_sources()), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_each_formula_source_names_its_license(path):
    head = path.read_text().splitlines()[:4]
    assert "# SPDX-License-Identifier: Apache-2.0" in head
