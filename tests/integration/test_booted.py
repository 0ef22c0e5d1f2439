"""The reference scenario on hosts that boot like machines (systemd as PID 1, cron), from the
bare image: the formula installs PostgreSQL, Barman and psycopg2 itself. The master gets the
formula as most sites do, from a tag of its git repository through gitfs only (lab/gitfs.py),
and the minions and the master's runners get that tag's code. Then what only an
init system shows: units enabled, a stopped server started again by the highstate, cron
restarting receive-wal, a power-off and boot bringing the cluster back with no highstate,
cron taking base backups on the pillar's schedule, `barman cron` every minute from the
formula's own cron file (Barman's package keeps its own, even on a host the old formula wrote
it over), and the clean states (services stopped, the formula's files removed, no data).
Monitoring is on: Debian's Prometheus on the backup host scrapes every server's
postgres_exporter and the backup host's node_exporter (Barman's metrics from the formula's
script, run by cron), and evaluates the formula's alert rules: a killed standby shows in its
metrics and fires its alert, and the health beacon on the two servers tells the master's bus.
The cluster runs TLS only, and the exporters serve https with their host's certificate
(monitoring:tls): Prometheus scrapes them verifying the cluster's CA."""

import datetime
import hashlib
import json
import os
import pathlib
import time
import urllib.parse

import pytest

from lab import gitfs
from lab.events import MasterEvents
from lab.results import changed_states, state_errors, state_ids
from lab.scenario import SERVER, barman, converge, following, row_on_standby, wait_for

pytestmark = pytest.mark.integration
LAB_IMAGE = ("bookworm", "bare")
LAB_GITFS = True
UNIT = "postgresql@15-main"
CRON_FILE, PACKAGE_CRON_FILE = "/etc/cron.d/pg_replication-barman", "/etc/cron.d/barman"
# The lines cron runs `barman cron` with: the formula's, and Barman's Debian package's.
BARMAN_CRON = "test -x /usr/bin/barman && /usr/bin/barman -c /etc/barman.conf -q cron"
PACKAGE_BARMAN_CRON = "[ -x /usr/bin/barman ] && /usr/bin/barman -q cron"
# What the formula wrote into the package's cron file before it had its own.
OLD_FORMULA_CRON = f"# Managed by Salt (pg_replication)\nMAILTO=root\n* * * * * barman {BARMAN_CRON}\n"
# TLS everywhere: each server's and the backup host's certificate (its node_exporter's https).
LAB_TLS = ("master", "standby", "backup")
# Prometheus on the backup host, scraping and evaluating every 5 s; alerts after 10 s; the
# exporters over https.
LAB_MONITORING = {
    "enabled": True,
    "tls": True,
    "prometheus": {"host": "backup", "scrape_interval": "5s", "evaluation_interval": "5s"},
    "alerts": {"for": "10s"},
}


@pytest.fixture(scope="module")
def converged(backup_lab):
    # test=True on the fresh hosts first: it must run cleanly and predict the real run.
    return converge(backup_lab, predict=True)


def streaming_clients(salt_lab):
    return salt_lab.lab["master"].psql(
        "SELECT string_agg(r.application_name || ':' || s.slot_name, ',' ORDER BY r.application_name)"
        " FROM pg_stat_replication r"
        " JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.state = 'streaming'"
    )


def failed_checks(salt_lab):
    try:
        return barman(salt_lab, "failed_checks", SERVER, timeout=120)
    except RuntimeError as exc:
        return [str(exc)]


def test_test_mode_on_bare_hosts_predicts_the_first_run(converged):
    assert state_errors(converged.prediction.data) == {}
    predicted, changed = state_ids(converged.prediction.data, test=True), state_ids(converged.first_run.data)
    # Per state id (a state with several names counts once: test mode on a bare host cannot
    # know that the barman package creates Barman's home and log directory, 0750 already).
    assert sorted(predicted) == sorted(changed)
    assert {m: sorted(set(predicted[m]) ^ set(changed[m])) for m in changed} == {m: [] for m in changed}


