"""Pillar validation and derivation (pg_replication.plan)."""

import pathlib
import re

import pytest
import yaml

from tests.invalid_pillars import CASES, mutate

REPO = pathlib.Path(__file__).resolve().parents[2]
ADDRESSES = {"master": "192.168.11.101", "standby": "192.168.11.102"}


@pytest.fixture
def config(merged_config):
    return merged_config(yaml.safe_load((REPO / "pillar.example").read_text())["pg_replication"])


def test_pillar_example_plans_each_role(plan_mod, config):
    roles = {mid: plan_mod.build(config, mid)["role"] for mid in ("master", "standby", "backup", "other")}
    assert roles == {"master": "primary", "standby": "standby", "backup": "barman", "other": None}
    plan = plan_mod.build(config, "standby")
    assert plan["primary"]["address"] == "192.168.11.101"
    assert plan["me"]["slot"] == "standby_slot"
    assert plan["data_dir"] == "/var/lib/postgresql/15/main"
    assert plan["bin_dir"] == "/usr/lib/postgresql/15/bin"
    assert plan["standby_signal"] is True
    # pillar values, whatever the topology
    assert plan["settings"]["max_wal_senders"] == 10
    assert plan["settings"]["max_replication_slots"] == 10
    (server,) = plan["barman_servers"]
    assert {k: server[k] for k in ("name", "primary", "address", "port", "slot_name", "bin_dir", "client_pkg")} == {
        "name": "master-streaming",
        "primary": "master",
        "address": "192.168.11.101",
        "port": 5432,
        "slot_name": "barman_slot",
        "bin_dir": "/usr/lib/postgresql/15/bin",
        "client_pkg": "postgresql-client-15",
    }


OTHER = {
    "address": "db2.example.com",
    "port": 5433,
    "version": 13,
    "password": "another-cluster-secret",
    "streaming_password": "another-cluster-streaming-secret",
}


def test_one_backup_host_backs_up_several_primaries(plan_mod, config):
    config["barman"]["servers"] = {"db2-streaming": dict(OTHER), "db3": {**OTHER, "address": "10.0.0.3", "port": 5432}}
    servers = {s["name"]: s for s in plan_mod.build(config, "backup")["barman_servers"]}
    assert list(servers) == ["master-streaming", "db2-streaming", "db3"]
    db2 = servers["db2-streaming"]
    assert (db2["address"], db2["port"], db2["version"]) == ("db2.example.com", 5433, 13)
    assert db2["bin_dir"] == "/usr/lib/postgresql/13/bin"
    assert db2["client_pkg"] == "postgresql-client-13"
    # Unset keys come from the barman section; the slot name may repeat on another primary.
    assert (db2["user"], db2["slot_name"], db2["retention_policy"]) == ("barman", "barman_slot", "REDUNDANCY 2")
    assert db2["password"] == "another-cluster-secret"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"address": "10.0.0.300"}, "pg_replication:barman:servers:db2:address"),
        ({"address": None}, "pg_replication:barman:servers:db2:address"),
        ({"port": "x"}, "pg_replication:barman:servers:db2:port"),
        ({"slot_name": "Bad"}, "pg_replication:barman:servers:db2:slot_name"),
        ({"password": "short"}, "pg_replication:barman:servers:db2:password: the password is too weak"),
        ({"user": "bad user"}, "pg_replication:barman:servers:db2:user"),
    ],
)
def test_invalid_extra_barman_server_names_the_key(plan_mod, config, spec, message):
    config["barman"]["servers"] = {"db2": {**OTHER, **spec}}
    with pytest.raises(plan_mod.PlanError) as exc:
        plan_mod.build(config, "backup")
    assert message in str(exc.value)


def test_extra_barman_server_names_must_be_unique_and_valid(plan_mod, config):
    for name, message in (("master-streaming", "already this cluster's server"), ("all", "reserved by Barman")):
        config["barman"]["servers"] = {name: dict(OTHER)}
        with pytest.raises(plan_mod.PlanError, match=message):
            plan_mod.build(config, "backup")


def test_two_servers_on_one_primary_need_distinct_slots(plan_mod, config):
    config["barman"]["servers"] = {"a": dict(OTHER), "b": dict(OTHER)}
    with pytest.raises(plan_mod.PlanError, match="pg_replication:barman:servers:b:slot_name: duplicate"):
        plan_mod.build(config, "backup")
    config["barman"]["servers"]["b"]["slot_name"] = "barman_b"
    assert len(plan_mod.build(config, "backup")["barman_servers"]) == 3


def test_hba_is_scram_on_every_tcp_line_and_never_trust(plan_mod, config):
    hba = plan_mod.build(config, "master")["hba"]
    tcp = [line for line in hba if line["type"] != "local"]
    assert tcp
    assert all(line["method"] == "scram-sha-256" for line in tcp)
    assert not any("trust" in line["method"] for line in hba)
    assert [line["user"] for line in hba if line["type"] == "local"] == ["postgres"]
    assert {"type": "host", "database": "replication", "user": "replicator", "address": "192.168.11.102/32",
            "method": "scram-sha-256"} in hba  # fmt: skip
    assert {"type": "host", "database": "replication", "user": "barman_streaming", "address": "192.168.11.103/32",
            "method": "scram-sha-256"} in hba  # fmt: skip


