"""Steps of the reference scenario shared by the integration tests and the demo."""

import contextlib
import copy
import json
import time

from lab.pyfile import load_util

SERVER = "master-streaming"
_POLL = load_util("pg_replication_poll")


def pg_ctl(salt_lab, version=None):
    """pg_ctl of the lab cluster's PostgreSQL version, or ``version`` (Debian's layout)."""
    return f"/usr/lib/postgresql/{version or salt_lab.pillar['version']}/bin/pg_ctl"


def barman(salt_lab, fun, *args, timeout=600):
    """Call a barman.* execution function on the backup host through the salt-master."""
    ret = salt_lab.salt(f"barman.{fun}", *args, target="backup", timeout=timeout)
    if ret.returncode != 0:
        raise RuntimeError(f"barman.{fun} failed: {ret.stdout}")
    return ret.data


def converge(salt_lab, predict=False):
    """The first highstate of a lab (with ``predict``, a ``test=True`` run first, kept as
    ``salt_lab.prediction``); raise with the failed states unless it succeeded."""
    from lab.results import state_errors  # pylint: disable=import-outside-toplevel

    if predict:
        salt_lab.prediction = salt_lab.highstate("test=True")
    ret = salt_lab.first_run = salt_lab.highstate()
    errors = state_errors(ret.data)
    if errors or ret.returncode:
        raise RuntimeError(f"highstate failed: {json.dumps(errors or ret.data, default=str)[-6000:]}")
    return salt_lab


def wait_for(predicate, timeout=10.0, interval=0.2):
    """Poll ``predicate`` until it returns something true or ``timeout`` seconds pass (the
    formula's own ``pg_replication_poll.until``)."""
    return _POLL.until(predicate, timeout, interval)


def apply_pillar_change(salt_lab, lines):
    """Make the pillar change a runner prints (``pg_replication:KEY:...: VALUE`` lines), as
    the operator would."""
    import yaml  # pylint: disable=import-outside-toplevel

    pillar = copy.deepcopy(salt_lab.pillar)
    for line in lines:
        path, value = line.split(": ", 1)
        *parents, leaf = path.split(":")[1:]
        node = pillar
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = yaml.safe_load(value)
    salt_lab.set_pillar(pillar)


def cluster_status(salt_lab):
    """``salt-run pg_replication.cluster_status``: its members, the table printed."""
    ret = salt_lab.run("pg_replication.cluster_status")
    if ret.returncode:
        raise RuntimeError(f"cluster_status failed: {ret.stdout}{ret.stderr}")
    print("\n".join(ret.data["table"]))
    return ret.data["members"]


def following(salt_lab, primary, servers, timeout=60, upstreams=None):
    """The cluster's members once ``primary`` runs as the primary and every other server
    streams from it, or from its upstream in ``upstreams`` (``{standby: server}``, cascading);
    None if that is not so within ``timeout`` seconds."""
    upstreams = upstreams or {}

    def members():
        m = cluster_status(salt_lab)
        ok = m[primary]["state"] == "primary" and all(
            m[h]["state"] == "standby" and m[h]["upstream"] == salt_lab.lab[upstreams.get(h, primary)].address
            for h in servers
            if h != primary
        )
        return m if ok else None

    return wait_for(members, timeout=timeout, interval=2)


def ensure_otus(master, port=5432):
    if master.psql("SELECT count(*) FROM pg_database WHERE datname = 'otus'", port=port) == "0":
        master.psql("CREATE DATABASE otus", port=port)


def row_on_standby(salt_lab, note, timeout=10):
    """Insert ``note`` into otus.homework on the primary; return it as read on the standby
    within ``timeout`` seconds ('' if it never shows up)."""
    master, standby = salt_lab.lab["master"], salt_lab.lab["standby"]
    ensure_otus(master)
    master.psql("CREATE TABLE IF NOT EXISTS homework (id serial PRIMARY KEY, note text)", dbname="otus")
    master.psql(f"INSERT INTO homework (note) VALUES ('{note}')", dbname="otus")

    def read():
        try:
            return standby.psql(f"SELECT note FROM homework WHERE note = '{note}'", dbname="otus")
        except RuntimeError:  # the database or table has not been replayed yet
            return ""

    return wait_for(read, timeout)


