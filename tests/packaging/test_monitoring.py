"""Monitoring (pg_replication:monitoring) renders on every role: postgres_exporter with the
formula's queries on the servers, Barman's metrics on the backup host, Prometheus with a
scrape job per exporter; and the shipped alert rules pass ``promtool check rules`` and
every case of ``promtool test rules`` (tests/packaging/monitoring/alerts_test.yml)."""

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT

ALERTS_TEST = REPO_ROOT / "tests/packaging/monitoring/alerts_test.yml"
RULES_NAME = "pg_replication-alerts.yml"
# postgres_exporter 0.11's own query namespaces: a user query of the same name replaces it.
EXPORTER_NAMESPACES = {"pg_replication", "pg_postmaster", "pg_stat_replication", "pg_replication_slots",
                       "pg_stat_archiver", "pg_stat_activity", "pg_stat_database", "pg_locks", "pg_database",
                       "pg_stat_bgwriter", "pg_settings"}  # fmt: skip


def monitored(pillar, **monitoring):
    return dict(pillar, monitoring=dict({"enabled": True, "prometheus": {"host": "backup"}}, **monitoring))


def promtool(*args):
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: lab/install-deps.sh installs it (Debian's prometheus package)"
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, check=False)  # noqa: S603


@pytest.fixture(scope="module")
def backup(formula, example_pillar):
    return formula("backup", monitored(example_pillar))


def rendered_rules(rendering, tmp_path):
    context = rendering.args("pg_replication-monitoring-prometheus-alerts")["context"]
    path = tmp_path / RULES_NAME
    path.write_text(rendering.template("monitoring/files/alerts.yml.jinja", **context))
    return path


def test_the_alert_rules_pass_promtool_and_each_has_a_test_case(backup, tmp_path):
    rules = rendered_rules(backup, tmp_path)
    checked = promtool("check", "rules", rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    tested = promtool("test", "rules", tmp_path / ALERTS_TEST.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = [r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]]
    cases = {
        t["alertname"] for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for t in test["alert_rule_test"]
    }
    assert sorted(set(alerts) - cases) == []


def test_the_thresholds_come_from_the_pillar(formula, example_pillar, tmp_path):
    alerts = {"for": "30s", "lag_max_bytes": 1234, "lag_max_seconds": 56, "slot_retained_max_bytes": 789,
              "archive_max_bytes": 4321}  # fmt: skip
    rendering = formula("backup", monitored(example_pillar, alerts=alerts))
    rules = {
        r["alert"]: r for r in yaml.safe_load(rendered_rules(rendering, tmp_path).read_text())["groups"][0]["rules"]
    }
    assert rules["PostgreSQLStandbyDown"]["for"] == "30s"
    assert "> 1234" in rules["PostgreSQLReplicationLagBytes"]["expr"]
    assert "> 56" in rules["PostgreSQLReplicationLagSeconds"]["expr"]
    assert "> 789" in rules["PostgreSQLSlotRetainingWAL"]["expr"]
    assert "> 4321" in rules["BarmanArchiveStalled"]["expr"]


def test_prometheus_scrapes_every_exporter(backup):
    context = backup.args("pg_replication-monitoring-prometheus-config")["context"]
    config = yaml.safe_load(backup.template("monitoring/files/prometheus.yml.jinja", **context))
    assert config["rule_files"] == ["/etc/prometheus/pg_replication-alerts.yml"]
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}

    def target(minion, address, port, role):
        return {
            "targets": [f"{address}:{port}"],
            "labels": {"minion": minion, "pg_replication_role": role, "cluster": "main"},
        }

    assert jobs == {
        "postgres": [
            target("master", "192.168.11.101", 9187, "primary"),
            target("standby", "192.168.11.102", 9187, "standby"),
        ],
        "node": [target("backup", "192.168.11.103", 9100, "barman")],
    }


