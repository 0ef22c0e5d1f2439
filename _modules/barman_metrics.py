# SPDX-License-Identifier: Apache-2.0
"""Barman's metrics for Prometheus (``pg_replication:monitoring``), from ``barman -f json``:
per server, each ``barman check`` item, the backups by status, the last DONE backup's age
and size, receive-wal running, the last restore drill. A cron job of the backup host writes them to the node
exporter's textfile directory with the formula's metrics script (the same functions,
``_utils/pg_replication_barman_metrics.py``, without a Salt loader); ``barman.write_metrics``
writes them the same way for whoever calls it. Part of the ``barman`` execution module.

:depends: barman
"""

import logging
import time

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "barman"


def __virtual__():
    return __virtualname__


def _answer(function, server):
    """``barman.<function>(server)``, or None when Barman cannot answer (logged)."""
    try:
        return __salt__[f"barman.{function}"](server)
    except CommandExecutionError as exc:
        log.warning("barman metrics: %s %s: %s", function, server, exc)
        return None


def metrics(max_ages):
    """
    Barman's metrics in Prometheus' text format for the servers of ``max_ages``
    (``{server: the maximum age of its last DONE backup, in seconds}``).

    CLI Example:

    .. code-block:: bash

        salt backup barman.metrics '{"master-streaming": 86400}'
    """
    utils = __utils__
    samples = []
    now = time.time()
    for server, max_age in sorted((max_ages or {}).items()):
        checks = _answer("check", server)
        backups = _answer("list_backups", server) if checks is not None else None
        samples += utils["pg_replication_barman_metrics.server_samples"](server, checks, backups, int(max_age), now)
        samples += _drill_samples(server, now)
    return utils["pg_replication_barman_metrics.barman_metrics"](samples, now)


def _drill_samples(server, now):
    """The last restore drill's gauges (pg_replication:barman:drill), if drills are configured."""
    if "barman.drill_last" not in __salt__:
        return []
    found = __salt__["barman.drill_last"](server)
    return __utils__["pg_replication_barman_metrics.drill_samples"](server, (found or {}).get("result"), now)


def write_metrics(path, max_ages):
    """
    Write :func:`metrics` to ``path`` atomically (a file beside it, renamed over it: the
    node exporter's textfile collector never reads half a file), mode 0644. Returns the
    number of samples written.

    CLI Example:

    .. code-block:: bash

        salt-call --local barman.write_metrics /tmp/barman.prom '{"master-streaming": 86400}'
    """
    return __utils__["pg_replication_barman_metrics.write_atomically"](path, metrics(max_ages))
