# SPDX-License-Identifier: Apache-2.0
"""Managed by Salt (pg_replication): Barman's pre_backup_script for restore drills, run as the
barman user: ``<python> barman-backup-marker RECORD CONNINFO PASSFILE``. Before a backup
starts, it writes a row for it in pgr_drill.backup_marker on the primary (CONNINFO,
password from PASSFILE) and records in RECORD how many rows the server's markers had then,
its own included. A restore drill of that backup counts them in the restored copy: they
were committed before the backup began, so every restore of it must hold them all.
A failure is reported to Barman (exit 1: a warning); the backup goes on without a marker.
"""

import json
import os
import sys
import tempfile

import psycopg2

INSERT = "INSERT INTO pgr_drill.backup_marker (server, backup_id) VALUES (%s, %s)"
COUNT = "SELECT count(*) FROM pgr_drill.backup_marker WHERE server = %s"
KEEP = 1000  # the newest backups' counts the record keeps


def write_marker(conninfo, passfile, server, backup_id):
    conn = psycopg2.connect(
        conninfo, passfile=passfile, connect_timeout=10, application_name="pg_replication_backup_marker"
    )
    try:
        with conn, conn.cursor() as cur:
            cur.execute(INSERT, (server, backup_id))
            cur.execute(COUNT, (server,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def record(path, backup_id, count):
    try:
        with open(path, encoding="utf-8") as fh:
            counts = json.load(fh)
    except (OSError, ValueError):
        counts = {}
    counts[backup_id] = count
    counts = dict(sorted(counts.items())[-KEEP:])
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".markers-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(counts, fh, indent=1, sort_keys=True)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def main(argv):
    if len(argv) != 4:
        print("usage: barman-backup-marker RECORD CONNINFO PASSFILE", file=sys.stderr)
        return 2
    server, backup_id = os.environ.get("BARMAN_SERVER"), os.environ.get("BARMAN_BACKUP_ID")
    if os.environ.get("BARMAN_PHASE") != "pre" or not server or not backup_id:
        return 0
    try:
        count = write_marker(argv[2], argv[3], server, backup_id)
        record(argv[1], backup_id, count)
    except (psycopg2.Error, OSError) as exc:
        print(f"backup marker of {server} {backup_id} not written: {str(exc).strip()}", file=sys.stderr)
        return 1
    print(f"backup marker of {server} {backup_id}: {count} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