def test_the_formula_installed_the_packages_and_psycopg2(converged):
    lab = converged.lab
    for name, package in (("master", "postgresql-15"), ("standby", "postgresql-15"), ("backup", "barman")):
        status = lab[name].run(["dpkg-query", "-W", "-f=${Status}", package]).stdout
        assert status == "install ok installed"
        assert lab[name].run(["/opt/salt/bin/python3", "-c", "import psycopg2"], check=False).returncode == 0
    # The bare image had none of them.
    assert not (lab["master"].image / "usr/lib/postgresql").exists()
    assert not (lab["backup"].image / "usr/bin/barman").exists()


def test_exactly_one_cluster_the_formulas(converged):
    for name in ("master", "standby"):
        clusters = converged.lab[name].run(["pg_lsclusters", "--no-header"]).stdout.split("\n")
        assert [line.split()[:4] for line in clusters if line] == [
            ["15", "main", "5432", "online" if name == "master" else "online,recovery"]
        ]


def test_reference_scenario(converged):
    assert streaming_clients(converged) == "barman_receive_wal:barman_slot,standby:standby_slot"
    assert row_on_standby(converged, "booted-row", timeout=10) == "booted-row"
    assert failed_checks(converged) == []
    assert [b["status"] for b in barman(converged, "list_backups", SERVER)] == ["DONE"]


MINION_CACHE = "/var/cache/salt/minion"
# The formula's directories a minion's saltutil.sync_all copies, and where to.
SYNCED = {"_modules": "modules", "_states": "states", "_utils": "utils"}


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def tag_files(repo, directory):
    """``{name: sha256}`` of the Python files of ``directory`` at the pinned tag."""
    names = [name for name in gitfs.tree(repo, gitfs.TAG, directory) if name.endswith(".py")]
    return {name: sha256(gitfs.show(repo, gitfs.TAG, f"{directory}/{name}")) for name in names}


def host_files(host, directory, names):
    """``{name: sha256}`` of the files ``names`` of ``directory`` on a lab host (missing ones left out)."""
    out = host.run(["sha256sum", *(f"{directory}/{name}" for name in names)], check=False).stdout
    return {line.split()[1].rsplit("/", 1)[1]: line.split()[0] for line in out.splitlines()}


def test_the_formula_came_from_the_pinned_tag_through_gitfs_only(converged):
    """Every minion's synced modules, states and utils, and the map.jinja its states
    rendered, are the tag's, not the commit after it (nor the checkout's, which file_roots
    would serve); ``salt-run saltutil.sync_all`` gives the master the tag's runner and utils,
    and that runner finds the pillar's primary with its standby streaming from it."""
    repo, lab = converged.gitfs["formula"], converged.lab
    assert list(converged.master.config["fileserver_backend"]) == ["gitfs"]
    # The commit after the tag changed these files: a master serving it would show.
    for path, line in gitfs.AFTER_TAG.items():
        assert line in gitfs.show(repo, "main", path).decode()
        assert line not in gitfs.show(repo, gitfs.TAG, path).decode()
    for name in lab.hosts:
        for directory, kind in SYNCED.items():
            expected = tag_files(repo, directory)
            assert host_files(lab[name], f"{MINION_CACHE}/extmods/{kind}", expected) == expected, (name, directory)
        rendered = host_files(lab[name], f"{MINION_CACHE}/files/base/pg_replication", ["map.jinja"])
        assert rendered == {"map.jinja": sha256(gitfs.show(repo, gitfs.TAG, "pg_replication/map.jinja"))}

    synced = converged.sync_master()
    assert "runners.pg_replication" in synced["runners"], synced
    extmods = converged.master.config["extension_modules"]
    for directory, kind in (("_runners", "runners"), ("_utils", "utils")):
        expected = tag_files(repo, directory)
        with_master = {name: sha256(pathlib.Path(extmods, kind, name).read_bytes()) for name in expected}
        assert with_master == expected, directory
    members = following(converged, "master", ("master", "standby"))
    assert members, "the tag's runner does not see master as the primary with standby streaming from it"


