# SPDX-License-Identifier: Apache-2.0
"""This minion's PostgreSQL connection, shared by every file of the pg_replication execution
module: one psycopg2 connection per loader (a state run), no ``psql`` spawned.

The connection is kept in the execution modules' ``__context__``, which the caller passes
as a plain dict (``context``), with the ``pg_replication.connection`` setting it read
(``configured``). This file's own ``__context__`` would not do: a state run loads the utils
without the modules' context (salt/state.py), and a module's ``__context__`` read from in
here resolves to the utils loader's. Messages never carry a password.

Runs on the minion's Python (3.9 on Debian 11).
"""

import os
import runpy

from salt.exceptions import CommandExecutionError

try:
    import psycopg2
    import psycopg2.extensions
    import psycopg2.extras

    HAS_PSYCOPG2 = True
except ImportError:  # pragma: no cover
    HAS_PSYCOPG2 = False

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
postgres = _sibling("pg_replication_postgres")
unavailable = _sibling("pg_replication_unavailable")

DEFAULT_CONN = {"host": "/var/run/postgresql", "port": 5432, "user": "postgres", "dbname": "postgres"}


def driver_installed():
    """Whether psycopg2 imports in this Python."""
    return HAS_PSYCOPG2


def require_driver():
    """Raise the "not there yet" error unless psycopg2 imports (the formula installs it)."""
    if not HAS_PSYCOPG2:
        raise unavailable_error("pg_replication: psycopg2 is not installed in the Python that runs Salt")


def unavailable_error(message):
    """The error for what does not exist yet (a state predicts instead, in test mode)."""
    return unavailable.error(message)


def pg_message(exc):
    """PostgreSQL's own message of a psycopg2 error."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return primary or str(exc).strip()


def _conn_args(configured, kwargs):
    args = dict(DEFAULT_CONN)
    args.update(configured or {})
    args.update(postgres.conn_kwargs(kwargs))
    return args


def _connection(context, configured, kwargs):
    args = _conn_args(configured, kwargs)
    key = "pg_replication.conn:{host}:{port}:{user}:{dbname}".format(**args)
    conn = context.get(key)
    require_driver()
    if conn is None or conn.closed:
        try:
            # The formula's own writes (roles, grants) commit locally: a highstate never waits
            # for a synchronous standby that is not there yet.
            conn = psycopg2.connect(
                connect_timeout=10,
                application_name="salt-pg_replication",
                options="-c synchronous_commit=local",
                **args,
            )
        except psycopg2.Error as exc:
            raise unavailable_error(f"cannot connect to PostgreSQL at {args['host']}:{args['port']}: {exc}") from exc
        conn.autocommit = True
        context[key] = conn
    return conn, key


def close_database(context, dbname):
    """Close the connections cached in ``context`` to database ``dbname`` (before it is
    dropped: PostgreSQL refuses while anyone is connected)."""
    for key in [k for k in context if str(k).startswith("pg_replication.conn:") and str(k).endswith(f":{dbname}")]:
        conn = context.pop(key)
        if not conn.closed:
            conn.close()


def query(context, configured, statement, params=None, fetch=True, **kwargs):
    """Run one statement on the connection cached in ``context`` (the execution modules'
    ``__context__``); reconnect once if the server went away. Rows as dicts."""
    for attempt in (1, 2):
        conn, key = _connection(context, configured, kwargs)
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(statement, params)
                return [dict(row) for row in cur.fetchall()] if fetch else None
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            context.pop(key, None)
            if attempt == 2 or not conn.closed:
                raise CommandExecutionError(pg_message(exc)) from exc
        except psycopg2.Error as exc:
            raise CommandExecutionError(pg_message(exc)) from exc
    return None  # pragma: no cover


def encrypt_password(context, configured, password, role, **kwargs):
    """A new SCRAM-SHA-256 verifier of ``password`` for ``role``, made by libpq on the
    connection cached in ``context`` (PQencryptPasswordConn: its salt, and on PostgreSQL 16+
    the server's ``scram_iterations``). SCRAM whatever the server's ``password_encryption``:
    the formula never stores md5. The password stays in this process; the verifier is what
    goes into the SQL. Needs psycopg2 2.8+ built with libpq 10+."""
    conn, _key = _connection(context, configured, kwargs)
    encrypt = getattr(psycopg2.extensions, "encrypt_password", None)
    if encrypt is None:
        raise CommandExecutionError(
            f"psycopg2 {psycopg2.__version__} cannot make SCRAM verifiers: it needs psycopg2 2.8 or later"
        )
    try:
        return encrypt(password, role, conn, "scram-sha-256")
    except psycopg2.Error as exc:
        # NotSupportedError: psycopg2 built with libpq < 10. Neither message holds the password.
        raise CommandExecutionError(f"libpq cannot make a SCRAM verifier: {pg_message(exc)}") from exc


def server_version(context, configured, **kwargs):
    """The server's ``server_version_num`` (e.g. 150004)."""
    return int(query(context, configured, "SHOW server_version_num", **kwargs)[0]["server_version_num"])
