# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: roles (attributes, memberships, SCRAM-SHA-256
passwords: new verifiers made by libpq on this minion, never returned or logged) and function
privileges. Part of ``pg_replication`` (see pg_replication.py).
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

__virtualname__ = "pg_replication"


def __virtual__():
    # One of the files of the pg_replication module (Salt merges the functions of files
    # that share a virtual name); loads without psycopg2, like pg_replication.py.
    return __virtualname__


# Role attributes: state argument -> pg_roles column and the (ON, OFF) keywords.
ROLE_ATTRS = {
    "superuser": ("rolsuper", "SUPERUSER", "NOSUPERUSER"),
    "createdb": ("rolcreatedb", "CREATEDB", "NOCREATEDB"),
    "createrole": ("rolcreaterole", "CREATEROLE", "NOCREATEROLE"),
    "inherit": ("rolinherit", "INHERIT", "NOINHERIT"),
    "login": ("rolcanlogin", "LOGIN", "NOLOGIN"),
    "replication": ("rolreplication", "REPLICATION", "NOREPLICATION"),
    "bypassrls": ("rolbypassrls", "BYPASSRLS", "NOBYPASSRLS"),
}


def role_get(name, password=None, **kwargs):
    """
    Return a role's attributes, connection limit, memberships and whether it has a
    password (never the password or its verifier), or None if it does not exist. With
    ``password``: also ``password_matches``, whether the stored SCRAM verifier is one of it
    (recomputed with the stored salt and iteration count; an md5 or missing password never
    matches), from the same query.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_get replicator
    """
    rows = _query(
        "SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolinherit, r.rolcanlogin,"
        " r.rolreplication, r.rolbypassrls, r.rolconnlimit, a.rolpassword IS NOT NULL AS has_password,"
        # the verifier only when it is to be compared: never read for nothing
        " CASE WHEN %s THEN a.rolpassword END AS verifier,"
        " ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        "       WHERE m.member = r.oid ORDER BY 1) AS groups"
        " FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname = %s",
        (password is not None, name),
        **kwargs,
    )
    if not rows:
        return None
    row = rows[0]
    role = {attr: row[col] for attr, (col, _on, _off) in ROLE_ATTRS.items()}
    role.update(connlimit=row["rolconnlimit"], has_password=row["has_password"], groups=list(row["groups"]))
    if password is not None:
        role["password_matches"] = __utils__["pg_replication_scram.matches"](password, row["verifier"])
    return role


def role_password_matches(name, password, **kwargs):
    """
    True if the role's stored SCRAM verifier is one of ``password`` (recomputed with the
    stored salt and iteration count). An md5 or missing password never matches.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_password_matches replicator 'secret'
    """
    role = role_get(name, password=password, **kwargs)
    if role is None:
        raise CommandExecutionError(f"role {name!r} does not exist")
    return role["password_matches"]


def role_valid_until_matches(name, valid_until, **kwargs):
    """
    True if the role's VALID UNTIL is ``valid_until`` (a timestamp as PostgreSQL reads it,
    or ``infinity``), compared by the server.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_valid_until_matches otus '2027-01-01'
    """
    rows = _query(
        "SELECT rolvaliduntil IS NOT DISTINCT FROM %s::timestamptz AS same FROM pg_roles WHERE rolname = %s",
        (str(valid_until), name),
        **kwargs,
    )
    return bool(rows and rows[0]["same"])


def _role_options(name, attrs, password, connlimit, kwargs):
    opts = []
    valid_until = kwargs.pop("valid_until", None)
    if valid_until is not None:
        opts.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(str(valid_until))))
    for attr, value in attrs.items():
        if value is None:
            continue
        if attr not in ROLE_ATTRS:
            raise SaltInvocationError(f"unknown role attribute {attr!r}")
        opts.append(sql.SQL(ROLE_ATTRS[attr][1] if value else ROLE_ATTRS[attr][2]))
    if connlimit is not None:
        opts.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(connlimit))))
    if password is not None:
        verifier = _encrypt_password(name, password, **kwargs)
        opts.append(sql.SQL("PASSWORD {}").format(sql.Literal(verifier)))
    return sql.SQL(" ").join(opts)


