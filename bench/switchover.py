"""Write unavailability during a planned switchover: the formula's runner against Patroni
(the peer), in one run, on the same three lab hosts (a primary and two standbys, booted
from the ``patroni`` image: bookworm, PostgreSQL 15, Debian's Patroni 3.0.2 and etcd 3.4),
and a fourth, ``backup``, where the formula runs PgBouncer in front of its cluster.

Both clusters run side by side on the same hosts, so that they share the machine's load:
the formula's (its highstate, port 5432, Debian's /var/lib/postgresql/15/main) and
Patroni's, configured here and not by the formula (port 5433, data in
/var/lib/postgresql/patroni-bench, one etcd member on ``master``, Patroni's default
ttl 30 s / loop_wait 10 s). Rounds alternate, ours first: a client commits one row at a
time through libpq's multi-host connection string (``host=a,b,c
target_session_attrs=read-write``, connect_timeout 2 s) while

- ours: ``salt-run pg_replication.switchover to=<next>``, then the pillar change it
  returns and a highstate (:func:`bench.switchover_plot.switchover`); a second client
  commits through PgBouncer (its figures printed apart: Patroni has no pooler);
- Patroni: ``patronictl switchover --leader <primary> --candidate <next> --force``.

Each round's figures: the longest gap between two acknowledged commits (write
unavailability), the client's errors (failed statements and connections), seconds from the
command to a writable new primary and until both other members stream from it again, how
long the command took, and the acknowledged commits the new primary lacks afterwards. Then
the medians per contender and the ratio ours/Patroni of the write unavailability (goal <=
1.0, and 0 lost), drawn per round into ``docs/benchmarks-switchover.png`` (unless
``--no-plot``). Not a test: run as root, ``.venv/bin/python bench/switchover.py``
(``--quick``: one round each).
"""

import contextlib
import json
import pathlib
import secrets
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.rounds_plot import peer_main  # noqa: E402
from bench.switchover_plot import switchover as formula_switchover  # noqa: E402
from lab.demo import factories  # noqa: E402
from lab.hosts import Lab  # noqa: E402
from lab.salt import SaltLab, reference_pillar  # noqa: E402
from lab.scenario import Writer, _Background, converge, wait_for  # noqa: E402

IMAGE = ("bookworm", "patroni")
PLOT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks-switchover.png"
SERVERS = ("master", "standby", "standby2")
# PgBouncer (the formula's pooler, pointed at the primary) on a host of its own: ours gets a
# second client through it. Patroni's cluster has none (Patroni configures no pooler).
POOLER = "backup"
POOLER_PORT = 6432
ROLES = {"master": "primary", "standby": "standby", "standby2": "standby", POOLER: "pooler"}
CONTENDERS = ("ours", "patroni")
# Seconds of commits before the command and after every member streams again.
STEADY = 5
# Seconds a round may take to get a writable primary that every member streams from.
SETTLE_TIMEOUT = 240
PATRONI_PORT = 5433
PATRONI_CONFIG = "/etc/patroni/bench.yml"
PATRONI_DATA = "/var/lib/postgresql/patroni-bench"
PATRONI_UNIT_FILE = "/run/bench-patroni.unit"
ETCD_HOST = "master"
# One etcd member (v2 API: Patroni 3.0's ``etcd`` DCS), on ETCD_HOST's lab address.
ETCD_DEFAULTS = """\
ETCD_NAME=bench
ETCD_DATA_DIR=/var/lib/etcd/bench
ETCD_ENABLE_V2=true
ETCD_LISTEN_CLIENT_URLS=http://{address}:2379,http://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=http://{address}:2379
ETCD_LISTEN_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_CLUSTER=bench=http://127.0.0.1:2380
"""
# The new primary's view: in recovery still, and how many of the other members stream from it.
# The runner's Salt jobs between the end of the primary's writes and ``to``'s promotion: the
# write gap's critical path, timed from the master's job events (``new`` to ``ret``).
GAP_JOBS = ("service.stop", "pg_replication.controldata", "pg_replication.position", "pg_replication.promote")
STATUS_SQL = (
    "SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_stat_replication"
    " WHERE state = 'streaming' AND application_name IN ({names}))"
)