def test_units_are_enabled_and_running(converged):
    for name in ("master", "standby"):
        host = converged.lab[name]
        assert host.run(["systemctl", "is-enabled", UNIT]).stdout.strip() == "enabled"
        assert host.run(["systemctl", "is-active", UNIT]).stdout.strip() == "active"
    assert converged.lab["backup"].run(["systemctl", "is-active", "cron"]).stdout.strip() == "active"


def test_second_highstate_changes_nothing(converged):
    ret = converged.highstate()
    assert ret.returncode == 0
    assert changed_states(ret.data) == {}


# An https URL verified against the CA file Prometheus uses (monitoring:tls).
FETCH = (
    "import ssl, sys, urllib.request; context = ssl.create_default_context(cafile=sys.argv[2]);"
    " sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10, context=context).read().decode())"
)
MONITORING_TLS_DIR = "/etc/prometheus/pg_replication-tls"


def http_get(salt_lab, url, check=True):
    """``url``'s body, fetched from the backup host (Prometheus' host)."""
    return salt_lab.lab["backup"].run(["python3", "-c", FETCH, url, f"{MONITORING_TLS_DIR}/ca.crt"], check=check)


def labelled(labels):
    """What a series is about: its Barman server (job node), else its minion (postgres_exporter
    labels its own series server="<socket>:<port>", which is not)."""
    return (labels.get("server") if labels.get("job") == "node" else None) or labels.get("minion")


def promql(salt_lab, query):
    """``{minion or Barman server: value}`` of an instant PromQL query through Prometheus' HTTP API."""
    answer = json.loads(
        http_get(salt_lab, "http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": query})).stdout
    )
    assert answer["status"] == "success", answer
    return {labelled(r["metric"]): float(r["value"][1]) for r in answer["data"]["result"]}


def firing(salt_lab):
    """``{(alertname, minion or Barman server)}`` of the alerts Prometheus fires now."""
    alerts = json.loads(http_get(salt_lab, "http://127.0.0.1:9090/api/v1/alerts").stdout)["data"]["alerts"]
    return {(a["labels"]["alertname"], labelled(a["labels"])) for a in alerts if a["state"] == "firing"}


# The series of the killed standby test, for the README's plot (docs/plot_monitoring.py).
PLOTTED = {
    "pg_up": "pg_up",
    "streaming": 'pg_replication_downstream_streaming{application_name="standby"}',
    "lag_bytes": 'pg_replication_downstream_lag_bytes{application_name="standby"}',
    "alerts": 'ALERTS{alertstate="firing", alertname=~"PostgreSQLStandby.*"}',
}


def dump_series(salt_lab, since, path):
    """Write ``PLOTTED``'s series from ``since`` (epoch seconds) to now, every 2 s, as JSON."""
    series = {}
    for name, query in PLOTTED.items():
        params = {"query": query, "start": f"{since:.0f}", "end": f"{time.time():.0f}", "step": "2"}
        answer = json.loads(
            http_get(salt_lab, "http://127.0.0.1:9090/api/v1/query_range?" + urllib.parse.urlencode(params)).stdout
        )
        series[name] = answer["data"]["result"]
    pathlib.Path(path).write_text(json.dumps({"since": since, "series": series}, indent=1))


# The health beacon (_beacons/pg_replication_health.py) as monitoring:beacon configures it
# (monitoring/beacon.sls), on the two servers only and for the killed standby test only (on
# the backup host it would run barman check every look): every 5 s.
BEACON = "pg_replication_health"
BEACON_CONFIG = [{"interval": 5}, {"port": 5432}, {"host": "/var/run/postgresql"}]


def health_beacon(salt_lab):
    """Add the health beacon to the servers' minions (once); the seconds since it was added."""
    if getattr(salt_lab, "beacon_added", None) is None:
        started = time.monotonic()
        added = salt_lab.call("beacons.add", BEACON, BEACON_CONFIG, target="master,standby", tgt_type="list")
        assert {name: ret["ret"]["result"] for name, ret in added.items()} == {"master": True, "standby": True}, added
        salt_lab.beacon_added = time.monotonic()
        print(f"health beacon: added in {salt_lab.beacon_added - started:.1f} s")
    return time.monotonic() - salt_lab.beacon_added


