"""Failover: how long writes stop when the primary's host is lost, the formula's manual
runner and its automatic mode against Patroni (the peer), in one run, on the same three
lab hosts (a primary and two standbys, booted from the ``patroni`` image: bookworm,
PostgreSQL 15, Debian's Patroni 3.0.2 and etcd 3.4), plus a fourth host, ``backup``, that
runs etcd for Patroni and the formula's PgBouncer, and is never failed.

Both clusters run side by side (bench/switchover.py's setup: ours on port 5432, Patroni's on
5433 with its default ttl 30 s / loop_wait 10 s / retry_timeout 10 s). The failure is the
same for each: the primary's host lost, its PostgreSQL killed (SIGKILL; for Patroni, Patroni
and its PostgreSQL) and its link taken down, while a client commits one row at a time
through libpq's multi-host string (``target_session_attrs=read-write``, connect_timeout 2 s),
and in ours' rounds a second one through PgBouncer.
Rounds, in turn:

- ``patroni``: nothing more to do; its replicas race for the leader key once it expires;
- ``manual``: ``salt-run pg_replication.failover fenced=True`` at once (the operator knows
  the host is gone; the issue's goal: command to writable <= 10 s);
- ``automatic``: ``ha:mode: automatic`` with the formula's default timings (check_interval
  1 s, fence_timeout 8 s, failover_timeout 12 s, fence_margin 2 s): the master's HA engine
  decides and runs the failover.

Only the round's contender acts: Patroni is paused (``patronictl pause``) during ours, and
ours is in ``ha:mode: manual`` (its engine decides nothing) during Patroni's. After each
round the lost host comes back (link up): ours makes the runner's pillar change and
rejoins it (``salt-run pg_replication.rejoin``, pg_rewind), Patroni is started again on
it (its own pg_rewind).

Each round's figures: seconds from the failure to a writable new primary, from the command
to it (manual), the longest gap between two acknowledged commits (write unavailability), the
client's errors, seconds until the other standby streams from the new primary, how long the
lost host took to stream again once back, and the acknowledged commits the new primary lacks
(asynchronous replication in both, so a failover may lose the last ones: counted). Then the
medians per contender and the ratios ours/Patroni of failure to writable (goal for the
automatic mode <= 1.0), drawn per round into ``docs/benchmarks-failover.png`` (unless
``--no-plot``). Not a test: run as root, ``.venv/bin/python bench/failover.py``
(``--quick``: one round each).
"""

import copy
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import switchover  # noqa: E402
from bench.rounds_plot import peer_main  # noqa: E402
from bench.switchover import (  # noqa: E402
    PATRONI_CONFIG,
    PATRONI_DATA,
    PATRONI_PORT,
    POOLER,
    SERVERS,
    StatusProbe,
    both_clusters,
    describe_pooled,
    patroni_pid,
    pooled_figures,
    pooled_writer,
    run_patroni,
    streaming,
)
from lab.events import MasterEvents, engine_watching  # noqa: E402
from lab.results import state_errors  # noqa: E402
from lab.scenario import Writer, apply_pillar_change, wait_for  # noqa: E402

PLOT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks-failover.png"
DCS = POOLER
KINDS = ("patroni", "manual", "automatic")
DATA_DIR = "/var/lib/postgresql/15/main"
# Seconds of commits before the failure, and after the new primary is writable.
STEADY = 5
# Seconds a round may take to get a writable primary, and a lost host to stream again.
SETTLE_TIMEOUT = 240
# The engine decides nothing for this long after a failover (its default, 600 s, would
# refuse the next round's); the timings that decide when it promotes keep their defaults.
COOLDOWN = 30
ENGINE_EVENTS = ("primary_suspected", "primary_lost", "candidate_chosen", "promoted")


class SurvivorProbe(StatusProbe):
    """:func:`bench.switchover.streaming` of every surviving server every ``interval``
    seconds: [(monotonic time, {host: status or None})]."""

    def __init__(self, lab, hosts, port, interval=0.2):
        super().__init__(lab, None, port, interval)
        self.hosts = hosts

    def sample(self):
        return {h: streaming(self.lab, h, self.port) for h in self.hosts}

    def writable(self, since):
        """(seconds from ``since``, host) of the first sample with a writable server, or None."""
        for at, statuses in self.samples:
            host = next((h for h, s in statuses.items() if at >= since and s is not None and s[0] is False), None)
            if host:
                return round(at - since, 2), host
        return None

    def followed(self, since, host, count):
        """Seconds from ``since`` to the first sample where ``count`` members stream from ``host``."""
        return next((round(at - since, 2) for at, statuses in self.samples
                     if at >= since and statuses.get(host) == (False, count)), None)  # fmt: skip


def kill_and_cut(host, contender):
    """The primary's host lost: its PostgreSQL (with Patroni, Patroni too) killed, then its
    link down; the time of the failure."""
    if contender == "patroni":  # Patroni first, so that it does not start PostgreSQL again
        host.run(["kill", "-9", patroni_pid(host)])
    postmaster_pid = f"{PATRONI_DATA if contender == 'patroni' else DATA_DIR}/postmaster.pid"
    host.run(["kill", "-9", host.run(["head", "-1", postmaster_pid]).stdout.strip()])
    host.run(["ip", "link", "set", "eth0", "down"])
    return time.monotonic()


