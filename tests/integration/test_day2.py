"""One lab of a primary, two standbys and a Barman host, operated from the salt-master.

First the replication basics (streaming on slots, idempotency, reloads, secrets), then
day-2 operations (issue #9) through the runners, with a client committing rows throughout:
a switchover, each preflight refusal, failover with the primary killed and cut off,
the old primary refused by its highstate and rejoined with pg_rewind. "Nothing lost" is
counted: every id whose COMMIT returned must be on the new primary."""

import concurrent.futures
import contextlib
import copy
import json
import pathlib
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from lab.booted import REPO_PORT, RepoServer
from lab.events import MasterEvents, engine_watching, ha_state
from lab.hosts import Lab
from lab.results import changed_states, state_errors
from lab.salt import SaltLab, reference_pillar
from lab.scenario import (
    SERVER,
    VipProbe,
    WritableProbe,
    Writer,
    apply_pillar_change,
    barman,
    cluster_status,
    converge,
    following,
    restore_check,
    row_on_standby,
    vip_holders,
    wait_for,
)
from lab.tls import tls_pillar

pytestmark = pytest.mark.integration
LAB_IMAGE = ("bookworm", "provisioned")
LAB_HOSTS = ("master", "standby", "standby2", "backup")
ROLES = {"master": "primary", "standby": "standby", "standby2": "standby", "backup": "barman"}
SERVERS = ("master", "standby", "standby2")
WRITER_PASSWORD = secrets.token_urlsafe(18)
# Issue #29: the VIP the primary holds and PgBouncer on the backup host; clients that reach
# the primary only through one of them.
POOLER = {"hosts": ["backup"], "auth_password": secrets.token_urlsafe(18)}
POOLER_PORT = 6432
# The longest a client through PgBouncer may wait through a switchover of the idle cluster.
# The goal is 3 s, met in CI runs (1.2-1.7 s seen); with three other labs on the same
# 2 cores the switchover took 219 s and the pause 10.9 s: the bound asserted leaves room for
# that, and still fails a PAUSE held up to its timeout or a pause spanning the rejoin.
PAUSE_GOAL, PAUSE_BOUND = 3.0, 15.0
# Per server: in recovery, postmaster start, slots, a primary's timeline (its current WAL
# file's; a standby's control file moves to a new timeline at its next restartpoint, on its
# own); the formula's files.
SNAPSHOT_SCRIPT = r"""
runuser -u postgres -- psql -XAtq -c "SELECT pg_is_in_recovery(), pg_postmaster_start_time(),
  (SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots),
  CASE WHEN NOT pg_is_in_recovery() THEN substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END"
sha256sum /etc/postgresql/15/main/*.conf /var/lib/postgresql/.pgpass
ls /var/lib/postgresql/15/main/standby.signal 2>/dev/null
true
"""


@pytest.fixture(scope="module")
def cluster(salt_factories, lab: Lab):
    # Barman's primary named explicitly, its server name left to the default: a switchover's
    # pillar change must move the one and keep the other.
    # Retention keeps every backup of the module: the WAL archive test restores the oldest
    # (timeline 1) after later tests took more, and barman cron runs every minute.
    barman_pillar = {"primary": "master", "server_name": None, "retention_policy": "REDUNDANCY 10"}
    pillar = reference_pillar(lab, roles=ROLES, barman=barman_pillar, vip=str(lab.network.network_address + 100),
                              pooler=POOLER)  # fmt: skip
    # Issue #28: the master runs the formula's HA engine (manual until a test sets ha:mode).
    salt_lab = SaltLab(salt_factories, lab, pillar, engines=[{"pg_replication_ha": {}}])
    with salt_lab.started():
        converge(salt_lab)
        Writer.prepare(lab["master"], WRITER_PASSWORD)
        yield salt_lab


@pytest.fixture(autouse=True)
def no_host_left_cut_off(cluster):
    """A test that fails while a host's link is down must not leave it so: every later test
    would wait out its salt timeouts for that minion (16 minutes a highstate)."""
    yield
    cut = [h for h in LAB_HOSTS if "UP" not in link_flags(cluster.lab[h])]
    for host in cut:
        cluster.lab[host].run(["ip", "link", "set", "eth0", "up"])
        cluster.lab[host].run(["systemctl", "restart", "salt-minion"])
    if cut:
        cluster.wait_for_minions(120)


def link_flags(host):
    """The flags of ``host``'s eth0 (``UP`` when its link is up)."""
    out = host.run(["ip", "-o", "link", "show", "eth0"]).stdout
    return out.partition("<")[2].partition(">")[0].split(",")


def snapshot(salt_lab):
    return {name: salt_lab.lab[name].run(["sh", "-c", SNAPSHOT_SCRIPT]).stdout for name in SERVERS}


def writer(salt_lab):
    return Writer([salt_lab.lab[h].address for h in SERVERS], WRITER_PASSWORD).start()


def routed_writers(salt_lab, w):
    """Two more clients beside ``w``: one through PgBouncer only, one through the VIP only
    (ids of their own), and a probe of who holds the VIP."""
    lab, vip = salt_lab.lab, salt_lab.pillar["vip"]
    pooled = Writer([lab["backup"].address], WRITER_PASSWORD, port=POOLER_PORT, start_id=w.start_id + 10**8)
    via_vip = Writer([vip], WRITER_PASSWORD, start_id=w.start_id + 2 * 10**8)
    return pooled.start(), via_vip.start(), VipProbe([lab[h] for h in LAB_HOSTS], vip).start()


def connect(host, port=5432):
    import psycopg2  # pylint: disable=import-outside-toplevel

    return psycopg2.connect(host=host, port=port, user="writer", password=WRITER_PASSWORD, dbname="otus",
                            connect_timeout=5)  # fmt: skip


def server_behind(host, port=5432):
    """(the address of the server a client of ``host``:``port`` reaches, whether it is a standby)."""
    with connect(host, port) as conn, conn.cursor() as cur:
        cur.execute("SELECT host(inet_server_addr()), pg_is_in_recovery()")
        return cur.fetchone()


def assert_follows(salt_lab, primary, timeline):
    members = following(salt_lab, primary, SERVERS)
    assert members, f"not every member follows {primary}"
    assert {members[h]["timeline"] for h in SERVERS} == {timeline}
    assert members["backup"]["barman_check"] == {SERVER: "all OK"}


# --------------------------------------------------------------------------- basics


def test_standbys_stream_on_their_slots(cluster):
    rows = cluster.lab["master"].psql(
        "SELECT string_agg(r.application_name || '@' || host(r.client_addr) || ':' || s.slot_name, ','"
        "                  ORDER BY s.slot_name)"
        " FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.state = 'streaming'"
    )
    lab = cluster.lab
    assert rows == (
        f"barman_receive_wal@{lab['backup'].address}:barman_slot,standby2@{lab['standby2'].address}:standby2_slot,"
        f"standby@{lab['standby'].address}:standby_slot"
    )


def test_row_inserted_on_primary_is_read_on_standby(cluster):
    token = f"row-{time.time_ns()}"
    assert row_on_standby(cluster, token, timeout=10) == token


def test_the_primary_holds_the_vip_and_pgbouncer_logs_clients_in_with_scram(cluster):
    """The VIP on the primary only; a client through PgBouncer (SCRAM via auth_query) and
    one through the VIP both reach the primary; the lookup function runs as its owner for the
    lookup role only; cluster_status gives the way in of each."""
    lab, vip = cluster.lab, cluster.pillar["vip"]
    assert vip_holders(cluster, vip) == ["master"]
    assert server_behind(vip) == (vip, False)
    assert server_behind(lab["backup"].address, POOLER_PORT) == (lab["master"].address, False)
    grants = lab["master"].psql(
        "SELECT p.prosecdef, pg_get_userbyid(p.proowner), has_function_privilege('public', p.oid, 'EXECUTE'),"
        " has_function_privilege('pgbouncer_auth', p.oid, 'EXECUTE') FROM pg_proc p"
        " WHERE p.oid = 'pgbouncer_lookup.lookup(text)'::regprocedure", dbname="otus",
    )  # fmt: skip
    assert grants == "t|postgres|f|t"
    assert lab["backup"].run(["stat", "-c", "%a %U %G", "/etc/pgbouncer/userlist.txt"]).stdout.strip() == (
        "640 root postgres"
    )
    connect_strings = cluster.run("pg_replication.cluster_status").data["connect"]
    servers = ",".join(lab[h].address for h in SERVERS)
    assert connect_strings["vip"] == f"host={vip} port=5432 dbname=DBNAME user=USER"
    assert connect_strings["poolers"] == {"backup": f"host={lab['backup'].address} port=6432 dbname=DBNAME user=USER"}
    assert f"host='{servers}'" in connect_strings["multi_host"]
    assert "target_session_attrs=read-write" in connect_strings["multi_host"]


def test_test_mode_predicts_the_vip_and_pooler_changes_exactly(cluster):
    """The VIP gone from the primary and a new pool size: test=True predicts exactly the
    states the real highstate then changes; back to the pillar, nothing changes."""
    lab, vip, good = cluster.lab, cluster.pillar["vip"], cluster.pillar
    prefix = lab.network.prefixlen
    lab["master"].run(["ip", "addr", "del", f"{vip}/{prefix}", "dev", "eth0"])
    cluster.set_pillar(dict(good, pooler=dict(good["pooler"], default_pool_size=7)))
    try:
        predicted = changed_states(cluster.highstate("test=True").data)
        applied = changed_states(cluster.highstate().data)
    finally:
        cluster.set_pillar(good)
    print(json.dumps({"predicted": predicted, "applied": applied}, indent=1, default=str))
    assert {m: sorted(s) for m, s in predicted.items()} == {m: sorted(s) for m, s in applied.items()}
    assert any("pg_replication-vip" in sid for sid in predicted["master"])
    assert any("pg_replication-pooler-ini" in sid for sid in predicted["backup"])
    assert vip_holders(cluster, vip) == ["master"]
    assert "default_pool_size = 7" in lab["backup"].run(["cat", "/etc/pgbouncer/pgbouncer.ini"]).stdout
    ret = cluster.highstate()  # back to the pillar's pool size
    assert state_errors(ret.data) == {}
    # (the next test's test=True on the converged cluster asserts that nothing is left to change)


