"""FORMULA metadata, the changelog and the generated docs agree with the code."""

import ast
import subprocess
import sys

import yaml

from tests.conftest import REPO_ROOT


def test_formula_metadata():
    """(Its version against the changelog and tags: tests/packaging/test_release.py.)"""
    formula = yaml.safe_load((REPO_ROOT / "FORMULA").read_text())
    assert formula["name"] == "pg_replication"
    assert (REPO_ROOT / formula["top_level_dir"] / "init.sls").is_file()
    assert set(formula["os_family"].replace(" ", "").split(",")) == {"Debian", "RedHat"}


def test_docs_are_up_to_date():
    res = subprocess.run([sys.executable, str(REPO_ROOT / "docs/build.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_every_public_function_is_documented_with_an_example():
    for kind in ("_modules", "_states"):
        for path in (REPO_ROOT / kind).glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in tree.body:
                if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                    doc = ast.get_docstring(node) or ""
                    assert doc, f"{path.stem}.{node.name} has no docstring"
                    if kind == "_modules":
                        assert "CLI Example" in doc, f"{path.stem}.{node.name} has no CLI example"


def test_a_module_split_over_files_loads_as_one():
    """docs/build.py documents ``<name>_*.py`` under module ``<name>``: Salt must merge them too."""
    for kind in ("_modules", "_states", "_runners"):
        stems = {path.stem for path in (REPO_ROOT / kind).glob("*.py")}
        for path in (REPO_ROOT / kind).glob("*.py"):
            for module in (stem for stem in stems if path.stem.startswith(f"{stem}_")):
                assert f'__virtualname__ = "{module}"' in path.read_text(), f"{kind}/{path.name} is not {module}"


def test_every_default_setting_is_documented():
    doc = (REPO_ROOT / "docs/pillar.md").read_text()

    def keys(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                yield from keys(value, f"{prefix}:{key}")
            else:
                yield f"{prefix}:{key}"

    defaults = yaml.safe_load((REPO_ROOT / "pg_replication/defaults.yaml").read_text())["pg_replication"]
    missing = [k for k in keys(defaults, "pg_replication") if f"`{k}`" not in doc]
    assert missing == []
