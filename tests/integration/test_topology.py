"""Topology changes on one lab of booted hosts: a primary, three standbys (standby3 cascading
from standby2) and a Barman host. A fourth standby, a delayed one, is added and removed
without restarting any server; the applications' databases, roles, privileges and pg_hba
rules come and go with the pillar; then a switchover to the cascade's upstream keeps its cascading standby, with a
client committing throughout ("nothing lost" is counted). On TLS last: certificates libpq
would refuse fail at render, one gone bad on disk makes the switchover refuse, and a step
failing after a promotion leaves a writable primary that `follow` finishes."""

import copy
import secrets
import threading
import time

import pytest

from lab.events import MasterEvents
from lab.results import changed_states, state_errors, state_ids
from lab.salt import SaltLab, reference_pillar
from lab.scenario import (
    SERVER,
    Writer,
    apply_pillar_change,
    cluster_status,
    converge,
    ensure_otus,
    following,
    unchanged_snapshot,
    wait_for,
)
from lab.tls import CertificateAuthority, tls_pillar
from tests.invalid_pillars import CASES as ALL_CASES
from tests.invalid_pillars import LAB_CASES, mutate

pytestmark = pytest.mark.integration
LAB_IMAGE = ("bookworm", "provisioned")
LAB_HOSTS = ("master", "standby", "standby2", "standby3", "backup", "standby4")
ROLES = {"master": "primary", "standby": "standby", "standby2": "standby", "standby3": "standby", "backup": "barman"}
SERVERS = ("master", "standby", "standby2", "standby3")
CASCADE = {"standby3": "standby2"}
CASES = [case for case in ALL_CASES if case[0] in LAB_CASES]
WRITER_PASSWORD = secrets.token_urlsafe(18)
# standby4 is a delayed standby: it replays each commit this many seconds late.
DELAY = 12
APP_PASSWORD = secrets.token_urlsafe(18)
# Topologies the plan refuses: (what, path, value, the key its error names).
BAD_TOPOLOGIES = [
    ("cycle", ("hosts", "standby2", "upstream"), "standby3", "pg_replication:hosts:standby2:upstream: the chain"),
    ("unknown upstream", ("hosts", "standby3", "upstream"), "standby9", "pg_replication:hosts:standby3:upstream"),
    ("sync count too large", ("synchronous",), {"count": 3, "standbys": ["standby", "standby2"]},
     "pg_replication:synchronous:count"),
    ("headroom too small", ("settings", "max_replication_slots"), 4, "pg_replication:settings:max_replication_slots"),
]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(salt_factories, lab):
    # standby4 runs a minion with no role: the pillar adds it later.
    pillar = reference_pillar(lab, roles=ROLES)
    pillar["hosts"]["standby3"]["upstream"] = "standby2"
    salt_lab = SaltLab(salt_factories, lab, pillar)
    with salt_lab.started():
        converge(salt_lab)
        Writer.prepare(lab["master"], WRITER_PASSWORD)
        yield salt_lab


def start_times(lab, hosts=SERVERS):
    return {h: lab[h].psql("SELECT pg_postmaster_start_time()") for h in hosts}


def streaming_clients(host):
    """``application_name:slot`` of every client streaming from ``host``."""
    return host.psql(
        "SELECT string_agg(r.application_name || ':' || s.slot_name, ',' ORDER BY s.slot_name)"
        " FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.state = 'streaming'"
    )


def row_everywhere(cluster, primary, standbys, timeout=20):
    """A row inserted on ``primary``: the standbys that read it within ``timeout`` seconds."""
    lab, note = cluster.lab, f"row-{time.time_ns()}"
    ensure_otus(lab[primary])
    lab[primary].psql("CREATE TABLE IF NOT EXISTS homework (id serial PRIMARY KEY, note text)", dbname="otus")
    lab[primary].psql(f"INSERT INTO homework (note) VALUES ('{note}')", dbname="otus")

    def read(host):
        try:
            return lab[host].psql(f"SELECT note FROM homework WHERE note = '{note}'", dbname="otus") == note
        except RuntimeError:  # not replayed yet
            return False

    return sorted(h for h in standbys if wait_for(lambda h=h: read(h), timeout))