def test_roles_can_swap_without_touching_hba_or_pgpass(plan_mod, config):
    """Every server may stream from and pg_rewind against every other, as the replication
    role: a switchover changes postgresql.conf and slots, never pg_hba.conf or .pgpass."""
    before = {h: plan_mod.build(config, h) for h in ("master", "standby")}
    config["hosts"]["master"]["role"], config["hosts"]["standby"]["role"] = "standby", "primary"
    after = {h: plan_mod.build(config, h) for h in ("master", "standby")}
    for host in ("master", "standby"):
        assert after[host]["hba"] == before[host]["hba"]
        assert after[host]["pgpass_lines"] == before[host]["pgpass_lines"]
    rewind = {"type": "host", "database": "postgres", "user": "replicator", "address": "192.168.11.101/32",
              "method": "scram-sha-256"}  # fmt: skip
    assert rewind in after["standby"]["hba"]
    assert [line.split(":")[0] for line in before["master"]["pgpass_lines"]] == ["192.168.11.102"]
    assert "pg_read_binary_file(text)" in after["standby"]["rewind_grants"]


def test_version_paths_and_standby_style(plan_mod, config):
    config["version"] = 11
    plan = plan_mod.build(config, "standby")
    assert plan["bin_dir"] == "/usr/lib/postgresql/11/bin"
    assert plan["standby_signal"] is False
    assert "max_slot_wal_keep_size" not in plan["settings"]


def _mutate(config, path, value):
    node = config
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("hosts", "master", "role"), "standby", "pg_replication:hosts: no host has role primary"),
        (("hosts", "standby", "role"), "primary", "more than one primary"),
        (
            ("hosts", "backup", "role"),
            "witness",
            "pg_replication:hosts:backup:role: 'witness' is not one of primary, standby, barman",
        ),
        (("hosts", "standby", "address"), "192.168.11.300", "pg_replication:hosts:standby:address"),
        (("network",), "192.168.11.0/33", "pg_replication:network"),
        (("network",), "192.168.11.1/24", "pg_replication:network"),
        (("replication", "password"), None, "pg_replication:replication:password: a password is required"),
        (("replication", "password"), "short", "pg_replication:replication:password: the password is too weak"),
        (("hosts", "standby", "slot"), "barman_slot", "duplicate slot name 'barman_slot'"),
        (("hosts", "standby", "slot"), "Bad-Slot", "pg_replication:hosts:standby:slot"),
        (("barman", "slot_name"), "barman-slot", "pg_replication:barman:slot_name"),
        (("barman", "primary"), "nowhere", "pg_replication:barman:primary: 'nowhere' is not a host"),
        (("barman", "streaming_password"), KeyError, "pg_replication:barman:streaming_password"),
        (("version",), "fifteen", "pg_replication:version"),
        (("hosts",), {}, "pg_replication:hosts: is required (at least one host)"),
    ],
)
def test_invalid_pillar_names_the_key(plan_mod, config, path, value, message):
    with pytest.raises(plan_mod.PlanError) as exc:
        plan_mod.build(_mutate(config, path, value), "master")
    assert message in str(exc.value)


