"""Shared pytest configuration."""

import importlib.util
import logging
import pathlib
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Salt's log handlers flush after pytest has closed its capture streams; don't print
# "--- Logging error ---" tracebacks for that at interpreter exit.
logging.raiseExceptions = False


# Tests of pure logic import the modules of _utils/ directly (no Salt loader).
UTILS = REPO_ROOT / "_utils"


def load_util(name):
    return load_file(name, UTILS / f"{name}.py")


def load_file(name, path):
    """The Python file ``path`` as module ``name`` (outside Salt's loader: pure logic only)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def plan_mod():
    return load_util("pg_replication_plan")


@pytest.fixture(scope="session")
def scram():
    return load_util("pg_replication_scram")


def deep_merge(base, over):
    """What map.jinja's defaults.merge does: dictionaries merge, everything else replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="session")
def merged_config():
    """``merged_config(pillar, os_family)``: defaults.yaml -> osfamilymap.yaml -> pillar."""
    import yaml  # pylint: disable=import-outside-toplevel

    defaults = yaml.safe_load((REPO_ROOT / "pg_replication/defaults.yaml").read_text())["pg_replication"]
    osfamilymap = yaml.safe_load((REPO_ROOT / "pg_replication/osfamilymap.yaml").read_text())

    def merge(pillar, os_family="Debian"):
        return deep_merge(deep_merge(defaults, osfamilymap[os_family]), pillar)

    return merge