def test_test_mode_on_the_converged_cluster_predicts_no_change_with_an_address_from_the_mine(cluster):
    """test=True on the converged cluster predicts no change, with standby2's address left
    out of the pillar and pillar.example's mine_functions given: after mine.update, every
    host plans the same cluster from the Salt mine. (A second real highstate with no change
    is asserted after each operation below.)"""
    good = cluster.pillar
    pillar = copy.deepcopy(good)
    del pillar["hosts"]["standby2"]["address"]
    mine = {"pg_replication_address": {"mine_function": "network.ip_addrs", "cidr": str(cluster.lab.network)}}
    cluster.set_pillar(pillar, extra={"mine_functions": mine})
    try:
        assert cluster.salt("saltutil.refresh_pillar", "wait=True").returncode == 0
        assert cluster.salt("mine.update").returncode == 0
        seen = cluster.call("mine.get", "standby2", "pg_replication_address", target="master")
        assert seen["master"]["ret"] == {"standby2": [cluster.lab["standby2"].address]}
        predicted = cluster.highstate("test=True")
        assert predicted.returncode == 0, predicted.stdout[-3000:]
        assert changed_states(predicted.data) == {}
    finally:
        cluster.set_pillar(good)


def test_pillar_setting_is_applied_by_reload(cluster):
    started = {h: cluster.lab[h].psql("SELECT pg_postmaster_start_time()") for h in SERVERS}
    good = cluster.pillar
    cluster.set_pillar(dict(good, settings={"work_mem": "7MB"}))
    try:
        ret = cluster.highstate()
        assert ret.returncode == 0, ret.stdout[-3000:]
        for host in SERVERS:
            assert cluster.lab[host].psql("SHOW work_mem") == "7MB"
            assert cluster.lab[host].psql("SELECT pg_postmaster_start_time()") == started[host]  # reloaded only
    finally:
        cluster.set_pillar(good)
    ret = cluster.highstate()  # back to the reference pillar, by reload again
    assert state_errors(ret.data) == {}
    assert {cluster.lab[h].psql("SHOW work_mem") for h in SERVERS} == {"4MB"}


def test_no_password_in_minion_debug_logs_or_returns(cluster):
    ret = cluster.highstate()
    password = cluster.pillar["replication"]["password"]
    assert password not in ret.stdout
    for name in cluster.lab.hosts:
        log = cluster.minion_log(name)
        assert "pg_replication" in log
        assert password not in log
    for fun in ("state.show_sls", "state.show_lowstate"):
        shown = cluster.salt(fun, *(["pg_replication"] if fun.endswith("sls") else []), timeout=120)
        assert shown.returncode == 0
        assert "pg_replication:replication:password" in shown.stdout  # the key, not the secret
        assert password not in shown.stdout
    for host in SERVERS:
        assert cluster.lab[host].run(["stat", "-c", "%a %U", "/var/lib/postgresql/.pgpass"]).stdout.strip() == (
            "600 postgres"
        )
    status_run = cluster.run("pg_replication.cluster_status")
    assert password not in status_run.stdout


# --------------------------------------------------------------------------- status and test mode


def test_cluster_status_shows_every_member(cluster):
    members = cluster_status(cluster)
    assert {h: (m["pillar_role"], m["state"]) for h, m in members.items()} == {
        "master": ("primary", "primary"),
        "standby": ("standby", "standby"),
        "standby2": ("standby", "standby"),
        "backup": ("barman", "barman"),
    }
    assert members["master"]["slots"]["standby_slot"]["active"] is True
    assert members["standby"]["upstream"] == cluster.lab["master"].address
    assert members["backup"]["barman_check"] == {SERVER: "all OK"}


def test_runners_in_test_mode_change_nothing(cluster):
    before = snapshot(cluster)
    ret = cluster.run("pg_replication.switchover", "to=standby", "test=True")
    assert ret.returncode == 0, ret.stdout
    assert ret.data["result"] is None
    assert all(check["ok"] for check in ret.data["checks"])
    assert any("promote standby" in step for step in ret.data["steps"])
    refused = cluster.run("pg_replication.failover", "test=True")  # the primary runs: refused
    assert refused.returncode == 1
    assert "does not run as a primary" in refused.data["comment"]
    rejoin = cluster.run("pg_replication.rejoin", "host=standby", "test=True")  # it streams already
    assert rejoin.returncode == 1
    assert snapshot(cluster) == before


def test_preflight_refusals_change_nothing(cluster):
    lab = cluster.lab
    before = snapshot(cluster)
    not_a_standby = cluster.run("pg_replication.switchover", "to=backup")
    assert not_a_standby.returncode == 1
    assert "backup is a standby in the pillar" in not_a_standby.data["comment"]

    # Lagging: standby2 stops replaying while the primary moves on by two WAL segments.
    lab["standby2"].psql("SELECT pg_wal_replay_pause()")
    try:
        for _ in range(2):
            lab["master"].psql("SELECT pg_create_restore_point('lag'); SELECT pg_switch_wal()")
        lagging = cluster.run("pg_replication.switchover", "to=standby2")
        assert lagging.returncode == 1
        assert "bytes behind (WAL not replayed)" in lagging.data["comment"], lagging.data["comment"]
    finally:
        lab["standby2"].psql("SELECT pg_wal_replay_resume()")

    # Not streaming: standby2's server is stopped.
    lab["standby2"].run(["systemctl", "stop", "postgresql@15-main"])
    try:
        stopped = cluster.run("pg_replication.switchover", "to=standby2")
        assert stopped.returncode == 1
        assert "standby2 streams from master on its slot" in stopped.data["comment"]
    finally:
        lab["standby2"].run(["systemctl", "start", "postgresql@15-main"])
    assert wait_for(lambda: cluster_status(cluster)["standby2"].get("upstream") == lab["master"].address, 60, 2)
    after = snapshot(cluster)
    # standby2 was stopped and started by the test itself: compare it without its start time.
    before["standby2"] = before["standby2"].split("|", 2)[::2]
    after["standby2"] = after["standby2"].split("|", 2)[::2]
    assert after == before


def test_switchover_aborts_and_restarts_the_primary_when_the_target_misses_its_shutdown_checkpoint(cluster):
    """standby2's WAL receiver is frozen (SIGSTOP) after the preflight would pass: the primary
    stops, standby2 never receives the shutdown checkpoint, so the runner starts the primary
    again, drops the slots it made on standby2 and promotes nobody. Nothing acknowledged is lost."""
    lab = cluster.lab
    before = snapshot(cluster)
    # The stopping primary waits for the frozen receiver's reply up to wal_sender_timeout.
    lab["master"].psql("ALTER SYSTEM SET wal_sender_timeout = '5s'")
    lab["master"].psql("SELECT pg_reload_conf()")
    # The previous test restarted standby2: its WAL receiver may still be connecting.
    receiver = wait_for(lambda: lab["standby2"].psql("SELECT pid FROM pg_stat_wal_receiver WHERE status = 'streaming'"),
                        60, 0.5)  # fmt: skip
    assert receiver, "standby2 does not stream"
    w = writer(cluster)
    time.sleep(1)
    lab["standby2"].run(["kill", "-STOP", receiver])
    try:
        ret = cluster.run("pg_replication.switchover", "to=standby2", "timeout=5")
    finally:
        lab["standby2"].run(["kill", "-CONT", receiver])
        time.sleep(2)
        w.stop()
        lab["master"].psql("ALTER SYSTEM RESET wal_sender_timeout")
        lab["master"].psql("SELECT pg_reload_conf()")
    print(json.dumps(ret.data, indent=1))
    assert ret.returncode == 1
    expected = "standby2 did not receive master's shutdown checkpoint within 5s; master was started again"
    assert expected in ret.data["comment"]
    assert not any(line.startswith("promoted") for line in ret.data["done"])
    assert w.missing_on(lab["master"]) == []
    assert w.resumed, "the writer never committed again on the restarted primary"
    assert wait_for(lambda: cluster_status(cluster)["standby2"].get("upstream") == lab["master"].address, 60, 2)
    after = snapshot(cluster)
    # master was stopped and started again: compare it without its start time.
    before["master"] = before["master"].split("|", 2)[::2]
    after["master"] = after["master"].split("|", 2)[::2]
    assert after == before


# --------------------------------------------------------------------------- switchover


def switchover(cluster, old, new, timeline):
    w = writer(cluster)
    pooled, via_vip, probe = routed_writers(cluster, w)
    time.sleep(2)
    started = time.monotonic()
    ret = cluster.run("pg_replication.switchover", f"to={new}")
    took = time.monotonic() - started
    time.sleep(2)
    for background in (w, pooled, via_vip, probe):
        background.stop()
    print(json.dumps(ret.data, indent=1))
    assert ret.returncode == 0, ret.stdout + ret.stderr
    change = ret.data["pillar_change"]
    # The pillar follows the cluster first: a failed assertion below must not leave the
    # next tests a pillar that names the old primary.
    apply_pillar_change(cluster, change)
    print(f"switchover {old} -> {new} in {took:.1f}s. Through PgBouncer: {len(pooled.committed)} commits,"
          f" {pooled.errors} errors, longest pause {pooled.longest_pause:.2f}s. Through the VIP:"
          f" {len(via_vip.committed)} commits, {via_vip.connections} connections, {via_vip.errors} errors."
          f" VIP holders over time: {[h for _, h in probe.holders]} ({probe.rounds} rounds)")  # fmt: skip
    cluster.pooler_pauses = [*getattr(cluster, "pooler_pauses", []), round(pooled.longest_pause, 2)]
    assert pooled.errors == 0
    if pooled.longest_pause > PAUSE_GOAL:
        print(f"the pause ({pooled.longest_pause:.2f}s) missed the {PAUSE_GOAL}s goal: a loaded machine?")
    assert pooled.longest_pause <= PAUSE_BOUND, f"a client through PgBouncer waited {pooled.longest_pause:.2f}s"
    assert len(pooled.committed) > 20
    assert pooled.missing_on(cluster.lab[new]) == []
    assert via_vip.connections == 2  # one reconnection, to the new primary
    assert via_vip.missing_on(cluster.lab[new]) == []
    assert probe.rounds > 10
    assert probe.two_holders == []
    assert vip_holders(cluster, cluster.pillar["vip"]) == [new]
    assert [line for line in change if ":hosts:" in line] == [
        f"pg_replication:hosts:{h}:role: {'primary' if h == new else 'standby'}" for h in sorted((old, new))
    ]
    assert f"pg_replication:barman:primary: {new}" in change  # the pillar names Barman's primary
    # The pillar left it unset (<primary>-streaming): the change keeps Barman's server and archive.
    assert cluster.pillar["barman"]["server_name"] == SERVER
    missing = w.missing_on(cluster.lab[new])
    print(f"switchover {old} -> {new}: {len(w.committed)} commits acknowledged, {len(missing)} missing")
    assert len(w.committed) > 50
    assert missing == []
    # The old primary came back through pg_rewind, never a full copy (pg_basebackup).
    rejoined = next(line for line in ret.data["done"] if line.startswith(f"{old} rejoined"))
    assert "'rewound'" in rejoined
    assert not any("pg_replication-standby-bootstrap" in line for line in ret.data["done"])
    assert_follows(cluster, new, timeline)
    return w


