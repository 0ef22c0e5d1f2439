"""Backup throughput: the formula's backup state (``barman.backup_fresh`` with ``max_age=1``,
so it takes one: ``barman backup``, then until DONE) against a raw ``pg_basebackup`` of the
same database from the same backup host (``-X stream``, plain format, synced to disk as
Barman syncs its backups, the streaming role), on a converged reference cluster whose
primary holds a pgbench database of at least 1 GB. Alternating rounds.

Prints each round (seconds and MB/s of the database size), the medians and, last,
``backup throughput ratio: N.NNx`` (ours / raw; goal: at least 0.9x). Run as root: ``make
bench`` (or ``.venv/bin/python bench/backup.py``); ``--quick``: pgbench scale 10 (about
150 MB), one round.
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
from lab.salt import REFERENCE_ROLES, SaltLab, reference_pillar  # noqa: E402
from lab.scenario import converge, ensure_otus, pg_ctl  # noqa: E402

SERVER = "master-streaming"
# pgbench's scale for at least 1 GB (about 15 MB per unit).
SCALE, QUICK_SCALE = 70, 10
RAW_DEST = "/var/lib/barman/bench-basebackup"


def ours(salt_lab):
    """Seconds of the backup state taking one backup (it must report a new DONE backup)."""
    started = time.perf_counter()
    ret = salt_lab.salt(
        "state.single", "barman.backup_fresh", f"name={SERVER}", "max_age=1", target="backup", timeout=3600
    )
    seconds = time.perf_counter() - started
    (result,) = ret.data.values() if isinstance(ret.data, dict) else [{}]
    if ret.returncode or result.get("result") is not True or not result.get("changes"):
        raise SystemExit(f"backup state: {ret.stdout[-2000:]}")
    return seconds


def raw(salt_lab):
    """Seconds of pg_basebackup of the primary into a fresh directory on the backup host."""
    backup, master = salt_lab.lab["backup"], salt_lab.lab["master"]
    bin_dir = pathlib.PurePath(pg_ctl(salt_lab)).parent
    backup.run(["rm", "-rf", RAW_DEST])
    cmd = ["runuser", "-u", "barman", "--", str(bin_dir / "pg_basebackup"), "-D", RAW_DEST, "-h", master.address,
           "-U", "barman_streaming", "-X", "stream", "-c", "fast", "--no-password"]  # fmt: skip
    started = time.perf_counter()
    res = backup.run(cmd, check=False)
    seconds = time.perf_counter() - started
    backup.run(["rm", "-rf", RAW_DEST])
    if res.returncode:
        raise SystemExit(f"pg_basebackup: {res.stderr[-2000:]}")
    return seconds


def main(argv=None):
    count, args = lab_options(__doc__, 3, argv)
    scale = QUICK_SCALE if args.quick else SCALE
    times = {"ours": [], "raw": []}
    with tempfile.TemporaryDirectory(prefix="pgr-bench-") as tmp, factories(tmp) as manager:
        lab = Lab(f"{tmp}/lab", list(REFERENCE_ROLES), image=("bookworm", "provisioned"))
        with lab:
            salt_lab = SaltLab(manager, lab, reference_pillar(lab))
            with salt_lab.started():
                converge(salt_lab)
                master = lab["master"]
                ensure_otus(master)
                master.run(["runuser", "-u", "postgres", "--", "pgbench", "-i", "-q", "-s", str(scale), "otus"])
                size = int(master.psql("SELECT sum(pg_database_size(oid)) FROM pg_database"))
                # What pgbench wrote is archived before the clock starts: the first backup
                # would otherwise archive about a GB of WAL that the raw copy never reads.
                for fun in ("barman.close_segment", "barman.archive_wal"):
                    salt_lab.salt(fun, SERVER, target="backup", timeout=1800)
                print(f"databases: {size / 2**20:.0f} MB (pgbench scale {scale})", flush=True)
                for rnd in range(count):
                    order = ["ours", "raw"] if rnd % 2 == 0 else ["raw", "ours"]
                    for label in order:
                        times[label].append((ours if label == "ours" else raw)(salt_lab))
                    line = ", ".join(f"{k} {v[-1]:.1f}s ({size / 2**20 / v[-1]:.0f} MB/s)" for k, v in times.items())
                    print(f"round {rnd + 1}: {line}", flush=True)
    med = {label: statistics.median(values) for label, values in times.items()}
    print(f"backup median: ours {med['ours']:.1f}s, raw pg_basebackup {med['raw']:.1f}s")
    print(f"backup throughput ratio: {med['raw'] / med['ours']:.2f}x")


if __name__ == "__main__":
    main()