@pytest.mark.parametrize(("path", "value", "key"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_pillar_table_names_the_key_and_never_raises_anything_else(plan_mod, merged_config, path, value, key):
    pillar = mutate(yaml.safe_load((REPO / "pillar.example").read_text())["pg_replication"], path, value)
    # What map.jinja does: merge a mapping over the defaults; pass anything else as it is.
    config = merged_config(pillar) if isinstance(pillar, dict) else pillar
    for minion_id in ("master", "standby", "backup"):
        with pytest.raises(plan_mod.PlanError) as exc:
            plan_mod.build(config, minion_id)
        assert key in str(exc.value)


def test_the_table_is_large_and_covers_every_target(plan_mod):
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


def test_escapes_for_each_target(plan_mod, config):
    syntax = plan_mod.syntax
    assert syntax.conf_value("it's a \\ path") == "'it''s a \\\\ path'"
    assert syntax.conf_value(True) == "on"
    assert (
        syntax.conninfo(host="10.0.0.1", application_name="a b'c\\") == "host=10.0.0.1 application_name='a b\\'c\\\\'"
    )
    assert syntax.pgpass_line("fd00::1", 5432, "*", "u", "p:w\\d") == "fd00\\:\\:1:5432:*:u:p\\:w\\\\d"
    assert syntax.shell_words(["/usr/bin/x", "a b", "$(c)"]) == "/usr/bin/x 'a b' '$(c)'"
    # A password with quotes, colons and backslashes is a valid password, escaped per file.
    config["replication"]["password"] = "it's:a\\long 'secret'"
    plan = plan_mod.build(config, "standby")
    assert plan["pgpass_lines"] == ["192.168.11.101:5432:*:replicator:it's\\:a\\\\long 'secret'"]
    conninfo = [line for line in plan["conf_lines"] if line.startswith("primary_conninfo")]
    assert conninfo == [
        "primary_conninfo = 'host=192.168.11.101 port=5432 user=replicator"
        " passfile=/var/lib/postgresql/.pgpass application_name=standby'"
    ]


def test_backup_schedule_and_maximum_age_reach_cron_and_barman(plan_mod, config):
    config["barman"].update(backup_schedule="@daily", backup_max_age=90000)
    barman = plan_mod.build(config, "backup")["barman"]
    assert barman["backup_schedule"] == "@daily"
    assert barman["backup_command"] == "/usr/bin/barman -c /etc/barman.conf -q backup all"
    assert barman["last_backup_maximum_age"] == "2 DAYS"  # rounded up to whole days


def _sync_names(plan):
    return [line for line in plan["conf_lines"] if line.startswith("synchronous_standby_names")]


def test_synchronous_standbys_are_named_by_application_name_on_the_primary_only(plan_mod, config):
    config["hosts"]["standby2"] = {"role": "standby", "address": "192.168.11.104", "application_name": "s-2.b"}
    config["synchronous"] = {"method": "first", "count": 2, "standbys": ["standby2", "standby"]}
    assert _sync_names(plan_mod.build(config, "master")) == [
        """synchronous_standby_names = 'FIRST 2 ("s-2.b", "standby")'"""
    ]
    assert _sync_names(plan_mod.build(config, "standby")) == []
    assert (
        plan_mod.build(config, "master")["conf_settings"]["synchronous_standby_names"] == 'FIRST 2 ("s-2.b", "standby")'
    )
    # The list may name the primary (roles swap at a switchover): left out, and not counted.
    config["synchronous"] = {"method": "any", "count": 1, "standbys": ["master", "standby"]}
    assert _sync_names(plan_mod.build(config, "master")) == ["""synchronous_standby_names = 'ANY 1 ("standby")'"""]
    config["synchronous"]["standbys"] = []
    assert _sync_names(plan_mod.build(config, "master")) == []


@pytest.mark.parametrize(
    ("sync", "extra", "message"),
    [
        ({"standbys": ["standby", "ghost"]}, {}, "pg_replication:synchronous:standbys:1: 'ghost' is not a server"),
        ({"standbys": ["backup"]}, {}, "pg_replication:synchronous:standbys:0: 'backup' is not a server"),
        ({"standbys": ["standby", "standby"]}, {}, "pg_replication:synchronous:standbys:1: 'standby' is listed twice"),
        ({"count": 2, "standbys": ["master", "standby"]}, {}, "pg_replication:synchronous:count: 2 is more than"),
        ({"method": "all"}, {}, "pg_replication:synchronous:method: 'all' is not one of any, first"),
        ({"count": 0}, {}, "pg_replication:synchronous:count"),
        ({"standbys": "standby"}, {}, "pg_replication:synchronous:standbys: must be a list"),
        (
            {"standbys": ["standby", "standby2"]},
            {"standby2": {"role": "standby", "address": "192.168.11.104", "application_name": "standby"}},
            "pg_replication:hosts:standby2:application_name: 'standby' is also standby's",
        ),
    ],
)
def test_invalid_synchronous_names_the_key(plan_mod, config, sync, extra, message):
    config["hosts"].update(extra)
    config["synchronous"] = dict(config["synchronous"], **sync)
    with pytest.raises(plan_mod.PlanError, match=re.escape(message)):
        plan_mod.build(config, "master")


def test_an_address_left_out_comes_from_the_salt_mine(plan_mod, config):
    del config["hosts"]["standby"]["address"]
    assert plan_mod.mine_request(config) == (["standby"], "pg_replication_address")
    plan = plan_mod.build(config, "master", mine={"standby": ["192.168.11.102"]})
    assert plan["hosts"]["standby"]["address"] == "192.168.11.102"
    assert {"type": "host", "database": "replication", "user": "replicator", "address": "192.168.11.102/32",
            "method": "scram-sha-256"} in plan["hba"]  # fmt: skip
    with pytest.raises(plan_mod.PlanError, match=re.escape("pg_replication:hosts:standby:address: is required")):
        plan_mod.build(config, "master", mine={})
    with pytest.raises(plan_mod.PlanError, match="pg_replication:hosts:standby:address: the Salt mine's"):
        plan_mod.build(config, "master", mine={"standby": ["not-an-ip"]})
    config["hosts"]["standby"]["address"] = "192.168.11.102"
    assert plan_mod.mine_request(config) is None


def test_ipv6_addresses_reach_pgpass_and_hba(plan_mod, config):
    config["hosts"]["master"]["address"] = "fd00::101"
    config["network"] = config["vip"] = None  # pillar.example's VIP needs the network
    plan = plan_mod.build(config, "standby")
    assert plan["pgpass_lines"][0].startswith("fd00\\:\\:101:5432:*:")
    assert "host=fd00::101" in plan["conf_lines"][-2]
    backup = plan_mod.build(config, "backup")
    assert backup["barman_servers"][0]["conninfo"] == "host=fd00::101 port=5432 user=barman dbname=postgres"


def test_redact_hides_passwords_and_pgpass_lines(plan_mod, config):
    plan = plan_mod.redact(plan_mod.build(config, "backup"))
    assert plan["pgpass_lines"] == "********"
    assert "change-me" not in str(plan)


def test_a_version_the_distribution_does_not_ship_needs_the_upstream_repository(plan_mod, config):
    assert plan_mod.build(config, "master", {"os": "Debian", "osmajorrelease": 12})["version"] == 15
    config["version"] = 16
    for minion_id in ("master", "standby", "backup"):
        with pytest.raises(plan_mod.PlanError, match="pg_replication:version: Debian 12 ships PostgreSQL 15, not 16"):
            plan_mod.build(config, minion_id, {"os": "Debian", "osmajorrelease": 12})
    config["upstream_repo"] = True
    assert plan_mod.build(config, "master", {"os": "Debian", "osmajorrelease": 12})["version"] == 16
    # Unknown releases are not second-guessed.
    config["upstream_repo"] = False
    assert plan_mod.build(config, "master", {"os": "Rocky", "osmajorrelease": 9})["version"] == 16


def test_each_backed_up_version_needs_its_client(plan_mod, config):
    config["barman"]["servers"] = {"db2": dict(OTHER, version=14)}
    with pytest.raises(plan_mod.PlanError, match="pg_replication:barman:servers:db2:version: Debian 12 ships"):
        plan_mod.build(config, "backup", {"os": "Debian", "osmajorrelease": 12})
    # The previous release's version is what Debian's release upgrade leaves installed.
    config["barman"]["servers"] = {"db2": dict(OTHER, version=13)}
    assert plan_mod.build(config, "backup", {"os": "Debian", "osmajorrelease": 12})["role"] == "barman"
    with pytest.raises(plan_mod.PlanError) as exc:
        plan_mod.build(config, "backup", {"os": "Debian", "osmajorrelease": 11})
    assert "pg_replication:version: Debian 11 ships PostgreSQL 13, not 15" in str(exc.value)
    assert "db2:version" not in str(exc.value)


def test_systemd_hosts_use_the_clusters_unit_once_the_name_is_valid(plan_mod, config):
    assert plan_mod.build(config, "master", {"init": "systemd"})["service_name"] == "postgresql@15-main"
    assert plan_mod.build(config, "master", {"init": "sysvinit"})["service_name"] == "postgresql"
    config["service_name"] = "postgresql; reboot"
    with pytest.raises(plan_mod.PlanError, match="pg_replication:service_name"):
        plan_mod.build(config, "master", {"init": "systemd"})


def _cascade(config):
    """standby2 streams from standby, standby3 from standby2."""
    config["hosts"]["standby2"] = {"role": "standby", "address": "192.168.11.104", "upstream": "standby"}
    config["hosts"]["standby3"] = {"role": "standby", "address": "192.168.11.105", "upstream": "standby2"}
    return config


def test_a_cascading_standby_streams_from_its_upstream_which_holds_its_slot(plan_mod, config):
    config = _cascade(config)
    plan = plan_mod.build(config, "standby2")
    assert plan["upstream"]["id"] == "standby"
    conninfo = plan["conf_settings"]["primary_conninfo"]
    assert "host=192.168.11.102 " in conninfo  # standby's address, not the primary's
    assert plan["conf_settings"]["primary_slot_name"] == "standby2_slot"
    assert [h["id"] for h in plan["downstream"]] == ["standby3"]
    assert plan["served_slots"] == ["standby3_slot"]
    # Each server serves the slots of the standbys that stream from it; the primary Barman's too.
    assert plan_mod.build(config, "master")["served_slots"] == ["barman_slot", "standby_slot"]
    assert plan_mod.build(config, "standby")["served_slots"] == ["standby2_slot"]
    assert plan_mod.build(config, "standby3")["served_slots"] == []
    assert plan_mod.build(config, "standby")["upstream"]["id"] == "master"
    # Naming the primary is the same as naming no upstream.
    config["hosts"]["standby"]["upstream"] = "master"
    assert plan_mod.build(config, "master")["served_slots"] == ["barman_slot", "standby_slot"]


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ({"standby": {"upstream": "standby3"}},
         "pg_replication:hosts:standby:upstream: the chain standby -> standby3 -> standby2 -> standby is a cycle"),
        ({"standby3": {"upstream": "ghost"}}, "pg_replication:hosts:standby3:upstream: 'ghost' is not a host"),
        ({"backup": {"upstream": "master"}}, "pg_replication:hosts:backup:upstream: only a standby streams"),
    ],
)  # fmt: skip
def test_bad_cascades_name_the_key(plan_mod, config, hosts, message):
    config = _cascade(config)
    for host, spec in hosts.items():
        config["hosts"][host].update(spec)
    with pytest.raises(plan_mod.PlanError, match=re.escape(message)):
        plan_mod.build(config, "master")


