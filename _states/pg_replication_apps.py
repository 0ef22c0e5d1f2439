# SPDX-License-Identifier: Apache-2.0
"""The ``pg_replication`` states of application objects (the module:
``pg_replication_apps.py``): a database with its extensions and schemas, the exact
privileges of a role on some objects, a database or a role dropped (only ever because the
pillar's ``absent`` lists it). Each predicts in test mode what the real run does."""

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    if "pg_replication.database_get" in __salt__:
        return __virtualname__
    return (False, "pg_replication execution module could not be loaded")


def _state():
    return __utils__["pg_replication_state.ret"], __utils__["pg_replication_state.change"]


def _database_diff(name, db, wanted, extensions, schemas, conn):
    """What would change to bring database ``name`` (``db``: database_get's answer, None:
    missing) to ``wanted``; a change PostgreSQL cannot make in place raises."""
    if db is None:
        changes = {"created": True, **{k: v for k, v in wanted.items() if v is not None}}
        current_ext, current_schemas = {}, {}
    else:
        changes = {}
        for attr in ("encoding", "lc_collate", "lc_ctype"):
            if wanted[attr] is not None and str(db[attr]).lower() != str(wanted[attr]).lower():
                raise CommandExecutionError(
                    f"database {name}: {attr} is {db[attr]}, not {wanted[attr]}: PostgreSQL cannot change it"
                    " (dump and restore into a new database)"
                )
        for attr in ("owner", "connlimit"):
            if wanted[attr] is not None and db[attr] != wanted[attr]:
                changes[attr] = {"old": db[attr], "new": wanted[attr]}
        # Only what the pillar declares is compared: no declared schema, no query for them.
        current_ext = __salt__["pg_replication.extensions"](name, **conn) if extensions else {}
        current_schemas = __salt__["pg_replication.schemas"](name, **conn) if schemas else {}
    added = {s: o for s, o in schemas.items() if s not in current_schemas}
    owners = {s: {"old": current_schemas[s], "new": o} for s, o in schemas.items()
              if s in current_schemas and o is not None and current_schemas[s] != o}  # fmt: skip
    if added:
        changes["schemas_created"] = added
    if owners:
        changes["schema_owners"] = owners
    ext_new = {e: spec["version"] or "default" for e, spec in extensions.items() if e not in current_ext}
    ext_updated = {
        e: {"old": current_ext[e]["version"], "new": spec["version"]}
        for e, spec in extensions.items()
        if e in current_ext and spec["version"] and current_ext[e]["version"] != spec["version"]
    }
    if ext_new:
        changes["extensions_created"] = ext_new
    if ext_updated:
        changes["extensions_updated"] = ext_updated
    return changes


def _database_apply(name, db, wanted, extensions, changes, conn):
    if db is None:
        __salt__["pg_replication.database_create"](name, **wanted, **conn)
    elif "owner" in changes or "connlimit" in changes:
        __salt__["pg_replication.database_alter"](
            name, owner=changes.get("owner", {}).get("new"), connlimit=changes.get("connlimit", {}).get("new"), **conn
        )
    for schema, owner in changes.get("schemas_created", {}).items():
        __salt__["pg_replication.schema_create"](name, schema, owner=owner, **conn)
    for schema, owner in changes.get("schema_owners", {}).items():
        __salt__["pg_replication.schema_owner"](name, schema, owner["new"], **conn)
    for ext in changes.get("extensions_created", {}):
        spec = extensions[ext]
        __salt__["pg_replication.extension_create"](name, ext, version=spec["version"], schema=spec["schema"], **conn)
    for ext, versions in changes.get("extensions_updated", {}).items():
        __salt__["pg_replication.extension_update"](name, ext, versions["new"], **conn)


def database_present(
    name, owner=None, encoding=None, lc_collate=None, lc_ctype=None, template=None, connlimit=-1, extensions=None,
    schemas=None, **kwargs,
):  # fmt: skip
    """
    Ensure a database exists with this owner and connection limit, these extensions (at
    their version, when given) and these schemas (with their owners). Encoding and locale
    are set when it is made; a database made with others fails (PostgreSQL cannot change
    them). Extensions and schemas it has beyond these are left alone.

    extensions
        ``{name: {version: X or None, schema: S or None}}``
    schemas
        ``{name: owner or None}``
    """
    new_ret, change = _state()
    ret = new_ret(name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    wanted = {"owner": owner, "encoding": encoding, "lc_collate": lc_collate, "lc_ctype": lc_ctype,
              "template": template, "connlimit": None if connlimit is None else int(connlimit)}  # fmt: skip
    extensions = {e: dict({"version": None, "schema": None}, **(s or {})) for e, s in (extensions or {}).items()}
    schemas = dict(schemas or {})
    try:
        db = __salt__["pg_replication.database_get"](name, **conn)
        changes = _database_diff(name, db, wanted, extensions, schemas, conn)
        if not changes:
            ret["comment"] = f"Database {name} is in the desired state"
            return ret
        verb = "created" if db is None else "updated"
        return change(
            __opts__, ret, changes, f"Database {name} would be {verb}", f"Database {name} {verb}",
            lambda: _database_apply(name, db, wanted, extensions, changes, conn),
        )  # fmt: skip
    except CommandExecutionError as exc:
        if __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc):
            changes = _database_diff(name, None, wanted, extensions, schemas, conn)
            return __utils__["pg_replication_state.predict"](ret, exc, changes, f"Database {name} would be created")
        return __utils__["pg_replication_state.fail"](ret, exc)