def ensure_server_binaries(salt_lab, host, version=None):
    """The backup host has only PostgreSQL's client (a booted bare host); starting a restored
    copy needs the server's binaries: install them from the lab's repository, no cluster."""
    if host.run(["test", "-x", pg_ctl(salt_lab, version)], check=False).returncode == 0:
        return
    version = version or salt_lab.pillar["version"]
    host.run(["sh", "-c", "mkdir -p /etc/postgresql-common/createcluster.d && echo 'create_main_cluster = false'"
              " > /etc/postgresql-common/createcluster.d/restore-check.conf && apt-get update -qq &&"
              f" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-{version}"])  # fmt: skip


def barman_restore(salt_lab, dest, backup_id, target, server=SERVER):
    """Restore ``backup_id`` into ``dest`` on the backup host up to ``target`` (a time), then
    promote: the barman.restored state."""
    ret = salt_lab.salt(
        "state.single", "barman.restored", f"name={dest}", f"server={server}", f"backup_id={backup_id}",
        f"target_time={target}", "target_action=promote", target="backup", timeout=900,
    )  # fmt: skip
    results = list(ret.data.values()) if isinstance(ret.data, dict) else []
    if ret.returncode != 0 or not results or results[0].get("result") is not True:
        log = salt_lab.lab["backup"].run(["tail", "-n", "40", "/var/log/barman/barman.log"], check=False).stdout
        raise RuntimeError(f"restore failed: {ret.stdout}\nbarman.log:\n{log}")


def restore_check(
    salt_lab, dest="/var/lib/barman/restore-check", port=5599, primary="master", backup_id=None, query=None,
    restore=None,
):  # fmt: skip
    """Rows before a backup, more before a target time, more after, on ``primary``; restore
    the backup to that time on the backup host, start it on a free port, and return the rows
    it holds as ["phase:count", ...] (expected: before-backup:3, before-target:2).

    ``backup_id``: restore that (older) backup instead of taking a new one, replaying every
    WAL segment since, across timeline switches. ``query``: SQL also run on the restored copy;
    then (rows, its output) is returned. ``restore(salt_lab, dest, backup_id, target)``: how
    the backup is restored (default: the barman.restored state)."""
    backup_id, target = rows_around_a_backup(salt_lab, primary, backup_id)
    try:
        return restored_rows(salt_lab, backup_id, target, dest=dest, port=port, query=query, restore=restore)
    finally:
        salt_lab.lab[primary].psql("DROP TABLE IF EXISTS restore_check", dbname="otus")


def rows_around_a_backup(salt_lab, primary="master", backup_id=None):
    """restore_check's rows on ``primary`` (3 before the backup, 2 before the target time, 4
    after it, in otus.restore_check), the backup (a new one unless ``backup_id``) and the
    target, their WAL archived: ``(backup_id, target)``."""
    master = salt_lab.lab[primary]
    ensure_otus(master)
    master.psql("DROP TABLE IF EXISTS restore_check", dbname="otus")
    master.psql("CREATE TABLE restore_check (id serial PRIMARY KEY, phase text)", dbname="otus")
    master.psql("INSERT INTO restore_check (phase) SELECT 'before-backup' FROM generate_series(1, 3)", dbname="otus")
    backup_id = backup_id or barman(salt_lab, "backup", SERVER)["backup_id"]
    master.psql("INSERT INTO restore_check (phase) SELECT 'before-target' FROM generate_series(1, 2)", dbname="otus")
    time.sleep(1.1)
    target = master.psql("SELECT now()")
    time.sleep(1.1)
    master.psql("INSERT INTO restore_check (phase) SELECT 'after-target' FROM generate_series(1, 4)", dbname="otus")
    barman(salt_lab, "restore_point", SERVER)
    barman(salt_lab, "switch_wal", SERVER, "archive=True")
    return backup_id, target


