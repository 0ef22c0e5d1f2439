"""The reference scenario, shown for real: three lab hosts, a salt-master, one highstate.

Run as root with ``make demo`` (or ``.venv/bin/python -m lab.demo``). The hosts boot with
systemd from the bare image (:mod:`lab.image`): the formula installs PostgreSQL, Barman and
psycopg2 itself. Prints the replication status, a row written on the primary and read on the
standby, the Barman steps, a restore check, and one summary line, last.
"""

import argparse
import contextlib
import copy
import json
import logging
import sys
import tempfile
import time

from saltfactories.manager import FactoriesManager
from saltfactories.plugins.event_listener import EventListener
from saltfactories.plugins.log_server import LogServer

from lab.hosts import Lab
from lab.results import changed_states, state_errors
from lab.salt import REFERENCE_ROLES, SaltLab, reference_pillar
from lab.scenario import SERVER, barman, restore_check, row_on_standby


@contextlib.contextmanager
def factories(root):
    """A FactoriesManager outside pytest, with its event listener and log server."""
    listener = EventListener()
    listener.start()
    log_server = LogServer(log_host="0.0.0.0", log_level=logging.ERROR)  # noqa: S104 - lab bridge only
    log_server.start()
    try:
        yield FactoriesManager(
            root_dir=root,
            log_server_host=log_server.log_host,
            log_server_port=log_server.log_port,
            log_server_level=log_server.log_level,
            event_listener=listener,
            start_timeout=120,
        )
    finally:
        log_server.stop()
        listener.stop()


def banner(text):
    print(f"\n=== {text}", flush=True)


def replication_status(salt_lab):
    return salt_lab.salt("pg_replication.status", target="master", timeout=60).data


def barman_steps(salt_lab):
    out = {}
    banner("barman switch-wal --archive master-streaming")
    print(barman(salt_lab, "restore_point", SERVER), barman(salt_lab, "switch_wal", SERVER, "archive=True"))
    banner("barman check master-streaming")
    check = barman(salt_lab, "check", SERVER)
    for item, res in sorted(check.items()):
        print(f"  {item}: {res['status']}")
    out["barman_check"] = "ok" if all(r["status"] == "OK" for r in check.values()) else "failed"
    banner("barman backup --wait master-streaming")
    print(json.dumps(barman(salt_lab, "backup", SERVER), default=str)[:400])
    banner("barman list-backups master-streaming")
    backups = barman(salt_lab, "list_backups", SERVER)
    for b in backups:
        print(f"  {b['backup_id']}  {b.get('end_time')}  {b['status']}")
    out["backups"] = sum(1 for b in backups if b["status"] == "DONE")
    banner("barman replication-status master-streaming")
    print(json.dumps(barman(salt_lab, "replication_status", SERVER), default=str)[:1500])
    banner("restore to a point in time on the backup host")
    rows = restore_check(salt_lab)
    print("rows in the restored copy:", rows, "(expected before-backup:3 before-target:2)")
    out["restore"] = "ok" if rows == ["before-backup:3", "before-target:2"] else "failed"
    return out


def switchover(salt_lab):
    """``salt-run pg_replication.switchover to=standby``, the pillar change it prints, and a
    highstate that then has nothing to change."""
    banner("salt-run pg_replication.switchover to=standby")
    ret = salt_lab.run("pg_replication.switchover", "to=standby")
    data = ret.data if isinstance(ret.data, dict) else {}
    for line in data.get("done") or [data.get("comment") or ret.stdout + ret.stderr]:
        print(f"  {line}")
    if ret.returncode or data.get("result") is not True:
        return "failed"
    banner("pillar change, as the runner printed it: " + ", ".join(data["pillar_change"]))
    pillar = copy.deepcopy(salt_lab.pillar)
    pillar["hosts"]["master"]["role"], pillar["hosts"]["standby"]["role"] = "standby", "primary"
    salt_lab.set_pillar(pillar)
    print("\n".join(salt_lab.run("pg_replication.cluster_status").data["table"]))
    ret = salt_lab.highstate()
    again = changed_states(ret.data)
    print("highstate with the new roles, changes:", again or "none")
    roles = [salt_lab.lab[h].psql("SELECT pg_is_in_recovery()") for h in ("master", "standby")]
    return "ok" if not again and ret.returncode == 0 and roles == ["t", "f"] else "failed"


def run(args):
    summary = {}
    with tempfile.TemporaryDirectory(prefix="pgr-demo-") as tmp, factories(tmp) as manager:
        banner("lab image: Debian 12 with systemd, cron, Python and a salt-minion (built once, then cached)")
        started = time.monotonic()
        lab = Lab(f"{tmp}/lab", list(REFERENCE_ROLES), image=("bookworm", "bare"))
        print(f"ready in {time.monotonic() - started:.0f}s: {lab['master'].image}")
        with lab:
            roles = dict(REFERENCE_ROLES)
            if not args.with_backup:
                roles["backup"] = None
            salt_lab = SaltLab(manager, lab, reference_pillar(lab, roles=roles))
            with salt_lab.started():
                banner(
                    f"lab up: salt-master {lab.master_address}; "
                    + ", ".join(f"{h.name} {h.address} ({roles[h.name] or 'no role'})" for h in lab.hosts.values())
                )
                banner("salt '*' state.apply")
                started = time.monotonic()
                ret = salt_lab.highstate()
                errors = state_errors(ret.data)
                for minion, result in sorted(ret.data.items()):
                    if isinstance(result, dict):
                        changed = sum(1 for r in result.values() if r.get("changes"))
                        print(f"{minion}: {len(result)} states, {changed} changed")
                print(f"highstate took {time.monotonic() - started:.1f}s; failures: {errors or 'none'}")
                summary["highstate"] = "ok" if ret.returncode == 0 and not errors else "failed"

                banner("replication status on master (pg_replication.status)")
                status = replication_status(salt_lab)
                print(json.dumps(status, indent=2, default=str))
                rows = status.get("replication") or [] if isinstance(status, dict) else []
                streaming = [r for r in rows if r.get("state") == "streaming"]
                summary["replication"] = "streaming" if streaming else "down"

                banner("row inserted in otus.homework on master, read on standby")
                row = row_on_standby(salt_lab, f"written on master at {time.strftime('%H:%M:%S')}")
                print(row or "(not found on standby within 10 s)")
                summary["standby_row"] = "ok" if row else "missing"

                if args.with_backup:
                    summary.update(barman_steps(salt_lab))

                banner("second highstate (idempotency)")
                again = changed_states(salt_lab.highstate().data)
                print("changes:", again or "none")
                summary["idempotent"] = "ok" if not again else "changed"

                summary["switchover"] = switchover(salt_lab)
    banner("summary")
    line = " ".join(f"{k}={v}" for k, v in summary.items())
    print(line, flush=True)
    good = all(v in ("ok", "streaming") for k, v in summary.items() if k != "backups")
    return 0 if good and summary.get("backups", 1) else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--with-backup", action="store_true", help="give the backup host its barman role")
    parser.add_argument("--log", default="/tmp/pg_replication-demo.log", help="where the daemons' logs go")
    args = parser.parse_args(argv)
    # The daemons' and libraries' own messages go to the log file, not the terminal.
    logging.basicConfig(filename=args.log, level=logging.INFO, force=True)
    logging.captureWarnings(True)
    print(f"daemon and library logs: {args.log}", flush=True)
    Lab.cleanup_stale()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