def seconds_until_visible(cluster, primary, standbys, timeout):
    """A row committed on ``primary``: the seconds each of ``standbys`` took to show it
    (None: not within ``timeout``)."""
    lab, note = cluster.lab, f"row-{time.time_ns()}"
    ensure_otus(lab[primary])
    lab[primary].psql("CREATE TABLE IF NOT EXISTS homework (id serial PRIMARY KEY, note text)", dbname="otus")
    lab[primary].psql(f"INSERT INTO homework (note) VALUES ('{note}')", dbname="otus")
    started, seen = time.monotonic(), {}

    def read_all():
        for host in standbys:
            if host not in seen:
                try:
                    if lab[host].psql(f"SELECT note FROM homework WHERE note = '{note}'", dbname="otus") == note:
                        seen[host] = time.monotonic() - started
                except RuntimeError:  # not replayed yet
                    pass
        return len(seen) == len(standbys)

    wait_for(read_all, timeout)
    return {h: seen.get(h) for h in standbys}


def restart_changes(ret):
    """Per host, the changes of the restart state (empty: no restart)."""
    return {
        host: state.get("changes")
        for host, states in ret.data.items()
        for state in (states.values() if isinstance(states, dict) else ())
        if state.get("__id__") == "pg_replication-restart-if-pending" and state.get("changes")
    }


def test_each_standby_streams_from_its_upstream_on_its_slot(cluster):
    lab = cluster.lab
    assert (
        streaming_clients(lab["master"]) == "barman_receive_wal:barman_slot,standby2:standby2_slot,standby:standby_slot"
    )
    assert streaming_clients(lab["standby2"]) == "standby3:standby3_slot"
    assert "standby3_slot" not in cluster_status(cluster)["master"]["slots"]


def test_a_row_written_on_the_primary_reaches_every_standby_the_cascaded_one_included(cluster):
    assert row_everywhere(cluster, "master", SERVERS[1:]) == ["standby", "standby2", "standby3"]


def assert_refused_at_render(cluster, cases):
    """Each ``(what, pillar, key)`` of ``cases``: every host's highstate fails at render
    naming ``key`` and runs no state; afterwards nothing changed on any host."""
    good, before = cluster.pillar, unchanged_snapshot(cluster, cluster.lab.hosts)
    for what, bad, key in cases:
        cluster.set_pillar(bad)
        try:
            returns = cluster.call("state.apply")
        finally:
            cluster.set_pillar(good)
        for host, returned in returns.items():
            assert returned["retcode"] != 0, (what, host)
            assert isinstance(returned["ret"], list), (what, host, str(returned["ret"])[:2000])  # no state ran
            assert key in str(returned["ret"]), (what, host, str(returned["ret"])[:500])
    assert unchanged_snapshot(cluster, cluster.lab.hosts) == before


def refused_one_per_minion(cluster, cases):
    """Each ``(what, pillar, key)`` of ``cases`` on one minion, each minion with a different
    one, so that one state.apply tries as many as there are hosts: ``{what: what was wrong}``
    of those that did not fail at render naming ``key``, without a traceback, running no
    state."""
    hosts, wrong = sorted(cluster.lab.hosts), {}
    for first in range(0, len(cases), len(hosts)):
        batch = dict(zip(hosts, cases[first : first + len(hosts)]))
        with cluster.pillar_per_minion({host: case[1] for host, case in batch.items()}):
            returns = cluster.call("state.apply", target=list(batch), tgt_type="list")
        for host, (what, _pillar, key) in batch.items():
            result = (returns.get(host) or {}).get("ret")
            # Each message as it is (a list's repr escapes the quotes a key may hold).
            text = "\n".join(map(str, result)) if isinstance(result, list) else None
            if not (text and key in text and "Traceback" not in text):
                wrong[what] = str(result)[:500]
            elif returns[host]["retcode"] == 0:
                wrong[what] = "exit code 0"
    return wrong


def test_bad_topologies_fail_at_render_naming_the_key_and_change_nothing(cluster):
    """Each bad topology on one minion (one state.apply tries as many as there are hosts):
    it fails at render naming the key, runs no state, and nothing changed on any host."""
    hosts, good = sorted(cluster.lab.hosts), cluster.pillar
    before = unchanged_snapshot(cluster, hosts)
    cases = [(what, mutate(good, path, value), key) for what, path, value, key in BAD_TOPOLOGIES]
    assert refused_one_per_minion(cluster, cases) == {}
    assert unchanged_snapshot(cluster, hosts) == before