def test_switchover_loses_no_acknowledged_commit(cluster):
    cluster.timeline1_backup = barman(cluster, "list_backups", SERVER)[0]["backup_id"]
    cluster.switchover_writer = switchover(cluster, "master", "standby", timeline=2)


def backup_on_timeline(cluster, timeline):
    backup = barman(cluster, "backup", SERVER)
    shown = barman(cluster, "show_backup", SERVER, backup["backup_id"])
    assert shown["status"] == "DONE"
    assert shown["base_backup_information"]["timeline"] == timeline


def test_after_switchover_barman_backs_up_the_new_timeline_and_restores_it(cluster):
    """A backup DONE on timeline 2, and a point-in-time restore (of a backup taken, then
    rows, a target time, more rows) to a moment after the switchover holds exactly the rows
    committed before that moment."""
    backup_on_timeline(cluster, 2)
    assert restore_check(cluster, primary="standby") == ["before-backup:3", "before-target:2"]


def test_wal_archive_is_continuous_across_the_timeline_switch(cluster):
    """The backup taken on timeline 1, before the switchover, restored to a moment after it:
    recovery replays timeline 1 to the switch, then timeline 2, all from Barman's archive.
    The copy holds every commit the writer saw acknowledged during the switchover, and
    exactly the rows written before the target time."""
    shown = barman(cluster, "show_backup", SERVER, cluster.timeline1_backup)
    assert shown["base_backup_information"]["timeline"] == 1
    w = cluster.switchover_writer
    rows, ids = restore_check(
        cluster, primary="standby", backup_id=cluster.timeline1_backup,
        query=f"SELECT id FROM writes WHERE id >= {w.start_id}",
    )  # fmt: skip
    assert rows == ["before-backup:3", "before-target:2"]
    missing = sorted(set(w.committed) - set(map(int, ids.split())))
    print(f"timeline-1 backup restored past the switchover: {len(w.committed)} acknowledged, {len(missing)} missing")
    assert missing == []


def test_after_switchover_the_changed_pillar_converges_with_no_change(cluster):
    ret = cluster.highstate()
    assert state_errors(ret.data) == {}
    assert changed_states(ret.data) == {}


# --------------------------------------------------------------------------- failover and rejoin


def test_failover_promotes_the_most_advanced_standby_and_rejoin_brings_the_old_primary_back(cluster):
    """The primary cut off but running (its link down): the failover refuses, since an
    unanswering minion is not a dead primary; once it is stopped (as an operator powers it
    off) the failover with fenced=True promotes. A probe asking every server five times a
    second never sees two writable primaries. The primary is the one the switchover above
    made (the pillar's)."""
    lab = cluster.lab
    old = next(h for h in SERVERS if cluster.pillar["hosts"][h]["role"] == "primary")
    standbys = [h for h in SERVERS if h != old]
    w = writer(cluster)
    probe = WritableProbe([lab[h] for h in SERVERS]).start()
    vip = cluster.pillar["vip"]
    via_vip = Writer([vip], WRITER_PASSWORD, start_id=w.start_id + 2 * 10**8).start()
    vip_probe = VipProbe([lab[h] for h in LAB_HOSTS], vip).start()
    time.sleep(3)
    lab[old].run(["ip", "link", "set", "eth0", "down"])
    failed_at = time.monotonic()
    try:
        refused = cluster.run("pg_replication.failover")
        assert refused.returncode != 0, refused.stdout
        failed = [c["check"] for c in refused.data["checks"] if not c["ok"]]
        assert failed == [f"{old} is fenced (its minion does not answer)"], refused.data["checks"]
        assert lab[old].psql("SELECT pg_is_in_recovery()") == "f"  # still a primary, on its side
        assert {lab[h].psql("SELECT pg_is_in_recovery()") for h in standbys} == {"t"}
        postmaster = lab[old].run(["head", "-1", "/var/lib/postgresql/15/main/postmaster.pid"]).stdout.strip()
        lab[old].run(["kill", "-9", postmaster])  # the operator powers it off
        # test=True with the primary gone: every check passes, the plan is shown, nobody is promoted.
        predicted = cluster.run("pg_replication.failover", "fenced=True", "test=True")
        assert predicted.returncode == 0, predicted.stdout
        assert predicted.data["result"] is None
        assert all(check["ok"] for check in predicted.data["checks"]), predicted.data["checks"]
        assert {lab[h].psql("SELECT pg_is_in_recovery()") for h in standbys} == {"t"}
        previewed = time.monotonic() - failed_at
        ret = cluster.run("pg_replication.failover", "fenced=True")
        print(json.dumps(ret.data, indent=1))
        assert ret.returncode == 0, ret.stdout + ret.stderr
        new = next(h for h in standbys if f"pg_replication:hosts:{h}:role: primary" in ret.data["pillar_change"])
        committed_at_promotion = len(w.committed)
        time.sleep(3)
    finally:
        for background in (w, probe, via_vip, vip_probe):
            background.stop()
    assert probe.rounds > 10
    assert probe.two_writable == []
    # Issue #29: the VIP left the killed primary (ExecStopPost) before the new one took it.
    print(f"failover through the VIP: {via_vip.connections} connections, {len(via_vip.committed)} commits;"
          f" VIP holders over time: {[h for _, h in vip_probe.holders]}")  # fmt: skip
    assert vip_probe.two_holders == []
    assert via_vip.connections == 2  # one reconnection, to the new primary
    assert via_vip.resumed
    apply_pillar_change(cluster, ret.data["pillar_change"])
    missing = w.missing_on(lab[new])
    assert w.resumed, "the writer never committed on the new primary"
    assert predicted.data["comment"] == f"failover to {new} would run"
    print(f"failover to {new}: RPO {len(missing)} acknowledged commits missing of {len(w.committed)};"
          f" writable primary {w.resumed - failed_at:.1f}s after the failure (of which {previewed:.1f}s"
          " the test=True preview)")  # fmt: skip
    assert len(w.committed) > committed_at_promotion  # writes continue on the new primary
    assert len(missing) <= 5  # asynchronous replication: at most the last moments before the kill
    members = cluster_status(cluster)
    assert members[new]["state"] == "primary"
    other = next(h for h in standbys if h != new)
    assert members[other]["upstream"] == lab[new].address
    assert members["backup"]["barman_check"] == {SERVER: "all OK"}
    assert vip_holders(cluster, vip) == [new]
    # PgBouncer was repointed and reconnected: its clients reach the new primary.
    assert server_behind(lab["backup"].address, POOLER_PORT) == (lab[new].address, False)

    # The old primary comes back as a primary (as after a reboot): its highstate refuses.
    lab[old].run(["ip", "link", "set", "eth0", "up"])
    lab[old].run(["systemctl", "restart", "salt-minion"])
    lab[old].run(["systemctl", "start", "postgresql@15-main"])
    cluster.wait_for_minions(120)
    cluster.salt("saltutil.refresh_pillar", "wait=True", target=old, timeout=120)
    before = snapshot(cluster)
    refused = cluster.salt("state.apply", target=old, timeout=600)
    assert refused.returncode != 0
    assert f"salt-run pg_replication.rejoin host={old}" in refused.stdout
    # Two primaries: no switchover either.
    two = cluster.run("pg_replication.switchover", f"to={other}")
    assert two.returncode == 1
    assert f"exactly one primary runs, the pillar's ({new})" in two.data["comment"]
    assert snapshot(cluster) == before  # nothing was changed

    rejoin = cluster.run("pg_replication.rejoin", f"host={old}")
    print(json.dumps(rejoin.data, indent=1))
    assert rejoin.returncode == 0, rejoin.stdout + rejoin.stderr
    report = rejoin.data["rejoin"]
    # The old primary's crash recovery wrote on its timeline after the fork: pg_rewind finds it.
    assert report["diverged_at"], report["pg_rewind"]
    print(f"rejoin: diverged at {report['diverged_at']}, {report['discarded_bytes']} bytes of {old}'s WAL discarded")
    members = cluster_status(cluster)
    assert members[old]["state"] == "standby"
    assert members[old]["upstream"] == lab[new].address
    ret = cluster.highstate()
    assert state_errors(ret.data) == {}
    assert changed_states(ret.data) == {}


# --------------------------------------------------------------------------- restarts under control


def restart_states(ret):
    """Per host: the restart state's (changes, comment)."""
    found = {}
    for host, states in ret.data.items():
        for state in states.values() if isinstance(states, dict) else ():
            if state.get("__id__") == "pg_replication-restart-if-pending":
                found[host] = (state.get("changes") or {}, state.get("comment", ""))
    return found


def start_times(lab):
    return {h: lab[h].psql("SELECT pg_postmaster_start_time()") for h in SERVERS}


