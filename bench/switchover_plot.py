"""A switchover and a switch back as Prometheus saw them, for the README's monitoring section:
brings up the lab (primary, standby, Barman host; booted hosts from the provisioned image)
with monitoring on and Prometheus on the backup host scraping every 2 s, starts a client
committing one row at a time, runs ``salt-run pg_replication.switchover to=standby``, makes
its pillar change and a highstate, then the same back to ``master``; then reads the role
and lag series through Prometheus' HTTP range API and draws them into
``docs/switchover-prometheus.png`` (matplotlib), printing the figures it drew.

Not a test: run as root with ``make plot-switchover`` (or
``.venv/bin/python bench/switchover_plot.py``); ``--series FILE`` also keeps the series as
JSON, ``--no-plot`` prints the figures only.
"""

import argparse
import json
import logging
import os
import pathlib
import secrets
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from lab.demo import factories  # noqa: E402
from lab.hosts import Lab  # noqa: E402
from lab.results import state_errors  # noqa: E402
from lab.salt import SaltLab, reference_pillar  # noqa: E402
from lab.scenario import Writer, apply_pillar_change, converge, wait_for  # noqa: E402
from lab.signals import unwind_on_signals  # noqa: E402

IMAGE = ("bookworm", "provisioned")
PLOT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "switchover-prometheus.png"
SERVERS = ("master", "standby")
MONITORING = {
    "enabled": True,
    "prometheus": {"host": "backup", "scrape_interval": "2s", "evaluation_interval": "5s"},
}
# Seconds of steady state before, between and after the switchovers.
QUIET = 20
STEP = 2
# What the plot shows, as the samples Prometheus scraped (a range selector: the series of a
# target whose labels changed end there, not 5 minutes of lookback later): each server's
# role and pg_up, the lag of each standby as its upstream sees it; and the commits per
# second PostgreSQL counted (a rate, every STEP seconds). Series are merged per minion: the
# scrape job's pg_replication_role label follows the pillar, which each switchover changes.
RAW = {
    "is_primary": "pg_replication_server_is_primary",
    "pg_up": "pg_up",
    "lag_bytes": 'pg_replication_downstream_lag_bytes{application_name=~"master|standby"}',
    "streaming": 'pg_replication_downstream_streaming{application_name=~"master|standby"}',
}
RATES = {"commits": 'sum by (minion) (rate(pg_stat_database_xact_commit{datname="otus"}[10s]))'}
FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())"


def prometheus(salt_lab, path, **params):
    """Prometheus' HTTP API answer (``data``), asked from its host (the backup host)."""
    url = f"http://127.0.0.1:9090/api/v1/{path}?" + urllib.parse.urlencode(params)
    answer = json.loads(salt_lab.lab["backup"].run(["python3", "-c", FETCH, url]).stdout)
    if answer["status"] != "success":
        raise RuntimeError(answer)
    return answer["data"]


def switchover(salt_lab, to, marks):
    """The runner's switchover to ``to``, its pillar change made, a highstate: ``marks`` gets
    (epoch seconds, what) of its start and end and the end of the highstate."""
    marks.append((time.time(), f"switchover to {to}"))
    started = time.monotonic()
    ret = salt_lab.run("pg_replication.switchover", f"to={to}")
    took = time.monotonic() - started
    if ret.returncode or not isinstance(ret.data, dict):
        raise SystemExit(f"switchover to {to} failed: {ret.stdout[-3000:]}{ret.stderr[-2000:]}")
    marks.append((time.time(), "done"))
    apply_pillar_change(salt_lab, ret.data["pillar_change"])
    high = salt_lab.highstate()
    if high.returncode or state_errors(high.data):
        raise SystemExit(f"highstate after the switchover to {to}: {json.dumps(state_errors(high.data))[-3000:]}")
    marks.append((time.time(), "highstate"))
    print(f"switchover to {to}: {took:.1f} s, then the pillar change and a highstate", flush=True)
    return took


