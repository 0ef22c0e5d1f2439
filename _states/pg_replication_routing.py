# SPDX-License-Identifier: Apache-2.0
"""The pg_replication states of how clients reach the primary (issue #29): the floating
address held (on the primary) or not (elsewhere), and the lookup function PgBouncer's
``auth_query`` calls. Each predicts in test mode exactly what the real run does.
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "pg_replication"


def __virtual__():
    return __virtualname__


def vip(name, prefix, beside, present=True):
    """
    Ensure this host holds the floating address ``name`` (``present``, on the interface of
    its own address ``beside``) or does not. Before adding it, a host that answers ARP for
    it makes the state fail: the address is never on two hosts. Added with a gratuitous ARP.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    try:
        held = __salt__["pg_replication.vip_held"](name)
        if bool(held) == bool(present):
            ret["comment"] = f"{name} is {'held on ' + held if held else 'not held'}, as it should"
            return ret
        if present:
            return __utils__["pg_replication_state.change"](
                __opts__, ret, {"vip": {"old": None, "new": f"{name}/{prefix}"}}, f"{name} would be added",
                f"{name} added", lambda: __salt__["pg_replication.vip_add"](name, prefix, beside),
            )  # fmt: skip
        return __utils__["pg_replication_state.change"](
            __opts__, ret, {"vip": {"old": f"{name} on {held}", "new": None}}, f"{name} would be removed",
            f"{name} removed", lambda: __salt__["pg_replication.vip_remove"](name, prefix),
        )  # fmt: skip
    except (CommandExecutionError, SaltInvocationError) as exc:
        return __utils__["pg_replication_state.fail"](ret, exc)


def pooler_lookup(name, **kwargs):
    """
    Ensure the function PgBouncer's ``auth_query`` calls exists, as the formula makes it, in
    every database that takes connections (template1 included): SECURITY DEFINER, owned by
    the superuser this minion connects as, reading pg_shadow for one role that is not a
    superuser; EXECUTE for the lookup role ``name`` only. Run on the primary.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    try:
        missing = {}
        for dbname in __salt__["pg_replication.pooler_lookup_databases"](**conn):
            lacks = __salt__["pg_replication.pooler_lookup_missing"](name, dbname, **conn)
            if lacks:
                missing[dbname] = lacks
    except CommandExecutionError as exc:
        if __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc):
            changes = {"lookup function": "in every database"}
            return __utils__["pg_replication_state.predict"](ret, exc, changes, "The lookup function would be made")
        return __utils__["pg_replication_state.fail"](ret, exc)
    if not missing:
        ret["comment"] = "The lookup function is in every database"
        return ret

    def install():
        for dbname in missing:
            __salt__["pg_replication.pooler_lookup_install"](name, dbname, **conn)

    return __utils__["pg_replication_state.change"](
        __opts__, ret, {"lookup function": missing}, f"The lookup function would be made in {', '.join(missing)}",
        f"The lookup function made in {', '.join(missing)}", install,
    )  # fmt: skip