def test_restart_settings_restart_standbys_and_leave_the_primary_to_the_rolling_restart(cluster):
    """Raise a restart-only setting: test=True names exactly the standbys (auto) as restarting,
    the real run restarts them and reports the primary's restart (manual) without making it;
    the rolling restart makes it. Lower it again: the standbys refuse to go below their
    primary's value, and the rolling restart takes the primary first."""
    lab, good = cluster.lab, cluster.pillar
    primary = next(h for h in SERVERS if good["hosts"][h]["role"] == "primary")
    standbys = sorted(set(SERVERS) - {primary})
    before = start_times(lab)
    cluster.set_pillar(dict(good, settings={"max_locks_per_transaction": 128}))
    predicted = restart_states(cluster.highstate("test=True"))
    ret = cluster.highstate()
    assert state_errors(ret.data) == {}
    made = restart_states(ret)
    for run in (predicted, made):
        assert sorted(h for h, (changes, _) in run.items() if changes) == standbys
        assert "not made: pg_replication:restart:primary is manual" in run[primary][1]
    after = start_times(lab)
    assert after[primary] == before[primary]
    assert all(after[h] != before[h] for h in standbys)

    preview = cluster.run("pg_replication.rolling_restart", "test=True")
    assert preview.returncode == 0, preview.stdout
    assert preview.data["steps"][0] == f"restart {primary} (max_locks_per_transaction)"
    rolled = cluster.run("pg_replication.rolling_restart")
    assert rolled.returncode == 0, rolled.stdout
    assert {lab[h].psql("SHOW max_locks_per_transaction") for h in SERVERS} == {"128"}
    assert start_times(lab)[primary] != before[primary]

    cluster.set_pillar(good)  # back to 64: lower than the primary's 128
    ret = cluster.highstate()
    assert state_errors(ret.data) == {}
    held = restart_states(ret)
    assert all(not held[h][0] and "lower settings below the primary's" in held[h][1] for h in standbys), json.dumps(
        held, indent=1
    )
    before = start_times(lab)
    rolled = cluster.run("pg_replication.rolling_restart")
    print(json.dumps(rolled.data, indent=1))
    assert rolled.returncode == 0, rolled.stdout
    restarted = [line.split()[1] for line in rolled.data["done"] if line.startswith("restarted ")]
    assert restarted == [primary, *standbys]
    after = start_times(lab)
    assert all(after[primary] < after[h] for h in standbys)  # the primary first
    assert {lab[h].psql("SHOW max_locks_per_transaction") for h in SERVERS} == {"64"}
    assert following(cluster, primary, SERVERS)["backup"]["barman_check"] == {SERVER: "all OK"}
    assert changed_states(cluster.highstate().data) == {}


# --------------------------------------------------------------------------- synchronous replication
STANDBY_UNIT = "postgresql@15-main"


def sync_states(lab, primary):
    return lab[primary].psql(
        "SELECT string_agg(application_name || ':' || sync_state, ',' ORDER BY application_name)"
        " FROM pg_stat_replication WHERE application_name <> 'barman_receive_wal'"
    )


def test_synchronous_any_one_of_two_commits_with_one_standby_down_and_waits_with_none(cluster):
    """ANY 1 of the two standbys (the pillar's list names the primary too: left out): one
    standby stopped, commits go on; both stopped, a commit waits, and returns when one comes
    back, which then holds it. Back to asynchronous by reload, nothing restarted."""
    lab, good = cluster.lab, cluster.pillar
    primary = next(h for h in SERVERS if good["hosts"][h]["role"] == "primary")
    first, second = sorted(set(SERVERS) - {primary})
    started = start_times(lab)
    pillar = copy.deepcopy(good)
    pillar["synchronous"] = {"method": "any", "count": 1, "standbys": list(SERVERS)}
    cluster.set_pillar(pillar)
    stopped = []

    def insert(n):
        return lab[primary].psql(f"INSERT INTO sync_probe VALUES ({n})", dbname="otus")

    def stop(host):
        lab[host].run(["systemctl", "stop", STANDBY_UNIT])
        stopped.append(host)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        ret = cluster.highstate(target=primary)
        assert state_errors(ret.data) == {}
        names = f'ANY 1 ("{first}", "{second}")'
        assert wait_for(lambda: lab[primary].psql("SHOW synchronous_standby_names") == names, 10)
        assert wait_for(lambda: sync_states(lab, primary) == f"{first}:quorum,{second}:quorum", 15)
        lab[primary].psql("CREATE TABLE sync_probe (n int)", dbname="otus")
        stop(first)
        pool.submit(insert, 1).result(timeout=10)  # the other standby confirms it
        stop(second)
        waiting = pool.submit(insert, 2)
        time.sleep(3)
        assert not waiting.done()
        assert lab[primary].psql(
            "SELECT wait_event FROM pg_stat_activity WHERE query LIKE 'INSERT INTO sync_probe%'"
        ) == ("SyncRep")
        lab[second].run(["systemctl", "start", STANDBY_UNIT])
        stopped.remove(second)
        waiting.result(timeout=60)
        assert lab[second].psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM sync_probe", dbname="otus") == "1,2"
    finally:
        for host in stopped:
            lab[host].run(["systemctl", "start", STANDBY_UNIT])
        cluster.set_pillar(good)
        ret = cluster.highstate(target=primary)
        pool.shutdown(wait=False)
    assert state_errors(ret.data) == {}
    assert wait_for(lambda: lab[primary].psql("SHOW synchronous_standby_names") == "", 10)
    assert following(cluster, primary, SERVERS)
    assert start_times(lab)[primary] == started[primary]


# --------------------------------------------------------------------------- automatic failover (#28)

# Short timings for the lab; the invariant failover_timeout >= fence_timeout + fence_margin
# + 2 * check_interval holds (12 >= 6 + 2 + 2).
HA = {"check_interval": 1, "fence_timeout": 6, "failover_timeout": 12, "fence_margin": 2, "failover_cooldown": 600}


class HaEvents(MasterEvents):
    """Every event of the HA engine on the master's bus (``salt/pg_replication/ha/...``),
    listened to from this process: ``[(monotonic time, name, data)]``."""

    def __init__(self, salt_lab):
        super().__init__(salt_lab, "salt/pg_replication/ha/", short=True)

    def names(self, since=0.0):
        return [name for at, name, _ in self.seen if at >= since]

    def in_order(self, since, *expected):
        """Whether ``expected`` were fired in this order (others may come between)."""
        rest = iter(self.names(since))
        return all(name in rest for name in expected)

    def wait(self, name, since, timeout):
        return wait_for(lambda: next((data for at, n, data in self.seen if n == name and at >= since), None), timeout)


def kill_and_cut(host):
    """SIGKILL the postmaster of ``host`` and take its link down; the time of the failure."""
    postmaster = host.run(["head", "-1", "/var/lib/postgresql/15/main/postmaster.pid"]).stdout.strip()
    host.run(["kill", "-9", postmaster])
    host.run(["ip", "link", "set", "eth0", "down"])
    return time.monotonic()


def in_recovery(lab, hosts):
    out = {}
    for h in hosts:
        try:
            out[h] = lab[h].psql("SELECT pg_is_in_recovery()")
        except Exception:  # noqa: BLE001 - down: not a primary
            out[h] = "down"
    return out


def test_ha_engine_in_manual_mode_fires_the_events_and_promotes_nothing(cluster):
    """mode manual (the default): the primary killed and cut off; the engine says it is
    lost and that nothing is promoted, and nothing is; back, it says so."""
    lab, good = cluster.lab, cluster.pillar
    primary = next(h for h in SERVERS if good["hosts"][h]["role"] == "primary")
    standbys = sorted(set(SERVERS) - {primary})
    cluster.set_pillar(dict(copy.deepcopy(good), ha=dict(HA, mode="manual")))
    cluster.salt("saltutil.refresh_pillar", "wait=True", timeout=60)
    with HaEvents(cluster) as events:
        assert wait_for(lambda: ha_state(cluster).get("mode") == "manual" and ha_state(cluster)["state"] == "healthy",
                        60)  # fmt: skip
        failed_at = kill_and_cut(lab[primary])
        try:
            said = events.wait("manual", failed_at, 90)
            assert said, events.names(failed_at)
            print(f"manual mode: 'manual' event {time.monotonic() - failed_at:.1f}s after the failure: {said}")
            time.sleep(5)
            assert in_recovery(lab, standbys) == dict.fromkeys(standbys, "t")
            assert events.in_order(failed_at, "primary_suspected", "primary_lost", "manual"), events.names(failed_at)
            assert "candidate_chosen" not in events.names(failed_at)
            assert ha_state(cluster)["state"] == "primary lost"
        finally:
            lab[primary].run(["ip", "link", "set", "eth0", "up"])
            lab[primary].run(["systemctl", "restart", STANDBY_UNIT])
            lab[primary].run(["systemctl", "restart", "salt-minion"])
        back = events.wait("primary_back", failed_at, 90)
        assert back, events.names(failed_at)
    cluster.wait_for_minions(120)
    assert following(cluster, primary, SERVERS)


WATCHDOG = "pg_replication-watchdog.service"
MARKER = "/var/lib/pg_replication/fenced"
DATA_DIR = "/var/lib/postgresql/15/main"
# A client on the primary's own side of the cut: a new connection per commit over the local
# socket, printing each id with the time its COMMIT returned, or ``failed`` after it (the
# lab's hosts share this clock).
LOCAL_WRITER = r"""
end=$(( $(date +%s) + {seconds} )); i={start}
while [ "$(date +%s)" -lt "$end" ]; do
  i=$((i + 1))
  if runuser -u postgres -- psql -XAtq -d otus -c "INSERT INTO writes (id) VALUES ($i)" >/dev/null 2>&1; then
    echo "$i $(date +%s.%N)"
  else
    echo "$i $(date +%s.%N) failed"
  fi
  sleep 0.05
done
"""


class HistoryProbe(WritableProbe):
    """A WritableProbe that also keeps, per round, the wall-clock time and who was writable."""

    def __init__(self, hosts, interval=0.2):
        super().__init__(hosts, interval)
        self.history = []

    def _loop(self):
        while not self._stop.is_set():
            writable = [host.name for host in self.hosts if self._writable(host) == "t"]
            self.rounds += 1
            self.history.append((time.time(), writable))
            if len(writable) > 1:
                self.two_writable.append((time.monotonic(), writable))
            self._stop.wait(self.interval)


def _watchdogs(lab, servers):
    return {h: lab[h].run(["systemctl", "is-active", WATCHDOG], check=False).stdout.strip() for h in servers}


