# SPDX-License-Identifier: Apache-2.0
"""What the master's HA engine asks every PostgreSQL server each ``ha:check_interval``
(``_engines/pg_replication_ha.py``): a short, cheap answer, no plan rendered. Part of
``pg_replication`` (see pg_replication.py).
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"
# pg_replication_fence.UNIT (Salt's loader packs functions only, not constants).
WATCHDOG_UNIT = "pg_replication-watchdog.service"


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
    minion; on a primary, ``watchdog``: whether the self-fencing watchdog's unit is active
    (None when that cannot be said). Connection keywords as every function of the module
    (``host``: the socket directory, ``port``). No secret.

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
    if not where["in_recovery"]:
        out["watchdog"] = _watchdog_runs()
    out.update({key: where[key] for key in ("in_recovery", "timeline", "lsn")})
    return out


def _watchdog_runs():
    """Whether the watchdog's systemd unit is active (None: no way to ask, e.g. no systemd)."""
    try:
        return bool(__salt__["service.status"](WATCHDOG_UNIT))
    except Exception:  # noqa: BLE001 - no service module or systemd: unknown  # pylint: disable=broad-except
        return None


def _query(statement, *args, **kwargs):
    """pg_replication_connection.query with this loader's __context__ (as its dict) and settings."""
    configured = __salt__["config.option"]("pg_replication.connection", {})
    return __utils__["pg_replication_connection.query"](__context__.value(), configured, statement, *args, **kwargs)