def test_a_cascading_standby_cannot_be_synchronous(plan_mod, config):
    config = _cascade(config)
    config["synchronous"] = {"method": "any", "count": 1, "standbys": ["standby", "standby2"]}
    with pytest.raises(
        plan_mod.PlanError, match="pg_replication:synchronous:standbys:1: 'standby2' streams from standby"
    ):
        plan_mod.build(config, "master")


@pytest.fixture(scope="module")
def lab_ca():
    from lab.tls import CertificateAuthority  # pylint: disable=import-outside-toplevel

    return CertificateAuthority()


def _with_tls(config, ca):
    config["tls"] = {
        "ca_cert": ca.pem,
        "hosts": {h: ca.server(h, config["hosts"][h]["address"]) for h in ("master", "standby")},
    }
    return config


def test_tls_makes_every_tcp_line_hostssl_and_every_client_verify_the_server(plan_mod, config, lab_ca):
    config = _with_tls(config, lab_ca)
    master = plan_mod.build(config, "master")
    assert {line["type"] for line in master["hba"]} == {"local", "hostssl"}
    assert master["conf_settings"]["ssl"] == "on"
    assert master["conf_settings"]["ssl_key_file"] == "/etc/postgresql/15/main/pg_replication-server.key"
    standby = plan_mod.build(config, "standby")["conf_settings"]["primary_conninfo"]
    assert "sslmode=verify-full sslrootcert=/etc/pg_replication/ca.crt channel_binding=require" in standby
    (server,) = plan_mod.build(config, "backup")["barman_servers"]
    for conninfo in (server["conninfo"], server["streaming_conninfo"]):
        assert "sslmode=verify-full sslrootcert=/etc/barman.d/pg_replication-ca.crt channel_binding=require" in conninfo
    # The servers' own connections to each other (bootstrap, slots, rejoin, role checks) too.
    want = {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/pg_replication/ca.crt",
        "channel_binding": "require",
    }
    assert master["peer_tls"] == want
    assert plan_mod.build(config, "standby")["peer_tls"] == want
    assert plan_mod.build(config, "backup")["peer_tls"] == {}
    del config["tls"]
    assert plan_mod.build(config, "standby")["peer_tls"] == {}
    config = _with_tls(config, lab_ca)
    # The key is a secret: a plan handed out without secrets hides it.
    assert plan_mod.redact(config)["tls"]["hosts"]["master"]["key"] == "********"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda tls: tls["hosts"].pop("standby"), "pg_replication:tls:hosts:standby: every server needs"),
        (lambda tls: tls.update(ca_cert=tls["ca_cert"] + "ssl = off\n"),
         "pg_replication:tls:ca_cert: must be one PEM block"),
        (lambda tls: tls["hosts"]["master"].update(key=tls["hosts"]["master"]["cert"]),
         "pg_replication:tls:hosts:master:key: must be one PEM block (PRIVATE KEY"),
        (lambda tls: tls.update(ca_cert=None), "pg_replication:tls:ca_cert: is required with pg_replication:tls:hosts"),
    ],
)  # fmt: skip
def test_bad_tls_names_the_key(plan_mod, config, lab_ca, change, message):
    config = _with_tls(config, lab_ca)
    change(config["tls"])
    with pytest.raises(plan_mod.PlanError, match=re.escape(message)):
        plan_mod.build(config, "master")