def test_the_backup_host_writes_barmans_metrics_from_cron(backup):
    """Cron runs the formula's metrics script (no salt-call: no Salt loader every minute),
    installed with the metric code it loads from beside it."""
    cron = backup.args("pg_replication-monitoring-barman-cron")["contents"]
    line = [line for line in cron.splitlines() if not line.startswith("#")]
    assert line == [
        "*/1 * * * * root /usr/local/lib/pg_replication/barman-metrics --barman /usr/bin/barman"
        " --config /etc/barman.conf /var/lib/prometheus/node-exporter/pg_replication-barman.prom"
        " '{\"master-streaming\": 86400}'"
    ]
    assert "salt-call" not in cron
    script = backup.args("pg_replication-monitoring-barman-metrics-script")
    assert script["names"] == [
        {"/usr/local/lib/pg_replication/barman-metrics": [
            {"source": "salt://pg_replication/monitoring/files/barman-metrics.py"}, {"mode": "0755"}]},
        {"/usr/local/lib/pg_replication/pg_replication_barman_metrics.py": [
            {"source": "salt://_utils/pg_replication_barman_metrics.py"}, {"mode": "0644"}]},
    ]  # fmt: skip
    assert (script["user"], script["group"]) == ("root", "root")
    assert {"file": "pg_replication-monitoring-barman-metrics-script"} in backup.args(
        "pg_replication-monitoring-barman-cron"
    )["require"]
    assert backup.args("pg_replication-monitoring-node-exporter-pkg")["name"] == "prometheus-node-exporter"
    assert "pg_replication-monitoring-postgres-exporter" not in backup.states


def test_with_restore_drills_the_metrics_script_reads_their_results(formula, example_pillar):
    """Restore drills on: the script also reads their results (barman_drill_* metrics)."""
    pillar = monitored(example_pillar)
    pillar["barman"] = dict(pillar["barman"], drill={"schedule": "0 3 * * *"})
    cron = formula("backup", pillar).args("pg_replication-monitoring-barman-cron")["contents"]
    assert " --config /etc/barman.conf --drill-dir /var/lib/barman/pg_replication-drill /var/lib/" in cron


@pytest.mark.parametrize("minion_id", ["master", "standby"])
def test_every_server_runs_the_exporter_as_a_peer_authenticated_role(formula, example_pillar, minion_id):
    rendering = formula(minion_id, monitored(example_pillar))
    defaults = rendering.template("monitoring/files/postgres-exporter-defaults.jinja")
    address = example_pillar["hosts"][minion_id]["address"]
    assert "DATA_SOURCE_NAME='host=/var/run/postgresql port=5432 user=replication_monitor dbname=postgres" in defaults
    assert f"--web.listen-address={address}:9187 " in defaults
    assert "password=" not in defaults
    assert "PGPASSWORD" not in defaults
    for state_id in (
        "pg_replication-monitoring-postgres-exporter-defaults",
        "pg_replication-monitoring-postgres-exporter-queries",
    ):
        args = rendering.args(state_id)
        assert (args["user"], args["group"], args["mode"]) == ("root", "prometheus", "0640")
    queries = yaml.safe_load(rendering.template("monitoring/files/postgres-exporter-queries.jinja"))
    assert sorted(queries) == (
        ["pg_replication_downstream", "pg_replication_server", "pg_replication_slot", "pg_replication_standby"]
        if minion_id == "master"
        else ["pg_replication_server", "pg_replication_slot", "pg_replication_standby"]
    )
    assert set(queries) & EXPORTER_NAMESPACES == set()
    ident = rendering.template("server/files/pg_ident.conf.jinja")
    assert "pg_replication   prometheus  replication_monitor" in ident
    role = "pg_replication-monitoring-role"
    if minion_id == "master":
        assert rendering.args(role)["groups"] == ["pg_monitor"]
        assert "password" not in rendering.args(role)
        assert "password_pillar" not in rendering.args(role)
    else:
        assert role not in rendering.states


def test_monitoring_off_changes_nothing(formula, example_pillar):
    rendering = formula("master", example_pillar)
    assert not [state_id for state_id in rendering.states if "monitoring" in state_id]
    assert "prometheus" not in rendering.template("server/files/pg_ident.conf.jinja")


def tls_pillar(pillar, hosts=("master", "standby", "backup")):
    from lab.tls import CertificateAuthority  # pylint: disable=import-outside-toplevel

    ca = CertificateAuthority()
    return {"ca_cert": ca.pem, "hosts": {h: ca.server(h, pillar["hosts"][h]["address"]) for h in hosts}}


@pytest.fixture(scope="module")
def tls(example_pillar):
    return tls_pillar(example_pillar)


TLS_DIR = "/etc/prometheus/pg_replication-tls"