def patroni_config(lab, host, passwords, etcd_host=ETCD_HOST):
    """Patroni's YAML for ``host`` (JSON is YAML): Patroni's defaults but for the paths and
    port kept apart from the formula's cluster on the same host."""
    address, network = lab[host].address, str(lab.network)
    config = {
        "scope": "bench",
        "name": host,
        "restapi": {"listen": f"{address}:8008", "connect_address": f"{address}:8008"},
        "etcd": {"host": f"{lab[etcd_host].address}:2379"},
        "bootstrap": {
            "dcs": {"postgresql": {"use_pg_rewind": True, "parameters": {"wal_log_hints": "on"}}},
            "initdb": [{"encoding": "UTF8"}],
            "pg_hba": [
                "local all all peer",
                f"host replication replicator {network} scram-sha-256",
                f"host all all {network} scram-sha-256",
            ],
        },
        "postgresql": {
            "listen": f"{address},127.0.0.1:{PATRONI_PORT}",
            "connect_address": f"{address}:{PATRONI_PORT}",
            "data_dir": PATRONI_DATA,
            "bin_dir": "/usr/lib/postgresql/15/bin",
            "pgpass": f"{PATRONI_DATA}.pgpass",
            "use_unix_socket": True,
            "authentication": {
                "superuser": {"username": "postgres", "password": passwords["superuser"]},
                "replication": {"username": "replicator", "password": passwords["replication"]},
            },
            "parameters": {"unix_socket_directories": "/var/run/postgresql"},
        },
    }
    return json.dumps(config, indent=1)


def write_file(host, path, text, owner="root", mode="0644"):
    script = f'mkdir -p "$(dirname {path})" && cat > {path} && chown {owner} {path} && chmod {mode} {path}'
    host.run(["sh", "-c", script], input=text)


def patroni_members(lab):
    """``patronictl list`` as JSON: [{"Member", "Role", "State", ...}]."""
    res = lab[SERVERS[0]].run(["patronictl", "-c", PATRONI_CONFIG, "list", "-f", "json"], check=False)
    return json.loads(res.stdout) if res.returncode == 0 else []


def leader(lab):
    return next((m["Member"] for m in patroni_members(lab) if m["Role"] == "Leader"), None)


def run_patroni(host):
    """Start Patroni on ``host``, its configuration written already, as a transient systemd
    unit of its own (killing it kills its PostgreSQL too); its name is kept in
    PATRONI_UNIT_FILE. A new name each time: inside the lab's containers systemd cannot
    always kill a unit's control group, and a unit with a process left is never unloaded."""
    unit = f"bench-patroni-{time.monotonic_ns()}"
    write_file(host, PATRONI_UNIT_FILE, unit)
    res = host.run(["systemd-run", "--collect", f"--unit={unit}", "--uid=postgres", "--gid=postgres",
                    "/usr/bin/patroni", PATRONI_CONFIG], check=False)  # fmt: skip
    if res.returncode:
        raise SystemExit(f"Patroni does not start on {host.name}: {res.stdout}{res.stderr}")


def patroni_pid(host):
    """The pid of Patroni on ``host`` (the main process of the unit :func:`run_patroni` started)."""
    unit = host.run(["cat", PATRONI_UNIT_FILE]).stdout.strip()
    return host.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout.strip()


