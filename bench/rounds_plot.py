"""What the benchmarks that time an operation against a peer (switchover, failover) share:
their main (the lab's rounds, the summary printed, the plot) and the per-round plot, one
panel per figure, one group of bars per round, one bar per contender."""

import tempfile
import time

from bench.labbench import lab_options


def peer_main(doc, run_lab, summary, plot, argv=None):
    """Parse the arguments (``--rounds``, ``--quick``, ``--no-plot``), run ``run_lab(tmp,
    rounds)``, print ``summary(results)``, then unless ``--no-plot`` draw ``plot`` (the path,
    the title, ``{panel title: figure key}``)."""
    rounds, args = lab_options(doc, 2, argv, [("--no-plot", "print the figures only")])
    with tempfile.TemporaryDirectory(prefix="pgr-bench-") as tmp:
        results = run_lab(tmp, rounds)
    for line in summary(results):
        print(line)
    if not args.no_plot:
        path, title, panels = plot
        plot_rounds({panel: per_round(results, key) for panel, key in panels.items()}, path, title)


def per_round(results, key):
    """``{contender: [figure ``key`` of each round]}`` from ``{contender: [figures]}`` (a
    round that timed out counts 0 and is marked on the plot by its missing bar)."""
    return {name: [r.get(key) or 0 for r in rounds] for name, rounds in results.items()}


def plot_rounds(panels, path, title):
    """Draw ``panels`` (``{panel title: {contender: [value per round]}}``) side by side into
    ``path`` (PNG); print where it went."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels.items()):
        width = 0.8 / max(1, len(series))
        for index, (name, values) in enumerate(series.items()):
            xs = [round_number + index * width for round_number in range(1, len(values) + 1)]
            ax.bar(xs, values, width=width, label=name)
        rounds = max((len(v) for v in series.values()), default=0)
        ax.set_xticks([r + 0.4 - width / 2 for r in range(1, rounds + 1)], [str(r) for r in range(1, rounds + 1)])
        ax.set_xlabel("round")
        ax.set_ylabel("seconds")
        ax.set_title(panel, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title} ({time.strftime('%Y-%m-%d')})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"plot: {path}")
