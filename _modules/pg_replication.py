"""PostgreSQL replication management: slots, roles with SCRAM passwords, server status and
standby bootstrap helpers.

Every query goes through one psycopg2 connection per loader (a state run), cached in
``__context__``; no ``psql`` is spawned. Identifiers are quoted with ``psycopg2.sql``.
Passwords are turned into SCRAM-SHA-256 verifiers on the minion and never returned or logged.

Connection settings come from keyword arguments (``host``, ``port``, ``user``, ``dbname``),
else from the ``pg_replication.connection`` config/pillar dictionary, else the local socket
as ``postgres``.

:depends: psycopg2
"""

import copy
import json
import logging
import os
import struct
import sys

import salt.utils.files
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import psycopg2
    import psycopg2.extras
    from psycopg2 import sql

    HAS_PSYCOPG2 = True
except ImportError:  # pragma: no cover
    HAS_PSYCOPG2 = False

log = logging.getLogger(__name__)

__virtualname__ = "pg_replication"

DEFAULT_CONN = {"host": "/var/run/postgresql", "port": 5432, "user": "postgres", "dbname": "postgres"}
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


def __virtual__():
    # Loads without psycopg2 so that ``plan`` (pure) renders the formula on a fresh minion;
    # the formula then installs psycopg2 into Salt's Python before any query runs.
    return __virtualname__


def _unavailable_error(message):
    """The error for what does not exist yet (a state predicts instead, in test mode)."""
    return __utils__["pg_replication_unavailable.error"](message)


def driver_installed(python=None):
    """
    Whether psycopg2 imports in the Python that runs this minion (``python``, default
    ``sys.executable``: another interpreter's answer is not known here, so False).
    psycopg2.sls asks at render: an in-process answer, where an ``unless`` on the install
    state costs about a second of every re-apply (the state system's look-up of
    ``pip.mod_run_check`` loads every execution module).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.driver_installed
    """
    return HAS_PSYCOPG2 and python in (None, sys.executable)


# --------------------------------------------------------------------------- connection


def _conn_args(kwargs):
    args = dict(DEFAULT_CONN)
    args.update(__salt__["config.option"]("pg_replication.connection", {}) or {})
    args.update(__utils__["pg_replication_postgres.conn_kwargs"](kwargs))
    return args


def _connection(kwargs):
    args = _conn_args(kwargs)
    key = "pg_replication.conn:{host}:{port}:{user}:{dbname}".format(**args)
    conn = __context__.get(key)
    if not HAS_PSYCOPG2:
        raise _unavailable_error("pg_replication: psycopg2 is not installed in the Python that runs Salt")
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
            raise _unavailable_error(f"cannot connect to PostgreSQL at {args['host']}:{args['port']}: {exc}") from exc
        conn.autocommit = True
        __context__[key] = conn
    return conn, key


def _query(query, params=None, fetch=True, **kwargs):
    """Run one statement on the cached connection; reconnect once if the server went away."""
    for attempt in (1, 2):
        conn, key = _connection(kwargs)
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(query, params)
                return [dict(row) for row in cur.fetchall()] if fetch else None
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            __context__.pop(key, None)
            if attempt == 2 or not conn.closed:
                raise CommandExecutionError(_pg_message(exc)) from exc
        except psycopg2.Error as exc:
            raise CommandExecutionError(_pg_message(exc)) from exc
    return None  # pragma: no cover


def _pg_message(exc):
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return primary or str(exc).strip()


def _server_version(**kwargs):
    return int(_query("SHOW server_version_num", **kwargs)[0]["server_version_num"])


# --------------------------------------------------------------------------- plan


