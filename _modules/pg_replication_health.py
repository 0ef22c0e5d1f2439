# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: this host's health items, as the
``pg_replication_health`` beacon watches them (``_beacons/pg_replication_health.py``), and
what changed between two snapshots of them. Part of ``pg_replication`` (see
pg_replication.py); the logic is in ``_utils/pg_replication_health.py``.
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    # One of the files of the pg_replication module (Salt merges the functions of files
    # that share a virtual name).
    return __virtualname__


def health_items(port=None, host=None, barman_servers=None):
    """
    This host's health items ``{item: value}``: on a PostgreSQL server (``port``, ``host``
    its socket directory) its role (``down`` when it does not answer), each downstream's
    streaming, each physical slot's activity and a standby's WAL receiver; on a backup host
    (``barman_servers``) each Barman server's ``barman check`` items.

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.health_items port=5432 host=/var/run/postgresql
        salt backup pg_replication.health_items barman_servers='[master-streaming]'
    """
    health = __utils__["pg_replication_health.server_items"]
    items = {}
    if port is not None:
        conn = {"port": int(port)}
        if host:
            conn["host"] = host
        try:
            items.update(health(__salt__["pg_replication.status"](**conn)))
        except CommandExecutionError:
            items.update(health(None))
    checks = {}
    for server in barman_servers or []:
        try:
            checks[server] = __salt__["barman.check"](server)
        except CommandExecutionError:
            checks[server] = None
    items.update(__utils__["pg_replication_health.barman_items"](checks))
    return items


def health_changes(previous, current):
    """
    The events for what changed between two snapshots of :py:func:`health_items` (none
    when ``previous`` is None).

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.health_changes '{"role": "standby"}' '{"role": "primary"}'
    """
    return __utils__["pg_replication_health.changes"](previous, current)


def health_validate(config):
    """
    ``[ok, message]``: whether ``config`` is a valid ``pg_replication_health`` beacon
    configuration (``port`` and ``host``, or ``barman_servers``; ``interval``).

    CLI Example:

    .. code-block:: bash

        salt master pg_replication.health_validate '[{"port": 5432}, {"interval": 30}]'
    """
    return list(__utils__["pg_replication_health.validate"](config))
