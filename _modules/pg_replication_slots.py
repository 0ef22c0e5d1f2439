# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: replication slots on this server, and the record of
the slots the formula made. Part of ``pg_replication`` (see pg_replication.py).
"""

import json

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    # One of the files of the pg_replication module (Salt merges the functions of files
    # that share a virtual name); loads without psycopg2, like pg_replication.py.
    return __virtualname__


def slots(**kwargs):
    """
    List replication slots with activity, restart LSN and the WAL bytes each retains.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.slots
    """
    configured = __salt__["config.option"]("pg_replication.connection", {})
    version = __utils__["pg_replication_connection.server_version"](__context__.value(), configured, **kwargs)
    wal_status = ", wal_status" if version >= 130000 else ""
    wal_end = __utils__["pg_replication_postgres.wal_end_sql"]()
    rows = _query(
        "SELECT slot_name, slot_type, active, active_pid, restart_lsn::text AS restart_lsn"  # noqa: S608 - constant
        + wal_status
        + f", pg_wal_lsn_diff({wal_end}, restart_lsn)::bigint AS retained_bytes"
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


def _query(statement, *args, **kwargs):
    """pg_replication_connection.query with this loader's __context__ (as its dict) and settings."""
    configured = __salt__["config.option"]("pg_replication.connection", {})
    return __utils__["pg_replication_connection.query"](__context__.value(), configured, statement, *args, **kwargs)
