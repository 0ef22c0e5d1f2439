"""Plot a lab run's Prometheus series for the README (docs/monitoring-standby-kill.png):
``PGR_LAB_MONITORING_SERIES=series.json python -m lab.testrun ... tests/integration/test_booted.py``
dumps them (the killed standby test), then ``python docs/plot_monitoring.py series.json``."""

import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "monitoring-standby-kill.png"


def points(result, since):
    return [float(t) - since for t, _ in result["values"]], [float(v) for _, v in result["values"]]


def main(path):
    dump = json.loads(pathlib.Path(path).read_text())
    since, series = dump["since"], dump["series"]
    fig, (up, lag) = plt.subplots(2, 1, sharex=True, figsize=(9, 5))
    for result in series["pg_up"]:
        up.step(*points(result, since), where="post", label=f"pg_up {result['metric'].get('minion')}")
    for result in series["streaming"]:
        up.step(*points(result, since), where="post", linestyle="--", label="standby streaming (seen by master)")
    for result in series["alerts"]:
        times, values = points(result, since)
        up.fill_between(times, 0, values, step="post", alpha=0.2, label=f"firing: {result['metric']['alertname']}")
    up.set_ylim(-0.1, 1.2)
    up.legend(loc="lower left", fontsize=7)
    for result in series["lag_bytes"]:
        times, values = points(result, since)
        lag.plot(times, [v / 2**20 for v in values], label="standby's lag on master (MiB)")
    lag.set_xlabel("seconds (lab run: standby killed, then started by a highstate)")
    lag.set_ylabel("MiB")
    lag.legend(loc="upper left", fontsize=7)
    fig.suptitle("pg_replication monitoring: a killed standby as Prometheus saw it")
    fig.tight_layout()
    fig.savefig(OUT, dpi=90)
    print(OUT)


if __name__ == "__main__":
    main(sys.argv[1])