def plan(config, minion_id=None, secrets=False, grains=None, remember_for=None):
    """
    Validate the ``pg_replication`` configuration and return this minion's plan
    (role, primary, standbys, backup hosts, sized settings, pg_hba lines).
    Raises CommandExecutionError naming the pillar keys at fault. Passwords are replaced by
    ``********`` unless ``secrets`` is true (map.jinja asks for them; a job's return, kept
    in the master's job cache, should not hold them). ``grains`` (default: the minion's)
    gives ``os`` and ``osmajorrelease`` (a PostgreSQL version that release does not ship is
    refused unless ``upstream_repo`` is set) and ``init`` (systemd: the cluster's own unit).
    ``remember_for`` (what map.jinja's result depends on: its pillar and the grains it and
    the plan read): keep the plan for :func:`remembered_plan`.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.plan "$(salt-call --out=json pillar.get pg_replication)"
    """
    try:
        if grains is None:
            grains = {k: __grains__.get(k) for k in ("os", "osmajorrelease", "init")}
        result = __utils__["pg_replication_plan.build"](
            config, minion_id or __grains__["id"], grains, mine=_mine_addresses(config)
        )
    except ValueError as exc:
        raise CommandExecutionError(str(exc)) from exc
    result = result if secrets else __utils__["pg_replication_plan.redact"](result)
    if remember_for is not None:
        # A copy: the key must not follow later changes made in place to the pillar or grains.
        __context__[_REMEMBERED_PLAN] = (copy.deepcopy(remember_for), result)
    return result


# Where map.jinja's plan is kept for the rest of a state run. A state run's loader gets a
# copy of the minion's __context__ (salt/modules/state.py), so what is kept here ends with
# the run: the next run, and any other job, builds its own plan.
_REMEMBERED_PLAN = "pg_replication.remembered_plan"


def remembered_plan(key):
    """
    The plan map.jinja built earlier in this state run for the same ``key`` (its pillar and
    the grains it and the plan read: ``{"pillar": ..., "grains": [...]}``), or None. Every
    SLS file and template of the formula imports map.jinja; the first builds the plan
    (defaults.yaml, osfamilymap.yaml, the pillar, validation), the others take it from
    here. Outside a state run it is always None.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.remembered_plan '{"pillar": {}, "grains": []}'
    """
    kept = __context__.get(_REMEMBERED_PLAN)
    if kept and kept[0] == key:
        return kept[1]
    return None


def _mine_addresses(config):
    """The Salt mine's addresses for the hosts the pillar gives none (asked only then)."""
    request = __utils__["pg_replication_plan.mine_request"](config)
    if not request:
        return {}
    minion_ids, function = request
    return __salt__["mine.get"](",".join(minion_ids), function, tgt_type="list") or {}


# --------------------------------------------------------------------------- slots

# The server's end of WAL: a standby's received position, a primary's current one.
WAL_END_SQL = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END"


def slots(**kwargs):
    """
    List replication slots with activity, restart LSN and the WAL bytes each retains.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.slots
    """
    wal_status = ", wal_status" if _server_version(**kwargs) >= 130000 else ""
    rows = _query(
        "SELECT slot_name, slot_type, active, active_pid, restart_lsn::text AS restart_lsn"  # noqa: S608 - constant
        + wal_status
        + f", pg_wal_lsn_diff({WAL_END_SQL}, restart_lsn)::bigint AS retained_bytes"
        " FROM pg_replication_slots ORDER BY slot_name",
        **kwargs,
    )
    return {row.pop("slot_name"): row for row in rows}


def slot_clients(**kwargs):
    """
    Who streams from each active slot: ``{slot: "application_name@client_addr"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.slot_clients
    """
    rows = _query(
        "SELECT s.slot_name, r.application_name || '@' || COALESCE(host(r.client_addr), 'local') AS client"
        " FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid ORDER BY 1",
        **kwargs,
    )
    return {row["slot_name"]: row["client"] for row in rows}


def slots_record(path):
    """
    The slots this formula made on this server, as recorded in ``path`` (a JSON list; empty
    if there is no record yet).

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.slots_record /var/lib/postgresql/.pg_replication-slots-15-main.json
    """
    try:
        with salt.utils.files.fopen(path) as fh:
            return sorted(json.load(fh))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"cannot read the slot record {path}: {exc}") from exc


def slot_create(name, reserve_wal=True, **kwargs):
    """
    Create a physical replication slot (reserving WAL immediately by default).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.slot_create standby_slot
    """
    _query("SELECT pg_create_physical_replication_slot(%s, %s)", (name, bool(reserve_wal)), fetch=False, **kwargs)
    return True


