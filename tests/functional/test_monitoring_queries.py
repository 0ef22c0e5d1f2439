"""postgres_exporter's queries of the formula (monitoring/files/postgres-exporter-queries.jinja)
run on a real PostgreSQL as a role that has pg_monitor and nothing else, and each returns
the columns its metrics name."""

import jinja2
import psycopg2
import pytest
import yaml

from tests.conftest import REPO_ROOT

ROLE = "pgr_monitor_test"
TEMPLATE = REPO_ROOT / "pg_replication/monitoring/files/postgres-exporter-queries.jinja"


def queries(version=15):
    """The template rendered without map.jinja: the plan's monitoring part given here."""
    source = "\n".join(line for line in TEMPLATE.read_text().splitlines() if "map.jinja" not in line)
    monitoring = {
        "barman_slots": ["mon_barman_slot"],
        "downstream": [{"application_name": "mon_standby", "slot": "mon_standby_slot"}],
    }
    environment = jinja2.Environment(autoescape=False)  # noqa: S701 (YAML, not HTML)
    text = environment.from_string(source).render(pg={"version": version, "monitoring": monitoring})
    return yaml.safe_load(text)


@pytest.fixture
def monitor(postgres):
    postgres.execute(f"DROP ROLE IF EXISTS {ROLE}")
    postgres.execute(f"CREATE ROLE {ROLE} LOGIN IN ROLE pg_monitor")
    for slot in ("mon_barman_slot", "mon_standby_slot"):
        postgres.execute(f"SELECT pg_create_physical_replication_slot('{slot}', true)")
    conn = psycopg2.connect(**dict(postgres.conn, user=ROLE))
    conn.autocommit = True
    yield conn
    conn.close()
    for slot in ("mon_barman_slot", "mon_standby_slot"):
        postgres.execute(f"SELECT pg_drop_replication_slot('{slot}')")
    postgres.execute(f"DROP ROLE {ROLE}")


def rows(conn, query):
    with conn.cursor() as cur:
        cur.execute(query["query"])
        names = [column.name for column in cur.description]
        return names, [dict(zip(names, row)) for row in cur.fetchall()]


def test_every_query_runs_as_a_pg_monitor_role_and_returns_its_metrics(monitor):
    results = {}
    for name, query in queries().items():
        columns, results[name] = rows(monitor, query)
        assert columns == [next(iter(metric)) for metric in query["metrics"]], name
    # A primary: no standby row; its expected standby does not stream, its slot keeps WAL.
    (server,) = results["pg_replication_server"]
    assert (server["is_primary"], server["timeline"], server["pending_restart_settings"]) == (1, 1, 0)
    assert results["pg_replication_standby"] == []
    (downstream,) = results["pg_replication_downstream"]
    assert downstream["application_name"] == "mon_standby"
    assert downstream["streaming"] == 0
    assert downstream["lag_bytes"] >= 0
    slots = {row["slot_name"]: row for row in results["pg_replication_slot"]}
    assert {name: (row["kind"], row["wal_status"], row["active"], row["lost"]) for name, row in slots.items()} == {
        "mon_barman_slot": ("barman", "reserved", 0, 0),
        "mon_standby_slot": ("standby", "reserved", 0, 0),
    }
    assert all(row["retained_bytes"] >= 0 for row in slots.values())


def test_before_postgresql_13_no_wal_status_is_asked_for():
    slot = queries(version=12)["pg_replication_slot"]["query"]
    assert "coalesce(wal_status" not in slot
    assert "'unknown' AS wal_status" in slot
