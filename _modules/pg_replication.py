# SPDX-License-Identifier: Apache-2.0
"""PostgreSQL replication management: slots, roles with SCRAM passwords, server status and
standby bootstrap helpers.

Salt merges the files that share the virtual name ``pg_replication`` into one module:
this one (the formula's own view: ``plan``, ``remembered_plan``, ``member``),
``pg_replication_slots``, ``pg_replication_roles``, ``pg_replication_server`` (this
server) and ``pg_replication_peer`` (the cluster's other servers). Every query goes
through one psycopg2 connection per loader (a state run), cached in ``__context__`` by
``_utils/pg_replication_connection.py``; no ``psql`` is spawned. Identifiers are quoted
with ``psycopg2.sql``. Passwords are turned into SCRAM-SHA-256 verifiers on the minion and
never returned or logged.

Connection settings come from keyword arguments (``host``, ``port``, ``user``, ``dbname``),
else from the ``pg_replication.connection`` config/pillar dictionary, else the local socket
as ``postgres``.

:depends: psycopg2
"""

import copy
import sys

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    # Loads without psycopg2 so that ``plan`` (pure) renders the formula on a fresh minion;
    # the formula then installs psycopg2 into Salt's Python before any query runs.
    return __virtualname__


def driver_installed(python=None):
    """
    Whether psycopg2 imports in the Python that runs this minion (``python``, default
    ``sys.executable``: another interpreter's answer is not known here, so False).
    psycopg2.sls asks at render: an in-process answer, where an ``unless`` on the install
    state costs about a second of every re-apply (the state system's look-up of
    ``pip.mod_run_check`` loads every execution module).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.driver_installed
    """
    return __utils__["pg_replication_connection.driver_installed"]() and python in (None, sys.executable)


def plan(config, minion_id=None, secrets=False, grains=None, remember_for=None):
    """
    Validate the ``pg_replication`` configuration and return this minion's plan
    (role, primary, standbys, backup hosts, sized settings, pg_hba lines).
    Raises CommandExecutionError naming the pillar keys at fault. Passwords are replaced by
    ``********`` unless ``secrets`` is true (map.jinja asks for them; a job's return, kept
    in the master's job cache, should not hold them). ``grains`` (default: the minion's)
    gives ``os`` and ``osmajorrelease`` (a PostgreSQL version that release does not ship is
    refused unless ``upstream_repo`` is set) and ``init`` (systemd: the cluster's own unit).
    ``remember_for`` (what map.jinja's result depends on: its pillar and the grains it and
    the plan read): keep the plan for :func:`remembered_plan`.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.plan "$(salt-call --out=json pillar.get pg_replication)"
    """
    try:
        if grains is None:
            grains = {k: __grains__.get(k) for k in ("os", "osmajorrelease", "init")}
        result = __utils__["pg_replication_plan.build"](
            config, minion_id or __grains__["id"], grains, mine=_mine_addresses(config)
        )
    except ValueError as exc:
        raise CommandExecutionError(str(exc)) from exc
    result = result if secrets else __utils__["pg_replication_plan.redact"](result)
    if remember_for is not None:
        # A copy: the key must not follow later changes made in place to the pillar or grains.
        __context__[_REMEMBERED_PLAN] = (copy.deepcopy(remember_for), result)
    return result


# Where map.jinja's plan is kept for the rest of a state run. A state run's loader gets a
# copy of the minion's __context__ (salt/modules/state.py), so what is kept here ends with
# the run: the next run, and any other job, builds its own plan.
_REMEMBERED_PLAN = "pg_replication.remembered_plan"


def remembered_plan(key):
    """
    The plan map.jinja built earlier in this state run for the same ``key`` (its pillar and
    the grains it and the plan read: ``{"pillar": ..., "grains": [...]}``), or None. Every
    SLS file and template of the formula imports map.jinja; the first builds the plan
    (defaults.yaml, osfamilymap.yaml, the pillar, validation), the others take it from
    here. Outside a state run it is always None.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.remembered_plan '{"pillar": {}, "grains": []}'
    """
    kept = __context__.get(_REMEMBERED_PLAN)
    if kept and kept[0] == key:
        return kept[1]
    return None


def _mine_addresses(config):
    """The Salt mine's addresses for the hosts the pillar gives none (asked only then)."""
    request = __utils__["pg_replication_plan.mine_request"](config)
    if not request:
        return {}
    minion_ids, function = request
    return __salt__["mine.get"](",".join(minion_ids), function, tgt_type="list") or {}


def member(change=None, tplroot="pg_replication"):
    """
    This minion in the cluster, for the master's runners: what the pillar makes it (role,
    peers, paths, service) and, on a PostgreSQL server, where the running server stands
    (:py:func:`position`) or, when it is down, its ``pg_controldata``. No secret.
    ``change`` is a change of the ``pg_replication`` pillar to plan with, as the runners pass
    it to ``state.apply``: ``{"hosts": {id: {"role": ...}}, "barman": {"primary": ...}}``.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.member
    """
    # map.jinja exports ``merged`` only when it builds the plan, not when it remembers one
    # (a second call in the same loader): let it build.
    __context__.pop(_REMEMBERED_PLAN, None)
    # The formula's own template, from the fileserver (the master, or file_roots masterless).
    template = f"salt://{tplroot}/files/member.jinja"
    plan = __salt__["slsutil.renderer"](
        path=template, default_renderer="jinja|json", tplroot=tplroot, change=dict(change or {})
    )
    if not plan:
        raise CommandExecutionError(f"{template} did not render (is the formula on the fileserver?)")
    record = __utils__["pg_replication_member.record"]
    if not __utils__["pg_replication_member.has_server"](plan):
        return record(plan)
    conn = {"host": plan["socket_dir"], "port": plan["port"]}
    try:
        where = __salt__["pg_replication.position"](**conn)
        out = record(plan, where, __salt__["pg_replication.status"](**conn))
    except CommandExecutionError as exc:
        control = __salt__["pg_replication.controldata"](plan["data_dir"], plan["bin_dir"])
        out = record(plan, control=control, error=str(exc))
    # The watchdog's fence marker (pg_replication_fence): None, or when and why it fenced.
    out["server"]["fenced"] = __salt__["pg_replication.fence_marker"]()
    return out