def health_changes(events, minion):
    """``{(item, new value)}`` of ``minion``'s health beacon events seen on the master's bus."""
    datas = [
        data.get("data", data) for _, tag, data in events.seen if tag.startswith(f"salt/beacon/{minion}/{BEACON}/")
    ]
    return {(data["item"], data["new"]) for data in datas}


def test_prometheus_scrapes_every_exporter_and_barmans_metrics(converged):
    """pg_up is 1 on each server, the standby's lag series exist (on the primary, per standby,
    and on the standby itself), Barman's last backup is younger than the pillar's maximum;
    no secret in the exporters' command lines, options files (0640 root:prometheus) or metrics;
    every exporter serves https only and Prometheus scrapes them verifying the CA."""
    lab, started = converged.lab, time.monotonic()
    health_beacon(converged)  # its first look (the baseline) while this test waits
    assert wait_for(lambda: promql(converged, "pg_up == 1") == {"master": 1, "standby": 1}, timeout=60, interval=2)
    assert wait_for(lambda: "standby" in promql(converged, "pg_replication_standby_replay_lag_bytes"), timeout=30)
    lag = promql(converged, 'pg_replication_downstream_lag_bytes{application_name="standby"}')
    assert set(lag) == {"master"}
    assert promql(converged, 'pg_replication_downstream_streaming{application_name="standby"}') == {"master": 1}
    assert promql(converged, "pg_replication_server_is_primary") == {"master": 1, "standby": 0}
    # Cron writes Barman's metrics every minute.
    young = "barman_last_backup_age_seconds < barman_backup_max_age_seconds"
    assert wait_for(lambda: SERVER in promql(converged, young), timeout=150, interval=5)
    assert promql(converged, "barman_backup_max_age_seconds") == {SERVER: 86400}
    assert promql(converged, "barman_receive_wal_running") == {SERVER: 1}
    print(f"monitoring: every series in Prometheus after {time.monotonic() - started:.0f} s")

    secrets = [converged.pillar["replication"]["password"], converged.pillar["barman"]["password"],
               converged.pillar["barman"]["streaming_password"]]  # fmt: skip
    for name, exporter, port in (("master", "prometheus-postgres-exporter", 9187),
                                 ("standby", "prometheus-postgres-exporter", 9187),
                                 ("backup", "prometheus-node-exporter", 9100)):  # fmt: skip
        host = lab[name]
        # (-ww: whole command lines, however wide)
        processes = host.run(["ps", "-ww", "-eo", "args="]).stdout.splitlines()
        argv = "\n".join(line for line in processes if line.startswith(f"/usr/bin/{exporter} "))
        assert "--web.listen-address=" in argv, processes
        assert host.run(["stat", "-c", "%U:%G %a", f"/etc/default/{exporter}"]).stdout.strip() == "root:prometheus 640"
        texts = (argv, host.run(["cat", f"/etc/default/{exporter}"]).stdout,
                 http_get(converged, f"https://{host.address}:{port}/metrics").stdout)  # fmt: skip
        assert [secret for secret in secrets for text in texts if secret in text] == [], name
        # https only (monitoring:tls): its key private to root and the exporters' group.
        assert f"--web.config.file={MONITORING_TLS_DIR}/" in argv
        plain = http_get(converged, f"http://{host.address}:{port}/metrics", check=False)
        assert plain.returncode != 0, name
        assert "# TYPE" not in plain.stdout, name
        modes = host.run(["stat", "-c", "%n %U:%G %a", f"{MONITORING_TLS_DIR}/server.key", MONITORING_TLS_DIR])
        assert modes.stdout.split("\n")[:2] == [f"{MONITORING_TLS_DIR}/server.key root:prometheus 640",
                                               f"{MONITORING_TLS_DIR} root:prometheus 750"]  # fmt: skip
    # Every target scraped over https, verified against the cluster's CA (a failed verification
    # is a down target with its error).
    targets = json.loads(http_get(converged, "http://127.0.0.1:9090/api/v1/targets").stdout)["data"]["activeTargets"]
    assert sorted(
        (t["labels"]["minion"], t["scrapeUrl"].split(":")[0], t["health"], t["lastError"]) for t in targets
    ) == [(name, "https", "up", "") for name in ("backup", "master", "standby")]