def slot_drop(name, force=False, **kwargs):
    """
    Drop a replication slot. An active slot is refused unless ``force=True``, which first
    terminates the walsender using it.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.slot_drop old_slot
    """
    slot = slots(**kwargs).get(name)
    if slot is None:
        raise CommandExecutionError(f"replication slot {name!r} does not exist")
    if slot["active"]:
        if not force:
            raise CommandExecutionError(
                f"replication slot {name!r} is active (pid {slot['active_pid']}); pass force=True to drop it"
            )
        _query("SELECT pg_terminate_backend(%s)", (slot["active_pid"],), **kwargs)
        # Through __salt__: the poll runs this in the utils loader, where this module's own
        # __utils__ is not packed.
        __utils__["pg_replication_poll.until"](
            lambda: not __salt__["pg_replication.slots"](**kwargs).get(name, {}).get("active"), 5, 0.1
        )
    _query("SELECT pg_drop_replication_slot(%s)", (name,), fetch=False, **kwargs)
    return True


# --------------------------------------------------------------------------- roles


def role_get(name, **kwargs):
    """
    Return a role's attributes, connection limit, memberships and whether it has a
    password (never the password or its verifier), or None if it does not exist.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_get replicator
    """
    rows = _query(
        "SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolinherit, r.rolcanlogin,"
        " r.rolreplication, r.rolbypassrls, r.rolconnlimit,"
        " a.rolpassword IS NOT NULL AS has_password,"
        " ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        "       WHERE m.member = r.oid ORDER BY 1) AS groups"
        " FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname = %s",
        (name,),
        **kwargs,
    )
    if not rows:
        return None
    row = rows[0]
    role = {attr: row[col] for attr, (col, _on, _off) in ROLE_ATTRS.items()}
    role.update(connlimit=row["rolconnlimit"], has_password=row["has_password"], groups=list(row["groups"]))
    return role


def role_password_matches(name, password, **kwargs):
    """
    True if the role's stored SCRAM verifier is one of ``password`` (recomputed with the
    stored salt and iteration count). An md5 or missing password never matches.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_password_matches replicator 'secret'
    """
    rows = _query("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,), **kwargs)
    if not rows:
        raise CommandExecutionError(f"role {name!r} does not exist")
    return __utils__["pg_replication_scram.matches"](password, rows[0]["rolpassword"])


def _role_options(attrs, password, connlimit):
    opts = []
    for attr, value in attrs.items():
        if value is None:
            continue
        if attr not in ROLE_ATTRS:
            raise SaltInvocationError(f"unknown role attribute {attr!r}")
        opts.append(sql.SQL(ROLE_ATTRS[attr][1] if value else ROLE_ATTRS[attr][2]))
    if connlimit is not None:
        opts.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(connlimit))))
    if password is not None:
        verifier = __utils__["pg_replication_scram.verifier"](password)
        opts.append(sql.SQL("PASSWORD {}").format(sql.Literal(verifier)))
    return sql.SQL(" ").join(opts)


def role_create(name, password=None, connlimit=None, groups=None, **kwargs):
    """
    Create a role. Attributes are keyword arguments (login, replication, superuser,
    createdb, createrole, inherit, bypassrls); the password is stored as a SCRAM-SHA-256
    verifier computed here.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_create replicator password='secret' login=True replication=True
    """
    attrs = {k: kwargs.pop(k) for k in list(kwargs) if k in ROLE_ATTRS}
    _query(
        sql.SQL("CREATE ROLE {} WITH {}").format(sql.Identifier(name), _role_options(attrs, password, connlimit)),
        fetch=False,
        **kwargs,
    )
    for group in groups or ():
        role_grant(group, name, **kwargs)
    return True


def role_alter(name, password=None, connlimit=None, **kwargs):
    """
    Change a role's attributes, connection limit or password (as a SCRAM verifier).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.role_alter replicator createdb=False password='new secret'
    """
    attrs = {k: kwargs.pop(k) for k in list(kwargs) if k in ROLE_ATTRS}
    options = _role_options(attrs, password, connlimit)
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


# --------------------------------------------------------------------------- status


def in_recovery(**kwargs):
    """
    True if the server is a standby (``pg_is_in_recovery()``).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.in_recovery
    """
    return _query("SELECT pg_is_in_recovery() AS r", **kwargs)[0]["r"]


