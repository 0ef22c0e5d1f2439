# SPDX-License-Identifier: Apache-2.0
"""The shape of ``pg_replication.member``'s answer, written once for both sides: the minion
builds its record with :func:`record`, the master's runners read each answer with
:func:`problems` (and drop what is not a record).

A record is ``{"plan": {...}, "server": {...}}``:

- ``plan``: the keys :data:`PLAN_KEYS` of the minion's plan (no secret), and
  ``barman_pillar``: what the pillar itself says of Barman (:data:`BARMAN_PILLAR_KEYS`), which
  a change of roles must keep.
- ``server``, on a PostgreSQL server only (:data:`SERVER_ROLES`): where the running server
  stands (``pg_replication.position`` with ``running``, its ``slots``, its WAL ``receiver``
  and replay ``lag``), or, when it is down, what its ``pg_controldata`` says (``running``
  false, the ``error`` that said so, ``state``, ``timeline``, ``checkpoint``).

Pure logic; runs on the minion's Python (3.9 on Debian 11).
"""

# The roles whose minion runs a PostgreSQL server (and whose record has "server").
SERVER_ROLES = ("primary", "standby")
# What the runners need of a member's plan.
PLAN_KEYS = ("minion_id", "role", "me", "hosts", "version", "port", "data_dir", "conf_dir", "bin_dir",
             "socket_dir", "home", "service_name", "replication", "barman_servers", "switchover",
             "served_slots", "peer_tls", "routing", "pkgs", "upgrade", "initdb_command")  # fmt: skip
# What the pillar's barman section says itself (not what the plan derives from it).
BARMAN_PILLAR_KEYS = ("primary", "server_name", "backup_max_age")


def has_server(plan):
    """Whether the minion of ``plan`` runs a PostgreSQL server (its record has ``server``)."""
    return plan.get("role") in SERVER_ROLES


def record(plan, where=None, status=None, control=None, error=None):
    """The member record of a minion whose plan is ``plan``. On a server: running, from its
    position ``where`` and its ``status`` (``slots``, ``wal_receiver``, ``lag``); down
    (``where`` None), from its pg_controldata fields ``control`` and the ``error`` that
    said it is down."""
    out = {"plan": {key: plan.get(key) for key in PLAN_KEYS}}
    out["plan"]["barman_pillar"] = {key: (plan.get("barman") or {}).get(key) for key in BARMAN_PILLAR_KEYS}
    if not has_server(plan):
        return out
    if where is not None:
        out["server"] = dict(where, running=True, slots=status["slots"])
        out["server"].update(receiver=status.get("wal_receiver"), lag=status.get("lag"))
        return out
    control = control or {}
    out["server"] = {
        "running": False,
        "error": error,
        "state": control.get("Database cluster state"),
        "timeline": int(control["Latest checkpoint's TimeLineID"]) if control else None,
        "checkpoint": control.get("Latest checkpoint location"),
    }
    return out


def problems(answer):
    """What keeps ``answer`` from being a member record (empty: it is one)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("plan"), dict):
        return ["no plan"]
    plan = answer["plan"]
    out = [f"no plan key {key}" for key in (*PLAN_KEYS, "barman_pillar") if key not in plan]
    if has_server(plan) and not (isinstance(answer.get("server"), dict) and "running" in answer["server"]):
        out.append(f"no server for a {plan['role']}")
    return out


def streams_from(server, address=None):
    """Whether the running standby of ``server`` (a record's ``server``) streams, from the
    server at ``address`` when given."""
    server = server or {}
    receiver = server.get("receiver") or {}
    streaming = server.get("running") and server.get("in_recovery") and receiver.get("status") == "streaming"
    return bool(streaming and (address is None or receiver.get("sender_host") == address))
