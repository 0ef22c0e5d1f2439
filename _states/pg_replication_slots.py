# SPDX-License-Identifier: Apache-2.0
"""The ``pg_replication`` states of replication slots (the module: ``pg_replication.py``): one
made, one dropped, and all of them kept in step with the pillar."""

import json
import os

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    if "pg_replication.slots" in __salt__:
        return __virtualname__
    return (False, "pg_replication execution module could not be loaded")


def slot_present(name, reserve_wal=True, **kwargs):
    """
    Ensure a physical replication slot exists.

    name
        Slot name.
    reserve_wal
        Reserve WAL from creation on (default True), so a standby or Barman attaching later
        finds everything since the slot was made.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    try:
        existing = __salt__["pg_replication.slots"](**conn).get(name)
        if existing is not None:
            if existing["slot_type"] != "physical":
                return __utils__["pg_replication_state.fail"](
                    ret, f"slot {name} exists but is a {existing['slot_type']} slot"
                )
            ret["comment"] = f"Replication slot {name} is present"
            if existing.get("wal_status") == "lost":
                # Left for the standby's highstate, which rebuilds itself and renews the slot.
                ret["warnings"] = [
                    f"Replication slot {name} lost the WAL its client needs (wal_status lost): "
                    "that standby's highstate rebuilds it (pg_replication:standby:rebuild_lost_slot)"
                ]
            return ret
        return __utils__["pg_replication_state.change"](
            __opts__, ret, {"slot": name, "created": True}, f"Replication slot {name} would be created",
            f"Replication slot {name} created",
            lambda: __salt__["pg_replication.slot_create"](name, reserve_wal=reserve_wal, **conn),
        )  # fmt: skip
    except CommandExecutionError as exc:
        if __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc):
            return __utils__["pg_replication_state.predict"](
                ret, exc, {"slot": name, "created": True}, f"Replication slot {name} would be created"
            )
        return __utils__["pg_replication_state.fail"](ret, exc)
    return ret


def slot_absent(name, force=False, **kwargs):
    """
    Ensure a replication slot does not exist. An active slot (a standby or Barman is
    streaming from it) is refused unless ``force`` is true.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    try:
        existing = __salt__["pg_replication.slots"](**conn).get(name)
        if existing is None:
            ret["comment"] = f"Replication slot {name} is absent"
            return ret
        if existing["active"] and not force:
            return __utils__["pg_replication_state.fail"](
                ret, f"Replication slot {name} is active (pid {existing['active_pid']}); set force: True to drop it"
            )
        return __utils__["pg_replication_state.change"](
            __opts__, ret, {"slot": name, "dropped": True}, f"Replication slot {name} would be dropped",
            f"Replication slot {name} dropped", lambda: __salt__["pg_replication.slot_drop"](name, force=force, **conn),
        )  # fmt: skip
    except CommandExecutionError as exc:
        return __utils__["pg_replication_state.absent_unless_failed"](__opts__, ret, exc, f"Replication slot {name}")
    return ret


def slots_follow(name, slots, user="postgres", **kwargs):
    """
    Keep the replication slots in step with the pillar: drop the slots this formula made
    (recorded in file ``name``) that the pillar no longer wants, once inactive. Slots it did
    not make are never dropped; they are named in the comment. Run after the slots are made.

    name
        The record of the slots made here (a JSON list), private to ``user``.
    slots
        The slots the pillar wants on this server (its standbys' and Barman's).

    A slot to drop that is still active fails the state, naming who streams from it.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    wanted = set(slots)
    try:
        recorded = set(__salt__["pg_replication.slots_record"](name))
        existing = __salt__["pg_replication.slots"](**conn)
        clients = __salt__["pg_replication.slot_clients"](**conn)
    except CommandExecutionError as exc:
        unavailable = __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc)
        if unavailable and wanted != recorded:  # a server this run makes: nothing to drop yet
            return __utils__["pg_replication_state.predict"](
                ret, exc, {"record": sorted(wanted)}, f"the slot record {name} would be written"
            )
        if unavailable:
            ret["comment"] = f"The slot record {name} is current ({exc})"
            return ret
        return __utils__["pg_replication_state.fail"](ret, exc)
    stale = sorted((recorded - wanted) & set(existing))
    active = [slot for slot in stale if existing[slot]["active"]]
    unmanaged = sorted(set(existing) - wanted - recorded)
    changes, record = _changes(stale, active, wanted, recorded)
    notes = [f"left alone (not made by this formula): {', '.join(unmanaged)}"] if unmanaged else []
    if active:
        busy = ", ".join(
            f"{slot} ({clients.get(slot) or 'pid ' + str(existing[slot]['active_pid'])})" for slot in active
        )
        notes.insert(0, f"no longer in the pillar but still streamed from: {busy}; stop that client first")
    if __opts__["test"] and changes:
        ret.update(result=None, changes=changes, comment="; ".join(["slots would follow the pillar", *notes]))
        return ret
    try:
        for slot in changes.get("dropped", ()):
            if not _dropped_unless_streamed(slot, conn):
                # A client connected since it was read: kept and recorded, as any active one.
                active.append(slot)
                notes.insert(0, f"no longer in the pillar but still streamed from: {slot}; stop that client first")
        changes, record = _changes(stale, active, wanted, recorded)
        if "record" in changes:
            _write_record(name, record, user)
    except (CommandExecutionError, OSError) as exc:
        return __utils__["pg_replication_state.fail"](ret, exc)
    ret.update(changes=changes, comment="; ".join(["slots follow the pillar", *notes]))
    if active:
        ret["result"] = False
    return ret


def _changes(stale, active, wanted, recorded):
    """``(changes, record)``: the stale slots dropped but the ``active`` ones, which stay in
    the slot record beside the ``wanted`` ones."""
    record = sorted(wanted | set(active))
    changes = {"dropped": [s for s in stale if s not in active]} if len(stale) > len(active) else {}
    if record != sorted(recorded):
        changes["record"] = record
    return changes, record


def _dropped_unless_streamed(slot, conn):
    """Drop ``slot``; False (nothing dropped) when a client streams from it now: the module
    refuses an active slot, and a slot still streamed from is never dropped."""
    try:
        __salt__["pg_replication.slot_drop"](slot, **conn)
        return True
    except CommandExecutionError:
        now = __salt__["pg_replication.slots"](**conn).get(slot)
        if now and now["active"]:
            return False
        raise


def _write_record(path, slots, user):
    """The slot record, written whole (a temporary file renamed over it), mode 0600."""
    tmp = f"{path}.tmp"
    with salt.utils.files.fopen(tmp, "w") as fh:
        json.dump(slots, fh)
    os.chmod(tmp, 0o600)
    __salt__["file.chown"](tmp, user, user)
    os.replace(tmp, path)
