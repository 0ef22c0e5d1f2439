#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""pg_replication's watchdog (pg_replication-watchdog.service, installed by the formula when
pg_replication:ha:mode is automatic): a primary that reaches neither the salt-master nor a
majority of the other PostgreSQL servers for fence_timeout writes its fence marker and stops
its cluster's unit. The decision is pg_replication_fence.Watchdog's (beside this file); this
file only observes and acts. Usage: watchdog.py CONFIG.json
"""

import concurrent.futures
import datetime
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_replication_fence as fence  # noqa: E402  (installed beside this file)

# Files in the data directory that make a running server a standby (or in recovery).
RECOVERY_FILES = ("standby.signal", "recovery.signal", "recovery.conf")


def log(message):
    print(message, flush=True)


def runs_as_primary(data_dir):
    """The local PostgreSQL runs (its postmaster is alive) and is not in recovery."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as pidfile:
            pid = int(pidfile.readline().strip())
        with open(f"/proc/{pid}/comm") as comm:
            if not comm.read().strip().startswith("postgres"):
                return False
    except (OSError, ValueError):
        return False
    return not any(os.path.exists(os.path.join(data_dir, name)) for name in RECOVERY_FILES)


def answers(address, port, timeout, refused_counts):
    """Whether the host at ``address`` answered a TCP connect (refused: it answered too, when
    ``refused_counts``: the host is there, only its server is down)."""
    try:
        socket.create_connection((address, port), timeout=timeout).close()
        return True
    except ConnectionRefusedError:
        return refused_counts
    except OSError:
        return False


def observe(pool, config, timeout):
    """(a master answered, how many peers answered), probed in parallel."""
    masters = [pool.submit(answers, m["address"], m["port"], timeout, False) for m in config["masters"]]
    peers = [pool.submit(answers, p["address"], p["port"], timeout, True) for p in config["peers"]]
    return any(f.result() for f in masters), sum(1 for f in peers if f.result())


def write_marker(path, reason, minion_id):
    """The fence marker, durably, before the stop: a highstate never starts this server again."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    temporary = path + ".new"
    with open(temporary, "w") as out:
        out.write(fence.marker_text(when, reason, minion_id))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def stop(service, margin):
    """Stop the cluster's unit (fast shutdown: sessions ended, no new connection, a shutdown
    checkpoint); if that fails or takes longer than ``margin``, kill every process of the unit."""
    try:
        done = subprocess.run(["systemctl", "stop", service], timeout=margin, check=False)
        if done.returncode == 0:
            return "stopped"
    except subprocess.TimeoutExpired:
        pass
    subprocess.run(["systemctl", "kill", "--signal=SIGKILL", service], timeout=margin, check=False)
    return "killed"


def drop_vip(script):
    """The VIP's drop script (pg_replication:vip), which a clean stop does not run: a fenced
    primary must not hold the floating address once its link is back."""
    if script and os.path.exists(script):
        subprocess.run([script], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, timeout=30, check=False)
        return "; the VIP dropped"
    return ""


def main(path):
    with open(path) as source:
        config = json.load(source)
    interval, margin = config["check_interval"], config["fence_margin"]
    timeout = max(0.2, min(1.0, interval / 2.0))
    dog = fence.Watchdog(config["fence_timeout"], time.monotonic())
    last = None
    log(f"watching {config['service']}: check every {interval} s, fence after {config['fence_timeout']} s")
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        while True:
            started = time.monotonic()
            primary = runs_as_primary(config["data_dir"])
            fenced = os.path.exists(config["marker"])
            master, reached = (False, 0)
            if primary and not fenced:
                master, reached = observe(pool, config, timeout)
            decision, reason = dog.tick(time.monotonic(), primary, master, reached, len(config["peers"]), fenced)
            if decision != last or decision == fence.ISOLATED:
                log(f"{decision}: {reason}")
                last = decision
            if decision == fence.FENCE:
                try:
                    write_marker(config["marker"], reason, config["minion_id"])
                except OSError as exc:  # stop all the same: a server that takes writes is worse
                    log(f"could not write the fence marker {config['marker']}: {exc}")
                how = stop(config["service"], margin)
                log(f"fenced ({reason}): {how} {config['service']}{drop_vip(config.get('vip_drop_script'))}")
            elif decision == fence.STOP_AGAIN:
                how = stop(config["service"], margin)
                log(f"{how} {config['service']} again{drop_vip(config.get('vip_drop_script'))}")
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except KeyboardInterrupt:
        sys.exit(0)
