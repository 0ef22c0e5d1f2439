"""States for PostgreSQL replication: slots, roles with SCRAM passwords, standby bootstrap
and restarts for settings that need one.

Every state supports ``test=True`` and predicts exactly what a real run changes. Changes
name what changed (``password: changed``) but never hold a password or a verifier.

.. code-block:: yaml

    standby_slot:
      pg_replication.slot_present

    replicator:
      pg_replication.role_present:
        - password: {{ pillar['pg_replication']['replication']['password'] }}
        - replication: True
"""

import json
import os

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    if "pg_replication.slots" in __salt__:
        return __virtualname__
    return (False, "pg_replication execution module could not be loaded")


# --------------------------------------------------------------------------- bootstrap


def cluster_initialized(name, initdb, runas="postgres"):
    """
    Ensure data directory ``name`` holds a cluster: run the ``initdb`` command line as
    ``runas`` when ``name``/PG_VERSION is missing, never over an existing cluster.

    What ``cmd.run`` with ``creates`` does, without its cost: for a ``creates``, ``onlyif``
    or ``unless`` the state system looks up ``cmd.mod_run_check``, which no module has, and
    the loader imports every state module looking for it (about a second of every run).
    """
    ret = __utils__["pg_replication_state.ret"](name)
    if os.path.exists(os.path.join(name, "PG_VERSION")):
        ret["comment"] = f"{name} holds a cluster"
        return ret
    ret["changes"] = {"initdb": name}
    if __opts__["test"]:
        ret.update(result=None, comment=f"a cluster would be initialised in {name}")
        return ret
    res = __salt__["cmd.run_all"](initdb, runas=runas, python_shell=False)
    if res["retcode"]:
        ret.update(result=False, changes={}, comment=f"initdb failed ({res['retcode']}): {res['stderr'][-2000:]}")
        return ret
    ret["comment"] = f"a cluster was initialised in {name}"
    return ret


# --------------------------------------------------------------------------- slots


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
    record = sorted(wanted | set(active))
    changes = {"dropped": [s for s in stale if s not in active]} if len(stale) > len(active) else {}
    if record != sorted(recorded):
        changes["record"] = record
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
            __salt__["pg_replication.slot_drop"](slot, **conn)
        if "record" in changes:
            _write_record(name, record, user)
    except (CommandExecutionError, OSError) as exc:
        return __utils__["pg_replication_state.fail"](ret, exc)
    ret.update(changes=changes, comment="; ".join(["slots follow the pillar", *notes]))
    if active:
        ret["result"] = False
    return ret


def _write_record(path, slots, user):
    """The slot record, written whole (a temporary file renamed over it), mode 0600."""
    tmp = f"{path}.tmp"
    with salt.utils.files.fopen(tmp, "w") as fh:
        json.dump(slots, fh)
    os.chmod(tmp, 0o600)
    __salt__["file.chown"](tmp, user, user)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- roles


def _role_diff(name, role, attrs, password, connlimit, groups, execute, conn):
    """What would change to bring ``role`` (None: missing) to the desired state."""
    if role is None:
        changes = {"created": True, **attrs, "connlimit": connlimit}
        if password is not None:
            changes["password"] = "set"  # noqa: S105 - what changed, not the password
        if groups:
            changes["groups"] = {"added": sorted(groups)}
        if execute:
            changes["execute"] = {"granted": list(execute)}
        return changes
    changes = {attr: {"old": role[attr], "new": value} for attr, value in attrs.items() if role[attr] != value}
    if role["connlimit"] != connlimit:
        changes["connlimit"] = {"old": role["connlimit"], "new": connlimit}
    if password is not None and not __salt__["pg_replication.role_password_matches"](name, password, **conn):
        changes["password"] = "changed"  # noqa: S105 - what changed, not the password
    if groups is not None:
        added = sorted(set(groups) - set(role["groups"]))
        removed = sorted(set(role["groups"]) - set(groups))
        if added or removed:
            changes["groups"] = {"added": added, "removed": removed}
    if execute:
        privileges = __salt__["pg_replication.function_privileges"](name, execute, **conn)
        missing = [sig for sig, granted in privileges.items() if not granted]
        if missing:
            changes["execute"] = {"granted": missing}
    return changes