def status(**kwargs):
    """
    The replication picture of this server as a plain dict: its role (primary/standby) and
    timeline, pg_stat_replication rows with lag, its slots, and on a standby the WAL
    receiver and replay lag in bytes and seconds.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.status
    """
    return _status(position(**kwargs), **kwargs)


def _status(where, **kwargs):
    """status() of a server whose :py:func:`position` is ``where``."""
    standby = where["in_recovery"]
    out = {"role": "standby" if standby else "primary", "timeline": where["timeline"], "slots": slots(**kwargs)}
    out["replication"] = _query(
        "SELECT pid, usename, application_name, client_addr::text AS client_addr, state, sync_state,"  # noqa: S608
        " sent_lsn::text AS sent_lsn, flush_lsn::text AS flush_lsn, replay_lsn::text AS replay_lsn,"
        # WAL-only clients (pg_receivewal, Barman) never replay: their lag is to what they flushed.
        f" pg_wal_lsn_diff({WAL_END_SQL}, COALESCE(replay_lsn, flush_lsn, sent_lsn))::bigint AS lag_bytes,"
        " EXTRACT(EPOCH FROM replay_lag)::float AS lag_seconds"
        " FROM pg_stat_replication ORDER BY application_name, pid",
        **kwargs,
    )
    if standby:
        receiver = _query(
            "SELECT status, sender_host, sender_port, slot_name, received_tli,"
            " flushed_lsn::text AS flushed_lsn FROM pg_stat_wal_receiver",
            **kwargs,
        )
        out["wal_receiver"] = receiver[0] if receiver else None
        out["lag"] = _query(
            "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint AS bytes,"
            " COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)::float AS seconds",
            **kwargs,
        )[0]
    return out


def pending_restart(**kwargs):
    """
    Names of settings changed in the configuration that need a server restart.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.pending_restart
    """
    return sorted(pending_settings(**kwargs))


PENDING_SQL = """
SELECT s.name, s.setting AS running,
       COALESCE((SELECT f.setting FROM pg_file_settings f
                  WHERE f.name = s.name AND f.error IS NULL ORDER BY f.seqno DESC LIMIT 1),
                s.boot_val) AS configured
  FROM pg_settings s WHERE s.pending_restart ORDER BY 1
"""


def pending_settings(**kwargs):
    """
    Settings whose configured value waits for a restart: ``{name: {"running", "configured"}}``
    (a setting no longer in any file returns to its built-in default).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.pending_settings
    """
    return {
        row["name"]: {"running": row["running"], "configured": row["configured"]}
        for row in _query(PENDING_SQL, **kwargs)
    }


def lowered_minimums(**kwargs):
    """
    The hot-standby minimums (max_connections, max_worker_processes, max_wal_senders,
    max_prepared_transactions, max_locks_per_transaction) whose configured value, waiting for
    a restart, is lower than the running one: ``{name: [running, configured]}``. On a
    primary, such a change must restart the primary before its standbys.

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.lowered_minimums
    """
    pending = pending_settings(**kwargs)
    lowered = __utils__["pg_replication_settings.lowered_minimums"](
        {name: p["configured"] for name, p in pending.items()},
        {name: p["running"] for name, p in pending.items()},
    )
    return {name: list(values) for name, values in lowered.items()}


# Restart-only settings: those a postgresql.conf sets (``settings``), and those it set and no
# longer does, which return to their built-in default (boot_val) at the next restart.
# postgresql.auto.conf (ALTER SYSTEM) wins over postgresql.conf: what it sets is not the
# rendered file's to predict (a pending restart for it shows in pending_restart).
UPCOMING_SQL = """
SELECT name, setting, unit, vartype, boot_val FROM pg_settings
 WHERE context = 'postmaster'
   AND (name = ANY(%(names)s) OR (source = 'configuration file' AND sourcefile NOT LIKE %(auto)s))
   AND name NOT IN (SELECT name FROM pg_file_settings WHERE sourcefile LIKE %(auto)s AND error IS NULL)
"""


