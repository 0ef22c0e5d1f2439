"""What the formula's states share: the return a state starts from, a failure, and whether
an error met in test mode is one to predict past.

In test mode, an execution function that needs what earlier states of the same run make (a
server, Barman, its configuration) raises the "unavailable" error of
``pg_replication_unavailable``; the state then predicts what the real run does instead of
failing.
"""

import os
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
unavailable = _sibling("pg_replication_unavailable")


def ret(name):
    """A state's return before it looks: no change, no comment, success."""
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def fail(ret, exc):
    """``ret`` failed with ``exc`` (an error or a message), with no change."""
    ret.update(result=False, comment=str(exc), changes={})
    return ret


def unavailable_in_test(opts, exc):
    """Whether, in test mode (``opts``: the state's ``__opts__``), ``exc`` says that what it
    needs does not exist yet."""
    return bool(opts["test"]) and unavailable.marked(exc)