def role_present(
    name,
    password=None,
    login=True,
    replication=False,
    superuser=False,
    createdb=False,
    createrole=False,
    inherit=True,
    bypassrls=False,
    connlimit=-1,
    groups=None,
    execute=None,
    password_pillar=None,
    **kwargs,
):
    """
    Ensure a role exists with exactly these attributes. Secure defaults: LOGIN and nothing
    else unless asked.

    password
        Plain password; stored as a SCRAM-SHA-256 verifier computed on the minion. An
        unchanged password is detected by recomputing the stored verifier with its salt.
    password_pillar
        The pillar key (``a:b:c``) that holds the password, read on the minion: the
        password then never appears in the state's arguments (show_sls, show_lowstate, the
        job's arguments). Prefer it to ``password``.
    groups
        Roles this role must be a member of (exactly these, when given).
    execute
        Function signatures this role must be allowed to EXECUTE, e.g.
        ``pg_backup_start(text, boolean)`` (grants are added, never revoked).
    """
    ret = __utils__["pg_replication_state.ret"](name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    if password_pillar:
        password = __utils__["pg_replication_pillar.lookup"](__pillar__, password_pillar)
        if not password or not isinstance(password, str):
            return __utils__["pg_replication_state.fail"](ret, f"pillar key {password_pillar} holds no password")
    attrs = {
        "login": login,
        "replication": replication,
        "superuser": superuser,
        "createdb": createdb,
        "createrole": createrole,
        "inherit": inherit,
        "bypassrls": bypassrls,
    }
    connlimit = int(connlimit)
    try:
        role = __salt__["pg_replication.role_get"](name, **conn)
        changes = _role_diff(name, role, attrs, password, connlimit, groups, execute, conn)
        if not changes:
            ret["comment"] = f"Role {name} is in the desired state"
            return ret
        ret["changes"] = changes
        verb = "created" if role is None else "updated"
        if __opts__["test"]:
            ret.update(result=None, comment=f"Role {name} would be {verb}")
            return ret
        if role is None:
            __salt__["pg_replication.role_create"](name, password=password, connlimit=connlimit, **attrs, **conn)
        else:
            changed = {a: attrs[a] for a in attrs if a in changes}
            __salt__["pg_replication.role_alter"](
                name,
                password=password if "password" in changes else None,
                connlimit=connlimit if "connlimit" in changes else None,
                **changed,
                **conn,
            )
        for group in changes.get("groups", {}).get("added", []):
            __salt__["pg_replication.role_grant"](group, name, **conn)
        for group in changes.get("groups", {}).get("removed", []):
            __salt__["pg_replication.role_revoke"](group, name, **conn)
        for signature in changes.get("execute", {}).get("granted", []):
            __salt__["pg_replication.function_grant"](name, signature, **conn)
        ret["comment"] = f"Role {name} {verb}"
    except CommandExecutionError as exc:
        if __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc):
            changes = _role_diff(name, None, attrs, password, connlimit, groups, execute, conn)
            return __utils__["pg_replication_state.predict"](ret, exc, changes, f"Role {name} would be created")
        return __utils__["pg_replication_state.fail"](ret, exc)
    return ret


def role_absent(name, **kwargs):
    """
    Ensure a role does not exist.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    try:
        if __salt__["pg_replication.role_get"](name, **conn) is None:
            ret["comment"] = f"Role {name} is absent"
            return ret
        return __utils__["pg_replication_state.change"](
            __opts__, ret, {"role": name, "dropped": True}, f"Role {name} would be dropped", f"Role {name} dropped",
            lambda: __salt__["pg_replication.role_drop"](name, **conn),
        )  # fmt: skip
    except CommandExecutionError as exc:
        return __utils__["pg_replication_state.absent_unless_failed"](__opts__, ret, exc, f"Role {name}")
    return ret


# --------------------------------------------------------------------------- standby


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
        source = {"primary_host": primary_host, "slot": slot, "bin_dir": bin_dir, "peer": peer, "timeout": timeout}
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
    if __opts__["test"]:
        why = f" (slot {slot} lost its WAL)" if slot_lost else ""
        ret.update(result=None, comment=ret["comment"] + f"{name} would be bootstrapped from {primary_host}{why}")
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
    ret["comment"] = f"{name} bootstrapped from {primary_host} on slot {slot}"
    return ret


# --------------------------------------------------------------------------- restarts


def restarted_if_pending(name, mode="auto", settings=None, role=None, data_dir=None, bin_dir=None, **kwargs):
    """
    Restart service ``name`` if the running server reports settings that only a restart
    applies (``pg_settings.pending_restart``), after the configuration was reloaded.

    mode
        ``auto`` restarts; ``manual`` only reports the pending restart, without failing
        (``salt-run pg_replication.rolling_restart`` then restarts the cluster in order).
    settings
        Every setting the configuration file holds (``{name: value}``): those the running
        server uses differently and applies only at a restart (and those the file no longer
        sets, which return to their defaults) need one too, in test mode and in a real run.
    role, data_dir, bin_dir
        On a standby, a restart that would lower a setting below the value its primary
        recorded (max_connections and the other hot-standby minimums) is not made: the
        standby would not start. The primary must restart first (the rolling restart does).
    """
    ret = __utils__["pg_replication_state.ret"](name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    try:
        pending = __salt__["pg_replication.pending_restart"](**conn)
        # The rendered settings against the running ones: what a test run predicts, and in a
        # real run what pending_restart may not show yet (the reload's SIGHUP reaches this
        # session's backend asynchronously).
        upcoming = __salt__["pg_replication.restart_values"](settings, **conn) if settings is not None else {}
        if settings:
            pending = sorted(set(pending) | set(upcoming))
    except CommandExecutionError as exc:
        if __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc):
            # A server started by this run reads its configuration fresh.
            ret["comment"] = f"The server is not running yet; it starts with its new configuration ({exc})"
            return ret
        return __utils__["pg_replication_state.fail"](ret, exc)
    if not pending:
        ret["comment"] = "No setting waits for a restart"
        return ret
    held = _restart_held(mode, settings, role, data_dir, bin_dir, upcoming)
    if held:
        ret["comment"] = f"{name} needs a restart for {', '.join(pending)}, not made: {held}"
        ret["warnings"] = [ret["comment"]]
        return ret
    ret["changes"] = {"restarted": name, "settings": pending}
    if __opts__["test"]:
        ret.update(result=None, comment=f"{name} would be restarted for {', '.join(pending)}")
        return ret
    if not __salt__["service.restart"](name):
        return __utils__["pg_replication_state.fail"](ret, f"restarting {name} failed")
    ret["comment"] = f"{name} restarted for {', '.join(pending)}"
    return ret


def _restart_held(mode, settings, role, data_dir, bin_dir, upcoming):
    """Why a pending restart must not be made now (None: make it). ``upcoming``: the
    restart-only values the rendered ``settings`` bring (pg_replication.restart_values)."""
    rolling = "run `salt-run pg_replication.rolling_restart`"
    if role == "standby" and settings is not None and data_dir:
        recorded = __salt__["pg_replication.primary_minimums"](data_dir, bin_dir)
        lowered = __utils__["pg_replication_settings.lowered_minimums"](upcoming, recorded)
        if lowered:
            what = ", ".join(f"{k} {new} < {old}" for k, (old, new) in sorted(lowered.items()))
            return f"it would lower settings below the primary's ({what}); restart the primary first: {rolling}"
    if mode == "manual":
        return f"pg_replication:restart:{role or 'primary'} is manual; {rolling}"
    return None


# --------------------------------------------------------------------------- roles agree


def _peer_primaries(peers, **peer_conn):
    """The pillar's standbys that answer as primaries: {id: timeline}."""
    found = {}
    for peer_id, address in (peers or {}).items():
        peer = __salt__["pg_replication.peer_position"](address, **peer_conn)
        if peer is not None and not peer["in_recovery"]:
            found[peer_id] = peer["timeline"]
    return found