def restored_rows(
    salt_lab, backup_id, target, dest="/var/lib/barman/restore-check", port=5599, query=None, restore=None,
    server=SERVER, version=None,
):  # fmt: skip
    """restore_check's restore: ``backup_id`` of Barman's ``server`` restored to ``target``
    on the backup host, started with the pg_ctl of ``version`` (default: the pillar's); its
    rows as ["phase:count", ...], with ``query``'s output too when given."""
    backup = salt_lab.lab["backup"]
    ensure_server_binaries(salt_lab, backup, version)
    if restore:
        restore(salt_lab, dest, backup_id, target)
    else:
        barman_restore(salt_lab, dest, backup_id, target, server=server)
    # Debian keeps configuration outside the data directory: give the copy a minimal one.
    backup.run(["sh", "-c", f"echo \"listen_addresses = ''\" > {dest}/postgresql.conf && "
                f"echo 'local all all trust' > {dest}/pg_hba.conf && : > {dest}/pg_ident.conf && "
                f"chown barman:barman {dest}/postgresql.conf {dest}/pg_hba.conf {dest}/pg_ident.conf"])  # fmt: skip
    start = backup.run(
        ["runuser", "-u", "barman", "--", pg_ctl(salt_lab, version), "-D", dest, "-l", f"{dest}/restore.log", "-w",
         "-t", "120", "-o", f"-p {port} -k {dest}", "start"],
        check=False,
    )  # fmt: skip
    try:
        if start.returncode:
            log = backup.run(["cat", f"{dest}/restore.log"], check=False).stdout
            raise RuntimeError(f"restored server did not start: {start.stderr}\n{log}")

        def psql(sql, dbname="otus"):
            res = backup.run(["runuser", "-u", "barman", "--", "psql", "-XAtq", "-h", dest, "-p", str(port), "-U",
                              "postgres", "-d", dbname, "-c", sql], check=False)  # fmt: skip
            if res.returncode:
                log = backup.run(["tail", "-n", "30", f"{dest}/restore.log"], check=False).stdout
                raise RuntimeError(f"restored copy: {res.stderr.strip()}\nrestore.log:\n{log}")
            return res.stdout

        # pg_ctl returns once the copy takes read-only connections: wait for the end of its
        # recovery (the target reached, then promoted), or for it to stop on an error.
        wait_for(lambda: psql("SELECT NOT pg_is_in_recovery()", dbname="postgres").strip() == "t", timeout=300)
        rows = psql("SELECT phase || ':' || count(*) FROM restore_check GROUP BY phase ORDER BY phase").split()
        return (rows, psql(query)) if query else rows
    finally:
        backup.run(
            ["runuser", "-u", "barman", "--", pg_ctl(salt_lab, version), "-D", dest, "-m", "fast", "-w", "stop"],
            check=False,
        )
        backup.run(["rm", "-rf", dest], check=False)


class _Background:
    """A daemon thread that runs ``self._loop`` from :meth:`start` until :meth:`stop`
    (``self._stop`` is set)."""

    def __init__(self):
        import threading  # pylint: disable=import-outside-toplevel

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        raise NotImplementedError

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=30)
        return self