def start_patroni(lab, etcd_host=ETCD_HOST):
    """etcd on ``etcd_host``, then Patroni on every server (``master`` first, so it
    bootstraps the cluster); returns once ``master`` leads and both others stream from it."""
    etcd = lab[etcd_host]
    write_file(etcd, "/etc/default/etcd", ETCD_DEFAULTS.format(address=etcd.address))
    etcd.run(["systemctl", "start", "etcd"])
    health = ["etcdctl", f"--endpoints=http://{etcd.address}:2379", "endpoint", "health"]
    if not wait_for(lambda: etcd.run(health, check=False).returncode == 0, timeout=60, interval=1):
        raise SystemExit(f"etcd does not answer: {etcd.run(health, check=False)}")
    passwords = {"superuser": secrets.token_urlsafe(12), "replication": secrets.token_urlsafe(12)}
    for name in SERVERS:
        host = lab[name]
        config = patroni_config(lab, name, passwords, etcd_host)
        write_file(host, PATRONI_CONFIG, config, owner="postgres", mode="0600")
        run_patroni(host)
        if name == SERVERS[0] and not wait_for(lambda: leader(lab) == SERVERS[0], timeout=180, interval=2):
            raise SystemExit(f"Patroni: {name} did not become the leader: {patroni_members(lab)}")
    if not wait_for(lambda: all_streaming(streaming(lab, SERVERS[0], PATRONI_PORT)), timeout=300, interval=2):
        raise SystemExit(f"Patroni: the replicas do not stream: {patroni_members(lab)}")


def streaming(lab, primary, port):
    """(in recovery, how many other members stream from it) of ``primary``, or None."""
    names = ", ".join(f"'{h}'" for h in SERVERS if h != primary)
    try:
        recovery, count = lab[primary].psql(STATUS_SQL.format(names=names), port=port).split("|")
    except (RuntimeError, ValueError):
        return None
    return recovery == "t", int(count)


class StatusProbe(_Background):
    """:func:`streaming` of the new primary every ``interval`` seconds: (monotonic time, status).
    The time is taken once psql has answered (over the host's socket, about 0.1 s): the
    figures drawn from it are late by at most that and one interval."""

    def __init__(self, lab, primary, port, interval=0.2):
        super().__init__()
        self.lab, self.primary, self.port, self.interval = lab, primary, port, interval
        self.samples = []

    def sample(self):
        return streaming(self.lab, self.primary, self.port)

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.sample()))
            self._stop.wait(self.interval)


def first_after(samples, since, test):
    """Seconds from ``since`` to the first sample (time, value) at or after it whose value
    passes ``test``; None if none does."""
    return next((round(t - since, 2) for t, v in samples if t >= since and v is not None and test(v)), None)


def writable(status):
    return status[0] is False


def all_streaming(status):
    """Writable, with every other member streaming from it (a status of :func:`streaming`)."""
    return status == (False, len(SERVERS) - 1)


def round_figures(writer, samples, started, command_seconds, lost):
    """One round's figures from the client, the probe's samples and the command's time."""
    return {
        "unavailable_s": round(writer.longest_pause, 2),
        "errors": writer.errors,
        "writable_s": first_after(samples, started, writable),
        "streaming_s": first_after(samples, started, all_streaming),
        "command_s": round(command_seconds, 2),
        "committed": len(writer.committed),
        "lost": lost,
    }


def job_spans(events, funs=GAP_JOBS):
    """[(fun, start, end)] of the Salt jobs running ``funs``, oldest first, from the master's
    ``salt/job/<jid>/new`` and ``.../ret/<minion>`` events (objects with tag, stamp, data)."""
    starts, ends = {}, {}
    for event in events:
        parts = event.tag.split("/")
        if len(parts) < 4 or event.data.get("fun") not in funs:
            continue
        jid = parts[2]
        if parts[3] == "new":
            starts[jid] = (event.data["fun"], event.stamp)
        elif parts[3] == "ret":
            ends[jid] = max(ends.get(jid, event.stamp), event.stamp)
    spans = [(fun, start, ends[jid]) for jid, (fun, start) in starts.items() if jid in ends]
    return sorted(spans, key=lambda span: span[1])


def gap_path(spans):
    """The line describing the runner's write-gap jobs: each one's seconds, and from the
    first one's start to the last one's return."""
    if not spans:
        return "no runner jobs seen"
    jobs = ", ".join(f"{fun.split('.')[-1]} {(end - start).total_seconds():.2f} s" for fun, start, end in spans)
    return f"{jobs}; {(spans[-1][2] - spans[0][1]).total_seconds():.2f} s from the stop to the promotion"


