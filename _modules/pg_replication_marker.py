# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: the backup marker table on the primary
(``pg_replication:barman:drill``). Before each backup of this cluster's Barman server, the
backup host's pre_backup_script writes a row in it, as the barman role; a restore drill counts
them in the restored copy (``_utils/pg_replication_drill.py``). Part of ``pg_replication``
(see pg_replication.py). Names go into SQL through psycopg2's ``sql.Identifier``.
"""

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - the formula installs it; the module loads without
    sql = None

__virtualname__ = "pg_replication"


def __virtual__():
    """A file of the pg_replication module (with pg_replication.py and the others)."""
    return __virtualname__


def _names():
    """The table's schema, name and the barman role's privileges (pg_replication_drill.marker)."""
    return __utils__["pg_replication_drill.marker"]()


def backup_marker_status(role, **kwargs):
    """
    The backup marker table: ``{"table": bool, "missing_privileges": [...]}``, the privileges
    ``role`` lacks on it (USAGE on its schema, SELECT and INSERT on it).

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.backup_marker_status barman
    """
    names = _names()
    schema, qualified = names["schema"], f"{names['schema']}.{names['table']}"
    (row,) = _query("SELECT to_regclass(%s) IS NOT NULL AS present", (qualified,), **kwargs)
    if not row["present"]:
        return {"table": False, "missing_privileges": ["USAGE", *names["privileges"]]}
    checks = [("USAGE", "has_schema_privilege(%(role)s, %(schema)s, 'USAGE')")]
    checks += [(p, f"has_table_privilege(%(role)s, %(table)s, '{p}')") for p in names["privileges"]]
    (granted,) = _query(
        "SELECT " + ", ".join(f"{check} AS has_{name.lower()}" for name, check in checks),
        {"role": role, "schema": schema, "table": qualified},
        **kwargs,
    )
    return {"table": True, "missing_privileges": [name for name, _ in checks if not granted[f"has_{name.lower()}"]]}


def backup_marker_create(role, **kwargs):
    """
    Create the backup marker table if it is missing (in its own schema, owned by the
    connecting superuser) and grant ``role`` USAGE on the schema, SELECT and INSERT on the
    table: nothing else (no UPDATE, DELETE or TRUNCATE).

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.backup_marker_create barman
    """
    names = _names()
    schema, grantee = sql.Identifier(names["schema"]), sql.Identifier(role)
    table = sql.Identifier(names["schema"], names["table"])
    statements = [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " server text NOT NULL, backup_id text NOT NULL, written_at timestamptz NOT NULL DEFAULT now(),"
            " UNIQUE (server, backup_id))"
        ).format(table),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, grantee),
        sql.SQL("GRANT {} ON {} TO {}").format(
            sql.SQL(", ").join(sql.SQL(p) for p in names["privileges"]), table, grantee
        ),
    ]
    for statement in statements:
        _query(statement, fetch=False, **kwargs)
    return True


def _query(statement, *args, **kwargs):
    """pg_replication_connection.query with this loader's __context__ (as its dict) and settings."""
    configured = __salt__["config.option"]("pg_replication.connection", {})
    return __utils__["pg_replication_connection.query"](__context__.value(), configured, statement, *args, **kwargs)