class Writer(_Background):
    """A client that commits one row at a time, as fast as it can, to whichever of
    ``addresses`` is the writable primary, and remembers every id whose COMMIT returned.
    Used to count what a switchover or failover loses (it must be nothing acknowledged).
    With ``multihost``, libpq finds the primary itself: one connection string naming every
    address, ``target_session_attrs=read-write`` (as an application would)."""

    def __init__(self, addresses, password, user="writer", dbname="otus", table="writes", port=5432, start_id=None,
                 multihost=False):  # fmt: skip
        super().__init__()
        self.addresses, self.user, self.password, self.dbname, self.table = addresses, user, password, dbname, table
        self.port, self.multihost = port, multihost
        self.committed, self.errors = [], 0
        # ids of earlier writers stay below (writers started together: give each its own start_id)
        self.start_id = start_id or int(time.time() * 1000) * 1000
        self.first_error = self.resumed = None
        # Connections made (the first one included), and the longest wait between two commits.
        self.connections, self.longest_pause, self._last_commit = 0, 0.0, None

    @staticmethod
    def prepare(primary, password, user="writer", dbname="otus", table="writes", port=5432):
        """The writer's role (scram over the lab network) and table, made on the primary."""
        ensure_otus(primary, port)
        primary.psql(f"DROP ROLE IF EXISTS {user}; CREATE ROLE {user} LOGIN PASSWORD '{password}'", port=port)
        primary.psql(f"CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY, at timestamptz DEFAULT now())"
                     f"; GRANT SELECT, INSERT ON {table} TO {user}", dbname=dbname, port=port)  # fmt: skip

    def _connect(self):
        import psycopg2  # pylint: disable=import-outside-toplevel

        if self.multihost:  # no writable primary: an error the loop counts
            conn = psycopg2.connect(host=",".join(self.addresses), port=self.port, user=self.user,
                                    password=self.password, dbname=self.dbname, connect_timeout=2,
                                    target_session_attrs="read-write", tcp_user_timeout=2000, keepalives_idle=1,
                                    keepalives_interval=1, keepalives_count=2)  # fmt: skip
            self.connections += 1
            return conn
        for address in self.addresses:
            try:
                # A primary killed with its link down sends no reset: give up on it after 2s.
                conn = psycopg2.connect(host=address, port=self.port, user=self.user, password=self.password,
                                        dbname=self.dbname, connect_timeout=2, tcp_user_timeout=2000, keepalives_idle=1,
                                        keepalives_interval=1, keepalives_count=2)  # fmt: skip
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_is_in_recovery()")
                    if not cur.fetchone()[0]:
                        self.connections += 1
                        return conn
                conn.close()
            except psycopg2.Error:
                continue
        return None

    def _loop(self):
        import psycopg2  # pylint: disable=import-outside-toplevel

        conn, next_id = None, self.start_id
        while not self._stop.is_set():
            try:
                conn = conn or self._connect()
                if conn is None:
                    time.sleep(0.1)
                    continue
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table} (id) VALUES (%s)", (next_id,))
                conn.commit()
                self.committed.append(next_id)
                now = time.monotonic()
                if self._last_commit is not None:
                    self.longest_pause = max(self.longest_pause, now - self._last_commit)
                self._last_commit = now
                if self.first_error and not self.resumed:
                    self.resumed = time.monotonic()
            except psycopg2.Error:
                self.errors += 1
                self.first_error = self.first_error or time.monotonic()
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                time.sleep(0.05)
            next_id += 1  # an id whose COMMIT did not return is never reused
            time.sleep(0.01)

    def unavailable(self):
        """The longest wait between two commits so far, the one still running included (a
        client stuck on a lost server commits nothing more: ``longest_pause`` alone would
        never show it)."""
        since_last = time.monotonic() - self._last_commit if self._last_commit is not None else 0.0
        return max(self.longest_pause, since_last)

    def missing_on(self, host, port=5432):
        """Ids whose COMMIT returned to the writer but that ``host``'s server (on ``port``,
        over its local socket: not the port this client went through, e.g. PgBouncer's) does
        not hold."""
        rows = host.psql(f"SELECT id FROM {self.table} WHERE id >= {self.start_id}", dbname=self.dbname, port=port)
        present = set(map(int, rows.split()))
        return sorted(set(self.committed) - present)


