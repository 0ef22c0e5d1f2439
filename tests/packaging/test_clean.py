"""The clean states render for each role on each OS family, and remove only the formula's
own files: never a data directory, Barman's home or anything under them but the formula's
configuration files."""

import pytest

ROLES = {"master": "primary", "standby": "standby", "backup": "barman"}
FORMULA_FILES = {"postgresql.conf", "pg_hba.conf", "pg_ident.conf", "pg_replication-ca.crt",
                 "pg_replication-server.crt", "pg_replication-server.key"}  # fmt: skip


def removed(rendering):
    """Every path a file.absent of the rendering removes."""
    paths = []
    for state_id in rendering.states:
        for function, args in rendering.state(state_id).items():
            if function == "file.absent":
                paths += [next(iter(n)) if isinstance(n, dict) else n for n in args.get("names", [])]
                paths += [args["name"]] if "name" in args else []
    return [str(p) for p in paths]


@pytest.mark.parametrize("os_family", ["Debian", "RedHat"])
@pytest.mark.parametrize("minion_id", sorted(ROLES))
def test_clean_removes_only_the_formulas_files(formula, example_pillar, minion_id, os_family):
    rendering = formula(minion_id, example_pillar, os_family, sls="pg_replication.clean")
    paths = removed(rendering)
    assert paths
    data_dir = "/var/lib/postgresql/15/main" if os_family == "Debian" else "/var/lib/pgsql/15/data"
    protected = (data_dir, "/var/lib/barman", "/var/lib/postgresql", "/var/lib/pgsql", "/")
    for path in paths:
        assert path not in protected, path
        if path.startswith(data_dir + "/"):
            assert path.rsplit("/", 1)[1] in FORMULA_FILES, path  # RedHat keeps them there
        if path.startswith("/var/lib/barman/"):
            # .pgpass, and the restore drills' configuration (their results stay)
            assert path in ("/var/lib/barman/.pgpass", "/var/lib/barman/pg_replication-drill/drill.json"), path
    functions = {f for state_id in rendering.states for f in rendering.state(state_id)}
    if ROLES[minion_id] == "barman":
        # The formula's own cron file; the package's only if it holds what the formula once
        # wrote there.
        assert "/etc/cron.d/pg_replication-barman" in paths
        legacy = rendering.args("pg_replication-barman-cron-legacy-clean")
        assert legacy["name"] == "/etc/cron.d/barman"
        assert legacy["onlyif"] == [{"fun": "file.contains", "path": "/etc/cron.d/barman",
                                     "text": "Managed by Salt (pg_replication)"}]  # fmt: skip
        restore = "pg_replication-barman-package-files-clean"
        assert (restore in rendering.states) == (os_family == "Debian")
        assert "barman.receive_wal_stopped" in functions
    else:
        assert "service.dead" in functions
        assert f"{data_dir}/PG_VERSION" not in paths


@pytest.mark.parametrize("os_family", ["Debian", "RedHat"])
def test_clean_removes_the_tls_files_it_wrote(formula, example_pillar, os_family):
    from lab.tls import CertificateAuthority  # pylint: disable=import-outside-toplevel

    ca = CertificateAuthority()
    hosts = example_pillar["hosts"]
    tls = {"ca_cert": ca.pem, "hosts": {h: ca.server(h, hosts[h]["address"]) for h in ("master", "standby")}}
    rendering = formula("standby", dict(example_pillar, tls=tls), os_family, sls="pg_replication.clean")
    conf_dir = "/etc/postgresql/15/main" if os_family == "Debian" else "/var/lib/pgsql/15/data"
    want = {f"{conf_dir}/{name}" for name in FORMULA_FILES - {"postgresql.conf", "pg_hba.conf", "pg_ident.conf"}}
    assert want | {"/etc/pg_replication"} <= set(removed(rendering))


