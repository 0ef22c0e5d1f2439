# SPDX-License-Identifier: Apache-2.0
"""The ``pg_replication`` state of the backup marker table on the primary (the module:
``pg_replication_marker.py``; ``pg_replication:barman:drill``). Predicts in test mode what the
real run does."""

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    if "pg_replication.backup_marker_status" in __salt__:
        return __virtualname__
    return (False, "pg_replication execution module could not be loaded")


def backup_marker_present(name, **kwargs):
    """
    Ensure the backup marker table exists and role ``name`` (Barman's) may read it and insert
    into it, nothing more. The table is never dropped or emptied by the formula.

    name
        The barman role.
    """
    util = __utils__
    ret = util["pg_replication_state.ret"](name)
    conn = util["pg_replication_postgres.conn_kwargs"](kwargs)
    try:
        status = __salt__["pg_replication.backup_marker_status"](name, **conn)
    except CommandExecutionError as exc:
        if util["pg_replication_state.unavailable_in_test"](__opts__, exc):
            changes = {"created": True, "granted": ["USAGE", "SELECT", "INSERT"]}
            return util["pg_replication_state.predict"](ret, exc, changes, "The backup marker table would be created")
        return util["pg_replication_state.fail"](ret, exc)
    changes = {} if status["table"] else {"created": True}
    if status["missing_privileges"]:
        changes["granted"] = status["missing_privileges"]
    if not changes:
        ret["comment"] = f"The backup marker table is in place; {name} may read and insert"
        return ret
    try:
        return util["pg_replication_state.change"](
            __opts__, ret, changes, f"The backup marker table would be made ready for {name}",
            f"The backup marker table made ready for {name}",
            lambda: __salt__["pg_replication.backup_marker_create"](name, **conn),
        )  # fmt: skip
    except CommandExecutionError as exc:
        return util["pg_replication_state.fail"](ret, exc)
