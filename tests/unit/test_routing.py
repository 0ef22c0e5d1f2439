"""Clients follow the primary (issue #29): the VIP and the poolers in the plan, and what the
runners do for them around a change of primary (pure: the runner's call is recorded)."""

import pathlib

import pytest
import yaml
from salt.exceptions import CommandExecutionError

from tests.conftest import load_util

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def config(merged_config):
    return merged_config(yaml.safe_load((REPO / "pillar.example").read_text())["pg_replication"])


@pytest.fixture(scope="module")
def routing():
    return load_util("pg_replication_routing")


def test_only_the_primary_holds_the_vip_and_the_backup_host_runs_pgbouncer(plan_mod, config):
    plans = {h: plan_mod.build(config, h)["routing"] for h in ("master", "standby", "backup")}
    assert {h: p["holds_vip"] for h, p in plans.items()} == {"master": True, "standby": False, "backup": False}
    assert {h: p["pooler"] for h, p in plans.items()} == {"master": False, "standby": False, "backup": True}
    backup = plans["backup"]
    assert "* = host=192.168.11.101 port=5432" in backup["ini_lines"]
    assert "auth_query = SELECT usename, passwd FROM pgbouncer_lookup.lookup($1)" in backup["ini_lines"]
    assert "pool_mode = transaction" in backup["ini_lines"]
    assert backup["hba_lines"][0] == "local pgbouncer root peer"
    assert backup["auth_file_password_lines"][1] == '"pgbouncer_auth" "change-me-to-a-fourth-long-secret"'
    # Only map.jinja sees the secret: every other caller gets it redacted.
    redacted = plan_mod.redact(plan_mod.build(config, "backup"))
    assert "change-me-to-a-fourth-long-secret" not in str(redacted)
    # The servers let the pooler in with SCRAM.
    hba = plan_mod.build(config, "master")["hba"]
    assert {"type": "host", "database": "all", "user": "all", "address": "192.168.11.103/32",
            "method": "scram-sha-256"} in hba  # fmt: skip


def test_target_vip_points_pgbouncer_at_the_vip(plan_mod, config):
    config["pooler"]["target"] = "vip"
    assert "* = host=192.168.11.100 port=5432" in plan_mod.build(config, "backup")["routing"]["ini_lines"]


def test_target_vip_without_a_vip_is_refused(plan_mod, config):
    config["vip"], config["pooler"]["target"] = None, "vip"
    with pytest.raises(plan_mod.PlanError, match="pg_replication:pooler:target: vip needs pg_replication:vip"):
        plan_mod.build(config, "master")


def test_a_vip_needs_the_network(plan_mod, config):
    config["network"] = None
    with pytest.raises(plan_mod.PlanError, match="pg_replication:vip: needs pg_replication:network"):
        plan_mod.build(config, "master")


def test_a_host_of_role_pooler_runs_pgbouncer_only(plan_mod, config):
    config["hosts"]["pgb"] = {"role": "pooler", "address": "192.168.11.105"}
    plan = plan_mod.build(config, "pgb")
    assert plan["role"] == "pooler"
    assert [p["id"] for p in plan["routing"]["poolers"]] == ["backup", "pgb"]
    assert plan["routing"]["pooler"]
    assert not plan["routing"]["holds_vip"]


def test_connection_strings_of_each_way_in(plan_mod, config, routing):
    plan = plan_mod.build(config, "master")
    ways = routing.connection_strings(plan["routing"], plan["hosts"], 5432, dbname="app", user="app")
    assert ways == {
        "vip": "host=192.168.11.100 port=5432 dbname=app user=app",
        "poolers": {"backup": "host=192.168.11.103 port=6432 dbname=app user=app"},
        "multi_host": "host='192.168.11.101,192.168.11.102' port='5432,5432' target_session_attrs=read-write"
        " dbname=app user=app",
    }


