# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: application objects (databases with their
extensions and schemas, privileges on databases, schemas, tables, sequences, functions and
default privileges, roles leaving with their privileges). Part of ``pg_replication`` (see
pg_replication.py). Every name goes into SQL through psycopg2's ``sql.Identifier``.
"""

from salt.exceptions import SaltInvocationError

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - the formula installs it; the module loads without
    sql = None

# How GRANT names each kind of object (the privileges of each: pg_replication_apps.privileges_of).
GRANT_KIND = {"database": "DATABASE", "schema": "SCHEMA", "tables": "TABLE", "sequences": "SEQUENCE",
              "functions": "FUNCTION"}  # fmt: skip
# pg_class.relkind of each kind, acldefault's letter, pg_default_acl.defaclobjtype.
RELKINDS = {"tables": ("r", "p", "v", "m", "f"), "sequences": ("S",)}
ACL_LETTER = {"tables": "r", "sequences": "s", "functions": "f"}
DEFAULT_OBJTYPE = {"tables": "r", "sequences": "S", "functions": "f"}
__virtualname__ = "pg_replication"


def __virtual__():
    """A file of the pg_replication module (with pg_replication.py and the others)."""
    return __virtualname__


def database_get(name, **kwargs):
    """
    Return a database's owner, encoding, collation, ctype and connection limit, or None if
    it does not exist.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.database_get otus
    """
    rows = _query(
        "SELECT pg_get_userbyid(datdba) AS owner, pg_encoding_to_char(encoding) AS encoding,"
        " datcollate AS lc_collate, datctype AS lc_ctype, datconnlimit AS connlimit"
        " FROM pg_database WHERE datname = %s",
        (name,),
        **kwargs,
    )
    return rows[0] if rows else None


def database_create(name, owner=None, encoding=None, lc_collate=None, lc_ctype=None, template=None, connlimit=None,
                    **kwargs):  # fmt: skip
    """
    Create a database (its owner, encoding, locale, template and connection limit).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.database_create otus owner=otus encoding=UTF8 lc_collate=C.UTF-8 lc_ctype=C.UTF-8
    """
    options = []
    for keyword, value in (("OWNER", owner), ("TEMPLATE", template)):
        if value is not None:
            options.append(sql.SQL(keyword + " {}").format(sql.Identifier(value)))
    for keyword, value in (("ENCODING", encoding), ("LC_COLLATE", lc_collate), ("LC_CTYPE", lc_ctype)):
        if value is not None:
            options.append(sql.SQL(keyword + " {}").format(sql.Literal(str(value))))
    if connlimit is not None:
        options.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(connlimit))))
    statement = sql.SQL("CREATE DATABASE {} {}").format(sql.Identifier(name), sql.SQL(" ").join(options))
    _query(statement, fetch=False, **kwargs)
    return True


def database_alter(name, owner=None, connlimit=None, **kwargs):
    """
    Change a database's owner or connection limit.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.database_alter otus owner=otus connlimit=50
    """
    if owner is not None:
        _query(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(owner)),
               fetch=False, **kwargs)  # fmt: skip
    if connlimit is not None:
        statement = sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}")
        _query(statement.format(sql.Identifier(name), sql.Literal(int(connlimit))), fetch=False, **kwargs)
    return True


def database_drop(name, **kwargs):
    """
    Drop a database (it fails while anyone is connected to it).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.database_drop old_app
    """
    # The formula's own connections to it (this loader's, another loader's of the same run:
    # extensions, privileges) would keep it from going; nobody else's is touched.
    __utils__["pg_replication_connection.close_database"](__context__.value(), name)
    own = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'salt-pg_replication'"
    _query(f"SELECT pg_terminate_backend(pid) FROM ({own}) AS own", (name,), **kwargs)  # noqa: S608 - constant
    # The poll runs in the utils loader: what it calls is taken from this one first.
    query, context = __utils__["pg_replication_connection.query"], __context__.value()
    configured = __salt__["config.option"]("pg_replication.connection", {})
    __utils__["pg_replication_poll.until"](lambda: not query(context, configured, own, (name,), **kwargs), 10, 0.1)
    _query(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)), fetch=False, **kwargs)
    return True


def extensions(dbname, **kwargs):
    """
    Map each extension installed in database ``dbname`` to its version and schema.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.extensions otus
    """
    rows = _query(
        "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace",
        dbname=dbname,
        **kwargs,
    )
    return {r["extname"]: {"version": r["extversion"], "schema": r["nspname"]} for r in rows}


def extension_create(dbname, name, version=None, schema=None, **kwargs):
    """
    Install an extension (a version of it, in a schema) in database ``dbname``.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.extension_create otus pg_trgm version=1.6
    """
    statement = sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(name))
    if schema is not None:
        statement += sql.SQL(" SCHEMA {}").format(sql.Identifier(schema))
    if version is not None:
        statement += sql.SQL(" VERSION {}").format(sql.Literal(str(version)))
    _query(statement, fetch=False, dbname=dbname, **kwargs)
    return True


def extension_update(dbname, name, version, **kwargs):
    """
    Update (or downgrade, where a path exists) an extension of database ``dbname`` to ``version``.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.extension_update otus pg_trgm 1.6
    """
    _query(sql.SQL("ALTER EXTENSION {} UPDATE TO {}").format(sql.Identifier(name), sql.Literal(str(version))),
           fetch=False, dbname=dbname, **kwargs)  # fmt: skip
    return True


def schemas(dbname, **kwargs):
    """
    Map each schema of database ``dbname`` (PostgreSQL's own left out) to its owner.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.schemas otus
    """
    rows = _query(
        "SELECT nspname, pg_get_userbyid(nspowner) AS owner FROM pg_namespace"
        " WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'",
        dbname=dbname,
        **kwargs,
    )
    return {r["nspname"]: r["owner"] for r in rows}


def schema_create(dbname, name, owner=None, **kwargs):
    """
    Create a schema in database ``dbname``, owned by ``owner``.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.schema_create otus app owner=otus
    """
    statement = sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name))
    if owner is not None:
        statement += sql.SQL(" AUTHORIZATION {}").format(sql.Identifier(owner))
    _query(statement, fetch=False, dbname=dbname, **kwargs)
    return True


def schema_owner(dbname, name, owner, **kwargs):
    """
    Give a schema of database ``dbname`` to ``owner``.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.schema_owner otus app otus
    """
    _query(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(owner)),
           fetch=False, dbname=dbname, **kwargs)  # fmt: skip
    return True


def privileges(role, database, on, schema=None, objects=None, default_for=None, **kwargs):
    """
    Map each object of a privileges entry to the privileges ``role`` holds on it directly
    (not through a group): the database, the schema, the tables, sequences or functions of
    the schema (``objects`` only, when given; a listed one that is missing maps to None), or
    the default privileges of the objects ``default_for`` creates (in ``schema``, or
    anywhere). ``role`` PUBLIC: what everyone holds.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.privileges otus_ro otus tables schema=public
    """
    if on not in GRANT_KIND:
        raise SaltInvocationError(f"privileges on {on!r}: expected one of {', '.join(GRANT_KIND)}")
    if default_for is not None:
        return _default_privileges(role, on, schema, default_for, database, **kwargs)
    statement, params = _acl_query(on, database, schema, objects, **kwargs)
    rows = _query(statement, (*_grantee_params(role), *params), **_in(database, on), **kwargs)
    out = {r["object"]: sorted(r["privs"]) for r in rows}
    for name in objects or ():
        if not any(label == f"{schema}.{name}" or label.endswith(f".{name}") for label in out):
            out[f"{schema}.{name}"] = None
    return out


def _grantee_params(role):
    """The parameters of :func:`_privs_of`'s grantee: PUBLIC is oid 0; a role that does not
    exist (yet) matches nothing, so it holds nothing."""
    return (role == "PUBLIC", role)


def _privs_of(acl):
    """SQL: the privilege names ``acl`` (an expression) gives the grantee (parameters:
    :func:`_grantee_params`), its oid looked up in the same statement."""
    grantee = "CASE WHEN %s THEN 0::oid ELSE (SELECT oid FROM pg_roles WHERE rolname = %s) END"
    return f"ARRAY(SELECT a.privilege_type FROM aclexplode({acl}) a WHERE a.grantee = {grantee}) AS privs"  # noqa: S608


def _acl_query(on, database, schema, objects, **kwargs):
    """The statement listing ``(object, privs)`` of an entry, and its parameters after the
    grantee's oid."""
    if on == "database":
        acl = _privs_of("coalesce(datacl, acldefault('d', datdba))")
        return f"SELECT datname AS object, {acl} FROM pg_database WHERE datname = %s", (database,)  # noqa: S608
    if on == "schema":
        acl = _privs_of("coalesce(nspacl, acldefault('n', nspowner))")
        return f"SELECT nspname AS object, {acl} FROM pg_namespace WHERE nspname = %s", (schema,)  # noqa: S608
    named = " AND {} = ANY(%s)" if objects else ""
    if on == "functions":
        acl = _privs_of("coalesce(p.proacl, acldefault('f', p.proowner))")
        kind = "p.prokind = 'f'" if _version(**kwargs) >= 110000 else "NOT p.proisagg"
        named = named.format("p.oid::regprocedure::text")
        labels = [_function_label(schema, signature, database, **kwargs) for signature in objects or ()]
        return (
            f"SELECT p.oid::regprocedure::text AS object, {acl} FROM pg_proc p"  # noqa: S608 - constants
            f" JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s AND {kind}{named}",
            (schema, *([labels] if objects else [])),
        )
    acl = _privs_of(f"coalesce(c.relacl, acldefault('{ACL_LETTER[on]}', c.relowner))")
    named = named.format("c.relname")
    return (
        f"SELECT format('%%I.%%I', n.nspname, c.relname) AS object, {acl} FROM pg_class c"  # noqa: S608 - constants
        f" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = ANY(%s){named}",
        (schema, list(RELKINDS[on]), *([list(objects)] if objects else [])),
    )


def _function_label(schema, signature, database, **kwargs):
    """A listed function's signature as the server prints it (regprocedure), or the
    signature itself when the function does not exist."""
    rows = _query(
        "SELECT to_regprocedure(quote_ident(%s) || '.' || %s)::text AS label", (schema, signature), dbname=database,
        **kwargs,
    )  # fmt: skip
    return rows[0]["label"] or signature


def _default_privileges(role, on, schema, default_for, database, **kwargs):
    where = (
        "d.defaclnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %s)" if schema else "d.defaclnamespace = 0"
    )
    rows = _query(
        f"SELECT {_privs_of('d.defaclacl')} FROM pg_default_acl d"  # noqa: S608 - constants
        f" WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %s) AND d.defaclobjtype = %s AND {where}",
        (*_grantee_params(role), default_for, DEFAULT_OBJTYPE[on], *([schema] if schema else [])),
        dbname=database,
        **kwargs,
    )
    label = f"default for {default_for}" + (f" in {schema}" if schema else "")
    return {label: sorted(rows[0]["privs"]) if rows else []}


def privileges_change(role, database, on, obj, grant=(), revoke=(), schema=None, default_for=None, **kwargs):
    """
    GRANT ``grant`` and REVOKE ``revoke`` (privilege names) on one object of a privileges
    entry (as :func:`privileges` names it) to or from ``role``; with ``default_for``, the
    default privileges of the objects that role creates.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.privileges_change otus_ro otus tables public.orders grant='[SELECT]'
    """
    for names in (grant, revoke):
        unknown = [p for p in names if p not in __utils__["pg_replication_apps.privileges_of"](on)]
        if unknown:
            raise SaltInvocationError(f"not privileges on {on}: {', '.join(unknown)}")
    grantee = sql.SQL("PUBLIC") if role == "PUBLIC" else sql.Identifier(role)
    target = _target(on, database, obj, schema, default_for)
    for verb, names, direction in (("GRANT", grant, "TO"), ("REVOKE", revoke, "FROM")):
        if not names:
            continue
        statement = sql.SQL(verb + " {} ON {} " + direction + " {}").format(
            sql.SQL(", ").join(sql.SQL(p) for p in sorted(names)), target, grantee
        )
        if default_for is not None:
            prefix = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} ").format(sql.Identifier(default_for))
            if schema:
                prefix += sql.SQL("IN SCHEMA {} ").format(sql.Identifier(schema))
            statement = prefix + statement
        _query(statement, fetch=False, **_in(database, on if default_for is None else "default"), **kwargs)
    return True