def test_every_invalid_pillar_fails_at_render_naming_the_key_and_changes_nothing(cluster):
    """One invalid pillar of each kind (tests/invalid_pillars.py LAB_CASES: injections through each
    file format, command line and SQL, wrong types, unknown keys, impossible topologies; every
    case renders in tests/packaging/test_invalid_render.py), through the real salt-master:
    each minion gets a different invalid pillar, so one state.apply tries six.
    Each fails at render on its minion, naming the key, without a traceback and running no
    state; then nothing changed on any host (files with owners and modes, roles and their
    verifiers, slots, pg_settings, start times, Barman's files and backups)."""
    hosts, good = sorted(cluster.lab.hosts), cluster.pillar
    before = unchanged_snapshot(cluster, hosts)
    cases = [(case, mutate(good, path, value), key) for case, path, value, key in CASES]
    assert refused_one_per_minion(cluster, cases) == {}
    assert len(CASES) == len(LAB_CASES)
    assert unchanged_snapshot(cluster, hosts) == before


# The new standby is cloned from Barman's latest backup over the formula's SSH link (and
# catches up from Barman), not from the primary.
FROM_BARMAN = {"restore_from_barman": True, "bootstrap_from": "barman"}


def replication_commands(host, command):
    """How many times ``host`` logged the replication command (log_replication_commands)."""
    logs = "/var/lib/postgresql/15/main/log/*.log"
    found = host.run(["sh", "-c", f"cat {logs} | grep -c 'replication command: {command}'"], check=False)
    return int(found.stdout.strip() or 0)


def test_adding_a_standby_restarts_no_server_and_test_mode_said_so(cluster):
    """standby4 joins as a delayed standby (recovery_min_apply_delay), cloned from Barman
    (standby:bootstrap_from barman, over the restore_from_barman link the same highstate sets
    up): the primary, logging every replication command, sends no base backup; standby4
    holds every row, streams on its slot, lags by its delay, cluster_status shows it, and a
    switchover to it is refused."""
    lab, pillar = cluster.lab, copy.deepcopy(cluster.pillar)
    master = lab["master"]
    before = start_times(lab)
    pillar["hosts"]["standby4"] = {"role": "standby", "address": lab["standby4"].address,
                                   "settings": {"recovery_min_apply_delay": f"{DELAY}s"}}  # fmt: skip
    pillar["standby"] = dict(pillar.get("standby") or {}, **FROM_BARMAN)
    cluster.set_pillar(pillar)
    predicted = cluster.highstate("test=True")
    assert predicted.returncode == 0, predicted.stdout[-3000:]
    assert restart_changes(predicted) == {}
    assert "pg_replication-slot-standby4_slot" in state_ids(predicted.data, test=True)["master"]
    master.psql("ALTER SYSTEM SET log_replication_commands = on")
    master.psql("SELECT pg_reload_conf()")
    try:
        sent = replication_commands(master, "BASE_BACKUP")
        ret = cluster.highstate()
        assert state_errors(ret.data) == {}
        (boot,) = [s for s in ret.data["standby4"].values() if s["__id__"] == "pg_replication-standby-bootstrap"]
        assert boot["changes"]["from_barman"] == SERVER, boot
        assert replication_commands(master, "BASE_BACKUP") == sent  # the primary sent none
    finally:
        master.psql("ALTER SYSTEM RESET log_replication_commands")
        master.psql("SELECT pg_reload_conf()")
    assert start_times(lab) == before
    assert "standby4:standby4_slot" in streaming_clients(lab["master"])
    seconds = seconds_until_visible(cluster, "master", ["standby3", "standby4"], DELAY + 30)
    assert seconds["standby3"] is not None, seconds
    assert seconds["standby3"] < 10, seconds
    assert seconds["standby4"] is not None, seconds
    assert DELAY - 1 <= seconds["standby4"] <= DELAY + 20, seconds
    count = "SELECT count(*) FROM homework"  # every row, those before it joined included
    assert lab["standby4"].psql(count, dbname="otus") == master.psql(count, dbname="otus")
    assert cluster_status(cluster)["standby4"]["apply_delay_seconds"] == DELAY
    refused = cluster.run("pg_replication.switchover", "to=standby4", "test=True")
    failed = {c["check"]: c["detail"] for c in refused.data["checks"] if not c["ok"]}
    assert failed["standby4 is not a delayed standby"] == f"recovery_min_apply_delay: {DELAY:.1f} s", failed
    again = cluster.highstate()
    assert changed_states(again.data) == {}


