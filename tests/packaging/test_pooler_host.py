"""A host whose only role is pooler (no PostgreSQL server, no Barman): what it runs and
what it does not, rendered for each OS family; its TLS files; its clean."""

import copy

import pytest

from tests.packaging.test_clean import removed

POOLER_HOST = {"address": "192.168.11.110", "role": "pooler"}


@pytest.fixture
def pillar(example_pillar):
    pillar = copy.deepcopy(example_pillar)
    pillar["hosts"]["pool1"] = dict(POOLER_HOST)
    return pillar


@pytest.mark.parametrize("os_family", ["Debian", "RedHat"])
def test_a_pooler_only_host_runs_pgbouncer_with_psycopg2_and_nothing_of_a_server(formula, pillar, os_family):
    rendering = formula("pool1", pillar, os_family)
    ids = set(rendering.states)
    for wanted in ("pg_replication-pooler-pkg", "pg_replication-pooler-ini", "pg_replication-pooler-service"):
        assert wanted in ids
    # The runners drive its admin console with psycopg2: the formula installs it here too.
    assert "pg_replication-salt-psycopg2" in ids
    assert not any(i.startswith(("pg_replication-server", "pg_replication-barman", "pg_replication-vip")) for i in ids)
    assert not any("lookup" in i for i in ids)  # the lookup function is made on the primary
    ini = rendering.template("pooler/files/lines.jinja", which="ini")
    assert f"* = host={pillar['hosts']['master']['address']} port=5432" in ini


def test_the_primary_makes_the_lookup_function_and_lets_every_pooler_in(formula, pillar):
    """auth_query's lookup runs on the primary for every pooler, the pooler-only one too."""
    rendering = formula("master", pillar)
    assert "pg_replication-pooler-lookup-function" in rendering.states
    hba = rendering.template("server/files/pg_hba.conf.jinja")
    assert "192.168.11.110/32" in hba
    assert "192.168.11.103/32" in hba  # pillar.example's pooler on the backup host


def test_a_pooler_only_host_with_a_certificate_serves_its_clients_over_tls(formula, pillar):
    from lab.tls import CertificateAuthority  # pylint: disable=import-outside-toplevel

    ca, hosts = CertificateAuthority(), pillar["hosts"]
    pillar["tls"] = {
        "ca_cert": ca.pem,
        "hosts": {h: ca.server(h, hosts[h]["address"]) for h in ("master", "standby", "pool1")},
    }
    rendering = formula("pool1", pillar)
    assert rendering.args("pg_replication-pooler-key")["mode"] == "0640"
    ini = rendering.template("pooler/files/lines.jinja", which="ini")
    assert "server_tls_sslmode = verify-full" in ini
    assert "client_tls_sslmode = require" in ini
    hba = rendering.template("pooler/files/lines.jinja", which="hba")
    assert "hostssl all all 0.0.0.0/0 scram-sha-256" in hba
    assert "\nhost all all" not in hba
    paths = removed(formula("pool1", pillar, sls="pg_replication.clean"))
    assert {"/etc/pgbouncer/pg_replication-pooler.key", "/etc/pgbouncer/pg_replication-ca.crt"} <= set(paths)
    assert not any(p.startswith(("/var/lib/postgresql", "/etc/postgresql", "/var/lib/barman")) for p in paths)