def patronictl(lab, via, *args):
    return lab[via].run(["patronictl", "-c", PATRONI_CONFIG, *args], check=False)


class Bench:
    """Both clusters on one lab: where each one's primary is, and the rounds."""

    def __init__(self, lab, salt_lab, password):
        self.lab, self.salt_lab, self.password = lab, salt_lab, password
        self.primary = {"ours": SERVERS[0], "patroni": SERVERS[0]}

    # ------------------------------------------------------------------ one round

    def measure(self, kind):
        """One failover of ``kind``: (old, new, its figures)."""
        contender = "patroni" if kind == "patroni" else "ours"
        port = PATRONI_PORT if kind == "patroni" else 5432
        old = self.primary[contender]
        survivors = [h for h in SERVERS if h != old]
        # Only this round's contender acts on the failure.
        self.ha_mode("automatic" if kind == "automatic" else "manual")
        self.patroni_paused(kind != "patroni")
        writer = Writer([self.lab[h].address for h in SERVERS], self.password, port=port, multihost=True).start()
        pooled = pooled_writer(self.lab, self.password, writer.start_id) if contender == "ours" else None
        probe = SurvivorProbe(self.lab, survivors, port).start()
        extra = {}
        try:
            time.sleep(STEADY)
            with MasterEvents(self.salt_lab, "salt/pg_replication/ha/", short=True) as events:
                failed_at = kill_and_cut(self.lab[old], contender)
                if kind == "manual":
                    change, extra = self._manual_failover(failed_at)
                else:
                    wait_for(lambda: probe.writable(failed_at), timeout=SETTLE_TIMEOUT, interval=0.5)
                    change = self._engine_promoted(events, failed_at) if kind == "automatic" else None
                    if kind == "automatic":
                        extra["engine"] = engine_path(events, failed_at)
            found = probe.writable(failed_at)
            if not found:
                raise SystemExit(f"{kind}: no writable primary {SETTLE_TIMEOUT} s after the failure")
            new = found[1]
            if "started" in extra:
                extra["command_s"] = round(found[0] - (extra["started"] - failed_at), 2)
            wait_for(lambda: probe.followed(failed_at, new, 1) is not None, timeout=SETTLE_TIMEOUT, interval=0.5)
            time.sleep(STEADY)
            unavailable = writer.unavailable()
            pooled_seen = pooled_figures(pooled, self.lab[new]) if pooled else {}
        finally:
            for client in (writer, probe, pooled):
                if client:
                    client.stop()
        lost = len(writer.missing_on(self.lab[new], port=port))
        figures = {
            "writable_s": found[0],
            "command_s": extra.get("command_s"),
            "unavailable_s": round(unavailable, 2),
            "errors": writer.errors,
            "follows_s": probe.followed(failed_at, new, 1),
            "committed": len(writer.committed),
            "lost": lost,
            "engine": extra.get("engine"),
        }
        figures.update(pooled_seen)
        figures["back_s"] = self._heal(contender, old, new, change)
        self.primary[contender] = new
        return old, new, figures

    def _manual_failover(self, failed_at):
        started = time.monotonic()
        ret = self.salt_lab.run("pg_replication.failover", "fenced=True")
        if ret.returncode or not isinstance(ret.data, dict):
            raise SystemExit(f"failover failed: {ret.stdout[-3000:]}{ret.stderr[-2000:]}")
        print(f"manual failover {started - failed_at:.2f} s after the failure, runner timings:"
              f" {ret.data.get('timings')}", flush=True)  # fmt: skip
        return ret.data["pillar_change"], {"command_s": None, "started": started}

    def _engine_promoted(self, events, failed_at):
        """The pillar change of the engine's ``promoted`` event (waited for)."""

        def promoted():
            return next((data for at, name, data in events.seen if name == "promoted" and at >= failed_at), None)

        data = wait_for(promoted, timeout=SETTLE_TIMEOUT, interval=0.5)
        if not data:
            names = [name for at, name, _ in events.seen if at >= failed_at]
            raise SystemExit(f"automatic: the engine did not promote; its events: {names}")
        return data["pillar_change"]

    # ------------------------------------------------------------------ between rounds

    def _heal(self, contender, old, new, change):
        """The lost host back: its link up, then rejoined by its contender; the seconds until it
        streams from ``new``."""
        host = self.lab[old]
        host.run(["ip", "link", "set", "eth0", "up"])
        back_at = time.monotonic()
        port = PATRONI_PORT if contender == "patroni" else 5432
        host.run(["systemctl", "restart", "salt-minion"])
        if contender == "patroni":
            run_patroni(host)
            self.salt_lab.wait_for_minions(120)
        else:
            self.salt_lab.wait_for_minions(120)
            apply_pillar_change(self.salt_lab, change)
            self.salt_lab.salt("saltutil.refresh_pillar", "wait=True", timeout=120)
            ret = self.salt_lab.run("pg_replication.rejoin", f"host={old}")
            if ret.returncode:
                raise SystemExit(f"rejoin {old} failed: {ret.stdout[-3000:]}{ret.stderr[-2000:]}")
        if not wait_for(lambda: streaming(self.lab, new, port) == (False, 2), timeout=SETTLE_TIMEOUT, interval=0.5):
            raise SystemExit(f"{contender}: {old} does not stream from {new} {SETTLE_TIMEOUT} s after it came back")
        return round(time.monotonic() - back_at, 2)

    def patroni_paused(self, paused):
        res = patronictl(self.lab, SERVERS[0], "pause" if paused else "resume", "--wait")
        # "Cluster is already paused" / "Cluster is not paused": as asked already.
        if res.returncode and "paused" not in res.stdout + res.stderr:
            raise SystemExit(f"patronictl {'pause' if paused else 'resume'}: {res.stdout}{res.stderr}")

    def ha_mode(self, mode):
        """Ours in ``ha:mode`` ``mode`` (a highstate when it changes); in automatic mode, once
        the engine watches the primary."""
        pillar = copy.deepcopy(self.salt_lab.pillar)
        ha = dict(pillar.get("ha") or {}, failover_cooldown=COOLDOWN)
        if ha.get("mode", "manual") != mode:
            pillar["ha"] = dict(ha, mode=mode)
            self.salt_lab.set_pillar(pillar)
            ret = self.salt_lab.highstate()
            if ret.returncode or state_errors(ret.data):
                raise SystemExit(f"highstate to ha:mode {mode}: {state_errors(ret.data)}")
        if mode == "automatic" and not wait_for(lambda: engine_watching(self.salt_lab), timeout=120, interval=1):
            raise SystemExit("the HA engine does not watch the primary")