def test_removing_it_drops_its_slot_and_leaves_the_others_untouched(cluster):
    """standby4 retired and out of the pillar: its slot is dropped, no server restarts; a slot
    made by hand on the primary is reported (the state's comment, cluster_status with its
    retained bytes), never dropped."""
    lab, pillar = cluster.lab, copy.deepcopy(cluster.pillar)
    lab["master"].psql("SELECT pg_create_physical_replication_slot('by_hand_slot', true)")
    before = start_times(lab)
    lab["standby4"].run(["systemctl", "stop", "postgresql@15-main"])
    del pillar["hosts"]["standby4"]
    for key in FROM_BARMAN:  # the SSH link off again: the backup host revokes the keys
        pillar["standby"].pop(key)
    cluster.set_pillar(pillar)
    ret = cluster.highstate()
    assert state_errors(ret.data) == {}
    assert restart_changes(ret) == {}
    follow = next(s for s in ret.data["master"].values() if s["__id__"] == "pg_replication-slots-follow-the-pillar")
    assert follow["changes"]["dropped"] == ["standby4_slot"]
    assert "left alone (not made by this formula): by_hand_slot" in follow["comment"]
    slots = cluster_status(cluster)["master"]["slots"]
    assert "standby4_slot" not in slots
    assert slots["by_hand_slot"]["active"] is False
    assert slots["by_hand_slot"]["retained_bytes"] >= 0
    assert start_times(lab) == before
    assert following(cluster, "master", SERVERS, upstreams=CASCADE)


