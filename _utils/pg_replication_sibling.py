# SPDX-License-Identifier: Apache-2.0
"""Loading one file of ``_utils/`` from another.

Salt's loader gives utils no package to import from, and the tests load these files by
path, so a file loads the others by their path, next to its own. A file that needs a
sibling runs this one (``runpy.run_path`` of its path, next to its own ``__file__``) and
calls its ``load``: ``syntax = _sibling("pg_replication_syntax")``.

Every load of one version of the directory shares one copy of each file (the plan's files
load the same siblings many times); once any ``.py`` file of the directory changes (a
minion synced new ``_utils/``), every file is loaded afresh.
"""

import importlib.util
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
# Where the copies are kept for the process: one holder per directory.
_HOLDER = "pg_replication_sibling:" + HERE


def _version():
    """The directory's version: each ``.py`` file's name, size and modification time."""
    return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(HERE)
                        if e.name.endswith(".py")))  # fmt: skip


def load(name):
    """The file ``name``.py of ``_utils/`` as a module of its own."""
    holder = sys.modules.get(_HOLDER)
    version = _version()
    if holder is None or holder.version != version:
        holder = types.ModuleType(_HOLDER)
        holder.version, holder.loaded = version, {}
        sys.modules[_HOLDER] = holder
    module = holder.loaded.get(name)
    if module is None:
        path = os.path.join(HERE, name + ".py")
        spec = importlib.util.spec_from_file_location("pg_replication_sibling_" + name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        holder.loaded[name] = module
    return module