@pytest.mark.parametrize("minion_id", ["master", "backup"])
def test_with_tls_the_exporters_serve_https_with_the_hosts_certificate(formula, example_pillar, tls, minion_id):
    """monitoring:tls: the exporter's web configuration names this host's certificate and key
    (from tls:hosts, written from the pillar: never a state argument), the key 0640
    root:prometheus, and the exporter's options file points it at that configuration."""
    rendering = formula(minion_id, dict(monitored(example_pillar, tls=True), tls=tls))
    exporter = "postgres-exporter" if minion_id == "master" else "node-exporter"
    for name, mode in (("cert", "0644"), ("key", "0640")):
        args = rendering.args(f"pg_replication-monitoring-tls-{name}")
        assert args["name"] == f"{TLS_DIR}/server.{'crt' if name == 'cert' else 'key'}"
        assert args["contents_pillar"] == f"pg_replication:tls:hosts:{minion_id}:{name}"
        assert (args["user"], args["group"], args["mode"]) == ("root", "prometheus", mode)
        assert "contents" not in args
    assert tls["hosts"][minion_id]["key"] not in str(rendering.states)
    assert rendering.args("pg_replication-monitoring-tls-dir")["mode"] == "0750"
    web_id = f"pg_replication-monitoring-tls-{exporter}-web"
    web_args = rendering.args(web_id)
    assert (web_args["user"], web_args["group"], web_args["mode"]) == ("root", "prometheus", "0640")
    web = yaml.safe_load(rendering.template("monitoring/files/web-config.yml.jinja", **web_args["context"]))
    assert web == {"tls_server_config": {"cert_file": f"{TLS_DIR}/server.crt", "key_file": f"{TLS_DIR}/server.key",
                                         "min_version": "TLS12"}}  # fmt: skip
    defaults = rendering.template(f"monitoring/files/{exporter}-defaults.jinja")
    web_file = f"{TLS_DIR}/{exporter}-web.yml"
    assert f" --web.config.file={web_file}'" in defaults
    assert web_args["name"] == web_file
    # A changed certificate or web configuration restarts the exporter.
    service = f"pg_replication-monitoring-{exporter}"
    assert {"file": web_id} in rendering.args(service).get("watch", []) or {"service": service} in web_args.get(
        "watch_in", []
    )


def test_with_tls_prometheus_scrapes_https_verifying_the_cluster_ca(formula, example_pillar, tls):
    rendering = formula("backup", dict(monitored(example_pillar, tls=True), tls=tls))
    context = rendering.args("pg_replication-monitoring-prometheus-config")["context"]
    config = yaml.safe_load(rendering.template("monitoring/files/prometheus.yml.jinja", **context))
    for job in config["scrape_configs"]:
        assert job["scheme"] == "https"
        assert job["tls_config"] == {"ca_file": f"{TLS_DIR}/ca.crt"}
    ca = rendering.args("pg_replication-monitoring-tls-ca")
    assert (ca["contents_pillar"], ca["mode"]) == ("pg_replication:tls:ca_cert", "0644")


def test_without_tls_the_exporters_serve_plain_http(formula, example_pillar):
    backup = formula("backup", monitored(example_pillar))
    context = backup.args("pg_replication-monitoring-prometheus-config")["context"]
    config = yaml.safe_load(backup.template("monitoring/files/prometheus.yml.jinja", **context))
    assert [job.get("scheme") for job in config["scrape_configs"]] == [None, None]
    assert not [state_id for state_id in backup.states if "-tls-" in state_id]
    assert "--web.config.file" not in backup.template("monitoring/files/node-exporter-defaults.jinja")


def test_tls_needs_the_backup_hosts_certificate_too(formula, example_pillar):
    pillar = dict(monitored(example_pillar, tls=True), tls=tls_pillar(example_pillar, ("master", "standby")))
    with pytest.raises(AssertionError, match="pg_replication:tls:hosts:backup: a backup host needs its certificate"):
        formula("backup", pillar)


