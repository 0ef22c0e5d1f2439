# SPDX-License-Identifier: Apache-2.0
"""The ``pg_replication`` states of roles (the module: ``pg_replication.py``): one made or
brought to its attributes, password, groups and grants; one dropped."""

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    if "pg_replication.slots" in __salt__:
        return __virtualname__
    return (False, "pg_replication execution module could not be loaded")


def _role_diff(name, role, attrs, password, connlimit, groups, execute, conn):
    """What would change to bring ``role`` (None: missing) to the desired state."""
    valid_until = conn.pop("valid_until", None)
    if role is None:
        changes = {"created": True, **attrs, "connlimit": connlimit}
        if valid_until is not None:
            changes["valid_until"] = str(valid_until)
        if password is not None:
            changes["password"] = "set"  # noqa: S105 - what changed, not the password
        if groups:
            changes["groups"] = {"added": sorted(groups)}
        if execute:
            changes["execute"] = {"granted": list(execute)}
        return changes
    changes = {attr: {"old": role[attr], "new": value} for attr, value in attrs.items() if role[attr] != value}
    if role["connlimit"] != connlimit:
        changes["connlimit"] = {"old": role["connlimit"], "new": connlimit}
    if valid_until is not None and not __salt__["pg_replication.role_valid_until_matches"](name, valid_until, **conn):
        changes["valid_until"] = str(valid_until)
    if password is not None and not role["password_matches"]:
        changes["password"] = "changed"  # noqa: S105 - what changed, not the password
    if groups is not None:
        added = sorted(set(groups) - set(role["groups"]))
        removed = sorted(set(role["groups"]) - set(groups))
        if added or removed:
            changes["groups"] = {"added": added, "removed": removed}
    if execute:
        privileges = __salt__["pg_replication.function_privileges"](name, execute, **conn)
        missing = [sig for sig, granted in privileges.items() if not granted]
        if missing:
            changes["execute"] = {"granted": missing}
    return changes


def _role_apply(name, role, attrs, password, connlimit, changes, conn):
    """Make ``changes`` (what _role_diff found) to ``role`` (None: create it)."""
    if "valid_until" in changes:
        attrs = dict(attrs, valid_until=changes["valid_until"])
    if role is None:
        __salt__["pg_replication.role_create"](name, password=password, connlimit=connlimit, **attrs, **conn)
    else:
        changed = {a: attrs[a] for a in attrs if a in changes}
        __salt__["pg_replication.role_alter"](
            name,
            password=password if "password" in changes else None,
            connlimit=connlimit if "connlimit" in changes else None,
            **changed,
            **conn,
        )
    for group in changes.get("groups", {}).get("added", []):
        __salt__["pg_replication.role_grant"](group, name, **conn)
    for group in changes.get("groups", {}).get("removed", []):
        __salt__["pg_replication.role_revoke"](group, name, **conn)
    for signature in changes.get("execute", {}).get("granted", []):
        __salt__["pg_replication.function_grant"](name, signature, **conn)


def role_present(
    name, password=None, login=True, replication=False, superuser=False, createdb=False, createrole=False,
    inherit=True, bypassrls=False, connlimit=-1, groups=None, execute=None, password_pillar=None, valid_until=None,
    **kwargs,
):  # fmt: skip
    """
    Ensure a role exists with exactly these attributes. Secure defaults: LOGIN and nothing
    else unless asked.

    password
        Plain password; stored as a SCRAM-SHA-256 verifier that libpq makes on the minion
        (the server only ever sees the verifier). An unchanged password is detected by
        recomputing the stored verifier with its salt and iteration count, and never set
        again; an md5-stored one is replaced.
    password_pillar
        The pillar key (``a:b:c``) that holds the password, read on the minion: the
        password then never appears in the state's arguments (show_sls, show_lowstate, the
        job's arguments). Prefer it to ``password``.
    groups
        Roles this role must be a member of (exactly these, when given).
    execute
        Function signatures this role must be allowed to EXECUTE, e.g.
        ``pg_backup_start(text, boolean)`` (grants are added, never revoked).
    valid_until
        When its password stops working (a timestamp, or ``infinity``); None: left alone.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    if password_pillar:
        password = __utils__["pg_replication_pillar.lookup"](__pillar__, password_pillar)
        if not password or not isinstance(password, str):
            return __utils__["pg_replication_state.fail"](ret, f"pillar key {password_pillar} holds no password")
    attrs = {
        "login": login,
        "replication": replication,
        "superuser": superuser,
        "createdb": createdb,
        "createrole": createrole,
        "inherit": inherit,
        "bypassrls": bypassrls,
    }
    connlimit = int(connlimit)
    conn_until = dict(conn, valid_until=valid_until)
    try:
        role = __salt__["pg_replication.role_get"](name, password=password, **conn)
        changes = _role_diff(name, role, attrs, password, connlimit, groups, execute, dict(conn_until))
        if not changes:
            ret["comment"] = f"Role {name} is in the desired state"
            return ret
        verb = "created" if role is None else "updated"
        return __utils__["pg_replication_state.change"](
            __opts__, ret, changes, f"Role {name} would be {verb}", f"Role {name} {verb}",
            lambda: _role_apply(name, role, attrs, password, connlimit, changes, conn),
        )  # fmt: skip
    except CommandExecutionError as exc:
        if __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc):
            changes = _role_diff(name, None, attrs, password, connlimit, groups, execute, dict(conn_until))
            return __utils__["pg_replication_state.predict"](ret, exc, changes, f"Role {name} would be created")
        return __utils__["pg_replication_state.fail"](ret, exc)


def role_absent(name, **kwargs):
    """
    Ensure a role does not exist.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    try:
        if __salt__["pg_replication.role_get"](name, **conn) is None:
            ret["comment"] = f"Role {name} is absent"
            return ret
        return __utils__["pg_replication_state.change"](
            __opts__, ret, {"role": name, "dropped": True}, f"Role {name} would be dropped", f"Role {name} dropped",
            lambda: __salt__["pg_replication.role_drop"](name, **conn),
        )  # fmt: skip
    except CommandExecutionError as exc:
        return __utils__["pg_replication_state.absent_unless_failed"](__opts__, ret, exc, f"Role {name}")
    return ret
