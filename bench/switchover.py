"""Write unavailability during a planned switchover: the formula's runner against Patroni
(the peer), in one run, on the same three lab hosts (a primary and two standbys, booted
from the ``patroni`` image: bookworm, PostgreSQL 15, Debian's Patroni 3.0.2 and etcd 3.4).

Both clusters run side by side on the same hosts, so that they share the machine's load:
the formula's (its highstate, port 5432, Debian's /var/lib/postgresql/15/main) and
Patroni's, configured here and not by the formula (port 5433, data in
/var/lib/postgresql/patroni-bench, one etcd member on ``master``, Patroni's default
ttl 30 s / loop_wait 10 s). Rounds alternate, ours first: a client commits one row at a
time through libpq's multi-host connection string (``host=a,b,c
target_session_attrs=read-write``, connect_timeout 2 s) while

- ours: ``salt-run pg_replication.switchover to=<next>``, then the pillar change it
  returns and a highstate (:func:`bench.switchover_plot.switchover`);
- Patroni: ``patronictl switchover --leader <primary> --candidate <next> --force``.

Each round's figures: the longest gap between two acknowledged commits (write
unavailability), the client's errors (failed statements and connections), seconds from the
command to a writable new primary and until both other members stream from it again, how
long the command took, and the acknowledged commits the new primary lacks afterwards. Then
the medians per contender and the ratio ours/Patroni of the write unavailability (goal <=
1.0, and 0 lost). Not a test: run as root, ``.venv/bin/python bench/switchover.py``
(``--quick``: one round each).
"""

import json
import pathlib
import secrets
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.labbench import lab_rounds  # noqa: E402
from bench.switchover_plot import switchover as formula_switchover  # noqa: E402
from lab.demo import factories  # noqa: E402
from lab.hosts import Lab  # noqa: E402
from lab.salt import SaltLab, reference_pillar  # noqa: E402
from lab.scenario import Writer, _Background, converge, wait_for  # noqa: E402

IMAGE = ("bookworm", "patroni")
SERVERS = ("master", "standby", "standby2")
ROLES = {"master": "primary", "standby": "standby", "standby2": "standby"}
CONTENDERS = ("ours", "patroni")
# Seconds of commits before the command and after every member streams again.
STEADY = 5
# Seconds a round may take to get a writable primary that every member streams from.
SETTLE_TIMEOUT = 240
PATRONI_PORT = 5433
PATRONI_CONFIG = "/etc/patroni/bench.yml"
PATRONI_DATA = "/var/lib/postgresql/patroni-bench"
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


def patroni_config(lab, host, passwords):
    """Patroni's YAML for ``host`` (JSON is YAML): Patroni's defaults but for the paths and
    port kept apart from the formula's cluster on the same host."""
    address, network = lab[host].address, str(lab.network)
    config = {
        "scope": "bench",
        "name": host,
        "restapi": {"listen": f"{address}:8008", "connect_address": f"{address}:8008"},
        "etcd": {"host": f"{lab[ETCD_HOST].address}:2379"},
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


def start_patroni(lab):
    """etcd on ETCD_HOST, then Patroni on every server (``master`` first, so it bootstraps
    the cluster); returns once ``master`` leads and both others stream from it."""
    etcd = lab[ETCD_HOST]
    write_file(etcd, "/etc/default/etcd", ETCD_DEFAULTS.format(address=etcd.address))
    etcd.run(["systemctl", "start", "etcd"])
    health = ["etcdctl", f"--endpoints=http://{etcd.address}:2379", "endpoint", "health"]
    if not wait_for(lambda: etcd.run(health, check=False).returncode == 0, timeout=60, interval=1):
        raise SystemExit(f"etcd does not answer: {etcd.run(health, check=False)}")
    passwords = {"superuser": secrets.token_urlsafe(12), "replication": secrets.token_urlsafe(12)}
    for name in SERVERS:
        host = lab[name]
        write_file(host, PATRONI_CONFIG, patroni_config(lab, name, passwords), owner="postgres", mode="0600")
        host.run(["systemd-run", "--unit=bench-patroni", "--uid=postgres", "--gid=postgres",
                  "/usr/bin/patroni", PATRONI_CONFIG])  # fmt: skip
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

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), streaming(self.lab, self.primary, self.port)))
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


MEDIAN_KEYS = ("unavailable_s", "errors", "writable_s", "streaming_s", "command_s")


def medians(rounds):
    """The median of each figure over ``rounds`` (figure dicts; a None, a timeout, is left
    out), and the commits lost summed."""
    out = {}
    for key in MEDIAN_KEYS:
        values = [r[key] for r in rounds if r[key] is not None]
        out[key] = round(statistics.median(values), 2) if values else None
    out["lost"] = sum(r["lost"] for r in rounds)
    return out


def ratio(ours, peer):
    """ours/peer of the write unavailability (None without both)."""
    if ours.get("unavailable_s") is None or not peer.get("unavailable_s"):
        return None
    return round(ours["unavailable_s"] / peer["unavailable_s"], 2)


def describe(figures):
    return (f"unavailable {figures['unavailable_s']} s, errors {figures['errors']}, writable after"
            f" {figures['writable_s']} s, all streaming after {figures['streaming_s']} s, command"
            f" {figures['command_s']} s, lost {figures['lost']}")  # fmt: skip


def schedule(rounds):
    """The contenders in turn, ours first: ["ours", "patroni", "ours", ...]."""
    return [CONTENDERS[i % 2] for i in range(2 * rounds)]


class Cluster:
    """One contender's cluster on the lab's servers: where its primary is, and its switchover;
    ``explain(since)``, if given, describes where the write gap of a switchover that started
    at ``since`` (epoch seconds) went."""

    def __init__(self, name, lab, port, switch, explain=None):
        self.name, self.lab, self.port, self._switch, self._explain = name, lab, port, switch, explain
        self.primary = SERVERS[0]

    def next_primary(self):
        return SERVERS[(SERVERS.index(self.primary) + 1) % len(SERVERS)]

    def measure(self, password):
        """One switchover under the client's writes: its figures."""
        old, new = self.primary, self.next_primary()
        writer = Writer([self.lab[h].address for h in SERVERS], password, port=self.port, multihost=True).start()
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


def run_lab(root, rounds):
    """Both clusters up on one lab, then the rounds (each printed): {contender: [figures]}."""
    lab = Lab(f"{root}/lab", list(SERVERS), image=IMAGE)
    results = {name: [] for name in CONTENDERS}
    with lab, factories(f"{root}/salt") as manager:
        pillar = reference_pillar(lab, roles=ROLES)
        pillar["hosts"]["standby2"]["slot"] = "standby2_slot"
        salt_lab = SaltLab(manager, lab, pillar)
        with salt_lab.started():
            converge(salt_lab)
            start_patroni(lab)
            password = secrets.token_urlsafe(12)
            Writer.prepare(lab[SERVERS[0]], password)
            Writer.prepare(lab[SERVERS[0]], password, port=PATRONI_PORT)
            ours = Cluster("ours", lab, 5432, formula_switch(salt_lab), runner_jobs(manager, salt_lab))
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
        f" patroni {peer['lost']} (goal 0)",
    ]


def main(argv=None):
    rounds = lab_rounds(__doc__, 2, argv)
    with tempfile.TemporaryDirectory(prefix="pgr-switchover-") as tmp:
        results = run_lab(tmp, rounds)
    for line in summary(results):
        print(line)


if __name__ == "__main__":
    main()