def run_lab(root):
    """The lab run: (series by name, marks, since, writer's figures, switchover seconds)."""
    lab = Lab(f"{root}/lab", ["master", "standby", "backup"], image=IMAGE)
    with lab, factories(f"{root}/salt") as manager:
        pillar = reference_pillar(lab, monitoring=MONITORING)
        salt_lab = SaltLab(manager, lab, pillar)
        with salt_lab.started():
            converge(salt_lab)
            password = secrets.token_urlsafe(12)
            Writer.prepare(lab["master"], password)
            up = {"master": 1.0, "standby": 1.0}
            if not wait_for(lambda: series_now(salt_lab, "pg_up") == up, timeout=90, interval=2):
                raise SystemExit("Prometheus does not see both servers up")
            writer = Writer([lab[h].address for h in SERVERS], password).start()
            since, marks, took = time.time(), [], []
            time.sleep(QUIET)
            took.append(switchover(salt_lab, "standby", marks))
            time.sleep(QUIET)
            took.append(switchover(salt_lab, "master", marks))
            time.sleep(QUIET)
            writer.stop()
            missing = writer.missing_on(lab["master"])
            until = time.time()
            series = {name: samples(salt_lab, query, since, until) for name, query in RAW.items()}
            for name, query in RATES.items():
                series[name] = prometheus(salt_lab, "query_range", query=query, start=f"{since:.0f}",
                                          end=f"{until:.0f}", step=str(STEP))["result"]  # fmt: skip
    client = {"committed": len(writer.committed), "missing": len(missing), "errors": writer.errors,
               "longest_pause_s": round(writer.longest_pause, 2)}  # fmt: skip
    return {"since": since, "until": until, "marks": marks, "series": series, "writer": client, "took": took}


def series_now(salt_lab, query):
    return {
        r["metric"].get("minion"): float(r["value"][1]) for r in prometheus(salt_lab, "query", query=query)["result"]
    }


def samples(salt_lab, query, since, until):
    """The samples Prometheus scraped for ``query`` from ``since`` to ``until``, merged per
    minion (and application_name): ``[{"metric": ..., "values": [[t, v], ...]}]``."""
    result = prometheus(salt_lab, "query", query=f"{query}[{int(until - since) + 1}s]", time=f"{until:.3f}")["result"]
    merged = {}
    for entry in result:
        labels = {k: v for k, v in entry["metric"].items() if k in ("minion", "application_name", "__name__")}
        key = tuple(sorted(labels.items()))
        merged.setdefault(key, {"metric": labels, "values": []})["values"] += entry["values"]
    for entry in merged.values():
        entry["values"].sort(key=lambda pair: float(pair[0]))
    return sorted(merged.values(), key=lambda e: sorted(e["metric"].items()))


def points(result, since, gap=3 * STEP):
    """(seconds since ``since``, values) of a series, with None where no sample came for
    more than ``gap`` seconds (a server down, a target not scraped)."""
    times, values, last = [], [], None
    for t, v in result["values"]:
        t = float(t) - since
        if last is not None and t - last > gap:
            times.append(last + STEP)
            values.append(None)
        times.append(t)
        values.append(float(v))
        last = t
    return times, values


def timeline(run, name):
    """``{minion: [(seconds, value)]}`` of a raw series."""
    return {r["metric"].get("minion"): [(float(t) - run["since"], float(v)) for t, v in r["values"]]
            for r in run["series"][name]}  # fmt: skip


def primaries(run):
    """For each STEP of the run, how many servers had a sample saying primary (within the
    last 1.5 scrapes): ``[(seconds, count)]``."""
    lines = timeline(run, "is_primary")
    out = []
    t = float(STEP)
    while t <= run["until"] - run["since"]:
        count = sum(1 for samples in lines.values() if any(v == 1 and t - 1.5 * STEP < at <= t for at, v in samples))
        out.append((t, count))
        t += STEP
    return out


