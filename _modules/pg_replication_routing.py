# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: how clients reach the primary (issue #29). The
floating address (VIP) on this host's interface, with duplicate address detection before
it is added and a gratuitous ARP after; PgBouncer's admin console (PAUSE, RESUME,
RECONNECT, RELOAD, SHOW) and its target; the lookup function PgBouncer's ``auth_query``
calls. Part of ``pg_replication`` (see pg_replication.py).
"""

import ipaddress

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import psycopg2
    import psycopg2.extras
except ImportError:  # pragma: no cover
    psycopg2 = None

__virtualname__ = "pg_replication"

# What the admin console may be told from here (SHOW takes one word after it).
ADMIN_COMMANDS = ("PAUSE", "RESUME", "RECONNECT", "RELOAD", "SHOW")


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
    words = str(command).split()
    if not words or words[0].upper() not in ADMIN_COMMANDS or len(words) > (2 if words[0].upper() == "SHOW" else 1):
        raise SaltInvocationError(f"not an admin command this module sends: {command!r}")
    if len(words) == 2 and not words[1].isalpha():
        raise SaltInvocationError(f"SHOW what? {words[1]!r}")
    if psycopg2 is None:
        raise CommandExecutionError("psycopg2 is not installed in the Python that runs Salt")
    try:
        conn = psycopg2.connect(host=socket_dir, port=int(port), user="root", dbname="pgbouncer", connect_timeout=10)
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"PgBouncer's admin console: {exc}".strip()) from exc
    try:
        conn.autocommit = True
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(" ".join(w.upper() for w in words))
            return [dict(row) for row in cur.fetchall()] if words[0].upper() == "SHOW" else words[0].upper()
    except psycopg2.Error as exc:
        raise CommandExecutionError(f"PgBouncer: {command}: {str(exc).strip()}") from exc
    finally:
        conn.close()


def pooler_repoint(ini, address, server_port, then=None, port=6432, socket_dir="/var/run/postgresql"):
    """
    Point the local PgBouncer at ``address``: its [databases] line in ``ini`` rewritten (as
    the highstate writes it), RELOAD, then ``then`` (RESUME after a switchover's PAUSE,
    RECONNECT after a failover: server connections to the old primary are closed as they
    are released).

    CLI Example:

    .. code-block:: bash

        salt backup pg_replication.pooler_repoint /etc/pgbouncer/pgbouncer.ini 192.168.11.102 5432 then=RESUME
    """
    line = __utils__["pg_replication_routing.database_line"](str(ipaddress.ip_address(address)), int(server_port))
    diff = __salt__["file.replace"](ini, pattern=r"^\* = .*$", repl=line, count=1, backup=False, show_changes=True)
    done = [f"{ini}: {line}" if diff else f"{ini} already says {line}", pooler_admin("RELOAD", port, socket_dir)]
    if then:
        done.append(pooler_admin(then, port, socket_dir))
    return done


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
