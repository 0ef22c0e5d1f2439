"""Converge, then re-check, the applications' objects: 500 roles (SCRAM passwords), 50
databases with two extensions each and 200 database grants, with our states; the same with
Salt core's postgres_user / postgres_database / postgres_extension / postgres_privileges;
and with Ansible's community.postgresql (postgresql_user, postgresql_db, postgresql_ext,
postgresql_privs; the cached virtualenv of bench/common.py), on one throw-away
PostgreSQL, alternating rounds.

Prints the median of each re-check, the ratios, and last ``apps ratio: N.Nx`` = Salt core's
idempotent re-check time / ours. Run as root: ``.venv/bin/python bench/apps.py``;
``--quick`` (CI): 20 roles, 4 databases, 10 grants, one round, no Ansible.
``--converge-with-ours``: the peers' objects are made by our states (creating them with Salt
core or Ansible takes most of an hour on a busy 2-core machine); their re-checks are timed
as usual, and the first one fails the benchmark if it finds anything to change.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PASSWORD,
    ansible_login,
    ansible_playbook,
    ansible_venv,
    apply,
    arguments,
    converge_and_recheck,
    core_conn,
    high,
    local_server,
    run_ansible,
)

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
    conn = core_conn(server)
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


def apps_playbook(path, server, roles, databases, grants):
    """One play on localhost: roles, databases and their extensions, database grants."""
    login = ansible_login(server)
    ext_items = [{"db": d, "ext": e} for d in databases for e in EXTENSIONS]
    grant_items = [{"role": r, "db": d} for r, d in grants]
    return ansible_playbook(path, [
        {"name": "roles", "community.postgresql.postgresql_user": {"name": "{{ item }}", "password": PASSWORD,
                                                                   **login}, "loop": roles},
        {"name": "databases", "community.postgresql.postgresql_db": {"name": "{{ item }}", "owner": roles[0],
                                                                     **login}, "loop": databases},
        {"name": "extensions", "community.postgresql.postgresql_ext": {"name": "{{ item.ext }}", "db": "{{ item.db }}",
                                                                       **login}, "loop": ext_items},
        {"name": "grants", "community.postgresql.postgresql_privs": {
            "database": "postgres", "type": "database", "objs": "{{ item.db }}", "roles": "{{ item.role }}",
            "privs": ",".join(GRANT), **login}, "loop": grant_items},
    ])  # fmt: skip


def main(argv=None):
    args = arguments(
        __doc__,
        {"roles": 500, "databases": 50, "grants": 200},
        {"roles": 20, "databases": 4, "grants": 10},
        argv,
        flags=(("--converge-with-ours", "make the peers' objects with our states (their re-checks only are timed)"),),
    )
    with local_server("pgr-bench-apps-") as (server, modules, tmp):
        runs = {
            "ours": (apply, modules, ours_high(*workload("ours", args))),
            "core": (apply, modules, core_high(*workload("core", args), server)),
        }
        if not args.no_ansible:
            book = apps_playbook(tmp / "play.yml", server, *workload("ans", args))
            runs["ansible"] = (run_ansible, ansible_venv(), book)
        # Salt core and Ansible take minutes per hundred objects to create them; on a busy
        # machine, --converge-with-ours makes their objects with our states (the same roles,
        # databases, extensions and grants under their names): only re-checks are compared.
        converge = {
            label: (apply, modules, ours_high(*workload(prefix, args)))
            for label, prefix in (("core", "core"), ("ansible", "ans"))
            if args.converge_with_ours and label in runs
        }
        med = converge_and_recheck(runs, args.rounds, converge)
        size = f"{args.roles} roles, {args.databases} databases x {len(EXTENSIONS)} extensions, {args.grants} grants"
        print(f"apps re-check median ours ({size}): {med['ours']:.3f}s")
        print(f"apps re-check median Salt core postgres_* ({size}): {med['core']:.3f}s")
        if "ansible" in med:
            print(f"apps re-check median Ansible community.postgresql ({size}): {med['ansible']:.3f}s,"
                  f" {med['ansible'] / med['ours']:.1f}x ours")  # fmt: skip
        print(f"apps ratio: {med['core'] / med['ours']:.1f}x")


if __name__ == "__main__":
    main()