def test_lookup_function_checks(routing):
    good = {"prosecdef": True, "prosrc": f" {routing.LOOKUP_BODY} ", "owner_is_superuser": True,
            "role_executes": True, "public_executes": False, "role_uses_schema": True}  # fmt: skip
    assert routing.lookup_missing(good) == []
    assert routing.lookup_missing(None) == ["the lookup function"]
    assert routing.lookup_missing(dict(good, public_executes=True)) == ["no EXECUTE for PUBLIC"]
    assert routing.lookup_missing(dict(good, role_executes=None)) == ["EXECUTE for the lookup role"]
    statements = routing.lookup_statements("pgbouncer_auth")
    assert any("SECURITY DEFINER" in s and "pg_shadow" in s for s in statements)
    assert 'GRANT EXECUTE ON FUNCTION pgbouncer_lookup.lookup(text) TO "pgbouncer_auth"' in statements


class Recorder:
    def __init__(self, fail=()):
        self.calls, self.kwargs, self.fail, self.answers = [], [], fail, {}

    def __call__(self, minion, fun, *args, **kwargs):
        self.calls.append((minion, fun, *args))
        self.kwargs.append(kwargs)
        if fun in self.fail:
            raise CommandExecutionError(f"{fun} failed")
        return self.answers.get(fun, {"interface": "eth0"})


def _cluster(plan_mod, config, model):
    members = {}
    for host in ("master", "standby", "backup"):
        members[host] = {"plan": plan_mod.redact(plan_mod.build(config, host))}
    return model.Cluster(members)


def test_switchover_resumes_the_poolers_then_moves_the_vip_off_the_old_primary_first(plan_mod, config, model):
    handover, cluster, call, done = (
        load_util("pg_replication_handover"),
        _cluster(plan_mod, config, model),
        Recorder(),
        [],
    )
    handover.pause(cluster, call, done)
    left = handover.handover(cluster, call, "master", "standby", done, "RESUME")
    assert left == []
    assert [c[:3] for c in call.calls] == [
        ("backup", "pg_replication.pooler_pause"),
        ("backup", "pg_replication.pooler_repoint", "/etc/pgbouncer/pgbouncer.ini"),
        ("master", "pg_replication.vip_remove", "192.168.11.100"),
        ("standby", "pg_replication.vip_add", "192.168.11.100"),
    ]
    assert call.calls[1][3] == "192.168.11.102"  # the new primary's address
    assert call.kwargs[0]["wait"] == 5  # pooler:pause_wait, the default
    assert done[0] == "paused PgBouncer on backup"


def test_a_pause_that_had_to_kill_says_which_databases_and_takes_the_pillars_wait(plan_mod, config, model):
    config["pooler"]["pause_wait"] = 2
    handover, cluster, call, done = (
        load_util("pg_replication_handover"),
        _cluster(plan_mod, config, model),
        Recorder(),
        [],
    )
    call.answers["pg_replication.pooler_pause"] = {"paused": True, "waited": 2.1, "killed": ["app", "otus"]}
    handover.pause(cluster, call, done)
    assert call.kwargs[0]["wait"] == 2
    assert done == ["paused PgBouncer on backup (after 2s, killed the clients of app, otus)"]


@pytest.mark.parametrize(
    ("command", "statement"),
    [
        ("pause", "PAUSE"), ("show pools", "SHOW POOLS"), ("KILL otus", "KILL otus"), ("RESUME", "RESUME"),
        ("SHUTDOWN", None), ("KILL pgbouncer", None), ("KILL", None), ("KILL a;b", None), ("SHOW 1", None),
        ("PAUSE otus", None), ("", None), ('KILL "x"', None),
    ],
)  # fmt: skip
def test_only_the_admin_commands_the_formula_sends_pass(routing, command, statement):
    assert routing.admin_statement(command) == statement


