"""Converge, then re-check, 200 roles and 50 slots with our states; the same 200 roles with
Salt core's postgres_user.present; and 200 roles and 50 slots with Ansible's
community.postgresql (postgresql_user, postgresql_slot: the ``ansible`` package from PyPI,
in its own cached virtualenv), on one throw-away PostgreSQL, alternating rounds. Also the
floor: one query of the 200 stored SCRAM verifiers and the 200 re-derivations alone.

Prints the median of each, the ratios, and last ``speedup: N.Nx`` = Salt core's idempotent
re-check time / ours. Run as root: ``make bench`` (or ``.venv/bin/python bench/roles_slots.py``);
``--quick`` (CI): 20 roles, 5 slots, one round, no Ansible.
"""

import argparse
import logging
import os
import pathlib
import re
import runpy
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
REPO = pathlib.Path(__file__).resolve().parent.parent
ANSIBLE_VENV = pathlib.Path(os.environ.get("PGR_BENCH_CACHE", "/var/cache/pg_replication-bench")) / "ansible-venv"
ANSIBLE_REQUIREMENTS = ("ansible>=9", "psycopg2-binary")


# The formula's own loader of _utils/ files by path.
_load_util = runpy.run_path(str(REPO / "_utils" / "pg_replication_sibling.py"))["load"]


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


def ansible_venv():
    """Ansible with community.postgresql and psycopg2, in a virtualenv built once."""
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not playbook.exists():
        print(f"building {ANSIBLE_VENV} (pip install {' '.join(ANSIBLE_REQUIREMENTS)})", flush=True)
        shutil.rmtree(ANSIBLE_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run([str(ANSIBLE_VENV / "bin/pip"), "install", "-q", *ANSIBLE_REQUIREMENTS], check=True)
    return playbook


def ansible_playbook(path, server, roles, slots):
    """One play on localhost: the roles (SCRAM passwords, LOGIN REPLICATION) and the slots."""
    login = {"login_user": "postgres", "login_unix_socket": str(server.socket_dir), "port": server.port}
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "roles",
                    "community.postgresql.postgresql_user": {
                        "name": "{{ item }}",
                        "password": PASSWORD,
                        "role_attr_flags": "LOGIN,REPLICATION",
                        **login,
                    },  # fmt: skip
                    "loop": roles,
                },
                {
                    "name": "slots",
                    "community.postgresql.postgresql_slot": {"name": "{{ item }}", "slot_type": "physical", **login},
                    "loop": slots,
                },
            ],
        }
    ]
    import yaml  # pylint: disable=import-outside-toplevel

    path.write_text(yaml.safe_dump(play))
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


def floor(server, roles):
    """What a re-check cannot avoid: one query for the stored verifiers, and re-deriving
    each from the password (PBKDF2, the verifier's own salt and iterations)."""
    import psycopg2  # pylint: disable=import-outside-toplevel

    scram = _load_util("pg_replication_scram")
    conn = psycopg2.connect(host=str(server.socket_dir), port=server.port, user="postgres", dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = ANY(%s)", (roles,))
            stored = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    if len(stored) != len(roles) or not all(scram.matches(PASSWORD, s) for s in stored):
        raise SystemExit("floor: a stored verifier does not match the password")
    return 0


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
    parser.add_argument("--no-ansible", action="store_true", help="leave out the Ansible peer")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 20 roles, 5 slots, 1 round, no Ansible")
    args = parser.parse_args(argv)
    if args.quick:
        args.roles, args.slots, args.rounds, args.no_ansible = 20, 5, 1, True
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

        runs = {
            "ours": (apply, modules, ours_high(our_roles, slots)),
            "core": (apply, modules, core_high(core_roles, server)),
        }
        if not args.no_ansible:
            ansible_roles = [f"bench_ansible_{i}" for i in range(args.roles)]
            ansible_slots = [f"bench_ansible_slot_{i}" for i in range(args.slots)]
            book = ansible_playbook(tmp / "play.yml", server, ansible_roles, ansible_slots)
            runs["ansible"] = (run_ansible, ansible_venv(), book)
        runs["floor"] = (floor, server, our_roles)
        for label, (func, *call) in runs.items():
            seconds, changed = timed(func, *call)
            print(f"converge  {label:8s} {seconds:7.2f}s ({changed} changes)")

        recheck = {label: [] for label in runs}
        for rnd in range(args.rounds):
            order = list(runs.items())
            for label, (func, *call) in order[:: 1 if rnd % 2 == 0 else -1]:  # alternate who goes first
                seconds, changed = timed(func, *call)
                if changed:
                    raise SystemExit(f"{label}: re-check reported {changed} changes")
                recheck[label].append(seconds)
            print(f"round {rnd + 1}: " + ", ".join(f"{label} {times[-1]:.2f}s" for label, times in recheck.items()))

        med = {label: statistics.median(times) for label, times in recheck.items()}
        print(f"re-check median ours ({args.roles} roles + {args.slots} slots): {med['ours']:.3f}s")
        print(f"re-check median Salt core postgres_user.present ({args.roles} roles): {med['core']:.3f}s")
        if "ansible" in med:
            print(
                f"re-check median Ansible community.postgresql ({args.roles} roles + {args.slots} slots):"
                f" {med['ansible']:.3f}s, {med['ansible'] / med['ours']:.1f}x ours"
            )
        print(
            f"floor (one query + {args.roles} SCRAM re-derivations): {med['floor']:.3f}s;"
            f" ours is {med['ours'] / med['floor']:.2f}x the floor"
        )
        print(f"speedup: {med['core'] / med['ours']:.1f}x")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