def _restore_after_ha(cluster, good, old, background):
    """Whatever failed in the HA scenario, leave the cluster as the module's later tests
    expect: the clients and probes stopped, every server's link and route back, ``ha``
    manual and asynchronous (``good``, the pillar before the test), the roles as the servers
    run them (the engine may have promoted a standby, or two: the pillar then names the one
    writable, and the others are rejoined; else the old primary's fence is cleared and it
    starts again as the primary), every member streaming. Best effort: a failure here is printed, not raised over
    the test's own."""
    import traceback  # pylint: disable=import-outside-toplevel

    lab = cluster.lab
    for item in background:
        with contextlib.suppress(Exception):
            if isinstance(item, subprocess.Popen):
                item.kill()
            else:
                item.stop()
    try:
        for host in SERVERS:  # the old primary, or the killed one of the last step
            lab[host].run(["ip", "route", "del", "prohibit", f"{lab.master_address}/32"], check=False)
            lab[host].run(["ip", "link", "set", "eth0", "up"], check=False)
        # Manual first, so that the engine decides nothing more; a failover it runs now holds
        # the cluster lock: wait for it to end.
        cluster.set_pillar(copy.deepcopy(good))
        for host in SERVERS:
            lab[host].run(["systemctl", "restart", "salt-minion"], check=False)
        cluster.wait_for_minions(120)
        cluster.salt("saltutil.refresh_pillar", "wait=True", timeout=120)
        wait_for(lambda: ha_state(cluster).get("state") != "promoting", 600, interval=2)
        # Or a rejoin it runs (auto_rejoin): the lock is free once it ends.
        wait_for(lambda: (cluster.run("pg_replication.cluster_status").data or {}).get("lock") is None, 600,
                 interval=5)  # fmt: skip
        running = in_recovery(lab, SERVERS)
        writable = [h for h in SERVERS if running[h] == "f"]
        print(f"HA scenario failed: restoring the cluster; in recovery: {running}")
        # The engine may have promoted a standby (twice: the killed primary's step).
        new = writable[0] if len(writable) == 1 else old
        pillar = copy.deepcopy(good)
        for host in SERVERS:
            pillar["hosts"][host]["role"] = "primary" if host == new else "standby"
        if pillar.get("barman", {}).get("primary") in SERVERS:
            pillar["barman"]["primary"] = new
        cluster.set_pillar(pillar)
        cluster.salt("saltutil.refresh_pillar", "wait=True", timeout=120)
        for host in SERVERS:
            if running[host] == "t" or (host == new and running[host] == "f"):
                continue  # a standby (the engine may have rejoined it already), or the primary
            if host == new:  # never failed over: its fence cleared, the highstate starts it
                cluster.salt("pg_replication.fence_clear", target=host)
                continue
            rejoin = cluster.run("pg_replication.rejoin", f"host={host}")
            print(f"rejoin {host}: {rejoin.stdout[-2000:]}")
            if rejoin.returncode != 0:
                # Not rewindable (e.g. its WAL since the last common checkpoint is gone): in
                # this lab only, its data directory emptied for the highstate's base backup.
                lab[host].run(["systemctl", "stop", STANDBY_UNIT], check=False)
                cluster.salt("pg_replication.fence_clear", target=host)
                lab[host].run(["find", DATA_DIR, "-mindepth", "1", "-delete"], check=False)
        ret = cluster.highstate()
        print(f"highstate errors: {state_errors(ret.data)}")
        print(f"{new} followed by every member: {bool(following(cluster, new, SERVERS, timeout=120))}")
    except Exception:  # noqa: BLE001 - the test's own failure is the one to report
        print(f"restoring the cluster after the HA scenario failed:\n{traceback.format_exc()}")


def _fenced(lab, servers):
    return [h for h in servers if lab[h].run(["test", "-e", MARKER], check=False).returncode == 0]


# The salt-master stopped for longer than a fence and a failover together.
MASTER_DOWN = HA["fence_timeout"] + HA["failover_timeout"] + HA["fence_margin"]
# The primary's link taken down and up again, for a minute: each cut shorter than a fence.
FLAP_DOWN, FLAP_UP, FLAP_FOR = 3, 3, 60


def _master_stopped_and_restarted_changes_nothing(cluster, primary, standbys, background):
    """The salt-master (and its engine) stopped for MASTER_DOWN seconds, a client committing:
    the primary reaches its standbys, so its watchdog fences nothing and it keeps taking
    writes; restarted, the engine starts its picture afresh and does nothing but see the
    primary healthy (its state file: no decision but ``healthy``); never two writable."""
    lab = cluster.lab
    last_failover = ha_state(cluster).get("last_failover")
    w = writer(cluster)
    background.append(w)
    probe = HistoryProbe([lab[h] for h in SERVERS]).start()
    background.append(probe)
    time.sleep(2)
    with cluster.master_stopped():
        stopped_at = time.time()
        before = len(w.committed)
        time.sleep(MASTER_DOWN)
        during = len(w.committed) - before
        fenced = _fenced(lab, SERVERS)
        running = in_recovery(lab, SERVERS)
    restarted_at = time.time()
    healthy = wait_for(lambda: engine_watching(cluster) and ha_state(cluster)["updated"] > restarted_at, 90)
    time.sleep(2 * HA["check_interval"] + 2)
    state = ha_state(cluster)
    for item in (w, probe):
        item.stop()
    missing = w.missing_on(lab[primary])
    print(f"salt-master stopped {MASTER_DOWN} s: the primary acknowledged {during} commits meanwhile; engine"
          f" healthy again {time.time() - restarted_at:.1f} s after the restart; its last decision:"
          f" {state.get('last_decision')}; {len(w.committed)} acknowledged, {len(missing)} missing")  # fmt: skip
    assert during > 0, "the primary took no commit while the salt-master was stopped"
    assert fenced == []
    assert running == {primary: "f", **dict.fromkeys(standbys, "t")}
    assert healthy, state
    # Seen healthy at once, or first suspected while the minions reconnected: no decision.
    assert state["last_decision"]["event"] in ("healthy", "primary_back"), state["last_decision"]
    assert state["last_decision"]["time"] > stopped_at
    assert (state.get("promoted"), state.get("last_failover")) == (None, last_failover)
    assert in_recovery(lab, SERVERS) == running
    assert _fenced(lab, SERVERS) == []
    assert probe.two_writable == []
    assert missing == []


def _flapping_primary_link_fails_nothing_over(cluster, events, primary, standbys, background):
    """The primary's link down FLAP_DOWN s and up FLAP_UP s, for FLAP_FOR s, a client
    committing: no cut lasts a fence, so no fence, no failover (the engine's agreement
    restarts with each healthy tick), never two writable, nothing acknowledged lost, and the
    primary takes commits again after it."""
    lab = cluster.lab
    w = writer(cluster)
    background.append(w)
    probe = HistoryProbe([lab[h] for h in SERVERS]).start()
    background.append(probe)
    flap_at = time.monotonic()
    cuts = 0
    try:
        while time.monotonic() - flap_at < FLAP_FOR:
            lab[primary].run(["ip", "link", "set", "eth0", "down"])
            cuts += 1
            time.sleep(FLAP_DOWN)
            lab[primary].run(["ip", "link", "set", "eth0", "up"])
            time.sleep(FLAP_UP)
    finally:
        lab[primary].run(["ip", "link", "set", "eth0", "up"])
    after = len(w.committed)
    resumed = wait_for(lambda: len(w.committed) > after, 60)
    for item in (w, probe):
        item.stop()
    missing = w.missing_on(lab[primary])
    names = events.names(flap_at)
    print(f"primary link flapping ({FLAP_DOWN} s down, {FLAP_UP} s up, {cuts} cuts in {FLAP_FOR} s):"
          f" {len(w.committed)} commits acknowledged, {len(missing)} missing, longest pause"
          f" {w.longest_pause:.1f} s; HA events: {names}")  # fmt: skip
    assert resumed, "the primary took no commit after the flapping"
    assert _fenced(lab, SERVERS) == []
    assert in_recovery(lab, SERVERS) == {primary: "f", **dict.fromkeys(standbys, "t")}
    assert not {"primary_lost", "candidate_chosen", "promoted"} & set(names)
    assert probe.two_writable == []
    assert missing == []


def test_ha_engine_fails_an_isolated_running_primary_over_once_its_watchdog_fenced_it(cluster):
    """mode automatic with auto_rejoin (the watchdog on every server, the engine on the
    master), synchronous ANY 1 of the two standbys. The primary cut off from the salt-master
    only (its standbys still seen): no fence, nothing promoted. One standby cut off (the
    primary keeps the master and its other standby): no fence, nothing promoted, commits go
    on, and it streams again once healed. Then the primary's link down, PostgreSQL still
    running, a client on its side committing over the local socket and one from outside through the
    libpq multi-host list: its watchdog fences it (stops it, drops the VIP) within
    fence_timeout; the engine promotes a standby after failover_timeout, once both standbys
    say they lost it; a probe asking every server five times a second never sees two
    writable primaries, nor the VIP on two hosts; the isolated side acknowledges nothing
    after the cut, and every commit acknowledged to either client is on the new primary (the
    RTO printed). Healed, the pillar unchanged, the old primary reports its fence, its
    highstate refuses to start it and the engine leaves it alone; once the pillar makes it a
    standby, the engine rejoins it (``rejoining``, ``rejoined``): a standby of the new primary
    on its slot, its fence cleared, every acknowledged commit on it. Back to manual, the
    watchdog leaves every server. Whatever fails, the cluster is left as the later tests
    expect. Before the cut, two faults that must change nothing: the salt-master stopped
    for longer than a fence and a failover (the primary keeps taking writes, nothing is
    fenced; restarted, the engine sees the primary healthy and decides nothing), and the
    primary's link flapping for a minute (no fence, no failover, nothing lost). After the
    rejoin, the new primary is killed outright (_killed_primary_failed_over): promoted again,
    nothing lost, the killed host rejoined."""
    good = cluster.pillar
    primary = next(h for h in SERVERS if good["hosts"][h]["role"] == "primary")
    standbys = sorted(set(SERVERS) - {primary})
    background, healed = [], False
    try:
        _isolated_running_primary_failed_over(cluster, good, primary, standbys, background)
        healed = True
    finally:
        if not healed:
            _restore_after_ha(cluster, good, primary, background)


