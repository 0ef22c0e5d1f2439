"""Converge, then re-check, 200 roles and 50 slots with our states; the same 200 roles with
Salt core's postgres_user.present; and 200 roles and 50 slots with Ansible's
community.postgresql (postgresql_user, postgresql_slot: the ``ansible`` package from PyPI,
in its own cached virtualenv), on one throw-away PostgreSQL, alternating rounds. Also the
floor: one query of the 200 stored SCRAM verifiers and the 200 re-derivations alone.

Prints the median of each, the ratios, and last ``speedup: N.Nx`` = Salt core's idempotent
re-check time / ours. Run as root: ``make bench`` (or ``.venv/bin/python bench/roles_slots.py``);
``--quick`` (CI): 20 roles, 5 slots, one round, no Ansible.
"""

import pathlib
import runpy
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

REPO = pathlib.Path(__file__).resolve().parent.parent

# The formula's own loader of _utils/ files by path.
_load_util = runpy.run_path(str(REPO / "_utils" / "pg_replication_sibling.py"))["load"]


def ours_high(roles, slots):
    data = {f"role-{n}": ("pg_replication", "role_present", {"name": n, "password": PASSWORD, "replication": True})
            for n in roles}  # fmt: skip
    data.update({f"slot-{n}": ("pg_replication", "slot_present", {"name": n}) for n in slots})
    return high(data)


def core_high(roles, server):
    kwargs = {"password": PASSWORD, "encrypted": "scram-sha-256", "replication": True, "login": True}
    return high({f"role-{n}": ("postgres_user", "present", {"name": n, **kwargs, **core_conn(server)}) for n in roles})


def roles_slots_playbook(path, server, roles, slots):
    """One play on localhost: the roles (SCRAM passwords, LOGIN REPLICATION) and the slots."""
    login = ansible_login(server)
    return ansible_playbook(
        path,
        [
            {
                "name": "roles",
                "community.postgresql.postgresql_user": {
                    "name": "{{ item }}", "password": PASSWORD, "role_attr_flags": "LOGIN,REPLICATION", **login,
                },
                "loop": roles,
            },
            {
                "name": "slots",
                "community.postgresql.postgresql_slot": {"name": "{{ item }}", "slot_type": "physical", **login},
                "loop": slots,
            },
        ],
    )  # fmt: skip


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


def main(argv=None):
    args = arguments(__doc__, {"roles": 200, "slots": 50}, {"roles": 20, "slots": 5}, argv)
    with local_server("pgr-bench-") as (server, modules, tmp):
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
            book = roles_slots_playbook(tmp / "play.yml", server, ansible_roles, ansible_slots)
            runs["ansible"] = (run_ansible, ansible_venv(), book)
        runs["floor"] = (floor, server, our_roles)
        med = converge_and_recheck(runs, args.rounds)
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


if __name__ == "__main__":
    main()