class WritableProbe(_Background):
    """Asks every server, every ``interval`` seconds, over its local socket (so that a host
    cut off from the network is asked too), whether it accepts writes; remembers each round
    in which more than one did. "Never two primaries" is ``probe.two_writable == []``."""

    def __init__(self, hosts, interval=0.2):
        super().__init__()
        self.hosts, self.interval = hosts, interval
        self.rounds, self.two_writable = 0, []

    def _writable(self, host):
        try:
            return host.psql("SELECT NOT pg_is_in_recovery() AND NOT current_setting('transaction_read_only')::bool")
        except Exception:  # noqa: BLE001 - down, starting or cut off from its socket: not writable
            return "f"

    def _loop(self):
        while not self._stop.is_set():
            writable = [host.name for host in self.hosts if self._writable(host) == "t"]
            self.rounds += 1
            if len(writable) > 1:
                self.two_writable.append((time.monotonic(), writable))
            self._stop.wait(self.interval)


class VipProbe(_Background):
    """Asks every host, every ``interval`` seconds, whether it holds ``vip`` (``ip addr`` in
    its own namespace, so a host cut off from the network is asked too); remembers each
    round in which more than one did, and who held it over time. "Never on two hosts" is
    ``probe.two_holders == []``."""

    def __init__(self, hosts, vip, interval=0.2):
        super().__init__()
        self.hosts, self.vip, self.interval = hosts, vip, interval
        self.rounds, self.two_holders, self.holders = 0, [], []

    def _holds(self, host):
        try:
            return bool(host.run(["ip", "-o", "addr", "show", "to", self.vip], check=False).stdout.strip())
        except Exception:  # noqa: BLE001 - a host being restarted: asked again next round
            return False

    def _loop(self):
        while not self._stop.is_set():
            holding = [host.name for host in self.hosts if self._holds(host)]
            self.rounds += 1
            if len(holding) > 1:
                self.two_holders.append((time.monotonic(), holding))
            if not self.holders or self.holders[-1][1] != holding:
                self.holders.append((time.monotonic(), holding))
            self._stop.wait(self.interval)


def vip_holders(salt_lab, vip):
    """The hosts that hold ``vip`` now."""
    return sorted(
        name for name, host in salt_lab.lab.hosts.items()
        if host.run(["ip", "-o", "addr", "show", "to", vip], check=False).stdout.strip()
    )  # fmt: skip


# Files the formula writes (owner, mode, checksum), Barman's backups, and where PostgreSQL
# runs: its roles with their verifiers, slots, settings and start time.
UNCHANGED_SCRIPT = r"""
for path in /etc/postgresql /etc/postgresql-common /etc/barman.conf /etc/barman.d /etc/cron.d/barman \
            /etc/cron.d/pg_replication-barman \
            /var/lib/postgresql/.pgpass /var/lib/barman/.pgpass; do
  [ -e "$path" ] && find "$path" -type f -exec stat -c '%n %U %a' {} \; -exec sha256sum {} \;
done
ls -d /var/lib/barman/*/base/* 2>/dev/null
[ -e /tmp/pwned ] && echo PWNED
[ -S /var/run/postgresql/.s.PGSQL.5432 ] && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 <<'SQL'
SELECT string_agg(rolname || ':' || coalesce(rolpassword, ''), ',' ORDER BY rolname) FROM pg_authid;
SELECT string_agg(slot_name || ':' || slot_type, ',' ORDER BY slot_name) FROM pg_replication_slots;
SELECT md5(string_agg(name || '=' || setting, ',' ORDER BY name)) FROM pg_settings;
SELECT pg_postmaster_start_time();
SQL
true
"""


def unchanged_snapshot(salt_lab, hosts):
    """Per host, what an invalid pillar must not change (:data:`UNCHANGED_SCRIPT`)."""
    return {name: salt_lab.lab[name].run(["sh", "-c", UNCHANGED_SCRIPT]).stdout.splitlines() for name in hosts}