def _other_ca_signs_standby(config, tls):
    tls["hosts"]["standby"] = _other_ca().server("standby", config["hosts"]["standby"]["address"])


def _other_ca():
    from lab.tls import CertificateAuthority  # pylint: disable=import-outside-toplevel

    return CertificateAuthority("a pasted wrong CA")


CERTIFICATE_FAULTS = {
    "signed by another CA": (
        _other_ca_signs_standby,
        "pg_replication:tls:hosts:standby:cert: is not signed by pg_replication:tls:ca_cert"
        " (issuer CN=a pasted wrong CA",
    ),
    "the key of another certificate": (
        lambda config, tls: tls["hosts"]["standby"].update(key=tls["hosts"]["master"]["key"]),
        "pg_replication:tls:hosts:standby:key: does not match its certificate (pg_replication:tls:hosts:standby:cert)",
    ),
    "another host's certificate": (
        lambda config, tls: tls["hosts"].update(standby=tls["hosts"]["master"]),
        f"pg_replication:tls:hosts:standby:cert: does not name {ADDRESSES['standby']} in subjectAltName",
    ),
}


@pytest.mark.parametrize("fault", CERTIFICATE_FAULTS)
def test_a_certificate_libpq_would_refuse_is_refused_at_render(plan_mod, config, lab_ca, fault):
    change, message = CERTIFICATE_FAULTS[fault]
    config = _with_tls(config, lab_ca)
    change(config, config["tls"])
    for minion in ("master", "standby", "backup"):  # every host's render fails: nothing runs anywhere
        with pytest.raises(plan_mod.PlanError, match=re.escape(message)):
            plan_mod.build(config, minion)


@pytest.mark.parametrize(
    ("valid", "purpose", "message"),
    [
        ((-10, -1), None, "pg_replication:tls:hosts:standby:cert: expired on "),
        ((1, 10), None, "pg_replication:tls:hosts:standby:cert: is not valid before "),
        ((-1, 7), "CLIENT_AUTH", "pg_replication:tls:hosts:standby:cert: extended key usage does not include"),
    ],
)  # fmt: skip
def test_a_certificate_out_of_date_or_for_clients_is_refused(plan_mod, config, lab_ca, valid, purpose, message):
    from cryptography.x509.oid import ExtendedKeyUsageOID  # pylint: disable=import-outside-toplevel

    config = _with_tls(config, lab_ca)
    purpose = getattr(ExtendedKeyUsageOID, purpose or "SERVER_AUTH")
    config["tls"]["hosts"]["standby"] = lab_ca.server("standby", ADDRESSES["standby"], valid=valid, purpose=purpose)
    with pytest.raises(plan_mod.PlanError, match=re.escape(message)):
        plan_mod.build(config, "master")


def test_a_certificate_near_its_expiry_warns(plan_mod, config, lab_ca):
    config = _with_tls(config, lab_ca)
    assert plan_mod.build(config, "master")["warnings"] == []
    config["tls"]["hosts"]["standby"] = lab_ca.server("standby", ADDRESSES["standby"], valid=(-1, 3.5))
    (warning,) = plan_mod.build(config, "master")["warnings"]
    assert warning.startswith("pg_replication:tls:hosts:standby:cert: expires on ")
    assert warning.endswith("in 3 day(s)")
    config["tls"]["expiry_warning_days"] = 2
    assert plan_mod.build(config, "master")["warnings"] == []


def test_tls_settings_are_the_formulas(plan_mod, config):
    config["settings"]["ssl"] = "on"
    with pytest.raises(
        plan_mod.PlanError,
        match=re.escape("pg_replication:settings:ssl: ssl is written by the formula; set pg_replication:tls"),
    ):
        plan_mod.build(config, "master")


CLOUD = {
    "destination": "s3://pg-backups/cluster1",
    "endpoint_url": "http://10.0.0.5:9000",
    "access_key_id": "AKIALAB0001",
    "secret_access_key": "lab/secret+key=",
}


