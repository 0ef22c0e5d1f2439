"""Cold converge: fresh lab hosts (packages installed, nothing configured) to a streaming
standby and a first DONE Barman backup, by the formula's first highstate (``salt '*'
state.apply`` through a real salt-master) against the same steps by hand
(``bench/cold_converge.sh``: the primary first, then the standby and the backup host side by
side), alternating rounds, each on new hosts.

Prints each round (with where the formula's run spent its time: per minion its states'
own durations, and the slowest states), the medians and, last, ``cold converge ratio:
N.NNx`` (goal: at most 2x).
Run as root: ``make bench`` (or ``.venv/bin/python bench/cold_converge.py``); ``--quick``
for one round.
"""

import concurrent.futures
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.labbench import lab_rounds, state_profile  # noqa: E402
from lab.demo import factories  # noqa: E402
from lab.hosts import Lab  # noqa: E402
from lab.salt import REFERENCE_ROLES, SaltLab, reference_pillar  # noqa: E402
from lab.scenario import converge  # noqa: E402

SCRIPT = (pathlib.Path(__file__).resolve().parent / "cold_converge.sh").read_text()
IMAGE = ("bookworm", "provisioned")


def by_formula(root):
    """Seconds of the first highstate on new hosts (the minions up and the modules synced
    before the clock starts)."""
    lab = Lab(f"{root}/formula", list(REFERENCE_ROLES), image=IMAGE)
    with lab, factories(f"{root}/salt") as manager:
        salt_lab = SaltLab(manager, lab, reference_pillar(lab))
        with salt_lab.started():
            salt_lab.sync_modules()
            started = time.perf_counter()
            converge(salt_lab)
            seconds = time.perf_counter() - started
            state_profile(salt_lab.first_run.data, seconds, label="formula profile", top=10)
            return seconds


def by_hand(root):
    """Seconds of bench/cold_converge.sh on new hosts."""
    lab = Lab(f"{root}/shell", list(REFERENCE_ROLES), image=IMAGE)
    with lab:
        pillar = reference_pillar(lab)
        env = dict(
            os.environ,
            REPL_PW=pillar["replication"]["password"],
            BARMAN_PW=pillar["barman"]["password"],
            STREAMING_PW=pillar["barman"]["streaming_password"],
        )
        addresses = [lab[h].address for h in ("master", "standby", "backup")]

        def step(host, name):
            res = lab[host].run(["sh", "-s", name, *addresses], input=SCRIPT, env=env, check=False)
            if res.returncode:
                raise SystemExit(f"cold_converge.sh {name} on {host} failed: {res.stderr[-2000:]}")

        started = time.perf_counter()
        step("master", "primary")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for done in [pool.submit(step, "standby", "standby"), pool.submit(step, "backup", "backup")]:
                done.result()
        return time.perf_counter() - started


def main(argv=None):
    count = lab_rounds(__doc__, 3, argv)
    times = {"formula": [], "shell": []}
    with tempfile.TemporaryDirectory(prefix="pgr-bench-") as tmp:
        for rnd in range(count):
            order = ["formula", "shell"] if rnd % 2 == 0 else ["shell", "formula"]
            for label in order:
                root = f"{tmp}/{rnd}"
                times[label].append(by_formula(root) if label == "formula" else by_hand(root))
            print(f"round {rnd + 1}: formula {times['formula'][-1]:.1f}s, shell {times['shell'][-1]:.1f}s", flush=True)
    formula, shell = statistics.median(times["formula"]), statistics.median(times["shell"])
    print(f"cold converge median: formula {formula:.1f}s, shell script {shell:.1f}s")
    print(f"cold converge ratio: {formula / shell:.2f}x")


if __name__ == "__main__":
    main()
