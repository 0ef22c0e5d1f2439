# SPDX-License-Identifier: Apache-2.0
"""What the formula's states share: the return a state starts from, a failure, a change made
(or in test mode only announced), and whether an error met in test mode is one to predict
past.

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


def change(opts, ret, changes, would, done, act):
    """Make a change with ``act()`` and say it is ``done``; in test mode (``opts``: the
    state's ``__opts__``), only say it ``would`` be made. ``changes`` are the state's changes
    either way."""
    ret["changes"] = changes
    if opts["test"]:
        ret.update(result=None, comment=would)
        return ret
    act()
    ret["comment"] = done
    return ret


def predict(ret, exc, changes, what):
    """Test mode on a host whose server is not installed or running yet: the real run will
    find it freshly made by the earlier states, so ``changes`` is what it will do."""
    ret.update(result=None, changes=changes, comment=f"{what} (not checked: {exc})")
    return ret


def absent_unless_failed(opts, ret, exc, what):
    """``exc`` met while making sure ``what`` is absent: in test mode (``opts``: the state's
    ``__opts__``), a server this run has not started yet has nothing to drop; otherwise the
    state fails."""
    if unavailable_in_test(opts, exc):
        ret.update(comment=f"{what} is absent from a server not running yet ({exc})")
        return ret
    return fail(ret, exc)
