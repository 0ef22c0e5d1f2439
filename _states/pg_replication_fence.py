# SPDX-License-Identifier: Apache-2.0
"""The ``pg_replication`` state of the self-fencing watchdog's marker (the module:
``pg_replication_fence.py``): a fenced server is never started again by a highstate."""

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    if "pg_replication.fence_marker" in __salt__:
        return __virtualname__
    return (False, "pg_replication execution module could not be loaded")


def not_fenced(name, path=None):
    """
    Fail while this server carries the watchdog's fence marker: it stopped itself as a
    primary cut off from the cluster, a standby may have been promoted since, and starting it
    again could make two primaries. ``salt-run pg_replication.rejoin host=<it>`` rewinds it
    as a standby and removes the marker. Never changes anything.

    name
        This minion's id (for the messages).
    path
        The marker (default ``/var/lib/pg_replication/fenced``).
    """
    ret = __utils__["pg_replication_state.ret"](name)
    try:
        marker = __salt__["pg_replication.fence_marker"](path)
    except CommandExecutionError as exc:
        return __utils__["pg_replication_state.fail"](ret, exc)
    if marker is None:
        ret["comment"] = f"{name} is not fenced"
        return ret
    return __utils__["pg_replication_state.fail"](
        ret,
        f"{name} fenced itself at {marker['fenced_at']} ({marker['reason']}; marker {marker['path']}): "
        f"nothing of ours starts it again; run salt-run pg_replication.rejoin host={name}",
    )