def role_create(name, password=None, connlimit=None, groups=None, **kwargs):
    """
    Create a role. Attributes are keyword arguments (login, replication, superuser,
    createdb, createrole, inherit, bypassrls); the password is stored as a SCRAM-SHA-256
    verifier that libpq makes here (the plain password never reaches the server).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_create replicator password='secret' login=True replication=True
    """
    attrs = {k: kwargs.pop(k) for k in list(kwargs) if k in ROLE_ATTRS}
    _query(
        sql.SQL("CREATE ROLE {} WITH {}").format(
            sql.Identifier(name), _role_options(name, attrs, password, connlimit, kwargs)
        ),
        fetch=False,
        **kwargs,
    )
    for group in groups or ():
        role_grant(group, name, **kwargs)
    return True


def role_alter(name, password=None, connlimit=None, **kwargs):
    """
    Change a role's attributes, connection limit or password (as a SCRAM verifier that
    libpq makes here).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_alter replicator createdb=False password='new secret'
    """
    attrs = {k: kwargs.pop(k) for k in list(kwargs) if k in ROLE_ATTRS}
    options = _role_options(name, attrs, password, connlimit, kwargs)
    if options.seq:
        _query(sql.SQL("ALTER ROLE {} WITH {}").format(sql.Identifier(name), options), fetch=False, **kwargs)
    return True


def role_drop(name, **kwargs):
    """
    Drop a role.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_drop old_role
    """
    _query(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)), fetch=False, **kwargs)
    return True


def role_grant(group, name, **kwargs):
    """
    Make role ``name`` a member of ``group`` (e.g. pg_read_all_settings): a role that
    inherits (the default) then has the group's privileges.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_grant pg_read_all_settings barman
    """
    return _membership("GRANT {} TO {}", group, name, **kwargs)


def role_revoke(group, name, **kwargs):
    """
    Remove role ``name`` from ``group``.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_revoke pg_read_all_settings barman
    """
    return _membership("REVOKE {} FROM {}", group, name, **kwargs)


def _membership(statement, group, name, **kwargs):
    """Run a GRANT or REVOKE ``statement`` of ``group`` to or from role ``name``."""
    _query(sql.SQL(statement).format(sql.Identifier(group), sql.Identifier(name)), fetch=False, **kwargs)
    return True


def function_privileges(name, functions, **kwargs):
    """
    Map each function signature (e.g. ``pg_backup_start(text, boolean)``) to whether role
    ``name`` may EXECUTE it. A function this server lacks maps to None.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.function_privileges barman '["pg_switch_wal()"]'
    """
    out = {}
    for signature in functions:
        rows = _query(
            "SELECT has_function_privilege(%s, p.oid, 'EXECUTE') AS granted"
            " FROM pg_proc p WHERE p.oid = to_regprocedure(%s)",
            (name, signature),
            **kwargs,
        )
        out[signature] = rows[0]["granted"] if rows else None
    return out


def function_grant(name, signature, **kwargs):
    """
    GRANT EXECUTE on one function (given by its signature) to a role.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.function_grant barman 'pg_switch_wal()'
    """
    rows = _query("SELECT to_regprocedure(%s)::oid AS oid", (signature,), **kwargs)
    if not rows or rows[0]["oid"] is None:
        raise CommandExecutionError(f"function {signature!r} does not exist on this server")
    # regprocedure's text form is the server's own quoted, schema-qualified signature.
    canonical = _query("SELECT %s::oid::regprocedure::text AS sig", (rows[0]["oid"],), **kwargs)[0]["sig"]
    _query(
        sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(canonical), sql.Identifier(name)),
        fetch=False,
        **kwargs,
    )
    return True


def _encrypt_password(name, password, **kwargs):
    """A new SCRAM verifier of ``password`` from libpq, on the connection the statement
    that stores it will run on (pg_replication_connection.encrypt_password)."""
    configured = __salt__["config.option"]("pg_replication.connection", {})
    return __utils__["pg_replication_connection.encrypt_password"](
        __context__.value(), configured, str(password), name, **kwargs
    )


def _query(statement, *args, **kwargs):
    """pg_replication_connection.query with this loader's __context__ (as its dict) and settings."""
    configured = __salt__["config.option"]("pg_replication.connection", {})
    return __utils__["pg_replication_connection.query"](__context__.value(), configured, statement, *args, **kwargs)
