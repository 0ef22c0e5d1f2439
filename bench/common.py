"""What the benchmarks on one throw-away PostgreSQL share (``bench/roles_slots.py``,
``bench/apps.py``): the server and a Salt loader on it, high data and its state run, the
Ansible peer (community.postgresql in a cached virtualenv), and the rounds: converge each
contender once, then re-check them all, alternating who goes first, and take the medians."""

import argparse
import contextlib
import gc
import logging
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from saltfactories.utils.functional import Loaders  # noqa: E402

from lab.pgserver import PostgresServer, local_minion_opts  # noqa: E402

PASSWORD = "bench-password-0123456789"  # noqa: S105 - a throw-away server's roles
ANSIBLE_VENV = pathlib.Path(os.environ.get("PGR_BENCH_CACHE", "/var/cache/pg_replication-bench")) / "ansible-venv"
# The ``ansible`` package bundles the community.postgresql collection.
ANSIBLE_REQUIREMENTS = ("ansible>=9", "psycopg2-binary")


@contextlib.contextmanager
def local_server(prefix):
    """A throw-away PostgreSQL and the Salt modules of a minion configured for it:
    ``(server, modules, tmp)``; all removed on the way out. Run as root."""
    if os.geteuid() != 0:
        raise SystemExit("run as root (the throw-away server runs as postgres)")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    tmp.chmod(0o755)
    server = PostgresServer(tmp / "pg").start()
    try:
        loaders = Loaders(local_minion_opts(tmp / "minion", server.conn))
        # Salt core's runas path logs an error per call when the venv's python is not
        # readable by postgres; it then carries on. Keep the figures readable.
        logging.getLogger("salt").setLevel(logging.CRITICAL)
        yield server, loaders.modules, tmp
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def core_conn(server):
    """The connection keywords of Salt core's postgres_* states for ``server``."""
    return {"db_host": str(server.socket_dir), "db_port": server.port, "db_user": "postgres"}


def high(states):
    """High data for one state run: {id: (state module, function, kwargs)}."""
    return {
        sid: {mod: [func, *({k: v} for k, v in kwargs.items())], "__sls__": "bench", "__env__": "base"}
        for sid, (mod, func, kwargs) in states.items()
    }


def apply(modules, data):
    """One state run (one loader, so our modules keep one connection per database); count
    changes. The run's loaders hold its connections in reference cycles: collect them here, as
    the end of a minion's job process does, or each run's would stay open until the server
    refuses more clients."""
    ret = modules.state.high(data).raw
    gc.collect()
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


def ansible_venv():
    """Ansible with community.postgresql and psycopg2, in a virtualenv built once."""
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not playbook.exists():
        print(f"building {ANSIBLE_VENV} (pip install {' '.join(ANSIBLE_REQUIREMENTS)})", flush=True)
        shutil.rmtree(ANSIBLE_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run([str(ANSIBLE_VENV / "bin/pip"), "install", "-q", *ANSIBLE_REQUIREMENTS], check=True)
    return playbook


def ansible_login(server):
    """The connection options of community.postgresql's modules for ``server``."""
    return {"login_user": "postgres", "login_unix_socket": str(server.socket_dir), "port": server.port}


def ansible_playbook(path, tasks):
    """Write one play on localhost running ``tasks`` to ``path``; return ``path``."""
    import yaml  # pylint: disable=import-outside-toplevel

    path.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    return path


def run_ansible(playbook_bin, playbook):
    """ansible-playbook on ``playbook``; returns how many tasks changed (the play recap)."""
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=str(ANSIBLE_VENV / "bin/python"), ANSIBLE_NOCOLOR="1")
    res = subprocess.run(
        [str(playbook_bin), "-i", "localhost,", "-c", "local", str(playbook)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    recap = re.search(r"localhost\s*:.*?changed=(\d+).*?failed=(\d+)", res.stdout)
    if res.returncode or not recap or recap.group(2) != "0":
        raise SystemExit(f"ansible-playbook failed:\n{res.stdout[-3000:]}\n{res.stderr[-2000:]}")
    return int(recap.group(1))


def converge_and_recheck(runs, rounds, converge=None):
    """``runs``: {label: (func, *args)}, each returning how many changes it made. Run each
    once (the converge; ``converge``: {label: (func, *args)} that does it instead), then
    ``rounds`` re-checks of them all, alternating who goes first; a re-check that changes
    anything stops the benchmark. The median seconds of each. The machine's load average is
    printed before and after (the ratios come from one run, but a busy machine slows the
    contenders unevenly)."""
    print(f"load average before: {_load()}", flush=True)
    for label, (func, *call) in dict(runs, **(converge or {})).items():
        seconds, changed = timed(func, *call)
        print(f"converge  {label:8s} {seconds:7.2f}s ({changed} changes)", flush=True)
    recheck = {label: [] for label in runs}
    for rnd in range(rounds):
        for label, (func, *call) in list(runs.items())[:: 1 if rnd % 2 == 0 else -1]:
            seconds, changed = timed(func, *call)
            if changed:
                raise SystemExit(f"{label}: re-check reported {changed} changes")
            recheck[label].append(seconds)
            print(f"re-check  {label:8s} {seconds:7.2f}s (round {rnd + 1}, load {_load()})", flush=True)
        print(f"round {rnd + 1}: " + ", ".join(f"{label} {t[-1]:.2f}s" for label, t in recheck.items()), flush=True)
    print(f"load average after: {_load()}", flush=True)
    return {label: statistics.median(times) for label, times in recheck.items()}


def _load():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def arguments(doc, sizes, quick, argv=None, flags=()):
    """The command line of a benchmark: ``--NAME N`` for each of ``sizes`` ({name: default}),
    ``--rounds``, ``--no-ansible``, ``--quick`` (CI smoke: ``quick``'s sizes, one round, no
    Ansible), and the benchmark's own on/off ``flags`` ((name, help), ...)."""
    parser = argparse.ArgumentParser(description=doc)
    for name, help_text in flags:
        parser.add_argument(name, action="store_true", help=help_text)
    for name, default in sizes.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-ansible", action="store_true", help="leave out the Ansible peer")
    small = ", ".join(f"{n} {name}" for name, n in quick.items())
    parser.add_argument("--quick", action="store_true", help=f"CI smoke: {small}, 1 round, no Ansible")
    args = parser.parse_args(argv)
    if args.quick:
        for name, n in quick.items():
            setattr(args, name, n)
        args.rounds, args.no_ansible = 1, True
    return args