def restart_values(settings, **kwargs):
    """
    The restart-only settings that a server whose postgresql.conf holds exactly ``settings``
    (``{name: value}``) would run with differently after a restart: ``{name: value}``, the
    value as configured (a setting the file no longer holds: its built-in default). Known
    before the file is written; units, booleans and enums compared as PostgreSQL reads them.
    Settings postgresql.auto.conf sets are left out: ALTER SYSTEM's value wins.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.restart_values '{"shared_buffers": "256MB", "port": 5432}'
    """
    params = {"names": sorted(settings), "auto": "%postgresql.auto.conf"}
    rows = {row["name"]: row for row in _query(UPCOMING_SQL, params, **kwargs)}
    wanted = {name: settings.get(name, row["boot_val"]) for name, row in rows.items()}
    changed = __utils__["pg_replication_settings.differing"](wanted, rows)
    return {name: wanted[name] for name in changed}


def restart_needed(settings, **kwargs):
    """
    Names of the settings :py:func:`restart_values` finds: the restart a configuration
    change will need, known before the file is written.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.restart_needed '{"shared_buffers": "256MB", "port": 5432}'
    """
    return sorted(restart_values(settings, **kwargs))


def primary_minimums(datadir, bin_dir=None):
    """
    On a standby: the values of the settings it needs at least as high as its primary's, as
    the primary last recorded them in the WAL (``pg_controldata``): a restart with lower
    values would stop the standby.

    CLI Example:

    .. code-block:: bash

        salt standby pg_replication.primary_minimums /var/lib/postgresql/15/main
    """
    return __utils__["pg_replication_settings.recorded_minimums"](controldata(datadir, bin_dir))


# --------------------------------------------------------------------------- standby helpers


def datadir_system_identifier(datadir):
    """
    The database system identifier recorded in ``DATADIR/global/pg_control`` (None if the
    directory holds no cluster). Read from the file, so it works with the server down.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.datadir_system_identifier /var/lib/postgresql/15/main
    """
    path = os.path.join(datadir, "global", "pg_control")
    try:
        with open(path, "rb") as fh:
            # ControlFileData starts with the uint64 system_identifier, in host byte order.
            return str(struct.unpack("=Q", fh.read(8))[0])
    except FileNotFoundError:
        return None


def _peer_tls(tls):
    """``tls`` (libpq's sslmode, sslrootcert, channel_binding, or None) as connection options."""
    try:
        return __utils__["pg_replication_tls.peer_options"](tls)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from exc


def _command(bin_dir, name):
    return __utils__["pg_replication_postgres.command"](bin_dir, name)


def _peer_connect(host, port, user, passfile, timeout, replication=False, tls=None):
    """A connection to another server of the cluster as the replication role (its password
    from ``passfile``; with ``tls``, over verified TLS): a physical replication connection,
    or one to the postgres database."""
    if not HAS_PSYCOPG2:
        raise _unavailable_error("pg_replication: psycopg2 is not installed in the Python that runs Salt")
    from psycopg2.extras import PhysicalReplicationConnection  # pylint: disable=import-outside-toplevel

    kind = {"dbname": "replication", "connection_factory": PhysicalReplicationConnection}
    try:
        return psycopg2.connect(
            host=host,
            port=int(port),
            user=user,
            passfile=passfile,
            connect_timeout=int(timeout),
            **_peer_tls(tls),
            **(kind if replication else {"dbname": "postgres"}),
        )
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"cannot reach primary {host}:{port} as {user}: {_pg_message(exc)}") from exc


def primary_system_identifier(host, port=5432, user="replicator", passfile=None, timeout=10, tls=None):
    """
    Ask a primary for its system identifier with IDENTIFY_SYSTEM over a physical replication
    connection as the replication role (authenticated from ``passfile``).

    CLI Example:

    .. code-block:: bash

        salt standby pg_replication.primary_system_identifier 192.168.11.101 passfile=~postgres/.pgpass
    """
    conn = _peer_connect(host, port, user, passfile, timeout, replication=True, tls=tls)
    try:
        with conn.cursor() as cur:
            cur.execute("IDENTIFY_SYSTEM")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def peer_slot(host, slot, port=5432, user="replicator", passfile=None, timeout=10, tls=None):
    """
    One replication slot as the primary at ``host`` sees it (``active``, ``restart_lsn``,
    and from PostgreSQL 13 ``wal_status``: ``lost`` once the WAL it held was removed), or
    None if there is no such slot. Asked as the replication role.

    CLI Example:

    .. code-block:: bash

        salt standby pg_replication.peer_slot 192.168.11.101 standby_slot passfile=/var/lib/postgresql/.pgpass
    """
    conn = _peer_connect(host, port, user, passfile, timeout, tls=tls)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_jsonb(s) FROM pg_replication_slots s WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            return row[0] if row else None
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"{host}:{port}: {_pg_message(exc)}") from exc
    finally:
        conn.close()


