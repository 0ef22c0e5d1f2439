# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: how clients reach the primary (issue #29). The
floating address (VIP) on this host's interface, with duplicate address detection before
it is added and a gratuitous ARP after; PgBouncer's admin console (PAUSE, RESUME,
RECONNECT, RELOAD, SHOW) and its target; the lookup function PgBouncer's ``auth_query``
calls. Part of ``pg_replication`` (see pg_replication.py).
"""

import contextlib
import ipaddress
import json
import os
import select
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import psycopg2
    import psycopg2.extensions
    import psycopg2.extras
except ImportError:  # pragma: no cover
    psycopg2 = None

__virtualname__ = "pg_replication"
ADMIN_USER = "root"  # pg_replication_routing.ADMIN_USER: peer authentication over the socket


def __virtual__():
    return __virtualname__


# --------------------------------------------------------------------------- the VIP


def _addresses():
    """``{address: interface}`` of every address this host holds (Salt's network.interfaces)."""
    out = {}
    for name, interface in (__salt__["network.interfaces"]() or {}).items():
        for family in ("inet", "secondary", "inet6"):
            for entry in interface.get(family) or ():
                if entry.get("address"):
                    out[str(ipaddress.ip_address(entry["address"].split("%")[0]))] = name
    return out


def vip_held(address):
    """
    The interface on which this host holds ``address``, or None.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.vip_held 192.168.11.100
    """
    return _addresses().get(str(ipaddress.ip_address(address)))


def _run(words, what):
    out = __salt__["cmd.run_all"](words, python_shell=False, ignore_retcode=True)
    if out["retcode"] != 0:
        raise CommandExecutionError(f"{what} failed: {(out.get('stderr') or out.get('stdout') or '').strip()}")
    return out


def vip_add(address, prefix, beside):
    """
    Add ``address``/``prefix`` to the interface that holds this host's own address
    ``beside``, unless another host answers ARP for it (duplicate address detection: then
    it fails, changing nothing); then announce it with a gratuitous ARP. IPv6: no ARP.

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.vip_add 192.168.11.100 24 192.168.11.101
    """
    held = vip_held(address)
    if held:
        return {"interface": held, "added": False}
    interface = _addresses().get(str(ipaddress.ip_address(beside)))
    if interface is None:
        raise SaltInvocationError(f"this host holds no address {beside}")
    ipv4 = ipaddress.ip_address(address).version == 4
    if ipv4 and __salt__["cmd.retcode"](["arping", "-q", "-D", "-c", "2", "-w", "1", "-I", interface, address],
                                        python_shell=False, ignore_retcode=True) != 0:  # fmt: skip
        raise CommandExecutionError(f"another host answers ARP for {address}: not added")
    _run(["ip", "addr", "add", f"{address}/{int(prefix)}", "dev", interface], f"ip addr add {address}")
    if ipv4:
        _run(["arping", "-q", "-U", "-c", "2", "-w", "1", "-I", interface, address], f"gratuitous ARP for {address}")
    return {"interface": interface, "added": True}


def vip_remove(address, prefix):
    """
    Remove ``address``/``prefix`` (the prefix it was added with) from this host, wherever
    it is held.

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.vip_remove 192.168.11.100 24
    """
    held = vip_held(address)
    if not held:
        return {"removed": False}
    _run(["ip", "addr", "del", f"{address}/{int(prefix)}", "dev", held], f"ip addr del {address}")
    return {"interface": held, "removed": True}


# --------------------------------------------------------------------------- PgBouncer


def pooler_admin(command, port=6432, socket_dir="/var/run/postgresql", timeout=60):
    """
    One command on the local PgBouncer's admin console (PAUSE, RESUME, RECONNECT, RELOAD,
    or SHOW <what>), as root over the local socket (peer authentication, no password). PAUSE
    returns once every server connection is released (pool_mode transaction: every running
    transaction ended). Returns SHOW's rows, or the command.

    CLI Example:

    .. code-block:: bash

        salt backup pg_replication.pooler_admin PAUSE
        salt backup pg_replication.pooler_admin 'SHOW DATABASES'
    """
    statement = __utils__["pg_replication_routing.admin_statement"](command)
    if statement is None:
        raise SaltInvocationError(f"not an admin command this module sends: {command!r}")
    if statement == "RESUME":
        return _resume_all(port, socket_dir)
    return _admin_run(statement, port, socket_dir)


def _admin_run(statement, port, socket_dir):
    conn = _admin_connect(port, socket_dir)
    try:
        conn.autocommit = True
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(statement)
            return [dict(row) for row in cur.fetchall()] if statement.startswith("SHOW") else statement
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"PgBouncer: {statement}: {str(exc).strip()}") from exc
    finally:
        conn.close()