def test_highstate_starts_a_killed_standby_server(converged):
    standby, beacon_started = converged.lab["standby"], time.monotonic()
    # The beacon's first look is its baseline: the kill comes after it.
    time.sleep(max(0.0, BEACON_CONFIG[0]["interval"] + 1 - health_beacon(converged)))
    with MasterEvents(converged, "salt/beacon/") as events:
        beacon_setup = time.monotonic() - beacon_started
        # The unit has no Restart=: a killed postmaster stays down until something starts it.
        standby.run(["sh", "-c", "kill -KILL $(head -n1 /run/postgresql/15-main.pid)"])
        assert wait_for(lambda: standby.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() != "active")
        # Prometheus sees it: the primary's streaming metric for it drops, its alert fires.
        started, killed = time.monotonic(), time.time() - 60
        streaming = 'pg_replication_downstream_streaming{application_name="standby"}'
        assert wait_for(lambda: promql(converged, streaming) == {"master": 0}, timeout=60, interval=2)
        # Both alerts (their rules may fire an evaluation apart).
        both = {("PostgreSQLStandbyDown", "standby"), ("PostgreSQLStandbyNotStreaming", "master")}
        assert wait_for(lambda: both <= firing(converged), timeout=90, interval=2)
        assert ("PostgreSQLPrimaryDown", "master") not in firing(converged)
        # The health beacon's events for it on the master's bus: the standby is down, and its
        # slot on the primary no longer active.
        beacon_waited = time.monotonic()
        down = ("role", "down")
        assert wait_for(lambda: down in health_changes(events, "standby"), timeout=30, interval=0.5), events.seen
        slot = ("slot_active:standby_slot", False)
        assert wait_for(lambda: slot in health_changes(events, "master"), timeout=15, interval=0.5), events.seen
        beacon_waited = time.monotonic() - beacon_waited
    # WAL written meanwhile: the standby's lag (from its slot) grows on the primary.
    converged.lab["master"].psql("CREATE TABLE monitoring_lag AS SELECT generate_series(1, 100000) AS i")
    lag = 'pg_replication_downstream_lag_bytes{application_name="standby"}'
    assert wait_for(lambda: promql(converged, lag).get("master", 0) > 2_000_000, timeout=30, interval=2)
    print(f"monitoring: standby-down alert firing {time.monotonic() - started:.0f} s after the kill")
    ret = converged.highstate()
    assert ret.returncode == 0, ret.stdout[-3000:]
    assert standby.run(["systemctl", "is-active", UNIT]).stdout.strip() == "active"
    assert wait_for(lambda: "standby:standby_slot" in streaming_clients(converged), timeout=30)
    assert wait_for(lambda: promql(converged, streaming) == {"master": 1}, timeout=30, interval=2)
    removed = time.monotonic()
    deleted = converged.call("beacons.delete", BEACON, target="master,standby", tgt_type="list")
    assert {name: ret["ret"]["result"] for name, ret in deleted.items()} == {"master": True, "standby": True}, deleted
    print(
        f"health beacon: {beacon_setup:.1f} s before the kill, {beacon_waited:.1f} s waiting for its events after"
        f" the alerts, {time.monotonic() - removed:.1f} s to remove it"
    )
    if os.environ.get("PGR_LAB_MONITORING_SERIES"):
        time.sleep(20)
        dump_series(converged, killed, os.environ["PGR_LAB_MONITORING_SERIES"])


def receive_wal_pid(salt_lab):
    return salt_lab.lab["master"].psql(
        "SELECT pid FROM pg_stat_replication WHERE application_name = 'barman_receive_wal' AND state = 'streaming'"
    )


