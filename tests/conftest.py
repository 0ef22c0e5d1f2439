"""Shared pytest configuration."""

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


# Tests of pure logic load the files of _utils/ (and _modules/, _runners/) by their path, no
# Salt loader: lab/pyfile.py, which the lab uses too.
from lab.pyfile import load_file, load_util  # noqa: E402,F401


@pytest.fixture(scope="session")
def plan_mod():
    return load_util("pg_replication_plan")


@pytest.fixture(scope="session")
def ops():
    """The runners' checks, steps and returns (pure)."""
    return load_util("pg_replication_checks")


@pytest.fixture(scope="session")
def model():
    """The runners' cluster model (pure)."""
    return load_util("pg_replication_cluster")


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


# --- the run as a whole: signals, order, where the time went -------------------------------

# Integration modules, longest first: with `--dist loadfile` each runs whole on one worker,
# so starting the long ones first keeps both workers busy to the end. Everything without a
# lab (unit, functional, packaging) runs before them, while the background build
# (lab/testrun.py) finishes the images they boot; the matrix's releases build after
# bookworm's (lab/image.py BUILD_ORDER), so bookworm's modules go first.
# Seen in a cold-cache run: day2 2532 s (2327 s without the switchover back, since cut),
# topology 1397 s, matrix 1375 s, barman 847 s, booted 599 s, vagrant_up 245 s, signals 86 s.
# Two workers take them in this order as each gets free: day2 then barman, vagrant_up and
# signals on one; topology, matrix and booted on the other (about 3,450 s each).
INTEGRATION_ORDER = (
    "test_day2.py",
    "test_topology.py",
    "test_matrix.py",
    "test_barman.py",
    "test_booted.py",
    "test_vagrant_up.py",
    "test_signals.py",
)


def pytest_configure(config):
    """SIGTERM and SIGHUP unwind the run as Ctrl-C does (lab/pytest_signals.py)."""
    from lab import pytest_signals  # pylint: disable=import-outside-toplevel

    pytest_signals.pytest_configure(config)


def _run_order(item):
    path = pathlib.Path(str(item.fspath))
    if "integration" not in path.parts:
        return (0, 0)
    name = path.name
    return (1, INTEGRATION_ORDER.index(name) if name in INTEGRATION_ORDER else len(INTEGRATION_ORDER))


def pytest_collection_modifyitems(items):
    items.sort(key=_run_order)  # stable: a module's own order stays


_MODULE_SECONDS = {}


def pytest_runtest_logreport(report):
    module = report.nodeid.split("::", 1)[0]
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """Each test module's time (setup, calls and teardown, its lab's included), slowest first."""
    slowest = sorted(_MODULE_SECONDS.items(), key=lambda kv: -kv[1])[:12]
    if slowest:
        terminalreporter.section("time per test module")
        for module, seconds in slowest:
            terminalreporter.write_line(f"{seconds:8.1f}s {module}")
