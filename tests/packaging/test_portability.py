"""The formula rendered for the Debian and RedHat families and PostgreSQL 11 to 17:
versioned paths, package and service names, and the standby configuration style."""

import sys

import pytest

FAMILIES = ("Debian", "RedHat")
VERSIONS = (11, 12, 13, 14, 15, 16, 17)


def expected(family, version):
    if family == "Debian":
        return {
            "pkgs": [f"postgresql-{version}", f"postgresql-client-{version}"],
            "service": "postgresql",
            "bin_dir": f"/usr/lib/postgresql/{version}/bin",
            "data_dir": f"/var/lib/postgresql/{version}/main",
            "conf_dir": f"/etc/postgresql/{version}/main",
            "home": "/var/lib/postgresql",
        }
    return {
        "pkgs": [f"postgresql{version}-server", f"postgresql{version}"],
        "service": f"postgresql-{version}",
        "bin_dir": f"/usr/pgsql-{version}/bin",
        "data_dir": f"/var/lib/pgsql/{version}/data",
        "conf_dir": f"/var/lib/pgsql/{version}/data",
        "home": "/var/lib/pgsql",
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_primary(formula, example_pillar, family, version):
    want = expected(family, version)
    primary = formula("master", dict(example_pillar, version=version), family)
    assert primary.args("pg_replication-packages")["pkgs"] == want["pkgs"]
    assert primary.args("pg_replication-service")["name"] == want["service"]
    initdb = primary.args("pg_replication-initdb")
    assert initdb["initdb"].startswith(f"{want['bin_dir']}/initdb -D {want['data_dir']} ")
    assert initdb["name"] == want["data_dir"]
    assert primary.args("pg_replication-config-postgresql.conf")["name"] == f"{want['conf_dir']}/postgresql.conf"
    assert ("pg_replication-config-start.conf" in primary.states) == (family == "Debian")
    assert ("pg_replication-createcluster-conf" in primary.states) == (family == "Debian")
    grants = primary.args("pg_replication-barman-role")["execute"]
    backup_start = "pg_backup_start(text, boolean)" if version >= 15 else "pg_start_backup(text, boolean, boolean)"
    assert backup_start in grants
    conf = primary.template("server/files/postgresql.conf.jinja")
    assert f"cluster_name = '{version}/main'" in conf
    assert ("max_slot_wal_keep_size" in conf) == (version >= 13)
    assert "primary_conninfo" not in conf


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_standby_configuration_style(formula, example_pillar, family, version):
    want = expected(family, version)
    standby = formula("standby", dict(example_pillar, version=version), family)
    bootstrap = standby.args("pg_replication-standby-bootstrap")
    assert (bootstrap["name"], bootstrap["version"], bootstrap["bin_dir"]) == (
        want["data_dir"],
        version,
        want["bin_dir"],
    )
    assert bootstrap["passfile"] == f"{want['home']}/.pgpass"
    conf = standby.template("server/files/postgresql.conf.jinja")
    if version >= 12:
        # standby.signal (written by the bootstrap) + primary_conninfo in postgresql.conf
        assert "pg_replication-config-recovery.conf" not in standby.states
        assert "primary_conninfo = 'host=192.168.11.101 port=5432 user=replicator" in conf
        assert "primary_slot_name = 'standby_slot'" in conf
    else:
        assert standby.args("pg_replication-config-recovery.conf")["name"] == f"{want['data_dir']}/recovery.conf"
        assert "primary_conninfo" not in conf
        recovery = standby.template("server/files/recovery.conf.jinja")
        assert "standby_mode = 'on'" in recovery
        assert "primary_slot_name = 'standby_slot'" in recovery


@pytest.mark.parametrize("version", [12, 15, 17])
@pytest.mark.parametrize("family", FAMILIES)
def test_barman_host(formula, example_pillar, family, version):
    want = expected(family, version)
    backup = formula("backup", dict(example_pillar, version=version), family)
    assert backup.args("pg_replication-barman-packages")["pkgs"] == ["barman", "barman-cli", want["pkgs"][1]]
    server = backup.template("barman/files/server.conf.jinja", server_name="master-streaming")
    assert f"path_prefix = {want['bin_dir']}" in server
    assert "backup_method = postgres" in server
    assert "streaming_archiver = on" in server
    assert "slot_name = barman_slot" in server
    assert "password" not in server.lower()
    assert "\ncompression = gzip\n" in server  # WAL compression, the default
    assert "backup_compression" not in server


@pytest.mark.parametrize("family", FAMILIES)
def test_barman_compressions_reach_the_server_file_and_their_tools_are_installed(formula, example_pillar, family):
    barman = dict(example_pillar["barman"], compression="bzip2", backup_compression="zstd")
    backup = formula("backup", dict(example_pillar, version=16, barman=barman), family)
    pkgs = backup.args("pg_replication-barman-packages")["pkgs"]
    assert {"bzip2", "zstd"} <= set(pkgs)
    server = backup.template("barman/files/server.conf.jinja", server_name="master-streaming")
    assert "\ncompression = bzip2\nbackup_compression = zstd\nbackup_compression_format = tar\n" in server
    assert "\nrecovery_staging_path = /var/lib/barman/recovery-staging\n" in server  # barman recover unpacks there
    barman = dict(example_pillar["barman"], compression="none", backup_compression="none")
    backup = formula("backup", dict(example_pillar, version=16, barman=barman), family)
    assert "compression" not in backup.template("barman/files/server.conf.jinja", server_name="master-streaming")
    assert not {"bzip2", "zstd", "lz4", "pigz"} & set(backup.args("pg_replication-barman-packages")["pkgs"])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("init", ["systemd", "sysvinit"])
def test_service_name_follows_the_init_system(formula, example_pillar, family, init):
    primary = formula("master", dict(example_pillar, version=16), family, init=init)
    names = {
        ("Debian", "systemd"): "postgresql@16-main",  # the cluster's unit, not the umbrella
        ("Debian", "sysvinit"): "postgresql",  # /etc/init.d/postgresql starts every cluster
        ("RedHat", "systemd"): "postgresql-16",
        ("RedHat", "sysvinit"): "postgresql-16",
    }
    name = names[family, init]
    assert primary.args("pg_replication-service")["name"] == name
    assert primary.args("pg_replication-restart-if-pending")["name"] == name
    standby = formula("standby", dict(example_pillar, version=16), family, init=init)
    assert standby.args("pg_replication-standby-bootstrap")["service"] == name


@pytest.mark.parametrize("family", FAMILIES)
def test_upstream_repo(formula, example_pillar, family):
    default = formula("master", dict(example_pillar, version=16), family)
    assert "test.nop" in default.state("pg_replication-upstream-repo")
    upstream = formula("master", dict(example_pillar, version=16, upstream_repo=True), family)
    repo = upstream.args("pg_replication-upstream-repo")
    if family == "Debian":
        assert repo["name"].startswith("deb [signed-by=/usr/share/keyrings/pgdg.asc] https://apt.postgresql.org/")
        assert repo["name"].endswith("-pgdg main")
    else:
        assert repo["baseurl"] == "https://download.postgresql.org/pub/repos/yum/16/redhat/rhel-$releasever-$basearch"
        assert "pg_replication-disable-postgresql-module" in upstream.states
    assert {"sls": "pg_replication.repo"} in upstream.args("pg_replication-packages")["require"]


@pytest.mark.parametrize(
    ("python", "expected"),
    [
        (
            "/usr/bin/python3",
            {
                "pkg.installed": {
                    "name": "python3-psycopg2",
                    "reload_modules": True,
                }
            },
        ),
        (
            "/opt/saltstack/salt/bin/python3.10",
            {
                "pip.installed": {
                    "name": "psycopg2-binary",
                    "bin_env": "/opt/saltstack/salt/bin/python3.10",
                    "reload_modules": True,
                }
            },
        ),
    ],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_psycopg2_goes_where_salt_runs(formula, example_pillar, family, python, expected):
    for minion in ("master", "standby", "backup"):
        rendering = formula(minion, example_pillar, family, pythonexecutable=python)
        state = rendering.state("pg_replication-salt-psycopg2")
        assert {f: {k: v for k, v in args.items() if k != "order"} for f, args in state.items()} == expected


def test_psycopg2_already_in_salts_python_is_a_nop(formula, example_pillar):
    """The test's own Python imports psycopg2: decided at render, no pip or pkg state (and
    no unless) on a re-apply."""
    state = formula("master", example_pillar).state("pg_replication-salt-psycopg2")
    assert list(state) == ["test.nop"]
    assert state["test.nop"]["name"] == f"psycopg2 imports in {sys.executable}"


def test_a_version_the_release_does_not_ship_fails_at_render_unless_upstream(formula, example_pillar):
    assert formula("master", dict(example_pillar, version=15), release=12).args("pg_replication-packages")
    with pytest.raises(AssertionError, match="pg_replication:version: Debian 12 ships PostgreSQL 15, not 16"):
        formula("master", dict(example_pillar, version=16), release=12)
    upstream = formula("master", dict(example_pillar, version=16, upstream_repo=True), release=12)
    assert upstream.args("pg_replication-packages")["pkgs"] == ["postgresql-16", "postgresql-client-16"]


@pytest.mark.parametrize("minion_id", ["master", "standby", "backup"])
def test_no_secret_in_the_rendered_states(formula, example_pillar, minion_id):
    """What state.show_sls / show_lowstate / the job's arguments hold: pillar keys, never a
    password (the roles read theirs with password_pillar, .pgpass files are templates)."""
    rendering = formula(minion_id, example_pillar)
    rendered = str(rendering.states)
    for key in ("password", "streaming_password"):
        assert example_pillar["barman"][key] not in rendered
    assert example_pillar["replication"]["password"] not in rendered
    if minion_id == "master":
        role = rendering.args("pg_replication-replication-role")
        assert role["password_pillar"] == "pg_replication:replication:password"
        assert "password" not in role