def database_absent(name, **kwargs):
    """
    Ensure a database does not exist (the pillar's ``absent:databases`` lists it).
    """

    def drop(conn):
        act = lambda: __salt__["pg_replication.database_drop"](name, **conn)  # noqa: E731
        return {"database": name, "dropped": True}, act

    return _absent(name, "Database", "pg_replication.database_get", drop, kwargs)


def _absent(name, what, get, drop, kwargs):
    """``what`` ``name`` dropped unless ``get`` finds none; ``drop(conn)`` -> (changes, act),
    or raises to refuse."""
    new_ret, change = _state()
    ret = new_ret(name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    try:
        if __salt__[get](name, **conn) is None:
            ret["comment"] = f"{what} {name} is absent"
            return ret
        changes, act = drop(conn)
        return change(__opts__, ret, changes, f"{what} {name} would be dropped", f"{what} {name} dropped", act)
    except CommandExecutionError as exc:
        return __utils__["pg_replication_state.absent_unless_failed"](__opts__, ret, exc, f"{what} {name}")


def _privileges_diff(wanted, current):
    """``{object: {granted: [...], revoked: [...]}}`` that brings ``current`` to ``wanted``
    on each object; a listed object that does not exist raises."""
    missing = sorted(obj for obj, privs in current.items() if privs is None)
    if missing:
        raise CommandExecutionError(f"not found: {', '.join(missing)}")
    changes = {}
    for obj, privs in sorted(current.items()):
        granted, revoked = sorted(set(wanted) - set(privs)), sorted(set(privs) - set(wanted))
        if granted or revoked:
            changes[obj] = {k: v for k, v in (("granted", granted), ("revoked", revoked)) if v}
    return changes


def _privileges_predicted(role, database, on, schema, default_for, privileges):
    """Test mode, the database (or the role) made by this run: what the real run grants."""
    if default_for is not None:
        return {f"default for {default_for}" + (f" in {schema}" if schema else ""): {"granted": sorted(privileges)}}
    if on in ("database", "schema"):
        return {database if on == "database" else schema: {"granted": sorted(privileges)}} if privileges else {}
    return {}


def privileges_present(name, role, database, on, privileges, schema=None, objects=None, default_for=None, **kwargs):
    """
    Ensure ``role`` holds exactly ``privileges`` on these objects: the database, a schema,
    the tables, sequences or functions of a schema (``objects``: these only), or, with
    ``default_for``, on the objects that role will create. What it holds beyond them there is
    revoked; its privileges elsewhere are left alone.
    """
    new_ret, change = _state()
    ret = new_ret(name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    conn.pop("dbname", None)
    where = {"schema": schema, "default_for": default_for}
    try:
        if __opts__["test"] and __salt__["pg_replication.database_get"](database, **conn) is None:
            changes = _privileges_predicted(role, database, on, schema, default_for, privileges)
            return _privileges_done(ret, changes, role, database, test=True)
        current = __salt__["pg_replication.privileges"](role, database, on, objects=objects, **where, **conn)
        if on == "schema" and not current:
            if not __opts__["test"]:
                raise CommandExecutionError(f"schema {schema} does not exist in {database}")
            current = {schema: []}  # made by this run's database state
        changes = _privileges_diff(privileges, current)
        if not changes:
            return _privileges_done(ret, changes, role, database)

        def act():
            for obj, change_ in changes.items():
                __salt__["pg_replication.privileges_change"](
                    role, database, on, obj, grant=change_.get("granted", ()), revoke=change_.get("revoked", ()),
                    **where, **conn,
                )  # fmt: skip

        return change(
            __opts__, ret, changes, f"Privileges of {role} in {database} would change",
            f"Privileges of {role} in {database} changed", act,
        )  # fmt: skip
    except CommandExecutionError as exc:
        if __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc):
            changes = _privileges_predicted(role, database, on, schema, default_for, privileges)
            return __utils__["pg_replication_state.predict"](ret, exc, changes, f"Privileges of {role} would change")
        return __utils__["pg_replication_state.fail"](ret, f"privileges of {role} in {database} on {on}: {exc}")


def _privileges_done(ret, changes, role, database, test=False):
    if not changes:
        ret["comment"] = f"Privileges of {role} in {database} are in the desired state"
        return ret
    comment = f"Privileges of {role} in {database} would change (the database is made by this run)"
    ret.update(result=None if test else True, changes=changes, comment=comment)
    return ret


def app_role_absent(name, **kwargs):
    """
    Ensure a role does not exist (the pillar's ``absent:roles`` lists it): its privileges
    and default privileges are revoked in every database first. A role that still owns a
    database or objects is not dropped: the state fails and names them.
    """

    def drop(conn):
        deps = __salt__["pg_replication.role_dependencies"](name, **conn)
        if deps["owns"]:
            raise CommandExecutionError(
                f"Role {name} owns objects in: {', '.join(deps['owns'])}; give them to another role first"
            )

        def act():
            for database in deps["privileges_in"]:
                __salt__["pg_replication.role_revoke_all"](name, database, **conn)
            __salt__["pg_replication.role_drop"](name, **conn)

        return {"role": name, "dropped": True, "privileges_revoked_in": deps["privileges_in"]}, act

    return _absent(name, "Role", "pg_replication.role_get", drop, kwargs)
