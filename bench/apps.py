"""Converge, then re-check, the applications' objects: 500 roles (SCRAM passwords), 50
databases with two extensions each and 200 database grants, with our states; the same with
Salt core's postgres_user / postgres_database / postgres_extension / postgres_privileges;
and with Ansible's community.postgresql (postgresql_user, postgresql_db, postgresql_ext,
postgresql_privs; the cached virtualenv of bench/roles_slots.py), on one throw-away
PostgreSQL, alternating rounds.

Prints the median of each re-check, the ratios, and last ``apps ratio: N.Nx`` = Salt core's
idempotent re-check time / ours. Run as root: ``.venv/bin/python bench/apps.py``;
``--quick`` (CI): 20 roles, 4 databases, 10 grants, one round, no Ansible.
"""

import argparse
import logging
import os
import pathlib
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from roles_slots import PASSWORD, ansible_venv, apply, high, run_ansible, timed  # noqa: E402
from saltfactories.utils.functional import Loaders  # noqa: E402

from lab.pgserver import PostgresServer, local_minion_opts  # noqa: E402

EXTENSIONS = ("pg_trgm", "citext")
GRANT = ["CONNECT", "TEMPORARY"]


def ordered(data):
    """High data whose states run by the number their id starts with (roles, databases,
    extensions, grants): Salt otherwise orders them by name."""
    return high({sid: (mod, func, dict(kwargs, order=int(sid[0]))) for sid, (mod, func, kwargs) in data.items()})


def workload(prefix, args):
    """Role names, database names, and (role, database) grants of one contender."""
    roles = [f"{prefix}_r{i}" for i in range(args.roles)]
    databases = [f"{prefix}_d{i}" for i in range(args.databases)]
    grants = [(roles[i % len(roles)], databases[i % len(databases)]) for i in range(args.grants)]
    return roles, databases, grants


def ours_high(roles, databases, grants):
    data = {f"1-role-{n}": ("pg_replication", "role_present", {"name": n, "password": PASSWORD}) for n in roles}
    data.update(
        {
            f"2-db-{d}": ("pg_replication", "database_present",
                        {"name": d, "owner": roles[0], "extensions": dict.fromkeys(EXTENSIONS)})
            for d in databases
        }
    )  # fmt: skip
    data.update(
        {
            f"4-grant-{i}": ("pg_replication", "privileges_present",
                           {"name": f"grant-{i}", "role": r, "database": d, "on": "database", "privileges": GRANT})
            for i, (r, d) in enumerate(grants)
        }
    )  # fmt: skip
    return ordered(data)


def core_high(roles, databases, grants, server):
    conn = {"db_host": str(server.socket_dir), "db_port": server.port, "db_user": "postgres"}
    data = {
        f"1-role-{n}": ("postgres_user", "present",
                      {"name": n, "password": PASSWORD, "encrypted": "scram-sha-256", "login": True, **conn})
        for n in roles
    }  # fmt: skip
    for d in databases:
        data[f"2-db-{d}"] = ("postgres_database", "present", {"name": d, "owner": roles[0], **conn})
        for ext in EXTENSIONS:
            data[f"3-ext-{d}-{ext}"] = ("postgres_extension", "present", {"name": ext, "maintenance_db": d, **conn})
    for i, (r, d) in enumerate(grants):
        grant = {"name": r, "object_name": d, "object_type": "database", "privileges": GRANT, **conn}
        data[f"4-grant-{i}"] = ("postgres_privileges", "present", grant)
    return ordered(data)


def ansible_playbook(path, server, roles, databases, grants):
    """One play on localhost: roles, databases and their extensions, database grants."""
    login = {"login_user": "postgres", "login_unix_socket": str(server.socket_dir), "port": server.port}
    ext_items = [{"db": d, "ext": e} for d in databases for e in EXTENSIONS]
    grant_items = [{"role": r, "db": d} for r, d in grants]
    tasks = [
        {"name": "roles", "community.postgresql.postgresql_user": {"name": "{{ item }}", "password": PASSWORD,
                                                                   **login}, "loop": roles},
        {"name": "databases", "community.postgresql.postgresql_db": {"name": "{{ item }}", "owner": roles[0],
                                                                     **login}, "loop": databases},
        {"name": "extensions", "community.postgresql.postgresql_ext": {"name": "{{ item.ext }}", "db": "{{ item.db }}",
                                                                       **login}, "loop": ext_items},
        {"name": "grants", "community.postgresql.postgresql_privs": {
            "database": "postgres", "type": "database", "objs": "{{ item.db }}", "roles": "{{ item.role }}",
            "privs": ",".join(GRANT), **login}, "loop": grant_items},
    ]  # fmt: skip
    import yaml  # pylint: disable=import-outside-toplevel

    path.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--roles", type=int, default=500)
    parser.add_argument("--databases", type=int, default=50)
    parser.add_argument("--grants", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-ansible", action="store_true", help="leave out the Ansible peer")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 20 roles, 4 databases, 10 grants, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.roles, args.databases, args.grants, args.rounds, args.no_ansible = 20, 4, 10, 1, True
    if os.geteuid() != 0:
        raise SystemExit("run as root (the throw-away server runs as postgres)")

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="pgr-bench-apps-"))
    tmp.chmod(0o755)
    server = PostgresServer(tmp / "pg").start()
    try:
        loaders = Loaders(local_minion_opts(tmp / "minion", server.conn))
        logging.getLogger("salt").setLevel(logging.CRITICAL)
        modules = loaders.modules
        runs = {
            "ours": (apply, modules, ours_high(*workload("ours", args))),
            "core": (apply, modules, core_high(*workload("core", args), server)),
        }
        if not args.no_ansible:
            book = ansible_playbook(tmp / "play.yml", server, *workload("ans", args))
            runs["ansible"] = (run_ansible, ansible_venv(), book)
        for label, (func, *call) in runs.items():
            seconds, changed = timed(func, *call)
            print(f"converge  {label:8s} {seconds:7.2f}s ({changed} changes)", flush=True)

        recheck = {label: [] for label in runs}
        for rnd in range(args.rounds):
            for label, (func, *call) in list(runs.items())[:: 1 if rnd % 2 == 0 else -1]:
                seconds, changed = timed(func, *call)
                if changed:
                    raise SystemExit(f"{label}: re-check reported {changed} changes")
                recheck[label].append(seconds)
            print(f"round {rnd + 1}: " + ", ".join(f"{label} {t[-1]:.2f}s" for label, t in recheck.items()), flush=True)

        med = {label: statistics.median(times) for label, times in recheck.items()}
        size = f"{args.roles} roles, {args.databases} databases x {len(EXTENSIONS)} extensions, {args.grants} grants"
        print(f"apps re-check median ours ({size}): {med['ours']:.3f}s")
        print(f"apps re-check median Salt core postgres_* ({size}): {med['core']:.3f}s")
        if "ansible" in med:
            print(f"apps re-check median Ansible community.postgresql ({size}): {med['ansible']:.3f}s,"
                  f" {med['ansible'] / med['ours']:.1f}x ours")  # fmt: skip
        print(f"apps ratio: {med['core'] / med['ours']:.1f}x")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