def _isolated_running_primary_failed_over(cluster, good, primary, standbys, background):
    lab = cluster.lab
    pillar = copy.deepcopy(good)
    pillar["synchronous"] = {"method": "any", "count": 1, "standbys": list(SERVERS)}
    pillar["ha"] = dict(HA, mode="automatic", auto_rejoin=True)
    cluster.set_pillar(pillar)
    ret = cluster.highstate()
    assert state_errors(ret.data) == {}
    # The fence's stop (its shutdown checkpoint, or crash recovery's before pg_rewind) may
    # remove the WAL since the last checkpoint before the promotion, which pg_rewind reads on
    # the old primary: in automatic mode the formula keeps max_wal_size of it (reloaded).
    assert {h: lab[h].psql("SHOW wal_keep_size") for h in SERVERS} == dict.fromkeys(SERVERS, "1GB")
    assert _watchdogs(lab, SERVERS) == dict.fromkeys(SERVERS, "active")
    assert "active" not in _watchdogs(lab, ["backup"]).values()
    assert changed_states(cluster.highstate("test=True").data) == {}
    assert wait_for(lambda: sync_states(lab, primary) == ",".join(f"{s}:quorum" for s in standbys), 30)
    assert wait_for(lambda: engine_watching(cluster), 90), ha_state(cluster)
    _master_stopped_and_restarted_changes_nothing(cluster, primary, standbys, background)
    with HaEvents(cluster) as events:

        def watching():
            return engine_watching(cluster)

        assert wait_for(watching, 90), ha_state(cluster)

        # The salt-master out of reach, the standbys seen: no fence, nothing promoted.
        route = ["prohibit", f"{lab.master_address}/32"]
        lab[primary].run(["ip", "route", "add", *route])
        try:
            time.sleep(HA["fence_timeout"] + HA["fence_margin"] + 2)
            assert lab[primary].psql("SELECT pg_is_in_recovery()") == "f"
            assert lab[primary].run(["test", "-e", MARKER], check=False).returncode == 1
        finally:
            lab[primary].run(["ip", "route", "del", *route])
        assert in_recovery(lab, standbys) == dict.fromkeys(standbys, "t")
        assert wait_for(watching, 90), ha_state(cluster)
        assert "candidate_chosen" not in events.names()

        # One standby cut off (its link down) for longer than a fence, the primary keeping the
        # master and its other standby (synchronous ANY 1 is still met): no fence, nothing
        # promoted, never two writable, the primary's commits go on; healed, it streams again.
        lone = standbys[-1]
        w0 = writer(cluster)
        background.append(w0)
        probe = HistoryProbe([lab[h] for h in SERVERS]).start()
        background.append(probe)
        lone_at = time.monotonic()
        lab[lone].run(["ip", "link", "set", "eth0", "down"])
        try:
            time.sleep(HA["fence_timeout"] + HA["fence_margin"] + 2)
            during = len(w0.committed)
            time.sleep(1)
            assert len(w0.committed) > during, "the primary took no commit with one standby cut off"
            assert in_recovery(lab, SERVERS) == {primary: "f", **dict.fromkeys(standbys, "t")}
            assert _fenced(lab, SERVERS) == []
        finally:
            lab[lone].run(["ip", "link", "set", "eth0", "up"])
        streams = wait_for(lambda: sync_states(lab, primary) == ",".join(f"{s}:quorum" for s in standbys), 60)
        for item in (w0, probe):
            item.stop()
        print(f"{lone} cut off for {HA['fence_timeout'] + HA['fence_margin'] + 3} s: {len(w0.committed)} commits"
              f" acknowledged, {len(w0.missing_on(lab[primary]))} missing; streaming again"
              f" {time.monotonic() - lone_at:.1f} s after the cut; HA events: {events.names(lone_at)}")  # fmt: skip
        assert streams, sync_states(lab, primary)
        assert probe.two_writable == []
        assert w0.missing_on(lab[primary]) == []
        assert not {"primary_lost", "candidate_chosen"} & set(events.names(lone_at))
        assert wait_for(watching, 90), ha_state(cluster)
        _flapping_primary_link_fails_nothing_over(cluster, events, primary, standbys, background)
        assert wait_for(watching, 90), ha_state(cluster)

        # Cut off from everything, PostgreSQL running, a client on each side.
        seconds = HA["fence_timeout"] + 14
        local_start = int(time.time() * 1000) * 1000 + 9 * 10**11
        script = LOCAL_WRITER.format(seconds=seconds, start=local_start)
        vip = cluster.pillar["vip"]
        w = writer(cluster)
        background.append(w)
        probe = HistoryProbe([lab[h] for h in SERVERS]).start()
        background.append(probe)
        vip_probe = VipProbe([lab[h] for h in LAB_HOSTS], vip).start()
        background.append(vip_probe)
        local = subprocess.Popen(lab[primary].wrap(["sh", "-c", script]), stdout=subprocess.PIPE, text=True)  # noqa: S603
        background.append(local)
        try:
            time.sleep(3)
            # The engine's last view before the cut (on a loaded machine a slow minion can
            # make it suspect the primary for a tick or two: then no new primary_suspected
            # event comes with the cut, and its sequence counts from the last healthy one).
            wait_for(watching, 30)
            failed_at = time.monotonic()
            lab[primary].run(["ip", "link", "set", "eth0", "down"])
            cut_at = time.time()  # the link is down
            fenced = wait_for(lambda: lab[primary].run(["test", "-e", MARKER], check=False).returncode == 0,
                              timeout=HA["fence_timeout"] + 10)  # fmt: skip
            # "promoted" comes when the runner's failover has returned: the others followed
            # too (a highstate each); on a loaded 2-core machine that took over 160 s.
            promoted = events.wait("promoted", failed_at, 420)
            assert promoted, (events.names(failed_at), ha_state(cluster))
            promoted_at = next(at for at, n, _ in events.seen if n == "promoted" and at >= failed_at)
            new = promoted["candidate"]
            assert wait_for(lambda: w.resumed, 30)
            out, _ = local.communicate(timeout=seconds + 30)
            time.sleep(2)
        finally:
            for item in (w, probe, vip_probe):
                item.stop()
            if local.poll() is None:
                local.kill()
        healthy_at = max((at for at, n, _ in events.seen if n in ("healthy", "primary_back") and at < failed_at),
                         default=0.0)  # fmt: skip
        print(f"HA events after the cut: {events.names(failed_at)}; since the engine last saw the primary healthy:"
              f" {events.names(healthy_at)}")  # fmt: skip
        assert fenced, "the isolated primary did not fence itself"
        assert events.in_order(healthy_at, "primary_suspected", "primary_lost", "candidate_chosen", "promoted")
        assert events.in_order(failed_at, "primary_lost", "candidate_chosen", "promoted")
        assert "candidate_chosen" not in [n for at, n, _ in events.seen if at < failed_at]
        chosen = next(data for at, n, data in events.seen if n == "candidate_chosen" and at >= failed_at)
        assert chosen["agreeing"] == standbys
        assert new in standbys
        assert probe.two_writable == []
        print(f"VIP holders over time: {[h for _, h in vip_probe.holders]} ({vip_probe.rounds} rounds)")
        assert vip_probe.two_holders == []
        lines = [line.split() for line in out.splitlines()]
        local_acks = {int(f[0]): float(f[1]) for f in lines if len(f) == 2}
        tried_after = [f for f in lines if float(f[1]) > cut_at]
        stopped_at = next(t for t, writable in probe.history if t > cut_at and primary not in writable)
        new_at = next(t for t, writable in probe.history if t > cut_at and new in writable)
        # An ack already on the wire when the link went down may print a few ms after it.
        late = sorted(i for i, t in local_acks.items() if t > cut_at + 0.5)
        missing = w.missing_on(lab[new])
        present = set(
            map(int, lab[new].psql(f"SELECT id FROM writes WHERE id >= {local_start}", dbname="otus").split())
        )
        local_missing = sorted(set(local_acks) - present)
        print(f"isolated primary: link down at 0 s; the probe saw it not writable at {stopped_at - cut_at:.1f} s"
              f" (fence_timeout {HA['fence_timeout']} s) and {new} writable at {new_at - cut_at:.1f} s; its local"
              f" client acknowledged {len(local_acks)} commits, {len(late)} after the cut ({len(tried_after)}"
              f" tried after it)")  # fmt: skip
        print(f"automatic failover to {new}: RTO {w.resumed - failed_at:.1f}s (failure to the first acknowledged"
              f" commit on the new primary; the engine's promotion done {promoted_at - failed_at:.1f}s after);"
              f" RPO {len(missing)} of {len(w.committed)} acknowledged commits of the outside client and"
              f" {len(local_missing)} of {len(local_acks)} of the local one missing")  # fmt: skip
        assert local_acks, "the client on the primary's side committed nothing before the cut"
        assert tried_after, "the client on the primary's side did not try while cut off"
        assert late == []  # synchronous ANY 1: cut off, it cannot acknowledge
        assert missing == []
        assert local_missing == []
        assert stopped_at - cut_at <= HA["fence_timeout"] + HA["check_interval"] + 4
        assert stopped_at < new_at
        journal = lab[primary].run(["journalctl", "-u", WATCHDOG, "--no-pager", "-o", "cat"], check=False).stdout
        print(journal[-600:])
        assert "fenced (reached neither the salt-master nor a majority" in journal
        assert lab[primary].run(["systemctl", "is-active", STANDBY_UNIT], check=False).stdout.strip() != "active"
        # The fence's clean stop leaves the VIP to the runners: the watchdog dropped it itself.
        assert vip_holders(cluster, vip) == [new]
        # No second decision: the engine is in cooldown and waits for the pillar to name the new primary.
        assert ha_state(cluster)["state"] == "cooldown"
        assert ha_state(cluster)["promoted"] == new
        status = cluster.run("pg_replication.cluster_status")
        assert status.data["ha"]["state"] == "cooldown"
        assert status.data["lock"] is None

        # Healed, the pillar not changed yet: the old primary reports its fence, its highstate
        # refuses to start it, and the engine (auto_rejoin) leaves it alone while the pillar
        # still names it as the primary.
        healed_at = time.monotonic()
        lab[primary].run(["ip", "link", "set", "eth0", "up"])
        lab[primary].run(["systemctl", "restart", "salt-minion"])
        cluster.wait_for_minions(120)
        cluster.salt("saltutil.refresh_pillar", "wait=True", timeout=120)
        member = cluster.call("pg_replication.member", target=primary)[primary]["ret"]
        assert "reached neither" in member["server"]["fenced"]["reason"]
        assert member["server"]["running"] is False
        refused = cluster.salt("state.apply", target=primary, timeout=600)
        assert refused.returncode != 0
        assert f"{primary} fenced itself at" in refused.stdout
        assert f"salt-run pg_replication.rejoin host={primary}" in refused.stdout
        assert lab[primary].run(["systemctl", "is-active", STANDBY_UNIT], check=False).stdout.strip() != "active"
        assert not [n for n in events.names(healed_at) if n.startswith("rejoin")], events.names(healed_at)

        # The pillar change the engine printed: with auto_rejoin, the engine rewinds the old
        # primary as a standby of the new one (the runner's rejoin), and nobody else does.
        changed_at = time.monotonic()
        apply_pillar_change(cluster, promoted["pillar_change"])
        rejoining = events.wait("rejoining", changed_at, 120)
        assert rejoining, (events.names(changed_at), ha_state(cluster))
        rejoining_at = next(at for at, n, _ in events.seen if n == "rejoining" and at >= changed_at)
        rejoined = events.wait("rejoined", changed_at, 420)
        assert rejoined, (events.names(changed_at), ha_state(cluster))
        rejoined_at = next(at for at, n, _ in events.seen if n == "rejoined" and at >= changed_at)
        print(f"auto_rejoin: 'rejoining' {rejoining_at - changed_at:.1f} s after the pillar change,"
              f" 'rejoined' {rejoined_at - rejoining_at:.1f} s after that: {rejoined['comment']};"
              f" {rejoined['rejoin']}; HA events since the pillar change: {events.names(changed_at)}")  # fmt: skip
        assert (rejoining["host"], rejoining["primary"]) == (primary, new)
        assert rejoined["host"] == primary
        assert events.in_order(changed_at, "rejoining", "rejoined")
        assert not {"rejoin_failed", "rejoin_refused"} & set(events.names(healed_at))
    # The engine writes its state file once the tick that fired "rejoined" ends.
    assert wait_for(lambda: ha_state(cluster).get("rejoin") is None, 60), ha_state(cluster)
    assert lab[primary].run(["test", "-e", MARKER], check=False).returncode == 1
    assert lab[primary].psql("SELECT pg_is_in_recovery()") == "t"
    slot = f"{primary}_slot"
    assert wait_for(lambda: lab[new].psql(
        "SELECT r.application_name FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid"
        f" WHERE s.slot_name = '{slot}' AND r.state = 'streaming'") == primary, 60)  # fmt: skip
    # Every commit acknowledged to either client is on the rejoined standby too.
    assert wait_for(lambda: w.missing_on(lab[primary]) == [], 60), w.missing_on(lab[primary])[:10]
    assert set(local_acks) <= set(
        map(int, lab[primary].psql(f"SELECT id FROM writes WHERE id >= {local_start}", dbname="otus").split())
    )
    # Now the new primary dies outright: killed, its link down. Promoted again, nothing lost.
    new = _killed_primary_failed_over(cluster, new, background)
    # Back to manual and asynchronous, the watchdog leaves every server.
    back = copy.deepcopy(cluster.pillar)
    back.pop("ha")
    back.pop("synchronous")
    cluster.set_pillar(back)
    cluster.salt("saltutil.refresh_pillar", "wait=True", timeout=120)
    ret = cluster.highstate()
    assert state_errors(ret.data) == {}
    assert "active" not in _watchdogs(lab, SERVERS).values()
    assert {h: lab[h].psql("SHOW wal_keep_size") for h in SERVERS} == dict.fromkeys(SERVERS, "0")
    assert changed_states(cluster.highstate().data) == {}
    assert following(cluster, new, SERVERS)