def _name(database):
    return __utils__["pg_replication_routing.admin_name"](database)


def _killed_file(port):
    """Where the databases a bounded pause KILLed are kept until RESUME (a later job): a
    killed database with no client left is an idle auto-database, which SHOW DATABASES no
    longer lists, yet it stays paused and takes RESUME by name."""
    return os.path.join(__opts__["cachedir"], "pg_replication", f"pooler-killed-{int(port)}.json")


def _killed(port):
    try:
        with open(_killed_file(port), encoding="utf-8") as fh:
            return [str(name) for name in json.load(fh)]
    except (OSError, ValueError, TypeError):
        return []


def _remember_killed(port, names):
    path = _killed_file(port)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path + ".new", "w", encoding="utf-8") as fh:
        json.dump(sorted(set(_killed(port)) | set(names)), fh)
    os.replace(path + ".new", path)


def _resume_all(port, socket_dir):
    """RESUME the pooler, and each database a bounded pause KILLed (KILL leaves it paused
    on its own, which a plain RESUME does not end): those SHOW DATABASES lists as paused, and
    those the pause remembered."""
    listed = __utils__["pg_replication_routing.paused_databases"](_admin_run("SHOW DATABASES", port, socket_dir))
    remembered = _killed(port)
    try:
        _admin_run("RESUME", port, socket_dir)
    except CommandExecutionError:
        if not (listed or remembered):  # not paused at all: say so
            raise
    for database in listed:
        _admin_run(f"RESUME {_name(database)}", port, socket_dir)
    for database in sorted(set(remembered) - set(listed)):
        with contextlib.suppress(CommandExecutionError):  # resumed or dropped since
            _admin_run(f"RESUME {_name(database)}", port, socket_dir)
    if remembered:
        os.remove(_killed_file(port))
    return "RESUME"


def _admin_connect(port, socket_dir, **kwargs):
    if psycopg2 is None:
        raise CommandExecutionError("psycopg2 is not installed in the Python that runs Salt")
    try:
        conn = psycopg2.connect(host=socket_dir, port=int(port), user=ADMIN_USER, dbname="pgbouncer",
                                connect_timeout=10, **kwargs)  # fmt: skip
        if kwargs.get("async_") and not _ready(conn, time.monotonic() + 10):
            conn.close()
            raise CommandExecutionError("PgBouncer's admin console did not answer within 10s")
        return conn
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"PgBouncer's admin console: {exc}".strip()) from exc


def _ready(conn, deadline):
    """Poll the asynchronous ``conn`` until its connection or statement is done (True) or
    ``deadline`` (time.monotonic()) passes (False)."""
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        fds = [conn.fileno()]
        if state == psycopg2.extensions.POLL_READ:
            select.select(fds, [], [], left)
        else:
            select.select([], fds, [], left)


def pooler_pause(wait=5, port=6432, socket_dir="/var/run/postgresql", timeout=30):
    """
    PAUSE the local PgBouncer with a bounded wait: PAUSE returns once every server
    connection is released, which takes a client's running transaction (pool_mode
    transaction or statement) or its whole session (pool_mode session). After ``wait``
    seconds, the databases whose pools still hold a server connection are KILLed (their
    clients disconnected, as the old primary's stop would disconnect them anyway; new
    clients wait until RESUME), then PAUSE has ``timeout`` seconds more to return.
    Returns ``{"paused": True, "waited": seconds, "killed": [database, ...]}``.

    CLI Example:

    .. code-block:: bash

        salt backup pg_replication.pooler_pause wait=5
    """
    started = time.monotonic()
    killed = []
    if not _pause(port, socket_dir, started + float(wait)):
        # PgBouncer takes no KILL while paused: RESUME, KILL the busy databases (each stays
        # paused on its own, its clients disconnected), PAUSE again.
        _admin_run("RESUME", port, socket_dir)
        rows = _admin_run("SHOW POOLS", port, socket_dir)
        killed = _kill(__utils__["pg_replication_routing.busy_databases"](rows), port, socket_dir)
        if not _pause(port, socket_dir, time.monotonic() + float(timeout)):
            _admin_run("RESUME", port, socket_dir)
            raise CommandExecutionError(
                f"PgBouncer: PAUSE did not return within {wait}s, nor {timeout}s after KILL of"
                f" {', '.join(killed) or 'no database'}: resumed"
            )
    return {"paused": True, "waited": round(time.monotonic() - started, 2), "killed": killed}


