"""A real salt-master applies the highstate to a primary and a streaming standby."""

import time

import pytest

from lab.results import changed_states, state_errors
from lab.scenario import row_on_standby, wait_for

pytestmark = pytest.mark.integration
LAB_IMAGE = ("bookworm", "provisioned")


@pytest.fixture(scope="module")
def converged(replication_lab):
    ret = replication_lab.highstate()
    assert ret.returncode == 0, ret.stdout[-5000:]
    assert state_errors(ret.data) == {}
    return replication_lab


def test_standby_streams_on_its_slot(converged):
    master = converged.lab["master"]
    rows = master.psql(
        "SELECT r.state || ' ' || s.slot_name || ' ' || s.active FROM pg_stat_replication r"
        " JOIN pg_replication_slots s ON s.active_pid = r.pid"
        f" WHERE r.client_addr = '{converged.lab['standby'].address}'"
    )
    assert rows == "streaming standby_slot true"
    assert converged.lab["standby"].psql("SELECT pg_is_in_recovery()") == "t"
    assert master.psql("SELECT pg_is_in_recovery()") == "f"


def test_row_inserted_on_primary_is_read_on_standby(converged):
    token = f"row-{time.time_ns()}"
    assert row_on_standby(converged, token, timeout=10) == token


def test_second_highstate_changes_nothing(converged):
    ret = converged.highstate()
    assert ret.returncode == 0
    assert changed_states(ret.data) == {}


def test_test_mode_predicts_no_change(converged):
    ret = converged.salt("state.apply", "test=True")
    assert ret.returncode == 0
    assert changed_states(ret.data) == {}


def test_pillar_setting_is_applied_by_reload(converged):
    master, standby = converged.lab["master"], converged.lab["standby"]
    pid_before = {h.name: h.psql("SELECT pg_postmaster_start_time()") for h in (master, standby)}
    pillar = dict(converged.pillar, settings={"work_mem": "7MB"})
    converged.set_pillar(pillar)
    ret = converged.highstate()
    assert ret.returncode == 0, ret.stdout[-3000:]
    for host in (master, standby):
        assert host.psql("SHOW work_mem") == "7MB"
        # reloaded, not restarted
        assert host.psql("SELECT pg_postmaster_start_time()") == pid_before[host.name]
        changes = ret.data[host.name]
        assert any(r["changes"] for sid, r in changes.items() if "postgresql.conf" in sid)
    assert wait_for(lambda: master.psql("SELECT state FROM pg_stat_replication") == "streaming")
    # and the cluster is converged again
    assert changed_states(converged.highstate().data) == {}


def test_invalid_pillar_fails_before_any_change(converged):
    good = converged.pillar
    bad = dict(good, hosts=dict(good["hosts"], standby=dict(good["hosts"]["standby"], address="10.0.0.300")))
    conf = "/etc/postgresql/15/main/postgresql.conf"
    before = {h: converged.lab[h].run(["stat", "-c", "%Y", conf]).stdout for h in ("master", "standby")}
    converged.set_pillar(bad)
    try:
        ret = converged.highstate()
        assert ret.returncode != 0
        for host in ("master", "standby"):
            assert "pg_replication:hosts:standby:address" in str(ret.data[host])
            assert converged.lab[host].run(["stat", "-c", "%Y", conf]).stdout == before[host]
    finally:
        converged.set_pillar(good)
    assert changed_states(converged.highstate().data) == {}


def test_no_password_in_minion_debug_logs_or_returns(converged):
    ret = converged.highstate()
    password = converged.pillar["replication"]["password"]
    assert password not in ret.stdout
    for name in converged.lab.hosts:
        log = converged.minion_log(name)
        assert "pg_replication" in log
        assert password not in log
    for fun in ("state.show_sls", "state.show_lowstate"):
        shown = converged.salt(fun, *(["pg_replication"] if fun.endswith("sls") else []), timeout=120)
        assert shown.returncode == 0
        assert "pg_replication:replication:password" in shown.stdout  # the key, not the secret
        assert password not in shown.stdout
    pgpass = converged.lab["standby"].run(["stat", "-c", "%a %U", "/var/lib/postgresql/.pgpass"]).stdout.strip()
    assert pgpass == "600 postgres"