def role_agrees(name, role, primary=None, peers=None, user="replicator", passfile=None, tls=None, **kwargs):
    """
    Fail, changing nothing, when the running cluster disagrees with the pillar: a highstate
    never promotes, demotes, rewinds or wipes on its own. Use it with ``failhard: True``
    before the states that configure the server.

    name
        This minion's id (for the messages).
    role
        What the pillar makes this host: ``primary`` or ``standby``.
    primary
        The pillar's primary (id), named in the messages.
    peers
        On the primary: the pillar's standbys, ``{id: address}``; one that answers as a
        primary (a failover happened and the pillar was not changed) is refused.
    user, passfile, tls
        How the peers are asked: the replication role, its ``.pgpass``, and libpq's TLS
        options (``sslmode``, ``sslrootcert``, ``channel_binding``).

    A server that is not running (or not installed yet) has nothing to disagree with.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    conn = __utils__["pg_replication_postgres.conn_kwargs"](kwargs)
    try:
        running = __salt__["pg_replication.position"](**conn)
    except CommandExecutionError as exc:
        ret["comment"] = f"No running server to compare with the pillar ({exc})"
        return ret
    if role == "standby" and not running["in_recovery"]:
        return __utils__["pg_replication_state.fail"](
            ret,
            f"{name} runs a primary (timeline {running['timeline']}) but the pillar makes it a standby of {primary}. "
            f"A highstate never demotes a primary: run `salt-run pg_replication.rejoin host={name}` to make it a "
            f"standby of {primary}, or make {name} the primary in the pillar",
        )
    if role == "primary" and running["in_recovery"]:
        return __utils__["pg_replication_state.fail"](
            ret,
            f"the pillar makes {name} the primary but its server is a standby (timeline {running['timeline']}). "
            f"A highstate never promotes: run `salt-run pg_replication.switchover to={name}`, or correct the pillar",
        )
    if role == "primary":
        try:
            others = _peer_primaries(peers, port=conn.get("port", 5432), user=user, passfile=passfile, tls=tls)
        except CommandExecutionError as exc:
            return __utils__["pg_replication_state.fail"](
                ret, f"cannot ask the standbys whether they are standbys: {exc}"
            )
        newer = {peer: tli for peer, tli in others.items() if tli > running["timeline"]}
        if newer:
            peer = max(newer, key=newer.get)
            return __utils__["pg_replication_state.fail"](
                ret,
                f"{peer} runs a primary on a newer timeline ({newer[peer]}) than {name} ({running['timeline']}): a "
                f"failover happened. Make {peer} the pillar's primary, then run "
                f"`salt-run pg_replication.rejoin host={name}`",
            )
        if others:
            listed = ", ".join(f"{peer} (timeline {tli})" for peer, tli in sorted(others.items()))
            return __utils__["pg_replication_state.fail"](
                ret,
                f"two primaries: {name} (timeline {running['timeline']}) and {listed}, which the pillar makes a "
                f"standby. Run `salt-run pg_replication.rejoin host=<it>` for each of them",
            )
    ret["comment"] = f"{name} runs as the pillar's {role} (timeline {running['timeline']})"
    return ret