def _killed_primary_failed_over(cluster, killed, background):
    """The primary killed (its postmaster SIGKILLed, then its link down), synchronous ANY 1, a
    client committing through the libpq multi-host list, a probe asking every server five
    times a second: the engine promotes the other standby (the previous failover's cooldown
    lowered to 0 first, in the pillar), the probe never sees two writable primaries, and no
    acknowledged commit is lost; the RTO is printed. Healed, with the engine's pillar change,
    auto_rejoin rewinds the killed host as a standby with every acknowledged commit.
    Returns the new primary."""
    lab = cluster.lab
    pillar = copy.deepcopy(cluster.pillar)
    pillar["ha"]["failover_cooldown"] = 0
    cluster.set_pillar(pillar)
    cluster.salt("saltutil.refresh_pillar", "wait=True", timeout=120)
    # The engine re-reads the pillar every 30 s: out of its cooldown, watching again.
    assert wait_for(lambda: engine_watching(cluster), 120), ha_state(cluster)
    with HaEvents(cluster) as events:
        w = writer(cluster)
        background.append(w)
        probe = HistoryProbe([lab[h] for h in SERVERS]).start()
        background.append(probe)
        try:
            time.sleep(3)
            before = len(w.committed)
            failed_at = kill_and_cut(lab[killed])
            promoted = events.wait("promoted", failed_at, 420)
            assert promoted, (events.names(failed_at), ha_state(cluster))
            new = promoted["candidate"]
            assert wait_for(lambda: w.resumed, 30)
            time.sleep(2)
        finally:
            for item in (w, probe):
                item.stop()
        promoted_at = next(at for at, n, _ in events.seen if n == "promoted" and at >= failed_at)
        missing = w.missing_on(lab[new])
        print(f"primary {killed} killed and cut off: automatic failover to {new}, RTO {w.resumed - failed_at:.1f} s"
              f" (failure to the first acknowledged commit on the new primary; promotion done"
              f" {promoted_at - failed_at:.1f} s after); {len(missing)} of {len(w.committed)} acknowledged commits"
              f" missing ({before} before the kill); HA events: {events.names(failed_at)}")  # fmt: skip
        assert new != killed
        assert events.in_order(failed_at, "primary_lost", "candidate_chosen", "promoted")
        assert probe.two_writable == []
        assert before > 0
        assert missing == []  # synchronous ANY 1 of 2

        lab[killed].run(["ip", "link", "set", "eth0", "up"])
        lab[killed].run(["systemctl", "restart", "salt-minion"])
        cluster.wait_for_minions(120)
        changed_at = time.monotonic()
        apply_pillar_change(cluster, promoted["pillar_change"])
        rejoined = events.wait("rejoined", changed_at, 420)
        assert rejoined, (events.names(changed_at), ha_state(cluster))
        assert rejoined["host"] == killed
    assert wait_for(lambda: ha_state(cluster).get("rejoin") is None, 60), ha_state(cluster)
    assert lab[killed].psql("SELECT pg_is_in_recovery()") == "t"
    assert wait_for(lambda: w.missing_on(lab[killed]) == [], 60), w.missing_on(lab[killed])[:10]
    return new


def test_every_day2_operation_is_refused_while_another_holds_the_cluster_lock(cluster):
    """The one lock: while something holds it (here this process, as a runner would), a
    switchover, failover, rejoin, follow and rolling restart are refused naming the holder,
    and change nothing."""
    import fcntl  # pylint: disable=import-outside-toplevel

    path = pathlib.Path(cluster.master.config["cachedir"]) / "pg_replication" / "day2.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    primary = next(h for h in SERVERS if cluster.pillar["hosts"][h]["role"] == "primary")
    other = next(h for h in SERVERS if h != primary)
    before = snapshot(cluster)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.truncate(0)
        fh.write(json.dumps({"operation": "switchover", "pid": 1, "since": time.time()}))
        fh.flush()
        for fun, args in (("switchover", [f"to={other}"]), ("failover", ["fenced=True"]),
                          ("rejoin", [f"host={other}"]), ("follow", [f"primary={primary}"]),
                          ("rolling_restart", [])):  # fmt: skip
            ret = cluster.run(f"pg_replication.{fun}", *args)
            assert ret.returncode == 1, ret.stdout
            assert ret.data["comment"].startswith(f"{fun} refused, nothing changed: no other day-2 operation"), ret.data
            assert "switchover (pid 1) holds the cluster lock" in ret.data["comment"]
        assert cluster.run("pg_replication.cluster_status").data["lock"]["operation"] == "switchover"
        fcntl.flock(fh, fcntl.LOCK_UN)
    assert snapshot(cluster) == before


# --------------------------------------------------------------------------- lost slot


def slot_wal_status(lab, primary, slot):
    return lab[primary].psql(f"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'")


def receive_wal_streams(lab, primary):
    return (
        lab[primary].psql(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'barman_receive_wal'"
            " AND state = 'streaming'"
        )
        == "1"
    )


def test_a_standby_whose_slot_lost_its_wal_is_rebuilt_by_its_highstate(cluster):
    """A standby stopped while the primary writes past max_slot_wal_keep_size (1MB here, set
    by hand) loses its slot's WAL and can never catch up: test=True predicts its rebuild, its
    highstate rebuilds it from a new base backup on a new slot, and it streams again with
    every row written meanwhile."""
    lab, good = cluster.lab, cluster.pillar
    primary = next(h for h in SERVERS if good["hosts"][h]["role"] == "primary")
    lost = sorted(set(SERVERS) - {primary})[1]
    slot = f"{lost}_slot"

    def alter_system(sql):
        lab[primary].psql(f"ALTER SYSTEM {sql}")
        lab[primary].psql("SELECT pg_reload_conf()")

    # Barman's receive-wal must stream before the writes (cron restarts it within a minute
    # of a switchover; `barman cron` starts it now), or its slot falls behind too.
    barman(cluster, "cron")
    assert wait_for(lambda: receive_wal_streams(lab, primary), 120, interval=2)
    alter_system("SET max_slot_wal_keep_size = '1MB'")
    try:
        lab[lost].run(["systemctl", "stop", STANDBY_UNIT])
        lab[primary].psql("CREATE TABLE lost_probe (n int)", dbname="otus")
        for n in range(4):
            lab[primary].psql(f"INSERT INTO lost_probe VALUES ({n})", dbname="otus")
            lab[primary].psql("SELECT pg_switch_wal()")
        # Only the stopped standby's slot may fall behind: the checkpoint invalidates every
        # slot whose restart_lsn lies in a segment before its redo segment (1MB keeps none),
        # so wait for the others' clients (Barman's receive-wal, the other standby) to
        # confirm the segments they received. pg_receivewal confirms a segment when it
        # closes it: its restart_lsn is then the first byte of the current segment, which
        # pg_walfile_name() would name as the previous one; compare segment numbers.
        others_caught_up = (
            "SELECT bool_and(floor(pg_wal_lsn_diff(restart_lsn, '0/0') / seg)"
            "                >= floor(pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') / seg))"
            " FROM pg_replication_slots,"
            "      (SELECT setting::numeric AS seg FROM pg_settings WHERE name = 'wal_segment_size') s"
            f" WHERE slot_name <> '{slot}'"
        )
        assert wait_for(lambda: lab[primary].psql(others_caught_up) == "t", 120, interval=2)
        lab[primary].psql("CHECKPOINT")
        assert (
            lab[primary].psql("SELECT string_agg(slot_name, ',') FROM pg_replication_slots WHERE wal_status = 'lost'")
            == slot
        )
        assert wait_for(lambda: slot_wal_status(lab, primary, slot) == "lost", 20)
    except BaseException:
        lab[lost].run(["systemctl", "start", STANDBY_UNIT], check=False)  # the next tests need it
        raise
    finally:
        alter_system("RESET max_slot_wal_keep_size")  # before the base backup copies the file
    predicted = cluster.highstate("test=True", target=lost)
    (boot,) = [s for s in predicted.data[lost].values() if s["__id__"] == "pg_replication-standby-bootstrap"]
    assert boot["result"] is None
    assert boot["changes"]["lost_slot"] == slot
    ret = cluster.highstate(target=lost)
    assert state_errors(ret.data) == {}
    (boot,) = [s for s in ret.data[lost].values() if s["__id__"] == "pg_replication-standby-bootstrap"]
    assert boot["changes"]["lost_slot"] == slot
    assert wait_for(lambda: slot_wal_status(lab, primary, slot) == "reserved", 30)
    assert wait_for(lambda: lab[lost].psql("SELECT count(*) FROM lost_probe", dbname="otus") == "4", 30)
    assert following(cluster, primary, SERVERS)


