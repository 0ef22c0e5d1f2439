"""What the lab benchmarks share: their command line (rounds, a quick mode for CI smoke, a
log file for the daemons) and the checks before a lab starts."""

import argparse
import logging
import os

from lab.hosts import Lab
from lab.signals import unwind_on_signals


def lab_rounds(doc, rounds, argv=None):
    """Parse the benchmark's arguments, check it runs as root, send the daemons' logs to a
    file and clear a lab left by an earlier run; the number of rounds to run."""
    return lab_options(doc, rounds, argv)[0]


def lab_options(doc, rounds, argv=None, flags=()):
    """:func:`lab_rounds`, with the benchmark's own on/off ``flags`` ((name, help), ...):
    (rounds, the parsed arguments)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--quick", action="store_true", help="one round (CI smoke)")
    parser.add_argument("--log", default="/tmp/pg_replication-bench.log", help="where the daemons' logs go")
    for name, help_text in flags:
        parser.add_argument(name, action="store_true", help=help_text)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root (the lab makes network namespaces)")
    logging.basicConfig(filename=args.log, level=logging.INFO, force=True)
    # A TERM or HUP (a timeout, make interrupted) unwinds the labs' with blocks, which clean up.
    unwind_on_signals()
    Lab.cleanup_stale()
    return (1 if args.quick else args.rounds), args


def state_profile(data, wall, label="profile", top=8):
    """Print where a state run's time went: per minion, the sum of its states' own durations
    against the job's ``wall`` time (the rest: Salt's job start, module sync, rendering, the
    return), and the ``top`` slowest states."""
    slowest = []
    for minion, states in sorted(data.items()):
        if not isinstance(states, dict):
            continue
        own = sum(float(s.get("duration") or 0) for s in states.values()) / 1000
        print(f"{label} {minion}: states {own:.2f}s of the job's {wall:.2f}s ({len(states)} states)")
        slowest += [(float(s.get("duration") or 0) / 1000, minion, s["__id__"]) for s in states.values()]
    for seconds, minion, sid in sorted(slowest, reverse=True)[:top]:
        print(f"{label} slowest: {seconds:6.2f}s {minion} {sid}")