def _in(database, on):
    """The connection keywords of a statement on ``on`` objects of ``database``: a
    database's own privileges are read and granted from the default connection."""
    return {} if on == "database" else {"dbname": database}


def _target(on, database, obj, schema, default_for):
    if default_for is not None:
        return sql.SQL(on.upper())
    if on == "database":
        return sql.SQL("DATABASE {}").format(sql.Identifier(database))
    if on == "schema":
        return sql.SQL("SCHEMA {}").format(sql.Identifier(schema))
    if on == "functions":
        # The server's own quoted, schema-qualified signature (regprocedure's text form).
        return sql.SQL("FUNCTION ") + sql.SQL(obj)
    relation = obj.split(".", 1)[1] if obj.startswith(f"{schema}.") else obj
    return sql.SQL(GRANT_KIND[on] + " {}").format(sql.Identifier(schema, relation.strip('"')))


def role_dependencies(name, **kwargs):
    """
    What keeps role ``name`` from being dropped: the objects it owns (databases, or objects
    in any database) and the databases where it holds privileges.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_dependencies old_role
    """
    rows = _query(
        "SELECT s.deptype, coalesce(d.datname, '') AS datname, count(*) AS n FROM pg_shdepend s"
        " LEFT JOIN pg_database d ON d.oid = s.dbid"
        " WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)"
        " GROUP BY 1, 2",
        (name,),
        **kwargs,
    )
    owns = sorted(r["datname"] or "(shared objects)" for r in rows if r["deptype"] == "o")
    owned_databases = _query(
        "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (name,),
        **kwargs,
    )
    granted = sorted(r["datname"] for r in rows if r["deptype"] in ("a", "i") and r["datname"])
    return {"owns": sorted(set(owns) | {f"database {r['datname']}" for r in owned_databases}), "privileges_in": granted}


def role_revoke_all(name, dbname, **kwargs):
    """
    Revoke every privilege and default privilege of role ``name`` in database ``dbname``
    (DROP OWNED BY, for a role that owns nothing there).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_revoke_all old_role otus
    """
    _query(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)), fetch=False, dbname=dbname, **kwargs)
    return True


def _version(**kwargs):
    configured = __salt__["config.option"]("pg_replication.connection", {})
    conn = {k: v for k, v in kwargs.items() if k != "dbname"}
    return __utils__["pg_replication_connection.server_version"](__context__.value(), configured, **conn)


def _query(statement, *args, **kwargs):
    """pg_replication_connection.query with this loader's __context__ (as its dict) and settings."""
    configured = __salt__["config.option"]("pg_replication.connection", {})
    return __utils__["pg_replication_connection.query"](__context__.value(), configured, statement, *args, **kwargs)