MEDIAN_KEYS = ("unavailable_s", "errors", "writable_s", "streaming_s", "command_s", "pooled_unavailable_s",
               "pooled_errors")  # fmt: skip


def medians(rounds, keys=MEDIAN_KEYS):
    """The median of each figure ``keys`` over ``rounds`` (figure dicts; a None, a timeout,
    is left out), and the commits lost summed."""
    out = {}
    for key in keys:
        values = [r[key] for r in rounds if r.get(key) is not None]
        out[key] = round(statistics.median(values), 2) if values else None
    out["lost"] = sum(r["lost"] for r in rounds)
    if any("pooled_lost" in r for r in rounds):
        out["pooled_lost"] = sum(r.get("pooled_lost", 0) for r in rounds)
        out["pooled_committed"] = sum(r.get("pooled_committed", 0) for r in rounds)
    return out


def ratio(ours, peer, key="unavailable_s"):
    """ours/peer of figure ``key``, the write unavailability by default (None without both)."""
    if ours.get(key) is None or not peer.get(key):
        return None
    return round(ours[key] / peer[key], 2)


def describe(figures):
    return (f"unavailable {figures['unavailable_s']} s, errors {figures['errors']}, writable after"
            f" {figures['writable_s']} s, all streaming after {figures['streaming_s']} s, command"
            f" {figures['command_s']} s, lost {figures['lost']}{describe_pooled(figures)}")  # fmt: skip


def pooled_writer(lab, password, start_id):
    """A second client, through PgBouncer on POOLER only (ids of its own), started."""
    return Writer([lab[POOLER].address], password, port=POOLER_PORT, start_id=start_id + 10**8).start()


def pooled_figures(writer, primary):
    """The pooled client's figures (``writer`` stopped here), its commits counted on
    ``primary``'s server."""
    unavailable = writer.unavailable()
    writer.stop()
    return {"pooled_unavailable_s": round(unavailable, 2), "pooled_errors": writer.errors,
            "pooled_committed": len(writer.committed), "pooled_lost": len(writer.missing_on(primary))}  # fmt: skip


def describe_pooled(figures):
    if figures.get("pooled_unavailable_s") is None:
        return ""
    return (f"; through PgBouncer: unavailable {figures['pooled_unavailable_s']} s, errors"
            f" {figures['pooled_errors']}, lost {figures['pooled_lost']} of {figures['pooled_committed']}")  # fmt: skip


def schedule(rounds):
    """The contenders in turn, ours first: ["ours", "patroni", "ours", ...]."""
    return [CONTENDERS[i % 2] for i in range(2 * rounds)]


class Cluster:
    """One contender's cluster on the lab's servers: where its primary is, and its switchover;
    ``explain(since)``, if given, describes where the write gap of a switchover that started
    at ``since`` (epoch seconds) went."""

    def __init__(self, name, lab, port, switch, explain=None, pooled=False):
        self.name, self.lab, self.port, self._switch, self._explain = name, lab, port, switch, explain
        self.primary, self.pooled = SERVERS[0], pooled

    def next_primary(self):
        return SERVERS[(SERVERS.index(self.primary) + 1) % len(SERVERS)]

    def measure(self, password):
        """One switchover under the client's writes: its figures."""
        old, new = self.primary, self.next_primary()
        writer = Writer([self.lab[h].address for h in SERVERS], password, port=self.port, multihost=True).start()
        pooled = pooled_writer(self.lab, password, writer.start_id) if self.pooled else None
        time.sleep(STEADY)
        probe = StatusProbe(self.lab, new, self.port).start()
        started, since = time.monotonic(), time.time()
        self._switch(old, new)
        command = time.monotonic() - started
        if self._explain:  # now: the event listener forgets events after 2 minutes
            print(f"{self.name} write gap's jobs: {self._explain(since)}", flush=True)
        settled = wait_for(lambda: probe.samples and all_streaming(probe.samples[-1][1]),
                           timeout=SETTLE_TIMEOUT, interval=0.5)  # fmt: skip
        time.sleep(STEADY)
        writer.stop()
        probe.stop()
        self.primary = new
        lost = len(writer.missing_on(self.lab[new], port=self.port))
        figures = round_figures(writer, probe.samples, started, command, lost)
        if pooled:
            figures.update(pooled_figures(pooled, self.lab[new]))
        if not settled:
            print(f"{self.name}: {new} has not every member streaming after {SETTLE_TIMEOUT} s", flush=True)
        return old, new, figures