# --------------------------------------------------------------------------- minor upgrade (issue #31)

PG_PACKAGE = "postgresql-15"
UPDATE_PORT = REPO_PORT + 1


def installed_build(host, package=PG_PACKAGE):
    return host.run(["dpkg-query", "-W", "-f", "${Version}", package]).stdout


def newer_build(lab, directory, package=PG_PACKAGE, suffix="+pgr1"):
    """A repository of one package: the lab's build of ``package`` repacked with its version
    ``suffix``ed (the same binaries, a newer version to apt), as a point release would be;
    served over HTTP on the bridge like the lab's own. ``(server, version)``."""
    deb = next(Path(lab.repo).glob(f"{package}_*.deb"))
    tree = Path(directory) / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN/control"
    version = next(line for line in control.read_text().splitlines() if line.startswith("Version: "))[9:] + suffix
    control.write_text("".join(
        f"Version: {version}\n" if line.startswith("Version: ") else f"{line}\n"
        for line in control.read_text().splitlines()
    ))  # fmt: skip
    repo = Path(directory) / "repo"
    repo.mkdir()
    # Uncompressed: the build takes a second, not a minute of xz.
    subprocess.run(["dpkg-deb", "-Znone", "-b", str(tree), str(repo / f"{package}_{version}_amd64.deb")],
                   check=True, capture_output=True)  # fmt: skip
    for what, name in (("packages", "Packages"), ("release", "Release")):
        data = subprocess.run(["apt-ftparchive", what, "."], cwd=repo, check=True, capture_output=True).stdout
        (repo / name).write_bytes(data)
    return RepoServer(repo, lab.master_address, port=UPDATE_PORT).start(), version


def test_upgrade_minor_upgrades_every_server_with_one_switchovers_write_pause(cluster):
    """Issue #31: the hosts were installed from the lab's build of postgresql-15; a newer
    build appears in a second repository. test=True lists each host's move and changes
    nothing; the upgrade, with a client committing throughout, leaves every server on the
    new build with one switchover's write pause and no acknowledged commit lost; after the
    pillar change it prints, a highstate changes nothing."""
    lab = cluster.lab
    primary = next(h for h in SERVERS if cluster.pillar["hosts"][h]["role"] == "primary")
    old = installed_build(lab[primary])
    with tempfile.TemporaryDirectory() as directory:
        server, new = newer_build(lab, directory)
        try:
            for h in SERVERS:
                lab[h].run(["sh", "-c", f"echo 'deb [trusted=yes] http://{lab.master_address}:{UPDATE_PORT}/ ./' "
                                        "> /etc/apt/sources.list.d/lab-update.list"])  # fmt: skip
            before = snapshot(cluster)
            preview = cluster.run("pg_replication.upgrade_minor", "test=True")
            assert preview.returncode == 0, preview.stdout + preview.stderr
            print(json.dumps(preview.data, indent=1))
            assert preview.data["result"] is None
            assert preview.data["upgrades"] == {h: {PG_PACKAGE: {"old": old, "new": new}} for h in SERVERS}
            assert sum(step.startswith("switchover") for step in preview.data["steps"]) == 1
            assert snapshot(cluster) == before
            assert {installed_build(lab[h]) for h in SERVERS} == {old}

            w = writer(cluster)
            time.sleep(2)
            started = time.monotonic()
            # The preview refreshed every host's package lists a moment ago.
            ret = cluster.run("pg_replication.upgrade_minor", "refresh=False")
            took = time.monotonic() - started
            time.sleep(2)
            w.stop()
        finally:
            server.stop()
            for h in SERVERS:
                lab[h].run(["rm", "-f", "/etc/apt/sources.list.d/lab-update.list"])
    print(json.dumps(ret.data, indent=1))
    assert ret.returncode == 0, ret.stdout + ret.stderr
    assert {h: installed_build(lab[h]) for h in SERVERS} == dict.fromkeys(SERVERS, new)
    new_primary = next(line.split(": ", 1)[0].split(":")[2] for line in ret.data["pillar_change"]
                       if line.endswith(":role: primary"))  # fmt: skip
    missing = w.missing_on(lab[new_primary])
    print(f"upgrade_minor {old} -> {new} in {took:.1f}s: {len(w.committed)} commits acknowledged, {len(missing)}"
          f" missing; write unavailability (longest pause between two commits) {w.longest_pause:.1f}s;"
          f" primary {primary} -> {new_primary}")  # fmt: skip
    assert len(w.committed) > 50
    assert missing == []
    assert sum(line.startswith("switchover ") for line in ret.data["done"]) == 1
    assert w.longest_pause < 30  # one switchover's, not a server's upgrade
    apply_pillar_change(cluster, ret.data["pillar_change"])
    assert following(cluster, new_primary, SERVERS)
    after = cluster.highstate()
    assert state_errors(after.data) == {}
    assert changed_states(after.data) == {}


def test_switchover_refused_when_pg_rewind_could_not_rejoin_the_primary(cluster):
    """Near the end (it leaves the primary without checksums and with wal_log_hints off in
    its postgresql.auto.conf, which a base backup would copy): neither wal_log_hints nor data
    checksums on the primary, so pg_rewind could not bring it back; refused, nothing changed."""
    lab = cluster.lab
    primary = next(h for h in SERVERS if cluster.pillar["hosts"][h]["role"] == "primary")
    target = next(h for h in SERVERS if h != primary)
    datadir = "/var/lib/postgresql/15/main"
    lab[primary].run(["systemctl", "stop", "postgresql@15-main"])
    lab[primary].run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_checksums", "--disable",
                      "-D", datadir])  # fmt: skip
    lab[primary].run(["sh", "-c", f"echo \"wal_log_hints = 'off'\" >> {datadir}/postgresql.auto.conf"])
    lab[primary].run(["systemctl", "start", "postgresql@15-main"])
    assert following(cluster, primary, SERVERS)
    before = snapshot(cluster)
    refused = cluster.run("pg_replication.switchover", f"to={target}")
    assert refused.returncode == 1
    assert f"pg_rewind can rejoin {primary} (wal_log_hints or data checksums)" in refused.data["comment"]
    assert "wal_log_hints=off data_checksums=off" in refused.data["comment"]
    assert snapshot(cluster) == before


def test_a_standby_removed_from_the_pillar_loses_its_slot_and_restarts_nothing(cluster):
    """The operator retires a standby (stops it) and removes it from the pillar: test=True
    predicts its slot's drop and no restart; the highstate drops the slot (made by the
    formula), restarts no server and leaves a slot made by hand alone."""
    lab, good = cluster.lab, cluster.pillar
    primary = next(h for h in SERVERS if good["hosts"][h]["role"] == "primary")
    gone, kept = sorted(set(SERVERS) - {primary})
    slot = f"{gone}_slot"
    lab[primary].psql("SELECT pg_create_physical_replication_slot('ops_slot')")
    before = start_times(lab)
    lab[gone].run(["systemctl", "stop", "postgresql@15-main"])
    assert wait_for(lambda: lab[primary].psql(f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'")
                    == "f", 15)  # fmt: skip
    pillar = copy.deepcopy(good)
    del pillar["hosts"][gone]
    cluster.set_pillar(pillar)
    predicted = cluster.highstate("test=True")
    follow = next(
        s for s in predicted.data[primary].values() if s["__id__"] == "pg_replication-slots-follow-the-pillar"
    )
    assert follow["changes"]["dropped"] == [slot]
    assert not any(changes for changes, _ in restart_states(predicted).values())
    ret = cluster.highstate()
    assert state_errors(ret.data) == {}
    slots = cluster_status(cluster)[primary]["slots"]
    assert slot not in slots
    assert "ops_slot" in slots
    after = {h: lab[h].psql("SELECT pg_postmaster_start_time()") for h in (primary, kept)}
    assert after == {h: before[h] for h in (primary, kept)}
    assert following(cluster, primary, (primary, kept))


def test_with_tls_pgbouncer_takes_clients_over_tls_only_and_reaches_the_primary_over_tls(cluster, tmp_path):
    """pg_replication:tls added to the running cluster, with a certificate for the pooler's
    host: a client verifies PgBouncer's certificate (verify-full) and its server connection
    to the primary is TLS too (pg_stat_ssl on the primary, seen from inside the pooled
    session); a client in clear text is refused; the next highstate changes nothing."""
    import psycopg2  # pylint: disable=import-outside-toplevel

    lab, pillar = cluster.lab, copy.deepcopy(cluster.pillar)
    primary = next(h for h in SERVERS if pillar["hosts"].get(h, {}).get("role") == "primary")
    servers = [h for h in SERVERS if h in pillar["hosts"]]
    pillar["tls"] = tls_pillar(lab, (*servers, "backup"))
    cluster.set_pillar(pillar)
    ret = cluster.highstate()
    assert state_errors(ret.data) == {}
    assert changed_states(cluster.highstate().data) == {}
    ca = tmp_path / "ca.crt"
    ca.write_text(pillar["tls"]["ca_cert"])
    pooler = {"host": lab["backup"].address, "port": POOLER_PORT, "user": "writer", "password": WRITER_PASSWORD,
              "dbname": "otus", "connect_timeout": 5}  # fmt: skip
    conn = psycopg2.connect(sslmode="verify-full", sslrootcert=str(ca), **pooler)
    try:
        assert conn.info.ssl_in_use
        print(f"client to PgBouncer: {conn.info.ssl_attribute('protocol')} {conn.info.ssl_attribute('cipher')}")
        with conn.cursor() as cur:
            cur.execute("SELECT host(inet_client_addr()), host(inet_server_addr()), ssl, version, cipher"
                        " FROM pg_stat_ssl WHERE pid = pg_backend_pid()")  # fmt: skip
            seen = cur.fetchone()
    finally:
        conn.close()
    print(f"PgBouncer to the primary (pg_stat_ssl): {seen}")
    assert seen[:3] == (lab["backup"].address, lab[primary].address, True)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(sslmode="disable", **pooler).close()
    config = lab["backup"].run(["cat", "/etc/pgbouncer/pgbouncer.ini"]).stdout
    assert "server_tls_sslmode = verify-full" in config
    assert "client_tls_sslmode = require" in config
