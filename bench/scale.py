"""How the formula's time grows with the topology one salt-master drives: a cold converge
(``salt '*' state.apply`` on fresh booted lab hosts) and a re-apply with 0 changes, for a
primary with 1, 2, 4 and 8 standbys plus a Barman host, and for 1, 2 and 4 clusters (each a
primary and a standby, no Barman host) side by side.

Prints a line per topology, the growth per added host (least squares over the points) and
writes the curves to ``docs/benchmarks-scale.png`` (matplotlib) unless ``--no-plot``. Run as
root: ``make bench`` (or ``.venv/bin/python bench/scale.py``); ``--quick``: 1 and 2 standbys,
1 and 2 clusters, one re-apply each.
"""

import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.labbench import lab_options  # noqa: E402
from lab.demo import factories  # noqa: E402
from lab.hosts import Lab  # noqa: E402
from lab.results import changed_states, state_errors  # noqa: E402
from lab.salt import SaltLab, reference_pillar  # noqa: E402
from lab.scenario import converge  # noqa: E402

IMAGE = ("bookworm", "provisioned")
PLOT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks-scale.png"
# Room for 8 standbys and a Barman host, fixed as the formula wants (no restart on growth).
SETTINGS = {"max_wal_senders": 16, "max_replication_slots": 16}


def standby_topology(count):
    roles = {"master": "primary", **{f"standby{i}": "standby" for i in range(1, count + 1)}, "backup": "barman"}
    return roles, None


def cluster_topology(count):
    """``count`` clusters: c<i>p (primary) and c<i>s (standby), each with its own pillar."""
    roles = {}
    for i in range(1, count + 1):
        roles.update({f"c{i}p": "primary", f"c{i}s": "standby"})
    return roles, count


def measure(root, roles, clusters, reapplies):
    """Seconds of the cold converge and the median re-apply of one topology."""
    lab = Lab(f"{root}/lab", list(roles), image=IMAGE)
    with lab, factories(f"{root}/salt") as manager:
        if clusters is None:
            pillar, others = reference_pillar(lab, roles=roles, settings=dict(SETTINGS)), {}
        else:
            pillars = {
                i: reference_pillar(lab, roles={f"c{i}p": "primary", f"c{i}s": "standby"}, settings=dict(SETTINGS))
                for i in range(1, clusters + 1)
            }
            pillar = pillars[1]
            others = {host: pillars[i] for i in range(2, clusters + 1) for host in (f"c{i}p", f"c{i}s")}
        salt_lab = SaltLab(manager, lab, pillar, others)
        with salt_lab.started():
            salt_lab.sync_modules()
            started = time.perf_counter()
            converge(salt_lab)
            cold = time.perf_counter() - started
            again = []
            for _ in range(reapplies):
                started = time.perf_counter()
                ret = salt_lab.salt("state.apply", timeout=900)
                again.append(time.perf_counter() - started)
                if ret.returncode or state_errors(ret.data) or changed_states(ret.data):
                    raise SystemExit(f"re-apply with {len(roles)} hosts: {ret.stdout[-2000:]}")
    return cold, statistics.median(again)


def slope(points):
    """Least-squares seconds per added host over (hosts, seconds) points."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def plot(curves, path):
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (axis, rows) in zip(axes, curves.items()):
        sizes = [r[0] for r in rows]
        ax.plot(sizes, [r[2] for r in rows], "o-", label="cold converge")
        ax.plot(sizes, [r[3] for r in rows], "s-", label="re-apply (0 changes)")
        ax.set_xlabel(axis)
        ax.set_xticks(sizes)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("seconds")
    axes[0].legend()
    fig.suptitle(f"pg_replication: time by topology ({time.strftime('%Y-%m-%d')})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


def main(argv=None):
    reapplies, args = lab_options(__doc__, 2, argv, [("--no-plot", "print the figures only")])
    quick = args.quick
    axes = {
        "standbys (plus primary and Barman)": [(n, *standby_topology(n)) for n in ((1, 2) if quick else (1, 2, 4, 8))],
        "clusters (primary + standby each)": [(n, *cluster_topology(n)) for n in ((1, 2) if quick else (1, 2, 4))],
    }
    curves = {}
    with tempfile.TemporaryDirectory(prefix="pgr-bench-") as tmp:
        for axis, topologies in axes.items():
            rows = curves[axis] = []
            for size, roles, clusters in topologies:
                cold, reapply = measure(f"{tmp}/{len(rows)}-{axis[:8]}", roles, clusters, reapplies)
                rows.append((size, len(roles), cold, reapply))
                line = f"{size} {axis}: {len(roles)} hosts, cold converge {cold:.1f}s, re-apply {reapply:.1f}s"
                print(line, flush=True)
    for axis, rows in curves.items():
        hosts = [(r[1], r[2]) for r in rows], [(r[1], r[3]) for r in rows]
        print(f"growth per added host, {axis}: cold converge {slope(hosts[0]):+.1f}s, re-apply {slope(hosts[1]):+.1f}s")
    if not args.no_plot:
        plot(curves, PLOT)


if __name__ == "__main__":
    main()
