# SPDX-License-Identifier: Apache-2.0
"""The ``pg_replication_health`` beacon: an event on the master's bus when one of this
host's health items changes (a server's role or ``down``, a standby's streaming, a slot's
activity, a WAL receiver's status; a backup host's ``barman check`` items), tagged
``salt/beacon/<minion>/pg_replication_health/pg_replication/health/<kind>`` with ``item``,
``old`` and ``new``. The first look after the minion starts is the baseline (no event).

The formula configures it (``monitoring:beacon``; monitoring/beacon.sls); by hand, in the
minion's configuration:

.. code-block:: yaml

    beacons:
      pg_replication_health:
        - interval: 30
        - port: 5432
        - host: /var/run/postgresql
"""

import logging

__virtualname__ = "pg_replication_health"
log = logging.getLogger(__name__)
# The last snapshot of the items, per configuration (the beacon's loader keeps this module).
_LAST = {}


def __virtual__():
    return __virtualname__


def _merged(config):
    merged = {}
    for entry in config if isinstance(config, list) else [config]:
        merged.update(entry)
    return merged


def validate(config):
    """Salt checks the configuration with this before running the beacon: ``(ok, message)``
    (the check is ``pg_replication.health_validate``'s, pure logic in _utils)."""
    return tuple(__salt__["pg_replication.health_validate"](config))


def beacon(config):
    """One look: the events for what changed since the last one."""
    conf = _merged(config)
    key = repr(sorted((k, repr(v)) for k, v in conf.items()))
    current = __salt__["pg_replication.health_items"](
        port=conf.get("port"), host=conf.get("host"), barman_servers=conf.get("barman_servers")
    )
    events = __salt__["pg_replication.health_changes"](_LAST.get(key), current)
    _LAST[key] = current
    for event in events:
        log.info("pg_replication_health: %s changed from %r to %r", event["item"], event["old"], event["new"])
    return events