def test_busy_and_paused_databases_from_pgbouncers_show_output(routing):
    pools = [
        {"database": "pgbouncer", "sv_active": 1}, {"database": "otus", "sv_active": 2},
        {"database": "otus", "sv_active": 0}, {"database": "idle", "sv_active": 0, "sv_idle": 3},
        {"database": "we ird", "sv_active": 1},
    ]  # fmt: skip
    assert routing.busy_databases(pools) == ["otus", "we ird"]
    # After a failover, a login to the old primary or a client waiting for one count too.
    pools += [{"database": "logging", "sv_login": 1}, {"database": "waiting", "cl_waiting": 4},
              {"database": "pgbouncer", "cl_waiting": 1}]  # fmt: skip
    assert routing.stuck_databases(pools) == ["logging", "otus", "waiting", "we ird"]
    assert routing.busy_databases(pools) == ["otus", "we ird"]
    databases = [{"name": "pgbouncer", "paused": 0}, {"name": "otus", "paused": 1}, {"name": "app", "paused": 0},
                 {"name": 'a "b"', "paused": 1}]  # fmt: skip
    assert routing.paused_databases(databases) == ['a "b"', "otus"]
    # Each as the admin console takes it, whatever it holds.
    assert [routing.admin_name(n) for n in ("otus", 'a "b"')] == ['"otus"', '"a ""b"""']


def test_failover_with_the_old_primary_cut_off_adds_the_vip_only_on_the_new_one(plan_mod, config, model):
    handover, cluster, done = load_util("pg_replication_handover"), _cluster(plan_mod, config, model), []
    call = Recorder(fail=("pg_replication.pooler_repoint",))
    left = handover.handover(cluster, call, "master", "standby", done, "RECONNECT", old_answers=False)
    assert [c[1] for c in call.calls] == ["pg_replication.pooler_repoint", "pg_replication.vip_add"]
    assert left == ["backup: PgBouncer to 192.168.11.102 and RECONNECT: pg_replication.pooler_repoint failed"]


def test_a_poolers_certificate_is_checked_at_render_like_a_servers(plan_mod, config):
    """The backup host's PgBouncer serves TLS with its tls:hosts pair: a certificate libpq
    would refuse fails the render naming its key; a good one turns client TLS on."""
    from lab.tls import CertificateAuthority  # pylint: disable=import-outside-toplevel

    ca, other, hosts = CertificateAuthority(), CertificateAuthority("a pasted wrong CA"), config["hosts"]
    config["tls"] = {"ca_cert": ca.pem, "hosts": {h: ca.server(h, hosts[h]["address"]) for h in ("master", "standby")}}
    config["tls"]["hosts"]["backup"] = other.server("backup", hosts["backup"]["address"])
    with pytest.raises(plan_mod.PlanError, match="pg_replication:tls:hosts:backup:cert: is not signed by"):
        plan_mod.build(config, "master")
    config["tls"]["hosts"]["backup"] = ca.server("backup", hosts["backup"]["address"])
    backup = plan_mod.build(config, "backup")["routing"]
    assert backup["client_tls"]
    assert "client_tls_sslmode = require" in backup["ini_lines"]
    assert "server_tls_sslmode = verify-full" in backup["ini_lines"]


def test_target_vip_with_tls_needs_the_vip_in_every_servers_certificate(plan_mod, config):
    """PgBouncer aimed at the VIP verifies the primary's certificate against the VIP: a
    server certificate that does not name it fails the render, naming the key."""
    from lab.tls import CertificateAuthority  # pylint: disable=import-outside-toplevel

    ca, hosts, vip = CertificateAuthority(), config["hosts"], config["vip"]
    config["pooler"]["target"] = "vip"
    config["tls"] = {"ca_cert": ca.pem, "hosts": {h: ca.server(h, hosts[h]["address"]) for h in ("master", "standby")}}
    config["tls"]["hosts"]["standby"] = ca.server("standby", hosts["standby"]["address"], also=[vip])
    with pytest.raises(plan_mod.PlanError, match="pg_replication:pooler:target: vip with TLS") as exc:
        plan_mod.build(config, "backup")
    assert "pg_replication:tls:hosts:master:cert does not name" in str(exc.value)
    assert "tls:hosts:standby" not in str(exc.value)
    config["tls"]["hosts"]["master"] = ca.server("master", hosts["master"]["address"], also=[vip])
    assert "server_tls_sslmode = verify-full" in plan_mod.build(config, "backup")["routing"]["ini_lines"]