def test_cron_restarts_a_killed_receive_wal(converged):
    before = receive_wal_pid(converged)
    assert before
    # barman's receive-wal and the pg_receivewal it runs: nothing streams to Barman any more.
    converged.lab["backup"].run(["pkill", "-KILL", "-f", "receive-wal|pg_receivewal"])
    # No highstate, no salt call that fixes anything: cron runs `barman cron` every minute.
    assert wait_for(lambda: receive_wal_pid(converged) not in ("", before), timeout=120, interval=5)


def cron_runs(host, since):
    """``{epoch minute: {command, ...}}``: what cron ran as the barman user since ``since``
    (epoch seconds), from the journal (cron's syslog lines ``(barman) CMD (...)``)."""
    out = host.run(["journalctl", "-q", "-o", "json", "-t", "CRON", "--since", f"@{int(since)}"]).stdout
    runs = {}
    for line in out.splitlines():
        entry = json.loads(line)
        message = entry.get("MESSAGE")
        if isinstance(message, str) and message.startswith("(barman) CMD (") and message.endswith(")"):
            minute = int(entry["__REALTIME_TIMESTAMP"]) // 60_000_000
            runs.setdefault(minute, set()).add(message[len("(barman) CMD (") : -1])
    return runs


def host_time(host):
    return float(host.run(["date", "+%s.%N"]).stdout)


