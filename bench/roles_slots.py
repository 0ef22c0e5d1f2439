"""Converge, then re-check, 200 roles and 50 slots with our states, and the same 200 roles
with Salt core's postgres_user.present, on one throw-away PostgreSQL, alternating rounds.

Prints the median of each and, last, ``speedup: N.Nx`` = Salt core's idempotent re-check
time / ours. Run as root: ``make bench`` (or ``.venv/bin/python bench/roles_slots.py``).
"""

import argparse
import logging
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from saltfactories.utils.functional import Loaders  # noqa: E402

from lab.pgserver import PostgresServer, local_minion_opts  # noqa: E402

PASSWORD = "bench-password-0123456789"  # noqa: S105 - a throw-away server's roles


def high(states):
    """High data for one state run: {id: (state module, function, kwargs)}."""
    return {
        sid: {mod: [func, *({k: v} for k, v in kwargs.items())], "__sls__": "bench", "__env__": "base"}
        for sid, (mod, func, kwargs) in states.items()
    }


def ours_high(roles, slots):
    data = {f"role-{n}": ("pg_replication", "role_present", {"name": n, "password": PASSWORD, "replication": True})
            for n in roles}  # fmt: skip
    data.update({f"slot-{n}": ("pg_replication", "slot_present", {"name": n}) for n in slots})
    return high(data)


def core_high(roles, server):
    conn = {"db_host": str(server.socket_dir), "db_port": server.port, "db_user": "postgres"}
    return high(
        {
            f"role-{n}": (
                "postgres_user",
                "present",
                {
                    "name": n,
                    "password": PASSWORD,
                    "encrypted": "scram-sha-256",
                    "replication": True,
                    "login": True,
                    **conn,
                },
            )  # fmt: skip
            for n in roles
        }
    )


def apply(modules, data):
    """One state run (one loader, so our modules keep one connection); count changes."""
    ret = modules.state.high(data).raw
    if not isinstance(ret, dict):
        raise SystemExit(f"state run failed: {ret}")
    failed = [r["comment"] for r in ret.values() if r["result"] is not True]
    if failed:
        raise SystemExit(f"state run failed: {failed[:3]}")
    return sum(1 for r in ret.values() if r["changes"])


def timed(func, *args):
    start = time.perf_counter()
    changed = func(*args)
    return time.perf_counter() - start, changed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--roles", type=int, default=200)
    parser.add_argument("--slots", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root (the throw-away server runs as postgres)")

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="pgr-bench-"))
    tmp.chmod(0o755)
    server = PostgresServer(tmp / "pg").start()
    try:
        loaders = Loaders(local_minion_opts(tmp / "minion", server.conn))
        # Salt core's runas path logs an error per call when the venv's python is not
        # readable by postgres; it then carries on. Keep the figures readable.
        logging.getLogger("salt").setLevel(logging.CRITICAL)
        modules = loaders.modules
        our_roles = [f"bench_ours_{i}" for i in range(args.roles)]
        core_roles = [f"bench_core_{i}" for i in range(args.roles)]
        slots = [f"bench_slot_{i}" for i in range(args.slots)]

        ours = ours_high(our_roles, slots)
        core = core_high(core_roles, server)
        t_ours, n_ours = timed(apply, modules, ours)
        t_core, n_core = timed(apply, modules, core)
        print(f"converge  ours: {t_ours:7.2f}s ({n_ours} changes)   core: {t_core:7.2f}s ({n_core} changes)")

        recheck = {"ours": [], "core": []}
        for rnd in range(args.rounds):
            pair = [("ours", ours), ("core", core)]
            for label, data in pair[:: 1 if rnd % 2 == 0 else -1]:  # alternate who goes first
                seconds, changed = timed(apply, modules, data)
                if changed:
                    raise SystemExit(f"{label}: re-check reported {changed} changes")
                recheck[label].append(seconds)
            print(f"round {rnd + 1}: ours {recheck['ours'][-1]:.2f}s, core {recheck['core'][-1]:.2f}s")

        med_ours = statistics.median(recheck["ours"])
        med_core = statistics.median(recheck["core"])
        print(f"re-check median ours ({args.roles} roles + {args.slots} slots): {med_ours:.3f}s")
        print(f"re-check median Salt core postgres_user.present ({args.roles} roles): {med_core:.3f}s")
        print(f"speedup: {med_core / med_ours:.1f}x")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
