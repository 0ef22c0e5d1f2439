# SPDX-License-Identifier: Apache-2.0
"""
The automatic failover's monitor: a salt-master engine that watches a pg_replication
cluster, fires an event on the master's bus for each change it sees, and, with the pillar's
``ha:mode: automatic``, fails the primary over when it is lost.

Every ``ha:check_interval`` seconds it asks each PostgreSQL server ``pg_replication.health``
(running, in recovery, WAL position, WAL receiver; and its ``ha`` pillar); while the
primary does not answer as a primary it also asks each other server, and each of Barman's
hosts (a witness), whether it reaches the primary's PostgreSQL port (``network.connect``),
and tries that port itself. What it decides from the answers is pure
code, ``_utils/pg_replication_ha.py`` (the states, the majority, eligibility, cooldown).
Every 30 s, and after a failover, it re-reads the cluster (``saltutil.refresh_pillar``,
``pg_replication.member``): the pillar's primary, its standbys, their addresses. Each step of
a re-read gives a minion up after a few seconds (``READ_WAIT``), so that a primary lost in
the middle of one delays the next check by that much at most. In the middle of a failure it
asks only the servers that answered its last check, and changes its picture only if the
pillar names another primary (an operator's failover).

A failover is the runner's own (``pg_replication.failover`` with ``to`` the chosen standby
and ``fenced=True``: by then the old primary's watchdog has fenced it), through Salt's
RunnerClient: the same checks, the same steps, the same one cluster lock as an operator's
run (a held lock is a refusal, tried again later). Its return, with the pillar change to
commit, is in the ``promoted`` event and in the state file
``<cachedir>/pg_replication/ha.json``, which ``salt-run pg_replication.cluster_status``
shows. The engine then decides nothing more until ``ha:failover_cooldown`` has passed and
the pillar names the promoted standby as the primary.

Configuration (master config; the modules synced first with ``salt-run
saltutil.sync_all``, then the master restarted, as for any engine):

.. code-block:: yaml

    engines:
      - pg_replication_ha:
          tgt: '*'            # the minions of the cluster (a compound target: a glob, G@...)
          topology_every: 30  # s between two re-reads of the cluster

Events (tag ``salt/pg_replication/ha/<name>``): ``healthy``, ``primary_suspected``,
``primary_back``, ``no_majority``, ``primary_lost``, ``manual``, ``refused``,
``cooldown``, ``candidate_chosen``, ``promoted``, ``failover_failed``,
``waiting_for_pillar``, ``no_cluster``; with ``ha:auto_rejoin``, ``rejoining``,
``rejoined``, ``rejoin_failed``, ``rejoin_refused`` (the former primary is rejoined through
the runner's ``pg_replication.rejoin`` once the pillar makes it a standby and it is back,
PostgreSQL down). Watch them with ``salt-run state.event 'salt/pg_replication/ha/*' pretty=True``.
"""

import concurrent.futures
import logging
import socket
import time

import salt.client
import salt.runner
import salt.utils.event

log = logging.getLogger(__name__)

__virtualname__ = "pg_replication_ha"
TAG = "salt/pg_replication/ha"
# Whether a server reaches the primary's port: its connect's timeout (a LAN answers in
# milliseconds, and a lost SYN is sent again after 1 s; a timeout only ever counts towards
# "lost", which the decision needs on every tick for ha:failover_timeout), and how long the
# tick waits for the answers.
PROBE_TIMEOUT = 1.5
PROBE_WAIT = 2.5
# A re-read of the cluster: the ping's wait for a silent minion, and the most each of the
# pillar refresh and the member records may take. A minion lost in the middle of a re-read
# (the primary's, say) then holds the ticks up for seconds, not Salt's timeouts (36 s were
# measured with LocalClient.cmd's: 10 s + find_job for the refresh, 20 s + find_job for
# the records).
READ_PING_WAIT = 2.0
READ_WAIT = 6.0


def __virtual__():
    return __virtualname__