def wait_for_minute_after(host, when, seconds=10):
    """Sleep until ``seconds`` into the minute after ``when`` (epoch seconds, host's clock):
    cron has run that minute's jobs and logged them."""
    target = (int(when) // 60 + 1) * 60 + seconds
    time.sleep(max(0.0, target - host_time(host)))
    return target // 60


def changed_cron_conffiles(host):
    """``dpkg --verify barman``'s lines about the package's cron file (none: as shipped)."""
    out = host.run(["dpkg", "--verify", "barman"], check=False).stdout
    return [line for line in out.splitlines() if line.endswith(f" {PACKAGE_CRON_FILE}")]


def test_an_install_of_the_old_formula_moves_to_its_own_cron_file_without_a_gap(converged):
    """A backup host as the formula left it before it had its own cron file: its lines in the
    package's /etc/cron.d/barman. test=True predicts the highstate, which writes the formula's
    file, then gives the package its file back; `barman cron` ran in every minute across the
    change, from both files after it. A second highstate changes nothing."""
    backup = converged.lab["backup"]
    backup.run(["rm", CRON_FILE])
    backup.run(["sh", "-c", f"cat > {PACKAGE_CRON_FILE}"], input=OLD_FORMULA_CRON)
    assert len(changed_cron_conffiles(backup)) == 1
    # One minute that cron ran with the old install's files only.
    old_minute = wait_for_minute_after(backup, host_time(backup))
    assert cron_runs(backup, old_minute * 60).get(old_minute) == {BARMAN_CRON}

    predicted = converged.highstate("test=True", target="backup")
    assert state_errors(predicted.data) == {}
    assert backup.run(["cat", PACKAGE_CRON_FILE]).stdout == OLD_FORMULA_CRON
    ret = converged.highstate(target="backup")
    assert state_errors(ret.data) == {}, ret.stdout[-3000:]
    changed = ["pg_replication-barman-cron", "pg_replication-barman-cron-legacy",
               "pg_replication-barman-cron-package-file"]  # fmt: skip
    assert state_ids(ret.data) == {"backup": changed}
    assert state_ids(predicted.data, test=True) == {"backup": changed}

    assert changed_cron_conffiles(backup) == []
    assert f"* * * * * barman {BARMAN_CRON}\n" in backup.run(["cat", CRON_FILE]).stdout
    # Every minute from the old install's to the first after the change ran `barman cron`;
    # that last one from both files.
    new_minute = wait_for_minute_after(backup, host_time(backup))
    runs = cron_runs(backup, old_minute * 60)
    assert [m for m in range(old_minute, new_minute + 1) if not runs.get(m, set()) & {BARMAN_CRON}] == []
    assert runs[new_minute] == {BARMAN_CRON, PACKAGE_BARMAN_CRON}

    again = converged.highstate(target="backup")
    assert state_errors(again.data) == {}
    assert changed_states(again.data) == {}


def test_barman_cron_runs_every_minute_from_the_formulas_file(converged):
    """Since the first highstate wrote it (the journal since boot), the formula's cron line
    ran `barman cron` in every minute, across the move above too; Barman's package keeps its
    cron file as shipped."""
    backup = converged.lab["backup"]
    assert changed_cron_conffiles(backup) == []
    assert backup.run(["grep", "-c", "Managed by Salt", PACKAGE_CRON_FILE], check=False).stdout.strip() == "0"
    runs = cron_runs(backup, 0)
    ran = sorted(m for m, commands in runs.items() if BARMAN_CRON in commands)
    # Up to the last minute whose jobs have surely been logged.
    last = int(host_time(backup) - 5) // 60 - 1
    minutes = range(ran[0], last + 1)
    assert len(minutes) >= 3
    assert [m for m in minutes if BARMAN_CRON not in runs.get(m, ())] == []


def test_power_off_and_boot_brings_the_cluster_back_without_a_highstate(converged):
    lab = converged.lab
    for name in ("backup", "standby", "master"):
        lab[name].poweroff()
    for name in ("master", "standby", "backup"):
        lab[name].boot()
    master = lab["master"]
    assert wait_for(lambda: master.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active", 60)
    master.psql("CREATE TABLE IF NOT EXISTS after_boot (id int)")
    master.psql("INSERT INTO after_boot VALUES (1)")
    assert wait_for(lambda: "standby:standby_slot" in streaming_clients(converged), timeout=60)
    assert wait_for(lambda: "barman_receive_wal" in streaming_clients(converged), timeout=120, interval=5)
    converged.wait_for_minions()
    assert wait_for(lambda: failed_checks(converged) == [], timeout=120, interval=10)


def next_whole_minute(host):
    """The next minute on ``host``'s clock (cron's) with at least 15 seconds to go: (minute, hour)."""
    now = datetime.datetime.strptime(host.run(["date", "+%H:%M:%S"]).stdout.strip(), "%H:%M:%S")
    start = now.replace(second=0) + datetime.timedelta(minutes=1 if now.second < 45 else 2)
    return start.minute, start.hour


def test_cron_takes_a_base_backup_on_the_pillars_schedule(converged):
    """A schedule for the next minute (the lab's pillar has none): the backup host's highstate
    writes it to cron, and a new DONE backup appears with no highstate or salt call."""
    lab, good = converged.lab, converged.pillar

    def done():
        return [b["backup_id"] for b in barman(converged, "list_backups", SERVER) if b["status"] == "DONE"]

    before = done()
    minute, hour = next_whole_minute(lab["backup"])
    converged.set_pillar(dict(good, barman=dict(good["barman"], backup_schedule=f"{minute} {hour} * * *")))
    try:
        ret = converged.highstate(target="backup")
        assert state_errors(ret.data) == {}
        cron = lab["backup"].run(["cat", CRON_FILE]).stdout
        assert f"\n{minute} {hour} * * * barman test -x /usr/bin/barman && /usr/bin/barman" in cron
        assert wait_for(lambda: len(done()) > len(before), timeout=180, interval=5)
    finally:
        converged.set_pillar(good)  # (the clean test below removes the cron file)


CLEANED = {
    "master": ["/etc/postgresql/15/main/postgresql.conf", "/etc/postgresql/15/main/pg_hba.conf",
               "/var/lib/postgresql/.pgpass", "/var/lib/postgresql/.pg_replication-slots-15-main.json"],
    "standby": ["/etc/postgresql/15/main/postgresql.conf", "/var/lib/postgresql/.pgpass"],
    "backup": [CRON_FILE, f"/etc/barman.d/{SERVER}.conf", "/var/lib/barman/.pgpass",
               # monitoring/clean.sls
               "/etc/cron.d/pg_replication-metrics", "/var/lib/prometheus/node-exporter/pg_replication-barman.prom",
               "/etc/prometheus/pg_replication-alerts.yml", MONITORING_TLS_DIR,
               "/usr/local/lib/pg_replication/barman-metrics",
               "/usr/local/lib/pg_replication/pg_replication_barman_metrics.py"],
}  # fmt: skip
for _server in ("master", "standby"):
    CLEANED[_server] += ["/etc/prometheus/pg_replication-queries.yml", MONITORING_TLS_DIR]
KEPT = {
    "master": ["/var/lib/postgresql/15/main/PG_VERSION"],
    "standby": ["/var/lib/postgresql/15/main/PG_VERSION", "/var/lib/postgresql/15/main/standby.signal"],
    "backup": [f"/var/lib/barman/{SERVER}/base", f"/var/lib/barman/{SERVER}/wals", PACKAGE_CRON_FILE,
               "/etc/barman.conf", "/var/lib/prometheus/metrics2", "/etc/prometheus/prometheus.yml",
               "/etc/default/prometheus-node-exporter"],
}  # fmt: skip
for _server in ("master", "standby"):
    KEPT[_server].append("/etc/default/prometheus-postgres-exporter")
# The exporters and Prometheus the formula ran, stopped and disabled by the clean.
MONITORING_UNITS = {"master": ["prometheus-postgres-exporter"], "standby": ["prometheus-postgres-exporter"],
                    "backup": ["prometheus-node-exporter", "prometheus"]}  # fmt: skip


def exists(host, path):
    return host.run(["test", "-e", path], check=False).returncode == 0


def test_clean_stops_the_services_and_removes_the_formulas_files_but_never_data(converged):
    """pg_replication.clean on every host: test=True predicts it and changes nothing; the real
    run stops and disables PostgreSQL, stops cron's `barman cron` and receive-wal, removes the
    formula's files; data directories and Barman's backups and WAL stay, and Barman's package
    has its files as shipped (its configuration file is the package's again). A second clean
    changes nothing."""
    lab = converged.lab
    backups = lab["backup"].run(["ls", f"/var/lib/barman/{SERVER}/base"]).stdout
    assert backups.strip()
    health_beacon(converged)  # on the two servers: the clean removes it
    predicted = converged.salt("state.apply", "pg_replication.clean", "test=True")
    assert predicted.returncode == 0, predicted.stdout[-3000:]
    assert sorted(changed_states(predicted.data)) == ["backup", "master", "standby"]
    assert lab["master"].run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"
    assert all(exists(lab[name], path) for name, paths in CLEANED.items() for path in paths)

    ret = converged.salt("state.apply", "pg_replication.clean")
    assert state_errors(ret.data) == {}
    for name in ("master", "standby"):
        assert lab[name].run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "inactive"
        assert lab[name].run(["systemctl", "is-enabled", UNIT], check=False).stdout.strip() == "disabled"
    assert lab["backup"].run(["pgrep", "-f", "receive-wal|pg_receivewal"], check=False).returncode == 1
    assert {name: [p for p in paths if exists(lab[name], p)] for name, paths in CLEANED.items()} == {
        name: [] for name in CLEANED
    }
    assert {name: [p for p in paths if not exists(lab[name], p)] for name, paths in KEPT.items()} == {
        name: [] for name in KEPT
    }
    assert lab["backup"].run(["ls", f"/var/lib/barman/{SERVER}/base"]).stdout == backups
    assert lab["backup"].run(["dpkg", "--verify", "barman"], check=False).stdout == ""
    beacons = converged.call("beacons.list", "return_yaml=False", target="master,standby", tgt_type="list")
    assert {name: BEACON in ret["ret"] for name, ret in beacons.items()} == {"master": False, "standby": False}
    # Monitoring: stopped, disabled, the packages' files as shipped again (Prometheus' data stays).
    for name, units in MONITORING_UNITS.items():
        for unit in units:
            states = [lab[name].run(["systemctl", verb, unit], check=False).stdout.strip()
                      for verb in ("is-active", "is-enabled")]  # fmt: skip
            assert states == ["inactive", "disabled"], (name, unit)
            assert lab[name].run(["dpkg", "--verify", unit], check=False).stdout == "", (name, unit)

    again = converged.salt("state.apply", "pg_replication.clean")
    assert state_errors(again.data) == {}
    assert changed_states(again.data) == {}
