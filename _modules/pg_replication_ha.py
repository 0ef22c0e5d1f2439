# SPDX-License-Identifier: Apache-2.0
"""What the master's HA engine asks every PostgreSQL server each ``ha:check_interval``
(``_engines/pg_replication_ha.py``): a short, cheap answer, no plan rendered. Part of
``pg_replication`` (see pg_replication.py).
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    # One of the files of the pg_replication module (Salt merges the functions of files
    # that share a virtual name); loads without psycopg2, like pg_replication.py.
    return __virtualname__


def health(**kwargs):
    """
    This server as the HA engine sees it: ``running``, and when it runs ``in_recovery``,
    ``timeline``, ``lsn`` (a standby's: received), its WAL ``receiver`` (``status``,
    ``sender_host``, ``last_msg_age``: seconds since it last heard its sender); when it
    does not, the ``error`` that said so. ``ha``: the ``pg_replication:ha`` pillar of this
    minion. Connection keywords as every function of the module (``host``: the socket
    directory, ``port``). No secret.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.health host=/var/run/postgresql port=5432
    """
    # Not pillar.get: from Salt 3008 on it masks scalars outside a template.
    out = {"ha": __utils__["pg_replication_pillar.lookup"](__pillar__, "pg_replication:ha", {})}
    try:
        where = __salt__["pg_replication.position"](**kwargs)
        receiver = None
        if where["in_recovery"]:
            rows = _query(
                "SELECT status, sender_host, sender_port,"
                " EXTRACT(EPOCH FROM now() - last_msg_receipt_time)::float AS last_msg_age FROM pg_stat_wal_receiver",
                **kwargs,
            )
            receiver = rows[0] if rows else None
    except CommandExecutionError as exc:
        return dict(out, running=False, error=str(exc))
    out.update(running=True, receiver=receiver)
    out.update({key: where[key] for key in ("in_recovery", "timeline", "lsn")})
    return out


def _query(statement, *args, **kwargs):
    """pg_replication_connection.query with this loader's __context__ (as its dict) and settings."""
    configured = __salt__["config.option"]("pg_replication.connection", {})
    return __utils__["pg_replication_connection.query"](__context__.value(), configured, statement, *args, **kwargs)
