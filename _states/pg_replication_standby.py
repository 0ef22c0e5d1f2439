# SPDX-License-Identifier: Apache-2.0
"""The ``pg_replication`` state of a standby (the module: ``pg_replication.py``): its data
directory bootstrapped from the primary with pg_basebackup, rebuilt or its slot renewed when
the slot lost its WAL, never wiped without leave."""

import os

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    if "pg_replication.slots" in __salt__:
        return __virtualname__
    return (False, "pg_replication execution module could not be loaded")


def _stop_before_wipe(datadir, service, timeout=60):
    """Stop the server and confirm it stopped (no postmaster.pid left) before a wipe."""
    __salt__["service.stop"](service)
    pid_file = os.path.join(datadir, "postmaster.pid")
    if not __utils__["pg_replication_poll.until"](lambda: not os.path.exists(pid_file), timeout, 0.5):
        raise CommandExecutionError(f"the server of {datadir} did not stop ({pid_file} remains); nothing wiped")


def _wait_for_primary(host, timeout, **peer):
    return __utils__["pg_replication_poll.retry"](
        lambda: __salt__["pg_replication.primary_system_identifier"](host, **peer),
        timeout,
        # One connection attempt: the sooner the primary is seen, the sooner the copy starts.
        interval=0.5,
    )


def _renew_lost_slot(ret, primary_host, slot, peer):
    """A standby whose slot lost its WAL, with a restore_command: the slot made again
    (reserving WAL from now); the standby takes what it misses from the archive."""
    ret["changes"] = {"lost_slot": slot, "slot_renewed": True}
    if __opts__["test"]:
        ret.update(result=None, comment=f"slot {slot} on {primary_host} would be made again; "
                   "the standby would catch up from the archive (restore_command)")  # fmt: skip
        return ret
    __salt__["pg_replication.peer_slot_renew"](primary_host, slot, **peer)
    ret["comment"] = f"slot {slot} on {primary_host} lost its WAL: made again; the standby catches up from the archive"
    return ret


