# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: other servers of the cluster, over connections of
their own as the replication role (its password from a passfile, never the command line):
their system identifier, slots and position, pg_basebackup from a primary, pg_rewind onto
one. Part of ``pg_replication`` (see pg_replication.py).
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import psycopg2
    import psycopg2.extras
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    psycopg2 = sql = None

__virtualname__ = "pg_replication"


def __virtual__():
    # One of the files of the pg_replication module (Salt merges the functions of files
    # that share a virtual name); loads without psycopg2, like pg_replication.py.
    return __virtualname__


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
    __utils__["pg_replication_connection.require_driver"]()
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
        raise CommandExecutionError(
            f"cannot reach primary {host}:{port} as {user}: {__utils__['pg_replication_connection.pg_message'](exc)}"
        ) from exc


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
        raise CommandExecutionError(f"{host}:{port}: {__utils__['pg_replication_connection.pg_message'](exc)}") from exc
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
        raise CommandExecutionError(
            f"cannot renew slot {slot!r} on {host}: {__utils__['pg_replication_connection.pg_message'](exc)}"
        ) from exc
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
            cur.execute(__utils__["pg_replication_postgres.position_sql"]())
            return dict(cur.fetchone())
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"{host}:{port}: {__utils__['pg_replication_connection.pg_message'](exc)}") from exc
    finally:
        conn.close()


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
    state = __salt__["pg_replication.controldata"](datadir, bin_dir).get("Database cluster state", "")
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


def conninfo_works(conninfo, replication=False, os_user=None, passfile=None, timeout=10):
    """
    Connect with ``conninfo`` exactly as a client of this host will (its TLS options and
    address included), as ``os_user`` would (its ``~/.pgpass``, unless ``passfile``): over a
    physical replication connection (IDENTIFY_SYSTEM) with ``replication=True``, else to
    its database (``SELECT 1``). Returns ``{"connected": True, ...}`` with the server's
    system identifier or version; CommandExecutionError says why it could not.

    CLI Example:

    .. code-block:: bash

        salt backup pg_replication.conninfo_works conninfo='host=192.168.11.102 user=barman' os_user=barman
    """
    __utils__["pg_replication_connection.require_driver"]()
    from psycopg2.extras import PhysicalReplicationConnection  # pylint: disable=import-outside-toplevel

    if passfile is None and os_user:
        import pwd  # pylint: disable=import-outside-toplevel

        passfile = f"{pwd.getpwnam(os_user).pw_dir}/.pgpass"
    kind = {"connection_factory": PhysicalReplicationConnection} if replication else {}
    extra = {"passfile": passfile} if passfile else {}
    try:
        conn = psycopg2.connect(conninfo, connect_timeout=int(timeout), **extra, **kind)
    except psycopg2.Error as exc:
        raise CommandExecutionError(__utils__["pg_replication_connection.pg_message"](exc)) from exc
    try:
        with conn.cursor() as cur:
            if replication:
                cur.execute("IDENTIFY_SYSTEM")
                return {"connected": True, "system_identifier": str(cur.fetchone()[0])}
            cur.execute("SELECT current_setting('server_version_num')::int")
            return {"connected": True, "server_version": cur.fetchone()[0]}
    finally:
        conn.close()