def peer_slot_renew(host, slot, port=5432, user="replicator", passfile=None, timeout=10, tls=None):
    """
    Drop ``slot`` on the primary at ``host`` if it exists and create it again, reserving WAL
    from now on, over a replication connection as the replication role: what a standby
    whose slot lost its WAL needs before a new base backup. An active slot is refused.

    CLI Example:

    .. code-block:: bash

        salt standby pg_replication.peer_slot_renew 192.168.11.101 standby_slot passfile=/var/lib/postgresql/.pgpass
    """
    current = peer_slot(host, slot, port=port, user=user, passfile=passfile, timeout=timeout, tls=tls)
    if current and current.get("active"):
        raise CommandExecutionError(f"slot {slot!r} on {host} is in use (pid {current.get('active_pid')})")
    conn = _peer_connect(host, port, user, passfile, timeout, replication=True, tls=tls)
    try:
        with conn.cursor() as cur:
            name = sql.Identifier(slot).as_string(conn)
            if current:
                cur.execute(f"DROP_REPLICATION_SLOT {name}")
            cur.execute(f"CREATE_REPLICATION_SLOT {name} PHYSICAL RESERVE_WAL")
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"cannot renew slot {slot!r} on {host}: {_pg_message(exc)}") from exc
    finally:
        conn.close()
    return True


def basebackup(
    datadir, host, slot, port=5432, user="replicator", passfile=None, bin_dir=None, runas="postgres", tls=None
):
    """
    Copy a primary into the empty ``datadir`` with ``pg_basebackup -X stream`` over the
    replication role and slot. The password comes from ``passfile``, never the command line.
    ``tls``: libpq's ``sslmode``, ``sslrootcert`` and ``channel_binding`` for the connection.

    CLI Example:

    .. code-block:: bash

        salt standby pg_replication.basebackup /srv/pg/15/main 192.168.11.101 standby_slot passfile=/srv/pg/.pgpass
    """
    cmd = [
        _command(bin_dir, "pg_basebackup"), "-D", datadir, "-h", host, "-p", str(port), "-U", user,
        "-X", "stream", "-S", slot, "-c", "fast", "--no-password",
    ]  # fmt: skip
    if tls:
        cmd += ["-d", __utils__["pg_replication_syntax.conninfo"](**_peer_tls(tls))]
    env = {"PGPASSFILE": passfile} if passfile else None
    res = __salt__["cmd.run_all"](cmd, runas=runas, env=env, python_shell=False, ignore_retcode=True)
    if res["retcode"]:
        raise CommandExecutionError(f"pg_basebackup failed: {res['stderr'].strip()}")
    return True


# --------------------------------------------------------------------------- day-2 operations
# The minion's side of the master's runners (``_runners/pg_replication.py``): where this
# server stands (role, timeline, WAL position), and the steps of a switchover or a rejoin.

POSITION_SQL = (
    "SELECT pg_is_in_recovery() AS in_recovery,"
    " CASE WHEN pg_is_in_recovery() THEN COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
    "   ELSE pg_current_wal_lsn() END::text AS lsn,"
    " pg_last_wal_replay_lsn()::text AS replay_lsn,"
    " CASE WHEN pg_is_in_recovery()"
    "   THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver),"
    "                 (SELECT timeline_id FROM pg_control_checkpoint()))"
    "   ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,"
    " current_setting('wal_log_hints') AS wal_log_hints, current_setting('data_checksums') AS data_checksums,"
    " current_setting('max_wal_senders')::int AS max_wal_senders,"
    " current_setting('max_replication_slots')::int AS max_replication_slots,"
    " pg_postmaster_start_time()::text AS started"
)


def position(**kwargs):
    """
    Where this server stands: in recovery or not, its timeline, its WAL position (a
    standby's: what it received), and the settings a switchover depends on.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.position
    """
    return _query(POSITION_SQL, **kwargs)[0]