def app_connects(cluster, user, dbname, password=APP_PASSWORD):
    """A client on the lab network (the backup host) connects to the primary over TCP with
    SCRAM: the error when it cannot, '' when it can."""
    lab = cluster.lab
    res = lab["backup"].run(
        ["psql", "-XAtq", "-h", lab["master"].address, "-U", user, "-d", dbname, "-c", "SELECT current_user"],
        check=False, env={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return "" if res.returncode == 0 and res.stdout.strip() == user else res.stderr.strip() or res.stdout


def has_extension(host, dbname, name):
    try:
        return host.psql(f"SELECT extname FROM pg_extension WHERE extname = '{name}'", dbname=dbname) == name
    except RuntimeError:  # the database not replayed yet
        return False


def highstate_then_nothing(cluster, pillar, target="*"):
    """The pillar set, a highstate without errors, then another that changes nothing."""
    cluster.set_pillar(pillar)
    ret = cluster.highstate(target=target)
    assert state_errors(ret.data) == {}
    assert changed_states(cluster.highstate(target=target).data) == {}
    return ret


def test_application_objects_follow_the_pillar_and_leave_only_through_absent(cluster):
    """Databases (an extension), roles with SCRAM passwords, privileges (default ones, then
    one revoked) and pg_hba rules from the pillar: a role connects from the lab network to
    its database and is refused on another; the extension is on every standby; a role
    removed from the pillar stays until absent lists it."""
    lab, pillar = cluster.lab, copy.deepcopy(cluster.pillar)
    network = pillar["network"]
    pillar["network"] = None  # every role to every database: only the rules below now
    pillar["roles"] = {"app_owner": {"password": APP_PASSWORD}, "app_reader": {"password": APP_PASSWORD}}
    pillar["databases"] = {"appdb": {"owner": "app_owner", "extensions": {"pg_trgm": None}},
                           "otherdb": {"owner": "app_owner"}}  # fmt: skip
    reader_default = {"role": "app_reader", "database": "appdb", "on": "tables", "schema": "public",
                      "default_for": "app_owner", "privileges": ["INSERT", "SELECT"]}  # fmt: skip
    reader_tables = {"role": "app_reader", "database": "appdb", "on": "tables", "schema": "public",
                     "privileges": ["INSERT", "SELECT"]}  # fmt: skip
    pillar["privileges"] = [reader_default, reader_tables]
    pillar["hba"] = [{"type": "host", "database": "appdb", "user": user, "address": network,
                      "method": "scram-sha-256"} for user in ("app_owner", "app_reader")]  # fmt: skip
    highstate_then_nothing(cluster, pillar)
    assert app_connects(cluster, "app_owner", "appdb") == ""
    assert "no pg_hba.conf entry" in app_connects(cluster, "app_owner", "otherdb")
    assert "password authentication failed" in app_connects(cluster, "app_reader", "appdb", password="wrong-1234")
    assert [h for h in SERVERS[1:] if wait_for(lambda h=h: has_extension(lab[h], "appdb", "pg_trgm"), 20)] == list(
        SERVERS[1:]
    )
    # A table app_owner makes gets the default privileges; then INSERT is revoked.
    lab["master"].psql("SET ROLE app_owner; CREATE TABLE orders (id int)", dbname="appdb")
    has_insert = "SELECT has_table_privilege('app_reader', 'public.orders', 'INSERT')"
    assert lab["master"].psql(has_insert, dbname="appdb") == "t"
    reader_tables["privileges"] = ["SELECT"]
    highstate_then_nothing(cluster, pillar, target="master")
    assert lab["master"].psql(has_insert, dbname="appdb") == "f"
    # app_reader leaves the pillar: it stays (and still connects) until absent lists it.
    del pillar["roles"]["app_reader"]
    pillar["privileges"], pillar["hba"] = [], pillar["hba"][:1]
    highstate_then_nothing(cluster, pillar, target="master")
    assert lab["master"].psql("SELECT count(*) FROM pg_roles WHERE rolname = 'app_reader'") == "1"
    del pillar["databases"]["otherdb"]
    pillar["absent"] = {"roles": ["app_reader"], "databases": ["otherdb"]}
    pillar["network"] = network
    highstate_then_nothing(cluster, pillar)
    assert lab["master"].psql("SELECT count(*) FROM pg_roles WHERE rolname IN ('app_reader', 'app_owner')") == "1"
    assert lab["master"].psql("SELECT count(*) FROM pg_database WHERE datname = 'otherdb'") == "0"


def assert_every_member_follows(cluster, ret, primary):
    """The runner's ``ret`` succeeded; once its pillar change is made, every server follows
    ``primary`` and Barman's check is all OK. The members."""
    assert ret.returncode == 0, ret.stdout[-3000:]
    apply_pillar_change(cluster, ret.data["pillar_change"])
    members = following(cluster, primary, SERVERS)
    assert members, f"not every server follows {primary}"
    assert members["backup"]["barman_check"] == {SERVER: "all OK"}
    return members


def test_switchover_to_the_cascades_upstream_keeps_the_cascade_and_loses_nothing(cluster):
    """standby2, upstream of standby3, becomes the primary: standby3 follows it on the same
    slot without a new base backup; the old primary rejoins; every acknowledged commit is on
    every server, and the changed pillar converges with no change."""
    lab = cluster.lab
    cascaded_start = start_times(lab, ["standby3"])
    writer = Writer([lab[h].address for h in SERVERS], WRITER_PASSWORD).start()
    time.sleep(1)
    ret = cluster.run("pg_replication.switchover", "to=standby2")
    time.sleep(1)
    writer.stop()
    assert_every_member_follows(cluster, ret, "standby2")
    assert streaming_clients(lab["standby2"]).split(",") == [
        "barman_receive_wal:barman_slot", "master:master_slot", "standby3:standby3_slot", "standby:standby_slot",
    ]  # fmt: skip
    assert start_times(lab, ["standby3"]) == cascaded_start  # followed the promotion, never rebuilt
    assert len(writer.committed) > 0
    for host in SERVERS:  # every acknowledged commit, once replayed
        assert wait_for(lambda h=host: not writer.missing_on(lab[h]), 20), (host, writer.missing_on(lab[host]))
    assert changed_states(cluster.highstate().data) == {}


def ssl_clients(host):
    """``application_name:ssl`` of every client streaming from ``host``."""
    return host.psql(
        "SELECT string_agg(r.application_name || ':' || s.ssl, ',' ORDER BY r.application_name)"
        " FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.state = 'streaming'"
    )


def test_turning_tls_on_for_the_running_cluster_restarts_no_server_and_every_client_reconnects_over_tls(cluster):
    """The cluster stays on TLS for the tests after this one: pg_replication:tls added to the running cluster's
    pillar. test=True predicts no restart and Barman's reconnection; the highstate restarts
    no server, every streaming client (standbys, the cascaded one, Barman's receive-wal)
    connects again over TLS, and the next highstate changes nothing."""
    lab, pillar = cluster.lab, copy.deepcopy(cluster.pillar)
    primary = next(h for h in SERVERS if pillar["hosts"][h]["role"] == "primary")
    assert set(ssl_clients(lab[primary]).split(",")) == {f"{c}:false" for c in _clients(cluster, primary)}
    before = start_times(lab)
    pillar["tls"] = tls_pillar(lab, SERVERS)
    cluster.set_pillar(pillar)
    predicted = cluster.highstate("test=True")
    assert predicted.returncode == 0, predicted.stdout[-3000:]
    assert restart_changes(predicted) == {}
    assert f"pg_replication-barman-reconnect-{SERVER}" in state_ids(predicted.data, test=True)["backup"]
    ret = cluster.highstate()
    assert state_errors(ret.data) == {}
    assert state_ids(ret.data) == state_ids(predicted.data, test=True)
    assert start_times(lab) == before
    want = {f"{c}:true" for c in _clients(cluster, primary)}
    assert wait_for(lambda: set((ssl_clients(lab[primary]) or "").split(",")) == want, 60), ssl_clients(lab[primary])
    assert following(cluster, primary, SERVERS)
    assert changed_states(cluster.highstate().data) == {}


def _clients(cluster, primary):
    """What streams from ``primary``: Barman's receive-wal and every standby (the cascade's
    upstream is the primary now)."""
    return ["barman_receive_wal", *(h for h in SERVERS if h != primary)]


# On TLS from here: the primary is standby2 (the switchover above), standby3 cascades from it.
CERT = "/etc/postgresql/15/main/pg_replication-server.crt"
KEY = "/etc/postgresql/15/main/pg_replication-server.key"


def _certificate_faults(pillar, address):
    """Certificates libpq would refuse, as an operator pastes them: (what, pillar); master's
    certificate, master being at ``address``."""
    other = CertificateAuthority("a pasted wrong CA")
    faults = []
    for what, change in (
        ("signed by another CA", lambda tls: tls["hosts"].update(master=other.server("master", address))),
        ("another certificate's key", lambda tls: tls["hosts"]["master"].update(key=tls["hosts"]["standby"]["key"])),
        ("another host's certificate", lambda tls: tls["hosts"].update(master=tls["hosts"]["standby"])),
    ):
        bad = copy.deepcopy(pillar)
        change(bad["tls"])
        faults.append((what, bad))
    return faults


def test_a_certificate_libpq_would_refuse_fails_at_render_on_every_host_and_changes_nothing(cluster):
    faults = _certificate_faults(cluster.pillar, cluster.lab["master"].address)
    assert_refused_at_render(cluster, [(what, bad, "pg_replication:tls:hosts:master:") for what, bad in faults])


def test_a_certificate_gone_bad_on_disk_makes_the_switchover_refuse_and_change_nothing(cluster):
    """master's certificate turns bad after the render check (its CA rotated under it): the
    switchover to it refuses before anything changes, naming each pair that cannot connect."""
    lab, pillar = cluster.lab, copy.deepcopy(cluster.pillar)
    del pillar["hosts"]["standby3"]["upstream"]  # a switchover away from standby2 may not leave a cascade on it
    cluster.set_pillar(pillar)
    assert state_errors(cluster.highstate().data) == {}
    other = CertificateAuthority("a rotated CA").server("master", lab["master"].address)
    saved = {path: lab["master"].run(["cat", path]).stdout for path in (CERT, KEY)}
    before = start_times(lab)
    for path, text in ((CERT, other["cert"]), (KEY, other["key"])):
        lab["master"].run(["sh", "-c", f"cat > {path}"], input=text)
    lab["master"].psql("SELECT pg_reload_conf()")
    try:
        ret = cluster.run("pg_replication.switchover", "to=master")
        assert ret.returncode != 0, ret.stdout[-3000:]
        assert ret.data["comment"].startswith("switchover refused, nothing changed"), ret.data["comment"]
        failed = {c["check"]: c["detail"] for c in ret.data["checks"] if not c["ok"]}
        assert "standby2 reaches master as its standby will" in failed, failed
        assert "certificate verify failed" in failed["standby2 reaches master as its standby will"], failed
        assert any(check.startswith("backup reaches master with Barman's") for check in failed), failed
        assert start_times(lab) == before
        assert lab["standby2"].psql("SELECT pg_is_in_recovery()") == "f"
    finally:
        for path, text in saved.items():
            lab["master"].run(["sh", "-c", f"cat > {path}"], input=text)
        lab["master"].psql("SELECT pg_reload_conf()")
    assert changed_states(cluster.highstate().data) == {}


def test_a_step_failing_after_the_promotion_leaves_a_writable_primary_and_follow_finishes(cluster):
    """Switchover standby2 -> standby with master's minion frozen once the preflight passed:
    standby keeps taking writes, the runner goes on with the others and names what is left;
    once the minion is back, `follow` finishes: every member streams, Barman all OK, every
    acknowledged commit everywhere, the next highstate changes nothing."""
    lab = cluster.lab
    slot_made = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'master_slot'"
    assert lab["standby"].psql(slot_made) == "0"
    writer = Writer([lab[h].address for h in SERVERS], WRITER_PASSWORD).start()
    result = {}
    runner = threading.Thread(target=lambda: result.update(ret=cluster.run("pg_replication.switchover", "to=standby")))
    with MasterEvents(cluster, "salt/pg_replication/promoted") as events:
        runner.start()
        try:
            # The runner makes master's slot on standby right after its preflight, and asks
            # master's minion nothing more until it applies the formula there, after the
            # promotion: frozen now, the minion misses that step whatever the machine's load
            # (frozen on seeing the promotion, it was once too late).
            assert wait_for(lambda: lab["standby"].psql(slot_made) == "1", 300, 0.2)
            lab["master"].freeze_unit("salt-minion")
            runner.join(900)
            returned = time.monotonic()
        finally:
            # Killed, so the job published while it was frozen dies with it.
            lab["master"].kill_unit("salt-minion")
            lab["master"].run(["systemctl", "restart", "salt-minion"])
    ret = result["ret"]
    assert ret.returncode != 0, ret.stdout[-3000:]
    left = {step.split(":")[0]: step for step in ret.data["left"]}
    # master's PostgreSQL, its minion frozen, still streams from standby2 and may cascade
    # from it again once standby2 runs as a standby: standby2's rejoin then stops on that
    # active slot (a slot still streamed from is never dropped), and `follow` finishes it.
    assert set(left) in ({"master"}, {"master", "standby2"}), ret.data["left"]
    if "standby2" in left:
        assert "still streamed from: master_slot" in left["standby2"], left["standby2"]
    assert ret.data["finish"] == "salt-run pg_replication.follow primary=standby"
    # The promotion was on the master's bus at once, not when the runner returned.
    promoted = [(at, {k: v for k, v in data.items() if not k.startswith("_")}) for at, _, data in events.seen]
    expected = {"operation": "switchover", "primary": "standby", "old_primary": "standby2"}
    assert [dict(data, timeline=None) for _, data in promoted] == [dict(expected, timeline=None)], promoted
    assert isinstance(promoted[0][1]["timeline"], int), promoted
    assert promoted[0][0] < returned - 5, (promoted, returned)
    committed = len(writer.committed)
    assert wait_for(lambda: len(writer.committed) > committed, 20), "the new primary takes no writes"
    # Short pings: a ping published before the restarted minion reconnects is lost, and a
    # LocalClient call waits its whole timeout (300 s) for a minion that never got the job.
    cluster.wait_for_minions(120)
    done = cluster.run("pg_replication.follow", "primary=standby")
    writer.stop()
    assert_every_member_follows(cluster, done, "standby")
    for host in SERVERS:  # every acknowledged commit, once replayed
        assert wait_for(lambda h=host: not writer.missing_on(lab[h]), 30), (host, writer.missing_on(lab[host]))
    assert changed_states(cluster.highstate().data) == {}