def test_cloud_copy_runs_as_barman_hooks_with_credentials_from_a_file(plan_mod, config):
    config["barman"]["cloud"] = dict(CLOUD)
    plan = plan_mod.build(config, "backup")
    (server,) = plan["barman_servers"]
    common = (
        "env AWS_SHARED_CREDENTIALS_FILE=/var/lib/barman/.pg_replication-cloud-credentials"
        " AWS_DEFAULT_REGION=us-east-1 {tool}"
        " --cloud-provider aws-s3 --profile pg_replication --endpoint-url http://10.0.0.5:9000 --gzip"
        " s3://pg-backups/cluster1 master-streaming"
    )
    assert server["cloud_wal_script"] == common.format(tool="barman-cloud-wal-archive")
    hook = "/usr/local/lib/pg_replication/barman-cloud-backup-when-done "
    assert server["cloud_backup_script"] == hook + common.format(tool="barman-cloud-backup")
    assert plan["cloud_pkgs"] == ["barman-cli-cloud", "python3-boto3"]
    assert "lab/secret+key=" not in str(plan_mod.redact(plan))
    assert plan_mod.build(config, "standby")["cloud_pkgs"] == []  # restore_from_cloud is off


def test_the_stores_retention_runs_barman_cloud_backup_delete_only_when_asked(plan_mod, config):
    config["barman"]["cloud"] = dict(CLOUD)
    (server,) = plan_mod.build(config, "backup")["barman_servers"]
    assert server["cloud_retention_command"] is None  # null: the store keeps every copy
    config["barman"]["cloud"] = dict(CLOUD, retention_policy="RECOVERY WINDOW OF 4 WEEKS")
    plan = plan_mod.build(config, "backup")
    (server,) = plan["barman_servers"]
    assert server["cloud_retention_command"] == (
        "env AWS_SHARED_CREDENTIALS_FILE=/var/lib/barman/.pg_replication-cloud-credentials"
        " AWS_DEFAULT_REGION=us-east-1 barman-cloud-backup-delete --cloud-provider aws-s3 --profile"
        " pg_replication --endpoint-url http://10.0.0.5:9000 -r 'RECOVERY WINDOW OF 4 WEEKS'"
        " s3://pg-backups/cluster1 master-streaming"
    )
    assert plan["barman"]["cloud"]["retention_schedule"] == "0 5 * * *"
    config["barman"]["cloud"] = dict(CLOUD, retention_policy="REDUNDANCY 0; rm -rf /")
    with pytest.raises(Exception, match="pg_replication:barman:cloud:retention_policy"):
        plan_mod.build(config, "backup")


def test_restore_from_cloud_gives_standbys_a_restore_command(plan_mod, config):
    config["barman"]["cloud"] = dict(CLOUD, compression="none", region="eu-west-3")
    config["standby"]["restore_from_cloud"] = True
    standby = plan_mod.build(config, "standby")
    command = (
        "env AWS_SHARED_CREDENTIALS_FILE=/var/lib/postgresql/.pg_replication-cloud-credentials"
        " AWS_DEFAULT_REGION=eu-west-3"
        " barman-cloud-wal-restore --cloud-provider aws-s3 --profile pg_replication --endpoint-url"
        " http://10.0.0.5:9000 s3://pg-backups/cluster1 master-streaming %f %p"
    )
    assert standby["conf_settings"]["restore_command"] == command
    assert standby["cloud_pkgs"] == ["barman-cli-cloud", "python3-boto3"]
    primary = plan_mod.build(config, "master")
    assert "restore_command" not in primary["conf_settings"]
    assert primary["cloud_pkgs"] == standby["cloud_pkgs"]  # a switchover makes it a standby
    assert "--gzip" not in plan_mod.build(config, "backup")["barman_servers"][0]["cloud_wal_script"]


def test_a_bad_cloud_secret_is_named_not_quoted(plan_mod, config):
    config["barman"]["cloud"] = dict(CLOUD, secret_access_key="has space secret")
    with pytest.raises(plan_mod.PlanError) as exc:
        plan_mod.build(config, "backup")
    assert "pg_replication:barman:cloud:secret_access_key: is not a secret access key" in str(exc.value)
    assert "has space" not in str(exc.value)


def test_cloud_needs_barmans_package(plan_mod, config):
    config["barman"]["cloud"] = dict(CLOUD)
    config["barman"]["install"] = {"method": "pip", "venv": "/opt/barman", "link": "/usr/local/bin/barman"}
    with pytest.raises(plan_mod.PlanError, match="pg_replication:barman:cloud: needs pg_replication:barman:install"):
        plan_mod.build(config, "backup")


def test_barmans_pgpass_reaches_the_cluster_at_every_servers_address(plan_mod, config):
    """After a switchover Barman connects to the new primary before its own highstate has
    run: its .pgpass already names every server of the cluster."""
    plan = plan_mod.build(config, "backup")
    addresses = {line.split(":")[0] for line in plan["pgpass_lines"]}
    servers = {h["address"] for h in plan["hosts"].values() if h["role"] in ("primary", "standby")}
    assert servers <= addresses


def test_application_objects_reach_the_primarys_plan_and_hba_rules_every_server(plan_mod, config):
    master, standby = plan_mod.build(config, "master"), plan_mod.build(config, "standby")
    assert master["apps"]["databases"]["otus"]["owner"] == "otus"
    assert master["apps"]["databases"]["otus"]["lc_collate"] == "C.UTF-8"
    assert master["apps"]["roles"]["otus"]["has_password"] is True
    assert "password" not in str(master["apps"]).replace("has_password", "")
    rule = {"type": "host", "database": "otus", "user": "otus", "address": "192.168.11.0/24",
            "method": "scram-sha-256"}  # fmt: skip
    for plan in (master, standby):
        # The formula's own lines first: the application's rule cannot override them.
        assert plan["hba"][-1] == rule
        assert plan["hba"][0]["user"] == "postgres"
    assert "databases" not in master
    assert "roles" not in master


