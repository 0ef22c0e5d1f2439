"""Unit tests import the pure modules of _utils/ directly (no Salt loader)."""

import importlib.util
import pathlib

import pytest

UTILS = pathlib.Path(__file__).resolve().parents[2] / "_utils"


def load_util(name):
    spec = importlib.util.spec_from_file_location(name, UTILS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def plan_mod():
    return load_util("pg_replication_plan")


@pytest.fixture(scope="session")
def scram():
    return load_util("pg_replication_scram")
