"""bench/failover.py: the figures it reads from the survivors' samples and the engine's
events, the medians and the summary line the ``make bench`` table reads."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from bench import failover  # noqa: E402

# (monotonic time, {survivor: (in recovery, members streaming) or None}) after a failure at 100.
SAMPLES = [
    (99.0, {"standby": (True, 0), "standby2": (True, 0)}),
    (120.0, {"standby": (True, 0), "standby2": None}),
    (130.5, {"standby": (True, 0), "standby2": (False, 0)}),
    (134.0, {"standby": (True, 0), "standby2": (False, 1)}),
    (180.0, {"standby": (True, 0), "standby2": (False, 2)}),
]


def probe(samples=SAMPLES):
    out = failover.SurvivorProbe(lab=None, hosts=["standby", "standby2"], port=5432)
    out.samples = list(samples)
    return out


def test_the_first_writable_survivor_and_when_the_others_follow_it():
    assert probe().writable(100.0) == (30.5, "standby2")
    assert probe().followed(100.0, "standby2", 1) == 34.0
    assert probe().followed(100.0, "standby2", 2) == 80.0


def test_nothing_writable_yet_is_none_and_samples_before_the_failure_do_not_count():
    assert probe(SAMPLES[:2]).writable(100.0) is None
    assert probe().writable(181.0) is None
    assert probe().followed(100.0, "standby", 1) is None


class Events:
    def __init__(self, seen):
        self.seen = seen


def test_the_engine_path_gives_each_decision_event_once_in_seconds_after_the_failure():
    seen = [(90.0, "healthy", {}), (101.04, "primary_suspected", {}), (125.0, "primary_suspected", {}),
            (152.2, "primary_lost", {}), (152.3, "candidate_chosen", {}), (158.96, "promoted", {})]  # fmt: skip
    assert failover.engine_path(Events(seen), 100.0) == (
        "primary_suspected 1.0 s, primary_lost 52.2 s, candidate_chosen 52.3 s, promoted 59.0 s"
    )


def rounds(writable, command=None, lost=0):
    return [{"writable_s": w, "command_s": command, "unavailable_s": w + 1, "errors": 3, "follows_s": w + 2,
             "back_s": 40.0, "committed": 100, "lost": lost, "engine": None} for w in writable]  # fmt: skip


def test_the_summary_gives_the_automatic_ratio_first_for_the_bench_table():
    results = {"patroni": rounds([20.0, 30.0]), "manual": rounds([8.0], command=6.5)}
    results["automatic"] = rounds([50.0], lost=2)
    lines = failover.summary(results)
    assert lines[0].startswith("median patroni (2 rounds): writable after 25.0 s, unavailable 26.0 s")
    assert "command to writable 6.5 s" in lines[1]
    assert lines[-1].startswith("failover ratio: 2.0x (automatic, failure to writable, ours/Patroni, goal <= 1.0);")
    assert "manual runner 0.32x; manual command to writable 6.5 s (goal <= 10 s)" in lines[-1]
    assert lines[-1].endswith("lost: patroni 0, manual 0, automatic 2")


def test_medians_sum_the_commits_and_the_lost_ones():
    figures = failover.medians(rounds([10.0, 30.0, 20.0], lost=1))
    assert (figures["writable_s"], figures["command_s"], figures["committed"], figures["lost"]) == (20.0, None, 300, 3)