def test_a_hosts_own_settings_are_merged_over_the_clusters(plan_mod, config):
    config["hosts"]["standby"]["settings"] = {"work_mem": "64MB", "recovery_min_apply_delay": "1h"}
    standby, master = plan_mod.build(config, "standby"), plan_mod.build(config, "master")
    assert standby["conf_settings"]["work_mem"] == "64MB"
    assert standby["conf_settings"]["recovery_min_apply_delay"] == "1h"
    assert standby["conf_settings"]["shared_buffers"] == "128MB"
    assert master["conf_settings"]["work_mem"] == "4MB"
    assert "recovery_min_apply_delay" not in master["conf_settings"]


def test_a_delayed_standby_cannot_be_synchronous(plan_mod, config):
    config["hosts"]["standby"]["settings"] = {"recovery_min_apply_delay": "1h"}
    config["synchronous"] = {"method": "any", "count": 1, "standbys": ["standby"]}
    with pytest.raises(plan_mod.PlanError, match=r"pg_replication:synchronous:standbys:0: 'standby' is a delayed"):
        plan_mod.build(config, "master")
    config["hosts"]["standby"]["settings"] = {"recovery_min_apply_delay": 0}
    assert plan_mod.build(config, "master")["synchronous_standby_names"] == 'ANY 1 ("standby")'


def test_a_role_both_declared_and_absent_is_refused(plan_mod, config):
    config["absent"] = {"roles": ["otus"], "databases": ["otus"]}
    with pytest.raises(plan_mod.PlanError) as exc:
        plan_mod.build(config, "master")
    assert "pg_replication:roles:otus: otus is also in pg_replication:absent:roles" in str(exc.value)
    assert "pg_replication:databases:otus: otus is also in pg_replication:absent:databases" in str(exc.value)


def test_tls_makes_the_applications_host_rules_hostssl(plan_mod, config):
    rules = plan_mod.apps.hba(config, True, [])
    assert [r["type"] for r in rules] == ["hostssl"]


def test_automatic_failover_keeps_a_checkpoints_worth_of_wal_for_the_rewind(plan_mod, config):
    """ha:mode automatic: each server keeps max_wal_size of WAL (wal_keep_size), so that the
    fenced primary still has its WAL back to the checkpoint before the failover when the
    engine rewinds it; the pillar's own wal_keep_size (cluster or host) wins; manual mode
    and PostgreSQL 12 (no wal_keep_size) get nothing."""
    assert "wal_keep_size" not in plan_mod.build(config, "master")["settings"]
    config["ha"]["mode"] = "automatic"
    for host in ("master", "standby"):
        plan = plan_mod.build(config, host)
        assert plan["settings"]["wal_keep_size"] == config["settings"]["max_wal_size"]
        assert ("wal_keep_size", config["settings"]["max_wal_size"]) in plan["conf_settings"].items()
    config["hosts"]["standby"]["settings"] = {"wal_keep_size": "64MB"}
    assert plan_mod.build(config, "standby")["settings"]["wal_keep_size"] == "64MB"
    config["settings"]["wal_keep_size"] = "2GB"
    assert plan_mod.build(config, "master")["settings"]["wal_keep_size"] == "2GB"
    config["version"] = 12
    del config["settings"]["wal_keep_size"]
    assert "wal_keep_size" not in plan_mod.build(config, "master")["settings"]


def test_barman_keep_goes_to_its_server_and_needs_barman_2_14(plan_mod, config):
    config["barman"]["keep"] = {"20261207T101500": "full", "20261101T030000": "none"}
    secrets = {"password": "db2-barman-secret", "streaming_password": "db2-streaming-secret"}
    config["barman"]["servers"] = {"db2-streaming": dict(secrets, address="192.168.12.5")}
    servers = {s["name"]: s["keep"] for s in plan_mod.build(config, "backup")["barman_servers"]}
    assert servers == {"master-streaming": config["barman"]["keep"], "db2-streaming": {}}
    debian = {"os": "Debian", "init": "systemd"}
    plan_mod.build(config, "backup", grains=dict(debian, osmajorrelease=12))  # Barman 3.4
    with pytest.raises(Exception, match=r"pg_replication:barman:keep: needs Barman 2\.14\+ \(Debian 11 ships 2\.12\)"):
        plan_mod.build(dict(config, version=13), "backup", grains=dict(debian, osmajorrelease=11))


def test_incremental_schedule_takes_incremental_backups_of_servers_on_17_and_later(plan_mod, config):
    config["barman"]["incremental_schedule"] = "0 */6 * * *"
    (server,) = plan_mod.build(config, "backup")["barman_servers"]
    assert server["incremental"] is False  # PostgreSQL 15: full backups only
    assert "summarize_wal" not in plan_mod.build(config, "master")["conf_settings"]
    config["version"] = 17
    plan = plan_mod.build(config, "backup")
    (server,) = plan["barman_servers"]
    base = "/usr/bin/barman -c /etc/barman.conf -q backup"
    assert server["incremental_command"] == f"{base} --incremental latest master-streaming || {base} master-streaming"
    assert plan_mod.build(config, "master")["conf_settings"]["summarize_wal"] == "on"
    debian = {"os": "Debian", "init": "systemd", "osmajorrelease": 13}
    plan_mod.build(config, "backup", grains=debian)  # Barman 3.13
    message = r"pg_replication:barman:incremental_schedule: needs Barman 3\.11\+ \(Debian 12 ships 3\.4\)"
    with pytest.raises(Exception, match=message):
        plan_mod.build(dict(config, upstream_repo=True), "backup", grains=dict(debian, osmajorrelease=12))
    config["barman"]["backup_compression"] = "gzip"
    with pytest.raises(Exception, match="pg_replication:barman:backup_compression: incremental backups need none"):
        plan_mod.build(config, "backup")