@pytest.mark.parametrize("minion_id", ["master", "backup"])
def test_redhat_renders_its_packages_and_services(formula, example_pillar, tls, minion_id):
    """RedHat (rendered, not run): PGDG's postgres_exporter, EPEL's node_exporter and
    Prometheus, their sysconfig options files and node_exporter's textfile directory."""
    rendering = formula(minion_id, dict(monitored(example_pillar, tls=True), tls=tls), "RedHat")
    if minion_id == "master":
        assert rendering.args("pg_replication-monitoring-postgres-exporter-pkg")["name"] == "postgres_exporter"
        assert rendering.args("pg_replication-monitoring-postgres-exporter")["name"] == "postgres_exporter"
        defaults = rendering.args("pg_replication-monitoring-postgres-exporter-defaults")
        assert defaults["name"] == "/etc/sysconfig/postgres_exporter"
        return
    expected = {
        "pg_replication-monitoring-node-exporter-pkg": "golang-github-prometheus-node-exporter",
        "pg_replication-monitoring-node-exporter": "node_exporter",
        "pg_replication-monitoring-node-exporter-defaults": "/etc/sysconfig/node_exporter",
        "pg_replication-monitoring-prometheus-pkg": "golang-github-prometheus",
        "pg_replication-monitoring-prometheus": "prometheus",
    }
    assert {state_id: rendering.args(state_id)["name"] for state_id in expected} == expected
    cron = rendering.args("pg_replication-monitoring-barman-cron")["contents"]
    assert " /var/lib/node_exporter/textfile_collector/pg_replication-barman.prom " in cron


@pytest.mark.parametrize("os_family", ["Debian", "RedHat"])
@pytest.mark.parametrize("minion_id", ["master", "backup"])
def test_clean_removes_the_monitoring_files_but_no_data(formula, example_pillar, tls, minion_id, os_family):
    """pg_replication.clean with monitoring on: the exporters (and Prometheus) stopped and
    disabled, the formula's monitoring files removed, the packages' options files only while
    they hold the formula's content (Debian: given back to the package); Prometheus' data
    and the textfile directory itself stay."""
    rendering = formula(
        minion_id, dict(monitored(example_pillar, tls=True), tls=tls), os_family, sls="pg_replication.clean"
    )
    removed = rendering.args("pg_replication-monitoring-files-clean")["names"]
    if minion_id == "master":
        assert removed == ["/etc/prometheus/pg_replication-queries.yml", TLS_DIR]
        services = {"postgres-exporter"}
    else:
        textfile_dir = "/var/lib/prometheus/node-exporter" if os_family == "Debian" else (
            "/var/lib/node_exporter/textfile_collector")  # fmt: skip
        assert removed == ["/etc/cron.d/pg_replication-metrics", f"{textfile_dir}/pg_replication-barman.prom",
                           "/usr/local/lib/pg_replication/barman-metrics",
                           "/usr/local/lib/pg_replication/pg_replication_barman_metrics.py",
                           "/etc/prometheus/pg_replication-alerts.yml", TLS_DIR]  # fmt: skip
        services = {"node-exporter", "prometheus"}
    assert not [p for p in removed if p.startswith("/var/lib/prometheus/metrics")]
    beacon = rendering.state("pg_replication-monitoring-beacon-clean")["beacon.absent"]
    assert {key: value for key, value in beacon.items() if key != "order"} == {
        "name": "pg_replication_health", "save": True}  # fmt: skip
    for name in services:
        assert rendering.state(f"pg_replication-monitoring-{name}-clean")["service.dead"]["enable"] is False
        conffile = rendering.args(f"pg_replication-monitoring-{name}-conffile-clean")
        assert conffile["onlyif"][0]["text"] == "Managed by Salt (pg_replication)"
        restore = f"pg_replication-monitoring-{name}-package-file-clean"
        assert (restore in rendering.states) == (os_family == "Debian")


@pytest.mark.parametrize("minion_id", ["master", "backup"])
def test_the_health_beacon_is_configured_when_the_pillar_says_so(formula, example_pillar, minion_id):
    """monitoring:beacon: Salt's beacon.present saves the formula's beacon (_beacons/) in the
    minion's configuration, with the server's socket or the backup host's Barman servers."""
    assert "pg_replication-monitoring-beacon" not in formula(minion_id, monitored(example_pillar)).states
    rendering = formula(minion_id, monitored(example_pillar, beacon={"enabled": True, "interval": 20}))
    args = rendering.args("pg_replication-monitoring-beacon")
    expected = {"name": "pg_replication_health", "save": True, "interval": 20}
    if minion_id == "master":
        expected.update(port=5432, host="/var/run/postgresql")
    else:
        expected["barman_servers"] = ["master-streaming"]
    assert {key: value for key, value in args.items() if key != "order"} == expected
    assert (REPO_ROOT / "_beacons/pg_replication_health.py").is_file()