class _Watch:
    """One engine's connections to the master and its picture of the cluster."""

    def __init__(self, tgt, topology_every):
        self.tgt = tgt
        self.topology_every = topology_every
        self.client = salt.client.get_local_client(mopts=__opts__)
        self.bus = salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False)
        self.cachedir = __opts__["cachedir"]
        self.ha = __utils__["pg_replication_ha.config"]
        self.cluster = None
        self.read_at = None
        self.said_no_cluster = False
        # Whether the periodic re-read may run (Decider.rereads, after each tick).
        self.rereads = True
        # The servers that answered the last tick's health check.
        self.answered = []
        # The servers that did not.
        self.silent = []
        # Whether the last tick found the primary not running as a primary.
        self.suspecting = False
        # Where the master tries the primary's port while the peers are asked.
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def fire(self, name, data):
        log.warning("pg_replication HA: %s %s", name, data)
        self.bus.fire_event(data, f"{TAG}/{name}")

    def topology(self, now, force=False):
        """The cluster model (``pg_replication_cluster.Cluster``), re-read every
        ``topology_every`` seconds while the primary is healthy or after a failover; in the
        middle of a failure (a silent minion would hold every call up) only
        :meth:`primary_renamed`'s read; the last one otherwise."""
        due = self.read_at is None or now - self.read_at >= self.topology_every
        if not force and not due:
            return self.cluster
        if not force and self.cluster is not None and not self.rereads:
            return self.primary_renamed(now)
        self.read_at = now
        try:
            cluster = self._read(self.tgt, "compound")
        except Exception as exc:  # noqa: BLE001 - the engine must go on watching  # pylint: disable=broad-except
            log.warning("pg_replication HA: could not read the cluster: %s", exc)
            cluster = None
        if cluster is not None:
            self.cluster = cluster
        elif self.cluster is None and not self.said_no_cluster:
            self.said_no_cluster = True
            self.fire("no_cluster", {"tgt": self.tgt, "comment": "no minion answered with a pg_replication pillar"})
        return self.cluster

    def _read(self, tgt, tgt_type="list"):
        """The cluster model from the member answers of the minions of ``tgt`` that answer a
        ping, their pillar refreshed first (at once: ``answering_with``); None when none
        answers with one. Each step gives a minion up after ``READ_WAIT`` seconds."""
        if not tgt:
            return None
        _, refreshed = __utils__["pg_replication_jobs.answering_with"](
            self.client, tgt, "saltutil.refresh_pillar", kwarg={"wait": True}, ping_wait=READ_PING_WAIT,
            wait=READ_WAIT, tgt_type=tgt_type,
        )  # fmt: skip
        if not refreshed:
            return None
        answers = __utils__["pg_replication_jobs.gather"](self.client, sorted(refreshed), "pg_replication.member",
                                                           wait=READ_WAIT)  # fmt: skip
        return __utils__["pg_replication_cluster.from_answers"](answers) if answers else None

    def primary_renamed(self, now):
        """In the middle of a failure the engine keeps the picture it decides on, unless the
        pillar names another primary meanwhile (an operator ran ``salt-run
        pg_replication.failover`` and made its pillar change): without this, it would watch
        the former primary until the master restarts. Read from the servers that answered
        the last tick only, so that a silent minion holds nothing up."""
        self.read_at = now
        try:
            cluster = self._read(self.answered)
        except Exception as exc:  # noqa: BLE001 - the engine must go on watching  # pylint: disable=broad-except
            log.warning("pg_replication HA: could not re-read the pillar's primary: %s", exc)
            return self.cluster
        if cluster is not None and cluster.pillar_primary() != self.cluster.pillar_primary():
            log.warning("pg_replication HA: the pillar names %s as the primary now", cluster.pillar_primary())
            self.cluster = cluster
        return self.cluster

    def observe(self, cluster, ha):
        """One tick's observation for ``Decider.step``. A silent minion costs the tick
        ``check_interval + 1`` seconds, no more (``pg_replication_jobs.collect``: no
        ``find_job`` after it). While the primary is not seen healthy, each peer is also
        asked whether it reaches its port (from the second such tick on, in the same breath
        as the health check), and so is each of Barman's hosts (a witness); the master tries
        it meanwhile."""
        primary = cluster.pillar_primary()
        servers = cluster.servers()
        standbys = [h for h in servers if h != primary and cluster.upstream(h, primary) == primary]
        peers = [h for h in servers if h != primary]  # what the primary's watchdog counts
        witnesses = cluster.backup_hosts()  # Barman's receive-wal streams from the primary
        wait = float(ha["check_interval"]) + 1
        publish, collect = __utils__["pg_replication_jobs.publish"], __utils__["pg_replication_jobs.collect"]
        target = (peers + witnesses, cluster.hosts[primary]["address"], cluster.plan["port"])
        published = [publish(self.client, servers, "pg_replication.health", kwarg=cluster.conn(primary))]
        if self.suspecting:  # the port asked at once
            job, master_reaches = self._probe(*target)
            published.append(job)
        answers, *reached = collect(self.client, published, max(wait, PROBE_WAIT) if self.suspecting else wait)
        found = {h: a["ret"] for h, a in answers.items() if isinstance(a.get("ret"), dict)}
        self.answered = sorted(found)
        self.silent = sorted(set(servers) - set(found))
        obs = {"primary": primary, "standbys": standbys, "peers": peers, "servers": {h: found.get(h) for h in servers},
               "reaches": {}, "master_reaches": None}  # fmt: skip
        obs["ha"] = self.ha((found.get(primary) or next(iter(found.values()), {})).get("ha"))
        was_suspecting = self.suspecting
        self.suspecting = not __utils__["pg_replication_ha.primary_ok"](obs["servers"][primary])
        if self.suspecting:
            if not was_suspecting:  # the first tick that finds it so: asked now
                job, master_reaches = self._probe(*target)
                reached = collect(self.client, [job], PROBE_WAIT)
            obs["master_reaches"] = master_reaches.result()
            port_reached = __utils__["pg_replication_checks.port_reached"]
            obs["reaches"] = {s: port_reached(reached[0].get(s)) for s in peers if s in found}
            obs["witnesses"] = {w: port_reached(reached[0][w]) for w in witnesses if w in reached[0]}
        return obs

    def _probe(self, peers, address, port):
        """``peers`` asked whether they reach ``address:port`` (a published job), and the
        master trying it meanwhile (a future of :func:`_port_answers`)."""
        job = __utils__["pg_replication_jobs.publish"](
            self.client, peers, "network.connect", [address, port], {"timeout": PROBE_TIMEOUT}
        )
        return job, self.pool.submit(_port_answers, address, port)

    def failover(self, to):
        # Without the servers silent on this tick (the lost primary's minion): one would cost
        # the runner's first ping its whole wait.
        return self._run("failover", to=to, fenced=True, tgt=_without(self.tgt, self.silent))

    def rejoin(self, host):
        return self._run("rejoin", host=host)

    @staticmethod
    def _run(operation, **kwarg):
        """The runner's ``pg_replication.<operation>``: its return, or a failed one."""
        runner = salt.runner.RunnerClient(__opts__)
        try:
            return runner.cmd(f"pg_replication.{operation}", kwarg=kwarg, print_event=False)
        except Exception as exc:  # noqa: BLE001 - the engine must go on watching  # pylint: disable=broad-except
            return {"result": False, "comment": f"{operation} failed: {exc}"}

    def remember(self, decider, ha):
        # The timings decided with, and when: the runner's failover reads them to accept
        # the watchdog's fence as proof (pg_replication_ha_proof).
        timings = {k: ha[k] for k in ("check_interval", "fence_timeout", "fence_margin", "failover_timeout")}
        data = dict(decider.remembered(), mode=ha["mode"], timings=timings, updated=time.time())
        __utils__["pg_replication_ha.write_state"](self.cachedir, data)