def engine_path(events, failed_at):
    """When the engine fired each of its decision's events, in seconds after the failure."""
    seen = {}
    for at, name, _ in events.seen:
        if at >= failed_at and name in ENGINE_EVENTS and name not in seen:
            seen[name] = round(at - failed_at, 1)
    return ", ".join(f"{name} {seconds} s" for name, seconds in seen.items())


MEDIAN_KEYS = ("writable_s", "command_s", "unavailable_s", "errors", "follows_s", "back_s", "pooled_unavailable_s",
               "pooled_errors")  # fmt: skip


def medians(rounds):
    """:func:`bench.switchover.medians` of this benchmark's figures, with the commits summed."""
    return dict(switchover.medians(rounds, MEDIAN_KEYS), committed=sum(r["committed"] for r in rounds))


def describe(figures):
    command = f", command to writable {figures['command_s']} s" if figures.get("command_s") is not None else ""
    engine = f" (engine: {figures['engine']})" if figures.get("engine") else ""
    return (f"writable after {figures['writable_s']} s{command}, unavailable {figures['unavailable_s']} s, errors"
            f" {figures['errors']}, other standby follows after {figures['follows_s']} s, lost host streams"
            f" {figures['back_s']} s after it is back, lost {figures['lost']} of {figures['committed']}"
            f"{engine}{describe_pooled(figures)}")  # fmt: skip


def run_lab(root, rounds):
    """Both clusters up on one lab, then the rounds (each printed): {kind: [figures]}."""
    results = {kind: [] for kind in KINDS}
    with both_clusters(root, DCS, engines=[{"pg_replication_ha": {}}]) as (lab, _, salt_lab, password):
        bench = Bench(lab, salt_lab, password)
        for number in range(rounds):
            for kind in KINDS:
                old, new, figures = bench.measure(kind)
                results[kind].append(figures)
                print(f"round {number + 1} {kind:9} {old} -> {new}: {describe(figures)}", flush=True)
        bench.ha_mode("manual")  # the watchdogs gone before the lab is
    return results


def summary(results):
    med = {kind: medians(results[kind]) for kind in KINDS}
    lines = [f"median {kind} ({len(results[kind])} rounds): {describe(med[kind])}" for kind in KINDS]
    automatic = switchover.ratio(med["automatic"], med["patroni"], "writable_s")
    manual = switchover.ratio(med["manual"], med["patroni"], "writable_s")
    lines.append(
        f"failover ratio: {automatic}x (automatic, failure to writable, ours/Patroni, goal <= 1.0); manual runner"
        f" {manual}x; manual command to writable {med['manual']['command_s']} s (goal <= 10 s); lost: patroni"
        f" {med['patroni']['lost']}, manual {med['manual']['lost']}, automatic {med['automatic']['lost']}"
    )
    return lines


def main(argv=None):
    panels = {"failure to a writable primary": "writable_s",
              "write unavailability (longest gap between commits)": "unavailable_s"}  # fmt: skip
    plot = (PLOT, "Failover: pg_replication (manual runner, automatic) vs Patroni", panels)
    peer_main(__doc__, run_lab, summary, plot, argv)


if __name__ == "__main__":
    main()
