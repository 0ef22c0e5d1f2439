# SPDX-License-Identifier: Apache-2.0
"""States for PostgreSQL replication: slots, roles with SCRAM passwords, standby bootstrap
and restarts for settings that need one.

Every state supports ``test=True`` and predicts exactly what a real run changes. Changes
name what changed (``password: changed``) but never hold a password or a verifier.

The states are split by concern over files that share this virtual name, which Salt's loader
merges: this file (a cluster initialised, restarts, the running roles agree with the pillar),
``pg_replication_slots.py``, ``pg_replication_roles.py`` and ``pg_replication_standby.py``.

.. code-block:: yaml

    standby_slot:
      pg_replication.slot_present

    replicator:
      pg_replication.role_present:
        - password: {{ pillar['pg_replication']['replication']['password'] }}
        - replication: True
"""

import os

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


def _other_primaries_refused(name, timeline, others):
    """Why the primary ``name`` (on ``timeline``) must not go on when standbys of the pillar
    answer as primaries (``others``: {id: timeline}); None when none does."""
    newer = {peer: tli for peer, tli in others.items() if tli > timeline}
    if newer:
        peer = max(newer, key=newer.get)
        return (
            f"{peer} runs a primary on a newer timeline ({newer[peer]}) than {name} ({timeline}): a "
            f"failover happened. Make {peer} the pillar's primary, then run "
            f"`salt-run pg_replication.rejoin host={name}`"
        )
    if others:
        listed = ", ".join(f"{peer} (timeline {tli})" for peer, tli in sorted(others.items()))
        return (
            f"two primaries: {name} (timeline {timeline}) and {listed}, which the pillar makes a "
            f"standby. Run `salt-run pg_replication.rejoin host=<it>` for each of them"
        )
    return None


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
        disagreement = _other_primaries_refused(name, running["timeline"], others)
        if disagreement:
            return __utils__["pg_replication_state.fail"](ret, disagreement)
    ret["comment"] = f"{name} runs as the pillar's {role} (timeline {running['timeline']})"
    return ret