def peer_position(host, port=5432, user="replicator", passfile=None, timeout=5, tls=None):
    """
    :py:func:`position` of another server of the cluster, asked over TCP as the replication
    role (its ``.pgpass``). None if it does not answer.

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.peer_position 192.168.11.102 passfile=/var/lib/postgresql/.pgpass
    """
    try:
        conn = _peer_connect(host, port, user, passfile, timeout, tls=tls)
    except CommandExecutionError:
        return None
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(POSITION_SQL)
            return dict(cur.fetchone())
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"{host}:{port}: {_pg_message(exc)}") from exc
    finally:
        conn.close()


def controldata(datadir, bin_dir=None):
    """
    ``pg_controldata`` of a data directory as a dict (works with the server down): e.g.
    ``Database cluster state``, ``Latest checkpoint location``, ``Latest checkpoint's
    TimeLineID``. Empty if the directory holds no cluster.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.controldata /var/lib/postgresql/15/main bin_dir=/usr/lib/postgresql/15/bin
    """
    if datadir_system_identifier(datadir) is None:
        return {}
    res = __salt__["cmd.run_all"](
        [_command(bin_dir, "pg_controldata"), datadir], env={"LC_ALL": "C"}, python_shell=False, ignore_retcode=True
    )
    if res["retcode"]:
        raise CommandExecutionError(f"pg_controldata {datadir} failed: {res['stderr'].strip()}")
    return __utils__["pg_replication_postgres.parse_controldata"](res["stdout"])


def promote(wait_seconds=60, **kwargs):
    """
    Promote this standby (``pg_promote(wait => true)``) and return its new position. The
    master's ``pg_replication.switchover`` and ``failover`` runners call it after their
    checks; calling it by hand makes a second primary unless the old one is gone.

    CLI Example:

    .. code-block:: bash

        salt standby pg_replication.promote
    """
    if not in_recovery(**kwargs):
        raise CommandExecutionError("this server is not in recovery; there is nothing to promote")
    if not _query("SELECT pg_promote(true, %s) AS done", (int(wait_seconds),), **kwargs)[0]["done"]:
        raise CommandExecutionError(f"the server did not finish its promotion within {wait_seconds}s")
    return position(**kwargs)


def checkpoint(**kwargs):
    """
    Run a CHECKPOINT. After a promotion, pg_rewind reads the new primary's timeline from its
    control file, which only the next checkpoint updates: without one it finds "the same
    timeline" and rewinds nothing.

    CLI Example:

    .. code-block:: bash

        salt new-primary pg_replication.checkpoint
    """
    _query("CHECKPOINT", fetch=False, **kwargs)
    return True


def _shut_down_cleanly(datadir, bin_dir, config_file, runas):
    """pg_rewind needs a target shut down cleanly: after a crash, let a single-user server
    (which no client can reach) run crash recovery and stop."""
    cmd = [_command(bin_dir, "postgres"), "--single", "-F", "-D", datadir]
    if config_file:
        cmd += ["-c", f"config_file={config_file}"]
    res = __salt__["cmd.run_all"](
        cmd + ["template1"], runas=runas, stdin="", python_shell=False, ignore_retcode=True, env={"LC_ALL": "C"}
    )
    if res["retcode"]:
        raise CommandExecutionError(f"crash recovery of {datadir} before pg_rewind failed: {res['stderr'].strip()}")


