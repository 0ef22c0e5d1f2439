"""Loading a Python file by its path, outside Salt's loader: the one place the lab and the
tests do it (``_utils/pg_replication_sibling.py`` is the minion's own, for ``_utils``)."""

import importlib.util
import pathlib

UTILS = pathlib.Path(__file__).resolve().parent.parent / "_utils"


def load_file(name, path):
    """The Python file ``path`` as a new module ``name`` (pure logic only: no Salt dunders)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_util(name):
    """The file ``name``.py of ``_utils/`` as a new module."""
    return load_file(name, UTILS / f"{name}.py")
