#!/usr/bin/python3 -I
# SPDX-License-Identifier: Apache-2.0
# Managed by Salt (pg_replication)
"""Barman's metrics for Prometheus' textfile collector, refreshed by cron without Salt:
``barman -f json check`` and ``list-backup`` for each server, as the barman user, turned
into the ``barman_*`` metrics and written atomically to the metrics file, by the functions of
``pg_replication_barman_metrics.py`` installed beside this script (the formula's
``_utils/pg_replication_barman_metrics.py``, which ``barman.write_metrics`` also uses).

Usage: barman-metrics [--barman BIN] [--config FILE] [--user USER] [--drill-dir DIR]
METRICS_FILE MAX_AGES_JSON (``MAX_AGES_JSON``: ``{"server": maximum age of its last DONE
backup, in seconds}``; ``--drill-dir``: where restore drills record their results, whose
``barman_drill_*`` metrics are added).
Exit status 0 once the file is written (a server Barman did not answer for has
``barman_up 0``), 2 on bad arguments.
"""

import argparse
import importlib.util
import json
import os
import pwd
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _metrics_code():
    path = os.path.join(HERE, "pg_replication_barman_metrics.py")
    spec = importlib.util.spec_from_file_location("pg_replication_barman_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as_user(name):
    """What runs ``barman`` as ``name`` when this runs as root (else as this user): the
    subprocess' ``preexec_fn`` and environment."""
    if os.geteuid() != 0:
        return None, dict(os.environ)
    entry = pwd.getpwnam(name)

    def drop():
        os.setgid(entry.pw_gid)
        os.initgroups(name, entry.pw_gid)
        os.setuid(entry.pw_uid)

    env = {
        "HOME": entry.pw_dir,
        "USER": name,
        "LOGNAME": name,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
    }
    return drop, env


def barman_json(args, command, server, preexec, env):
    """``barman -f json COMMAND SERVER``'s part for ``server``, or None (Barman's message on stderr)."""
    cmd = [args.barman, "-c", args.config, "-f", "json", command, server]
    try:
        res = subprocess.run(
            cmd, preexec_fn=preexec, env=env, cwd="/", capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"barman-metrics: {command} {server}: {exc}", file=sys.stderr)
        return None
    try:
        data = json.loads(res.stdout) if res.stdout.strip() else None
    except ValueError:
        data = None
    answer = METRICS.server_answer(data, server)
    if answer is None or (res.returncode and command != "check"):
        message = (data or {}).get("_ERROR") if isinstance(data, dict) else None
        print(f"barman-metrics: {command} {server}: {message or res.stderr.strip() or 'no answer'}", file=sys.stderr)
        return None
    return answer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--barman", default="barman")
    parser.add_argument("--config", default="/etc/barman.conf")
    parser.add_argument("--user", default="barman")
    parser.add_argument("--drill-dir", default=None)
    parser.add_argument("path")
    parser.add_argument("max_ages", type=json.loads)
    args = parser.parse_args(argv)
    if not isinstance(args.max_ages, dict):
        parser.error("MAX_AGES_JSON must be an object")
    preexec, env = _as_user(args.user)
    samples, now = [], time.time()
    for server, max_age in sorted(args.max_ages.items()):
        checks = barman_json(args, "check", server, preexec, env)
        backups = barman_json(args, "list-backup", server, preexec, env) if checks is not None else None
        samples += METRICS.server_samples(server, checks, backups, int(max_age), now)
        if args.drill_dir:
            samples += METRICS.drill_samples(server, METRICS.read_drill_result(args.drill_dir, server), now)
    METRICS.write_atomically(args.path, METRICS.barman_metrics(samples, now))
    return 0


METRICS = _metrics_code()

if __name__ == "__main__":
    sys.exit(main())