def rewind(datadir, source_host, port=5432, user="replicator", passfile=None, bin_dir=None, config_file=None,
           version=None, runas="postgres", tls=None):  # fmt: skip
    """
    Make the stopped server in ``datadir`` (a former primary) a standby of the primary at
    ``source_host``: ``pg_rewind`` over the replication role (password from ``passfile``),
    after crash recovery if it was not shut down cleanly, then the standby marker
    (standby.signal, or recovery.conf before PostgreSQL 12). Returns whether pg_rewind had to
    rewind, where the timelines diverged and pg_rewind's own lines. ``tls``: as for
    :py:func:`basebackup`.

    CLI Example:

    .. code-block:: bash

        salt old-primary pg_replication.rewind /var/lib/postgresql/15/main 192.168.11.102 \\
            passfile=/var/lib/postgresql/.pgpass bin_dir=/usr/lib/postgresql/15/bin
    """
    state = controldata(datadir, bin_dir).get("Database cluster state", "")
    if not state:
        raise CommandExecutionError(f"{datadir} holds no cluster to rewind")
    if state not in ("shut down", "shut down in recovery"):
        _shut_down_cleanly(datadir, bin_dir, config_file, runas)
    source = __utils__["pg_replication_syntax.conninfo"](
        host=source_host, port=int(port), user=user, dbname="postgres", passfile=passfile, **_peer_tls(tls)
    )
    res = __salt__["cmd.run_all"](
        [_command(bin_dir, "pg_rewind"), "--target-pgdata", datadir, "--source-server", source],
        runas=runas, python_shell=False, ignore_retcode=True, env={"LC_ALL": "C"},
    )  # fmt: skip
    lines = [line for line in (res["stdout"] + "\n" + res["stderr"]).splitlines() if line.strip()]
    if res["retcode"]:
        raise CommandExecutionError(f"pg_rewind failed: {' / '.join(lines)}")
    _mark_standby(datadir, version)
    return __utils__["pg_replication_postgres.parse_rewind"](lines)


def _mark_standby(datadir, version):
    marker, contents = __utils__["pg_replication_postgres.standby_marker"](datadir, version)
    __salt__["file.write"](marker, contents)
    __salt__["file.chown"](marker, "postgres", "postgres")


# The plan as map.jinja makes it (defaults, OS family, pillar), without its secrets.
MEMBER_TEMPLATE = (
    '{%- from tplroot ~ "/map.jinja" import merged with context -%}'
    '{%- for host, spec in change.get("hosts", {}).items() %}{%- do merged.hosts[host].update(spec) %}{%- endfor -%}'
    '{%- do merged.barman.update(change.get("barman", {})) -%}'
    '{{ salt["pg_replication.plan"](merged, grains["id"]) | json }}'
)
MEMBER_PLAN_KEYS = ("minion_id", "role", "me", "hosts", "version", "port", "data_dir", "conf_dir", "bin_dir",
                    "socket_dir", "home", "service_name", "replication", "barman_servers", "switchover",
                    "served_slots", "peer_tls")  # fmt: skip


def member(change=None, tplroot="pg_replication"):
    """
    This minion in the cluster, for the master's runners: what the pillar makes it (role,
    peers, paths, service) and, on a PostgreSQL server, where the running server stands
    (:py:func:`position`) or, when it is down, its ``pg_controldata``. No secret.
    ``change`` is a change of the ``pg_replication`` pillar to plan with, as the runners pass
    it to ``state.apply``: ``{"hosts": {id: {"role": ...}}, "barman": {"primary": ...}}``.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.member
    """
    # map.jinja exports ``merged`` only when it builds the plan, not when it remembers one
    # (a second call in the same loader): let it build.
    __context__.pop(_REMEMBERED_PLAN, None)
    plan = __salt__["slsutil.renderer"](
        string=MEMBER_TEMPLATE, default_renderer="jinja|json", tplroot=tplroot, change=dict(change or {})
    )
    out = {"plan": {key: plan.get(key) for key in MEMBER_PLAN_KEYS}}
    # What the pillar itself says (not what the plan derives from it): a change must keep it.
    out["plan"]["barman_pillar"] = {key: (plan.get("barman") or {}).get(key) for key in ("primary", "server_name")}
    if plan["role"] not in ("primary", "standby"):
        return out
    conn = {"host": plan["socket_dir"], "port": plan["port"]}
    try:
        where = position(**conn)
        now = _status(where, **conn)
        out["server"] = dict(where, running=True, slots=now["slots"])
        out["server"].update(receiver=now.get("wal_receiver"), lag=now.get("lag"))
    except CommandExecutionError as exc:
        control = controldata(plan["data_dir"], plan["bin_dir"])
        out["server"] = {
            "running": False,
            "error": str(exc),
            "state": control.get("Database cluster state"),
            "timeline": int(control["Latest checkpoint's TimeLineID"]) if control else None,
            "checkpoint": control.get("Latest checkpoint location"),
        }
    return out