def standby_bootstrapped(
    name,
    primary_host,
    slot,
    version,
    service,
    primary_port=5432,
    user="replicator",
    passfile=None,
    bin_dir=None,
    wipe_unrelated_data=False,
    wipe_promoted_copy=False,
    rebuild_lost_slot=True,
    catch_up_from_archive=False,
    timeout=300,
    tls=None,
    from_barman=None,
):
    """
    Ensure ``name`` (a data directory) holds a standby of the primary at ``primary_host``.

    A directory that already holds a standby of this primary (same system identifier,
    standby.signal / recovery.conf present) is left alone, unless its slot on the primary
    lost the WAL it needs (``wal_status = lost``, PostgreSQL 13+): such a standby can never
    catch up from the primary. With ``catch_up_from_archive`` (its restore_command fetches
    WAL from Barman's archive) only the slot is made again: the standby replays the rest from
    the archive and streams on. Otherwise, with ``rebuild_lost_slot`` (the default) it is
    rebuilt: the server stopped, the directory emptied, the slot made again and a new base
    backup taken. An empty or
    missing directory is filled with pg_basebackup over the replication role and ``slot``.
    A copy of the primary's system that is not a standby (a former primary, or a promoted
    standby) is refused unless ``wipe_promoted_copy`` is true (it may hold commits nobody
    else has: ``salt-run pg_replication.rejoin`` keeps them); anything else is refused unless
    ``wipe_unrelated_data`` is true. A directory is emptied only once its server is confirmed
    stopped, and never ``/``, a system directory or a directory less than two levels deep.
    The primary is waited for up to ``timeout`` seconds. ``tls``: libpq's ``sslmode``,
    ``sslrootcert`` and ``channel_binding`` for every connection to the primary.
    ``from_barman`` (``barman_host``, ``server``: standby:bootstrap_from barman): the directory
    is filled with Barman's latest DONE backup instead (``pg_replication.barman_backup_fetch``,
    over SSH; its WAL comes through restore_command), and from the primary only when Barman
    has none it can send.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    peer = {"port": primary_port, "user": user, "passfile": passfile, "tls": tls}
    allowed = {"catch_up_from_archive": catch_up_from_archive, "rebuild_lost_slot": rebuild_lost_slot,
               "wipe_unrelated_data": wipe_unrelated_data, "wipe_promoted_copy": wipe_promoted_copy}  # fmt: skip
    try:
        facts = _bootstrap_facts(ret, name, primary_host, slot, version, peer, timeout)
        decision = __utils__["pg_replication_bootstrap.decide"](dict(facts, **allowed))
        action = decision["action"]
        if action == "keep":
            ret["comment"] += decision["comment"]
            return ret
        if action == "refuse":
            return __utils__["pg_replication_state.fail"](ret, decision["reason"])
        if action == "renew_slot":
            return _renew_lost_slot(ret, primary_host, slot, peer)
        source = {"primary_host": primary_host, "slot": slot, "bin_dir": bin_dir, "peer": peer, "timeout": timeout,
                  "from_barman": from_barman}  # fmt: skip
        return _base_backup(ret, name, version, service, source, wipe=action == "rebuild",
                            slot_lost=decision.get("slot_lost", False))  # fmt: skip
    except CommandExecutionError as exc:
        return __utils__["pg_replication_state.fail"](ret, exc)


def _bootstrap_facts(ret, name, primary_host, slot, version, peer, timeout):
    """What pg_replication_bootstrap.decide reads: the directory, the primary's system (in
    test mode not waited for: if it does not answer, ``ret``'s comment says why) and, for a
    standby of it, whether its slot lost its WAL."""
    local_id = __salt__["pg_replication.datadir_system_identifier"](name)
    empty = not os.path.isdir(name) or not os.listdir(name)
    wait = 0 if __opts__["test"] else timeout
    try:
        primary_id = _wait_for_primary(primary_host, wait, **peer)
    except CommandExecutionError as exc:
        if not __opts__["test"]:
            raise
        primary_id = None
        ret["comment"] = f"({exc}) "
    marker, _ = __utils__["pg_replication_postgres.standby_marker"](name, version)
    facts = {"name": name, "real_path": os.path.realpath(name), "primary_host": primary_host, "slot": slot,
             "minion_id": __grains__.get("id"), "local_id": local_id, "primary_id": primary_id, "empty": empty,
             "marked": os.path.exists(marker), "slot_lost": None}  # fmt: skip
    if __utils__["pg_replication_bootstrap.is_standby_of_primary"](facts):
        found = __salt__["pg_replication.peer_slot"](primary_host, slot, **peer) or {}
        facts["slot_lost"] = found.get("wal_status") == "lost"
    return facts


def _base_backup(ret, name, version, service, source, wipe, slot_lost):
    """Fill ``name`` with a base backup of ``source`` (primary_host, slot, bin_dir, peer,
    timeout): emptied first with ``wipe``, the slot made again first with ``slot_lost``."""
    primary_host, slot, peer = source["primary_host"], source["slot"], source["peer"]
    ret["changes"] = {"bootstrapped": name, "primary": primary_host, "slot": slot}
    if wipe:
        ret["changes"]["wiped"] = True
    if slot_lost:
        ret["changes"]["lost_slot"] = slot
    from_barman = source.get("from_barman")
    origin = f"Barman at {from_barman['barman_host']} (else {primary_host})" if from_barman else primary_host
    if __opts__["test"]:
        why = f" (slot {slot} lost its WAL)" if slot_lost else ""
        ret.update(result=None, comment=ret["comment"] + f"{name} would be bootstrapped from {origin}{why}")
        return ret
    if wipe:
        _stop_before_wipe(name, service)
        __salt__["file.remove"](name)
    if slot_lost:
        __salt__["pg_replication.peer_slot_renew"](primary_host, slot, **peer)
    __salt__["file.mkdir"](name, user="postgres", group="postgres", mode="0700")

    def empty_datadir():
        # e.g. the primary has not created the slot yet: start again from empty.
        for entry in os.listdir(name):
            __salt__["file.remove"](os.path.join(name, entry))

    def fetch_from_barman():
        return __salt__["pg_replication.barman_backup_fetch"](name, from_barman["barman_host"], from_barman["server"])

    # The backup host may authorize this server's key only now (its own highstate): retried.
    from_backup = bool(from_barman) and __utils__["pg_replication_poll.retry"](
        fetch_from_barman, source["timeout"], interval=2, before_retry=empty_datadir
    )
    if from_backup:
        ret["changes"]["from_barman"] = from_barman["server"]
    else:
        empty_datadir()
        __utils__["pg_replication_poll.retry"](
            lambda: __salt__["pg_replication.basebackup"](name, primary_host, slot, bin_dir=source["bin_dir"], **peer),
            source["timeout"],
            interval=1,
            before_retry=empty_datadir,
        )
    if __utils__["pg_replication_postgres.uses_standby_signal"](version):
        marker, _ = __utils__["pg_replication_postgres.standby_marker"](name, version)
        __salt__["file.touch"](marker)
        __salt__["file.chown"](marker, "postgres", "postgres")
    origin = f"Barman's backup of {from_barman['server']}" if from_backup else primary_host
    ret["comment"] = f"{name} bootstrapped from {origin} on slot {slot}"
    return ret
