"""What every scheduled highstate costs: a converged reference cluster (primary, standby,
Barman host; booted lab hosts, a real salt-master), ``state.apply`` with 0 changes, against
an empty highstate (``state.top`` of a top file with one ``test.nop``) on the same minions,
alternating rounds.

Prints each round, where one re-apply's time goes (per minion: its states' own durations
against the job's wall time, and the slowest states), the medians and, last, ``re-apply
ratio: N.NNx`` (goal: at most 1.25x).
Run as root: ``make bench`` (or ``.venv/bin/python bench/reapply.py``); ``--quick`` for one
round.
"""

import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.labbench import lab_rounds, state_profile  # noqa: E402
from lab.demo import factories  # noqa: E402
from lab.hosts import Lab  # noqa: E402
from lab.results import changed_states, state_errors  # noqa: E402
from lab.salt import REFERENCE_ROLES, SaltLab, reference_pillar  # noqa: E402
from lab.scenario import converge  # noqa: E402

EMPTY_TOP = "base:\n  '*':\n    - bench_nop\n"
NOP_SLS = "bench-nop:\n  test.nop: []\n"


def timed_apply(salt_lab, *args):
    """Seconds of one ``salt '*' <function>`` over every minion; fail on any change or error."""
    started = time.perf_counter()
    ret = salt_lab.salt(*args, timeout=900)
    seconds = time.perf_counter() - started
    errors, changed = state_errors(ret.data), changed_states(ret.data)
    if ret.returncode or errors or changed:
        raise SystemExit(f"{' '.join(args)}: errors {errors or ret.stdout[-2000:]} changes {changed}")
    return seconds


def rounds(salt_lab, count):
    """Alternate the formula's re-apply and the empty highstate, who goes first too."""
    times = {"formula": [], "empty": []}
    runs = {"formula": ("state.apply",), "empty": ("state.top", "bench_top.sls")}
    for rnd in range(count):
        order = ["formula", "empty"] if rnd % 2 == 0 else ["empty", "formula"]
        for label in order:
            times[label].append(timed_apply(salt_lab, *runs[label]))
        print(f"round {rnd + 1}: formula {times['formula'][-1]:.2f}s, empty {times['empty'][-1]:.2f}s", flush=True)
    return times


def profile(salt_lab):
    """Where a re-apply's time goes: one ``state.apply``, profiled (:func:`state_profile`)."""
    started = time.perf_counter()
    ret = salt_lab.salt("state.apply", timeout=900)
    state_profile(ret.data, time.perf_counter() - started)


def main(argv=None):
    count = lab_rounds(__doc__, 5, argv)
    with tempfile.TemporaryDirectory(prefix="pgr-bench-") as tmp, factories(tmp) as manager:
        lab = Lab(f"{tmp}/lab", list(REFERENCE_ROLES), image=("bookworm", "provisioned"))
        with lab:
            salt_lab = SaltLab(manager, lab, reference_pillar(lab, roles=dict(REFERENCE_ROLES)))
            (salt_lab.state_dir / "bench_top.sls").write_text(EMPTY_TOP)
            (salt_lab.state_dir / "bench_nop.sls").write_text(NOP_SLS)
            with salt_lab.started():
                started = time.perf_counter()
                converge(salt_lab)
                print(f"cold converge (provisioned image): {time.perf_counter() - started:.1f}s", flush=True)
                times = rounds(salt_lab, count)
                profile(salt_lab)
    formula, empty = statistics.median(times["formula"]), statistics.median(times["empty"])
    print(f"re-apply median, 0 changes: {formula:.2f}s; empty highstate median: {empty:.2f}s")
    print(f"re-apply ratio: {formula / empty:.2f}x")


if __name__ == "__main__":
    main()