def test_backup_from_a_standby_points_barmans_backups_at_it_and_its_wal_at_the_primary(plan_mod, config):
    """barman:backup_from: conninfo and streaming_conninfo reach the standby (pg_basebackup
    there); primary_conninfo, wal_conninfo and wal_streaming_conninfo the primary (its slot,
    its WAL switches); the backup marker is written on the primary either way."""
    primary = "host=192.168.11.101 port=5432 user=barman dbname=postgres"
    for wanted in ("primary", "master"):  # the default, and the primary named by its id
        config["barman"]["backup_from"] = wanted
        (server,) = plan_mod.build(config, "backup")["barman_servers"]
        assert (server["backup_standby"], server["conninfo"], server["marker_conninfo"]) == (None, primary, primary)
        assert "wal_conninfo" not in server
    config["barman"]["backup_from"] = "standby"  # the keyword: the first standby by id
    (server,) = plan_mod.build(config, "backup")["barman_servers"]
    assert server["backup_standby"] == "standby"
    assert server["conninfo"] == "host=192.168.11.102 port=5432 user=barman dbname=postgres"
    assert server["streaming_conninfo"] == "host=192.168.11.102 port=5432 user=barman_streaming"
    assert server["primary_conninfo"] == server["wal_conninfo"] == server["marker_conninfo"] == primary
    assert server["wal_streaming_conninfo"] == "host=192.168.11.101 port=5432 user=barman_streaming"
    # After a switchover: the keyword follows to the new standby; a named host that is the
    # primary now means backups from the primary.
    hosts = config["hosts"]
    hosts["master"]["role"], hosts["standby"]["role"] = "standby", "primary"
    config["barman"]["primary"] = None
    (server,) = plan_mod.build(config, "backup")["barman_servers"]
    assert (server["backup_standby"], server["conninfo"]) == ("master", primary)
    assert server["wal_conninfo"].startswith("host=192.168.11.102 ")
    config["barman"]["backup_from"] = "master"
    assert plan_mod.build(config, "backup")["barman_servers"][0]["backup_standby"] == "master"
    hosts["master"]["role"], hosts["standby"]["role"] = "primary", "standby"
    (server,) = plan_mod.build(config, "backup")["barman_servers"]
    assert (server["backup_standby"], server["conninfo"]) == (None, primary)


def test_backup_from_is_refused_at_render_where_it_cannot_work(plan_mod, config):
    key = "pg_replication:barman:backup_from"
    for wanted, message in (("backup", "'backup' is not primary, standby or a standby"),
                            ("nowhere", "'nowhere' is not primary, standby or a standby")):  # fmt: skip
        config["barman"]["backup_from"] = wanted
        with pytest.raises(Exception, match=f"{key}: {message}"):
            plan_mod.build(config, "backup")
    config["barman"]["backup_from"] = "standby"
    config["hosts"]["standby"]["settings"] = {"recovery_min_apply_delay": "1h"}
    with pytest.raises(Exception, match=f"{key}: standby, but no standby streams from master without a delay"):
        plan_mod.build(config, "backup")
    del config["hosts"]["standby"]["settings"]
    debian = {"os": "Debian", "init": "systemd"}
    plan_mod.build(dict(config, version=17), "backup", grains=dict(debian, osmajorrelease=13))  # Barman 3.13
    with pytest.raises(Exception, match=rf"{key}: needs Barman 3\.12\+ \(Debian 12 ships 3\.4\)"):
        plan_mod.build(config, "backup", grains=dict(debian, osmajorrelease=12))


def test_a_retired_barman_server_keeps_an_inactive_file_of_its_version(plan_mod, config):
    """barman:retired (upgrade_major's pillar change names the old server): its section is
    written like the cluster's own, for its version, with active = false; its name cannot be
    an active server's, and nothing else (checks, drills, metrics) sees it."""
    config["barman"].update(server_name="master-pg17", retired={"master-streaming": 15})
    config["version"] = 17
    plan = plan_mod.build(config, "backup")
    assert [s["name"] for s in plan["barman_servers"]] == ["master-pg17"]
    (retired,) = plan["barman"]["retired_servers"]
    assert (retired["name"], retired["version"], retired["retired"]) == ("master-streaming", 15, True)
    assert retired["bin_dir"] == "/usr/lib/postgresql/15/bin"
    assert retired["description"] == "retired: PostgreSQL 15 backups of master, kept for restores"
    config["barman"]["retired"] = {"master-pg17": 15}
    with pytest.raises(Exception, match=r"pg_replication:barman:retired:master-pg17: 'master-pg17' is an active"):
        plan_mod.build(config, "backup")
    config["barman"]["retired"] = {"old": 9}
    with pytest.raises(Exception, match=r"pg_replication:barman:retired:old: "):
        plan_mod.build(config, "backup")