def _without(tgt, minions):
    """The engine's ``tgt`` (a glob, or a compound target) but ``minions``."""
    return f"{tgt} and not L@{','.join(minions)}" if minions else tgt


def _port_answers(address, port, timeout=PROBE_TIMEOUT):
    """Whether ``address:port`` answers the master: accepted, or refused (the host is up:
    its watchdog reaches the master too); False when the connection times out or the
    network says the host is unreachable."""
    try:
        with socket.create_connection((address, int(port)), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def start(tgt="*", topology_every=30):
    """The engine's loop (the master starts it from its ``engines`` configuration)."""
    watch = _Watch(tgt, topology_every)
    remembered = __utils__["pg_replication_ha.read_state"](watch.cachedir)
    decider = __utils__["pg_replication_ha.decider"](time.time(), remembered)
    ha = watch.ha(None)
    while True:
        started = time.time()
        try:
            cluster = watch.topology(started)
            if cluster is not None:
                obs = watch.observe(cluster, ha)
                ha = obs["ha"]
                _decide(watch, decider, obs, ha)
                _rejoin(watch, decider, obs, ha)
                watch.rereads = decider.rereads()
                watch.remember(decider, ha)
        except Exception as exc:  # noqa: BLE001 - the engine must go on watching  # pylint: disable=broad-except
            log.exception("pg_replication HA: this tick failed: %s", exc)
        time.sleep(max(0.2, float(ha["check_interval"]) - (time.time() - started)))


def _decide(watch, decider, obs, ha):
    """One tick's decision about the primary, and the failover when one is chosen."""
    events, chosen = decider.step(time.time(), obs)
    if chosen:
        for name, data in events:
            watch.fire(name, data)
        watch.remember(decider, ha)
        ret = watch.failover(chosen)
        events = decider.failover_result(time.time(), ret, retry_after=ha["failover_timeout"])
        watch.topology(time.time(), force=True)
    for name, data in events:
        watch.fire(name, data)


def _rejoin(watch, decider, obs, ha):
    """``ha:auto_rejoin``: the former primary rejoined once it is due."""
    events, host = decider.rejoin_due(time.time(), obs)
    for name, data in events:
        watch.fire(name, data)
    if host:
        watch.remember(decider, ha)
        for name, data in decider.rejoin_result(time.time(), host, watch.rejoin(host), ha["failover_timeout"]):
            watch.fire(name, data)
        watch.topology(time.time(), force=True)