def test_a_certificate_near_its_expiry_is_a_warning_that_changes_nothing(formula, example_pillar):
    from lab.tls import CertificateAuthority  # pylint: disable=import-outside-toplevel

    ca, hosts = CertificateAuthority(), example_pillar["hosts"]
    tls = {"ca_cert": ca.pem, "hosts": {h: ca.server(h, hosts[h]["address"]) for h in ("master", "standby")}}
    assert "pg_replication-tls-warnings" not in formula("master", dict(example_pillar, tls=tls)).states
    tls["hosts"]["standby"] = ca.server("standby", hosts["standby"]["address"], valid=(-1, 10))
    args = formula("master", dict(example_pillar, tls=tls)).args("pg_replication-tls-warnings")
    assert args["changes"] is False
    (warning,) = args["warnings"]
    assert warning.startswith("pg_replication:tls:hosts:standby:cert: expires on ")


@pytest.mark.parametrize("os_family", ["Debian", "RedHat"])
def test_clean_drops_the_vip_and_its_stop_hook_on_a_server(formula, example_pillar, os_family):
    """pillar.example's vip: every server's clean makes sure it no longer holds it (after
    PostgreSQL stopped) and removes the ExecStopPost script and drop-in."""
    for minion_id in ("master", "standby"):
        rendering = formula(minion_id, example_pillar, os_family, sls="pg_replication.clean", init="systemd")
        vip = rendering.state("pg_replication-vip-clean")["pg_replication.vip"]
        assert (vip["name"], vip["present"]) == (example_pillar["vip"], False)
        assert vip["require"] == [{"service": "pg_replication-service-clean"}]
        paths = removed(rendering)
        assert "/usr/local/lib/pg_replication/vip-drop" in paths
        assert any(p.endswith(".service.d/pg_replication-vip.conf") for p in paths)
        assert "pg_replication-vip-systemd-reload-clean" in rendering.states
    without = formula("master", dict(example_pillar, vip=None), os_family, sls="pg_replication.clean")
    assert "pg_replication-vip-clean" not in without.states


def test_clean_stops_pgbouncer_and_removes_its_files_beside_barman(formula, example_pillar):
    """pillar.example's pooler runs on the backup host: its clean stops PgBouncer too and
    removes what the formula wrote (the auth file holds the lookup role's password); the
    package's ini only while it holds the formula's content."""
    rendering = formula("backup", example_pillar, sls="pg_replication.clean")
    service = rendering.args("pg_replication-pooler-service-clean")
    assert (service["name"], service["enable"]) == ("pgbouncer", False)
    paths = removed(rendering)
    for name in ("userlist.txt", "pg_replication_hba.conf", "pg_replication_listen.ini"):
        assert f"/etc/pgbouncer/{name}" in paths
    ini = rendering.args("pg_replication-pooler-ini-clean")
    assert ini["onlyif"] == [{"fun": "file.contains", "path": "/etc/pgbouncer/pgbouncer.ini",
                              "text": "Managed by Salt (pg_replication)"}]  # fmt: skip
    assert "pg_replication-barman-config-clean" in rendering.states  # Barman's clean too
    barman_files = ("/var/lib/barman/.pgpass", "/var/lib/barman/pg_replication-drill/drill.json")
    assert not any(p.startswith("/var/lib/barman/") and p not in barman_files for p in paths)
    assert (
        "pg_replication-pooler-service-clean"
        not in formula("master", example_pillar, sls="pg_replication.clean").states
    )


def test_clean_takes_back_the_ssh_link_of_restore_from_barman(formula, example_pillar):
    pillar = dict(example_pillar, standby=dict(example_pillar["standby"], restore_from_barman=True))
    standby = formula("standby", pillar, "Debian", sls="pg_replication.clean")
    key = "/var/lib/postgresql/.ssh/id_ed25519"
    assert {key, key + ".pub"} <= set(removed(standby))
    known = standby.state("pg_replication-ssh-barman-host-clean")["ssh_known_hosts.absent"]
    assert (known["name"], known["user"]) == ("192.168.11.103", "postgres")
    backup = formula("backup", pillar, "Debian", sls="pg_replication.clean")
    assert "/usr/local/lib/pg_replication/barman-forced-command" in removed(backup)
    clients = backup.state("pg_replication-barman-ssh-clients-clean")["pg_replication.ssh_clients_authorized"]
    assert (clients["name"], clients["clients"]) == ("barman", [])