def formula_switch(salt_lab):
    """Ours: the runner, its pillar change and a highstate (bench/switchover_plot.py's)."""
    return lambda old, new: formula_switchover(salt_lab, new, [])


def patroni_switch(lab):
    def switch(old, new):
        res = lab[old].run(["patronictl", "-c", PATRONI_CONFIG, "switchover", "--leader", old, "--candidate", new,
                            "--force"], check=False)  # fmt: skip
        if res.returncode:
            raise SystemExit(f"patronictl switchover to {new} failed: {res.stdout}{res.stderr}")

    return switch


def runner_jobs(manager, salt_lab):
    """``explain`` for ours: :func:`gap_path` of the master's job events since ``since``."""
    patterns = [(salt_lab.master.id, "salt/job/*/new"), (salt_lab.master.id, "salt/job/*/ret/*")]
    return lambda since: gap_path(job_spans(manager.event_listener.get_events(patterns, after_time=since)))


@contextlib.contextmanager
def both_clusters(root, etcd_host=ETCD_HOST, engines=None):
    """The lab up with both clusters, ``master`` the primary of each, and the client's role
    and table on both: yields (lab, the salt-factories manager, the SaltLab, the client's
    password)."""
    lab = Lab(f"{root}/lab", list(ROLES), image=IMAGE)
    with lab, factories(f"{root}/salt") as manager:
        pillar = reference_pillar(lab, roles=ROLES, pooler={"auth_password": secrets.token_urlsafe(18)})
        pillar["hosts"]["standby2"]["slot"] = "standby2_slot"
        salt_lab = SaltLab(manager, lab, pillar, engines=engines)
        with salt_lab.started():
            converge(salt_lab)
            start_patroni(lab, etcd_host)
            password = secrets.token_urlsafe(12)
            Writer.prepare(lab[SERVERS[0]], password)
            Writer.prepare(lab[SERVERS[0]], password, port=PATRONI_PORT)
            yield lab, manager, salt_lab, password


def run_lab(root, rounds):
    """Both clusters up on one lab, then the rounds (each printed): {contender: [figures]}."""
    results = {name: [] for name in CONTENDERS}
    with both_clusters(root) as (lab, manager, salt_lab, password):
        ours = Cluster("ours", lab, 5432, formula_switch(salt_lab), runner_jobs(manager, salt_lab), pooled=True)
        clusters = {"ours": ours, "patroni": Cluster("patroni", lab, PATRONI_PORT, patroni_switch(lab))}
        for number, name in enumerate(schedule(rounds), 1):
            old, new, figures = clusters[name].measure(password)
            results[name].append(figures)
            print(f"round {number} {name:7} {old} -> {new}: {describe(figures)}", flush=True)
    return results


def summary(results):
    """The lines printed after the rounds: medians per contender, the ratio."""
    ours, peer = medians(results["ours"]), medians(results["patroni"])
    value = ratio(ours, peer)
    return [
        f"median ours ({len(results['ours'])} rounds): {describe(ours)}",
        f"median patroni ({len(results['patroni'])} rounds): {describe(peer)}",
        f"switchover unavailability ratio: {value}x (ours/Patroni, goal <= 1.0); lost ours {ours['lost']},"
        f" patroni {peer['lost']} (goal 0); ours through PgBouncer: errors {ours.get('pooled_errors')} (goal 0),"
        f" lost {ours.get('pooled_lost')}",
    ]


def main(argv=None):
    panels = {"write unavailability (longest gap between commits)": "unavailable_s"}
    peer_main(__doc__, run_lab, summary, (PLOT, "Switchover: pg_replication vs Patroni", panels), argv)


if __name__ == "__main__":
    main()
