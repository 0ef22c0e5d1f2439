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
    cron = backup.args("pg_replication-monitoring-barman-cron")["contents"]
    salt_call = backup.loaders.grains["pythonexecutable"].rsplit("/", 1)[0] + "/salt-call"
    line = [line for line in cron.splitlines() if not line.startswith("#")]
    assert line == [
        f"*/1 * * * * root {salt_call} --local --out=quiet --log-level=quiet barman.write_metrics"
        " /var/lib/prometheus/node-exporter/pg_replication-barman.prom '{\"master-streaming\": 86400}'"
    ]
    assert backup.args("pg_replication-monitoring-node-exporter-pkg")["name"] == "prometheus-node-exporter"
    assert "pg_replication-monitoring-postgres-exporter" not in backup.states


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