def figures(run):
    """The figures the plot shows, as lines to print."""
    lines = []
    for minion, samples in sorted(timeline(run, "is_primary").items()):
        changes, last = [], None
        for i, (at, value) in enumerate(samples):
            if i and at - samples[i - 1][0] > 3 * STEP:
                changes.append(f"{samples[i - 1][0]:.0f}-{at:.0f}s no sample")
            if value != last:
                changes.append(f"{at:.0f}s {'primary' if value else 'standby'}")
            last = value
        lines.append(f"role of {minion} (seconds since the client started): {', '.join(changes)}")
    for minion, samples in sorted(timeline(run, "pg_up").items()):
        down = [at for at, v in samples if v == 0]
        if down:
            lines.append(f"pg_up 0 on {minion}: {len(down)} samples, {min(down):.0f}-{max(down):.0f}s")
    for result in run["series"]["lag_bytes"]:
        values = [float(v) for _, v in result["values"]]
        metric = result["metric"]
        lines.append(f"lag of {metric['application_name']} on {metric.get('minion')}: {len(values)} samples,"
                     f" max {max(values) / 1024:.0f} KiB")  # fmt: skip
    for result in run["series"]["commits"]:
        values = [float(v) for _, v in result["values"]]
        lines.append(f"commits/s on {result['metric'].get('minion')}: max {max(values):.0f}")
    counts = primaries(run)
    lines.append(f"seconds with no server saying primary: {sum(STEP for _, c in counts if c == 0)};"
                 f" with two: {sum(STEP for _, c in counts if c > 1)} (of {len(counts) * STEP} s)")  # fmt: skip
    lines.append(f"switchovers took {', '.join(f'{t:.1f} s' for t in run['took'])}; client: {run['writer']}")
    return lines


def plot(run, path):
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    since, series = run["since"], run["series"]
    fig, (role, lag, commits) = plt.subplots(3, 1, sharex=True, figsize=(9, 7))
    for offset, result in enumerate(series["is_primary"]):
        times, values = points(result, since)
        shifted = [None if v is None else v + offset * 0.04 for v in values]
        role.step(times, shifted, where="post", label=f"{result['metric'].get('minion')} (no line: no sample)")
    role.set_yticks([0, 1], ["standby", "primary"])
    role.set_title("pg_replication_server_is_primary", fontsize=8)
    role.set_ylim(-0.2, 1.3)
    role.legend(loc="center left", fontsize=7)
    for result in series["lag_bytes"]:
        times, values = points(result, since)
        metric = result["metric"]
        label = f"lag of {metric['application_name']} on {metric.get('minion')}"
        lag.plot(times, [None if v is None else v / 1024 for v in values], marker=".", markersize=2, label=label)
    lag.set_ylabel("KiB")
    lag.legend(loc="upper left", fontsize=7)
    for result in series["commits"]:
        times, values = points(result, since, gap=2 * STEP)
        commits.plot(times, values, label=f"commits/s on {result['metric'].get('minion')}")
    commits.set_ylabel("commits/s")
    commits.legend(loc="upper left", fontsize=7)
    for ax in (role, lag, commits):
        for at, what in run["marks"]:
            if what.startswith("switchover"):
                ax.axvline(at - since, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    for at, what in run["marks"]:
        if what.startswith("switchover"):
            role.annotate(what, (at - since, 1.2), fontsize=7, color="grey")
    commits.set_xlabel(
        f"seconds since the client started (lab run {time.strftime('%Y-%m-%d', time.gmtime(since))}, scraped every 2 s)"
    )
    fig.suptitle("pg_replication: a switchover and back as Prometheus saw it")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", help="also write the series read from Prometheus to this JSON file")
    parser.add_argument("--from-series", help="draw from a JSON file written by --series (no lab)")
    parser.add_argument("--no-plot", action="store_true", help="print the figures only")
    parser.add_argument("--log", default="/tmp/pg_replication-bench.log", help="where the daemons' logs go")
    args = parser.parse_args(argv)
    if args.from_series:
        run = json.loads(pathlib.Path(args.from_series).read_text())
    else:
        if os.geteuid() != 0:
            raise SystemExit("run as root (the lab makes network namespaces)")
        logging.basicConfig(filename=args.log, level=logging.INFO, force=True)
        unwind_on_signals()
        Lab.cleanup_stale()
        with tempfile.TemporaryDirectory(prefix="pgr-plot-") as tmp:
            run = run_lab(tmp)
        if args.series:
            pathlib.Path(args.series).write_text(json.dumps(run, indent=1))
    for line in figures(run):
        print(line)
    if not args.no_plot:
        plot(run, PLOT)


if __name__ == "__main__":
    main()
