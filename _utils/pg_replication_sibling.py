"""Loading one file of ``_utils/`` from another.

Salt's loader gives utils no package to import from, and the tests load these files by
path, so a file loads the others by their path, next to its own. Each load runs the file
afresh: a minion that syncs new ``_utils/`` never keeps the old ones.

A file that needs a sibling runs this one (``runpy.run_path`` of its path, next to its own
``__file__``) and calls its ``load``: ``syntax = _sibling("pg_replication_syntax")``.
"""

import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name):
    """The file ``name``.py of ``_utils/`` as a module of its own."""
    spec = importlib.util.spec_from_file_location("pg_replication_sibling_" + name, os.path.join(HERE, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
