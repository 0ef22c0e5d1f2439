# SPDX-License-Identifier: Apache-2.0
"""Barman's metrics in Prometheus' text format, from ``barman -f json``'s answers (each
``barman check`` item, ``list-backup``'s entries), and their atomic write into the node
exporter's textfile directory.

Standalone: the standard library only, no sibling and no Salt, so that the backup host's
metrics script (``pg_replication/monitoring/files/barman-metrics.py``, installed beside a
copy of this file and run by cron) refreshes them without a Salt loader. The ``barman``
execution module (``barman.write_metrics``) and ``pg_replication_monitoring`` use the same
functions. Runs on the minion's Python (3.9 on Debian 11).
"""

import json
import os
import tempfile

# Barman's metrics file, in the node exporter's textfile directory.
METRICS_FILE = "pg_replication-barman.prom"

HELP = {
    "barman_up": "1 if barman answered for the server (its check ran).",
    "barman_check_ok": "1 if the barman check item passes, 0 if it fails.",
    "barman_checks_failed": "Number of failed barman check items.",
    "barman_backups": "Number of the server's backups in each status.",
    "barman_last_backup_age_seconds": "Seconds since the end of the last DONE backup.",
    "barman_last_backup_size_bytes": "Size of the last DONE backup.",
    "barman_drill_ok": "1 if the last restore drill of the server passed, 0 if it failed.",
    "barman_drill_age_seconds": "Seconds since the last restore drill of the server ended.",
    "barman_drill_rto_seconds": "Seconds the last passed restore drill took to restore and open the copy (RTO).",
    "barman_backup_max_age_seconds": "The pillar's backup_max_age: the last DONE backup must be younger.",
    "barman_receive_wal_running": "1 if receive-wal runs for the server.",
    "barman_metrics_timestamp_seconds": "When these metrics were written.",
}


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name, labels, value):
    pairs = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
    return f"{name}{{{pairs}}} {float(value):.17g}" if pairs else f"{name} {float(value):.17g}"


def _end_time(backup):
    """A backup's end as a timestamp (Barman's JSON ``end_time_timestamp``), or None."""
    try:
        return float(backup["end_time_timestamp"])
    except (KeyError, TypeError, ValueError):
        return None


def server_samples(server, checks, backups, max_age, now):
    """One Barman server's samples ``[(name, labels, value)]`` from ``barman check``'s
    items (None: barman did not answer) and ``list-backups``' entries."""
    labels = {"server": server}
    samples = [("barman_up", labels, 0 if checks is None else 1), ("barman_backup_max_age_seconds", labels, max_age)]
    if checks is not None:
        for item, result in sorted(checks.items()):
            ok = 1 if (result or {}).get("status") == "OK" else 0
            samples.append(("barman_check_ok", dict(labels, check=item), ok))
        samples.append(("barman_checks_failed", labels, sum(1 for _, _, v in samples[2:] if v == 0)))
        running = (checks.get("receive_wal_running") or {}).get("status") == "OK"
        samples.append(("barman_receive_wal_running", labels, 1 if running else 0))
    statuses = {}
    for backup in backups or []:
        statuses[backup.get("status", "UNKNOWN")] = statuses.get(backup.get("status", "UNKNOWN"), 0) + 1
    for status in sorted(set(statuses) | {"DONE"}):
        samples.append(("barman_backups", dict(labels, status=status), statuses.get(status, 0)))
    done = [(_end_time(b), b) for b in backups or [] if b.get("status") == "DONE"]
    done = [(end, b) for end, b in done if end is not None]
    if done:
        end, last = max(done, key=lambda pair: pair[0])
        samples.append(("barman_last_backup_age_seconds", labels, max(0.0, now - end)))
        samples.append(("barman_last_backup_size_bytes", labels, last.get("size_bytes") or 0))
    return samples


def drill_samples(server, recorded, now):
    """The last restore drill's samples (``pg_replication:barman:drill``) from its recorded
    result (none if none is recorded)."""
    if not isinstance(recorded, dict):
        return []
    labels = {"server": server}
    samples = [("barman_drill_ok", labels, 1 if recorded.get("ok") else 0),
               ("barman_drill_age_seconds", labels, int(now - (recorded.get("finished") or 0)))]  # fmt: skip
    if recorded.get("rto_seconds") is not None:
        samples.append(("barman_drill_rto_seconds", labels, recorded["rto_seconds"]))
    return samples


def read_drill_result(drill_dir, server):
    """The result a restore drill recorded for ``server`` in ``drill_dir``
    (``<server>.result.json``), or None (none recorded, or unreadable)."""
    try:
        with open(os.path.join(drill_dir, f"{server}.result.json"), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def barman_metrics(samples, now):
    """The text a textfile collector reads: ``# HELP``/``# TYPE`` and samples per metric."""
    lines, by_name = [], {}
    for name, labels, value in samples + [("barman_metrics_timestamp_seconds", {}, now)]:
        by_name.setdefault(name, []).append(_sample(name, labels, value))
    for name in sorted(by_name):
        lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} gauge", *by_name[name]]
    return "\n".join(lines) + "\n"


def server_answer(data, server):
    """``server``'s part of a ``barman -f json check|list-backup SERVER`` answer (parsed
    JSON), or None when Barman did not answer for it (its ``_ERROR`` list, no entry)."""
    if not isinstance(data, dict) or data.get("_ERROR") or server not in data:
        return None
    return data[server]


def write_atomically(path, text):
    """Write ``text`` to ``path`` through a file beside it renamed over it (the textfile
    collector never reads half a file), mode 0644; its directory made if missing. Returns
    the number of samples written."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pg_replication-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))