def _pause(port, socket_dir, deadline):
    """PAUSE; whether it returned (every server connection released) before ``deadline``.
    If not, the pooler stays in pause mode (new queries held) until RESUME."""
    conn = _admin_connect(port, socket_dir, async_=1)
    try:
        cur = conn.cursor()  # kept: psycopg2 needs it while the statement runs
        cur.execute("PAUSE")
        return _ready(conn, deadline)
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"PgBouncer: PAUSE: {str(exc).strip()}") from exc
    finally:
        conn.close()


def pooler_repoint(ini, address, server_port, then=None, port=6432, socket_dir="/var/run/postgresql"):
    """
    Point the local PgBouncer at ``address``: its [databases] line in ``ini`` rewritten (as
    the highstate writes it), RELOAD, then ``then`` (RESUME after a switchover's PAUSE,
    RECONNECT after a failover: server connections to the old primary are closed as they
    are released). Before a failover's RECONNECT, the databases with a query in flight on
    the old primary, a login to it or a client waiting for one are KILLed and RESUMEd: a
    host lost without a reset never answers that query, so its server connection would
    never be released and its client would wait for TCP to give up (many minutes), and a
    login waits for ``server_connect_timeout``; killed, the clients get an error and
    reconnect, to the new primary.

    CLI Example:

    .. code-block:: bash

        salt backup pg_replication.pooler_repoint /etc/pgbouncer/pgbouncer.ini 192.168.11.102 5432 then=RESUME
    """
    line = __utils__["pg_replication_routing.database_line"](str(ipaddress.ip_address(address)), int(server_port))
    diff = __salt__["file.replace"](ini, pattern=r"^\* = .*$", repl=line, count=1, backup=False, show_changes=True)
    done = [f"{ini}: {line}" if diff else f"{ini} already says {line}", pooler_admin("RELOAD", port, socket_dir)]
    if then == "RECONNECT":
        done += _kill_in_flight(port, socket_dir)
    if then:
        done.append(pooler_admin(then, port, socket_dir))
    return done


def _kill_in_flight(port, socket_dir):
    """KILL the databases with anything on the way to the old primary (after a failover:
    ``pg_replication_routing.stuck_databases``), then RESUME them (KILL leaves each paused
    on its own); what was done."""
    stuck = __utils__["pg_replication_routing.stuck_databases"](_admin_run("SHOW POOLS", port, socket_dir))
    if not stuck:
        return []
    _kill(stuck, port, socket_dir)
    _resume_all(port, socket_dir)
    return [f"KILL {database}" for database in stuck] + ["RESUME"]


def _kill(databases, port, socket_dir):
    """KILL each of ``databases`` (its clients and server connections dropped; it stays
    paused on its own), remembered first so that a RESUME finds each; the list."""
    _remember_killed(port, databases)
    for database in databases:
        _admin_run(f"KILL {_name(database)}", port, socket_dir)
    return list(databases)


def pooler_lookup_databases(**kwargs):
    """
    The databases the lookup function must be in: every one that takes connections.

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.pooler_lookup_databases
    """
    rows = _sql("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1", None, kwargs)
    return [row["datname"] for row in rows]


def pooler_lookup_missing(role, dbname, **kwargs):
    """
    What database ``dbname`` lacks of the lookup function for ``role`` (empty: nothing):
    the function as the formula makes it (SECURITY DEFINER, its body), or its privileges
    (EXECUTE for ``role`` and its owner only).

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.pooler_lookup_missing pgbouncer_auth postgres
    """
    rows = _sql(__utils__["pg_replication_routing.lookup_check_sql"](), {"role": role}, dict(kwargs, dbname=dbname))
    return __utils__["pg_replication_routing.lookup_missing"](rows[0] if rows else None)


def pooler_lookup_install(role, dbname, **kwargs):
    """
    Make (or remake) the lookup function for ``role`` in ``dbname``, with its grants, in one
    transaction.

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.pooler_lookup_install pgbouncer_auth postgres
    """
    statements = __utils__["pg_replication_routing.lookup_statements"](role)
    _sql(";\n".join(statements), None, dict(kwargs, dbname=dbname), fetch=False)
    return True


def _sql(statement, params, conn, fetch=True):
    """One statement on this minion's cached connection to ``conn``'s database."""
    settings = __salt__["config.option"]("pg_replication.connection", {})
    run = __utils__["pg_replication_connection.query"]
    return run(__context__.value(), settings, statement, params, fetch=fetch, **conn)
