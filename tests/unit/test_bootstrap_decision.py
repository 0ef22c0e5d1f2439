"""The standby bootstrap decision (_utils/pg_replication_bootstrap.py) as a table: every
action, every refusal, from plain facts (no host, no server)."""

import pytest

from tests.conftest import load_util

FACTS = {
    "name": "/var/lib/postgresql/15/main",
    "real_path": "/var/lib/postgresql/15/main",
    "primary_host": "10.0.0.1",
    "slot": "standby_slot",
    "minion_id": "standby",
    "local_id": "7001",
    "primary_id": "7001",
    "empty": False,
    "marked": True,
    "slot_lost": False,
    "catch_up_from_archive": False,
    "rebuild_lost_slot": True,
    "wipe_unrelated_data": False,
    "wipe_promoted_copy": False,
}
EMPTY = {"local_id": None, "empty": True, "marked": False, "slot_lost": None}
OTHER = {"local_id": "9009", "marked": False, "slot_lost": None}
COPY = {"marked": False, "slot_lost": None}  # the primary's system, no standby marker
REFUSE_OTHER = (
    "/var/lib/postgresql/15/main holds system 9009, not a standby of 10.0.0.1 (system 7001); refusing to"
    " overwrite it. Empty it yourself, or set pg_replication:standby:wipe_unrelated_data: True to let the formula do it"
)
REFUSE_FILES = (
    "/var/lib/postgresql/15/main holds files that are not a cluster, not a standby of 10.0.0.1 (system 7001);"
    " refusing to overwrite it. Empty it yourself, or set pg_replication:standby:wipe_unrelated_data: True to let"
    " the formula do it"
)
REFUSE_COPY = (
    "/var/lib/postgresql/15/main holds a non-standby copy of system 7001 (a former primary? `salt-run"
    " pg_replication.rejoin host=standby` rewinds it), not a standby of 10.0.0.1 (system 7001); refusing to"
    " overwrite it. Empty it yourself, or set pg_replication:standby:wipe_promoted_copy: True to let the formula"
    " do it"
)
REFUSE_LOST = (
    "slot standby_slot on 10.0.0.1 lost the WAL this standby needs (wal_status lost): it cannot catch up. Set"
    " pg_replication:standby:rebuild_lost_slot: True to let the highstate rebuild it from a new base backup, or"
    " rebuild it yourself"
)

TABLE = [
    ("a standby of the primary is kept", {},
     {"action": "keep", "comment": "/var/lib/postgresql/15/main is a standby of 10.0.0.1 (system 7001)"}),
    ("test mode, primary not reachable: a standby stays", {"primary_id": None, "slot_lost": None},
     {"action": "keep", "comment": "/var/lib/postgresql/15/main holds a standby (system 7001); the real run checks"
      " it against 10.0.0.1"}),
    ("lost slot, catching up from the archive: the slot is renewed",
     {"slot_lost": True, "catch_up_from_archive": True}, {"action": "renew_slot"}),
    ("lost slot: rebuilt", {"slot_lost": True}, {"action": "rebuild", "slot_lost": True}),
    ("lost slot, rebuild_lost_slot off: refused", {"slot_lost": True, "rebuild_lost_slot": False},
     {"action": "refuse", "reason": REFUSE_LOST}),
    ("an empty directory is filled", EMPTY, {"action": "fill"}),
    ("an empty directory, primary not reachable (test mode): filled", dict(EMPTY, primary_id=None),
     {"action": "fill"}),
    ("another system: refused", OTHER, {"action": "refuse", "reason": REFUSE_OTHER}),
    ("another system with wipe_unrelated_data: rebuilt", dict(OTHER, wipe_unrelated_data=True),
     {"action": "rebuild", "slot_lost": False}),
    ("files that are not a cluster: refused", dict(OTHER, local_id=None), {"action": "refuse", "reason": REFUSE_FILES}),
    ("a promoted copy: refused", COPY, {"action": "refuse", "reason": REFUSE_COPY}),
    ("a promoted copy is not wiped by wipe_unrelated_data", dict(COPY, wipe_unrelated_data=True),
     {"action": "refuse", "reason": REFUSE_COPY}),
    ("a promoted copy with wipe_promoted_copy: rebuilt", dict(COPY, wipe_promoted_copy=True),
     {"action": "rebuild", "slot_lost": False}),
    ("a system directory is never wiped", dict(OTHER, wipe_unrelated_data=True, name="/var/lib", real_path="/var/lib"),
     {"action": "refuse", "reason": "refusing to wipe /var/lib: it is /var/lib, a system directory"}),
    ("nor one less than two levels deep",
     dict(OTHER, wipe_unrelated_data=True, name="/data", real_path="/data"),
     {"action": "refuse", "reason": "refusing to wipe /data: /data is less than two levels below /"}),
    ("a link to a system directory is refused by its real path",
     dict(COPY, wipe_promoted_copy=True, name="/srv/pg/link", real_path="/etc"),
     {"action": "refuse", "reason": "refusing to wipe /srv/pg/link: it is /etc, a system directory"}),
    ("a lost slot on a system directory is not rebuilt",
     {"slot_lost": True, "name": "/srv", "real_path": "/srv"},
     {"action": "refuse", "reason": "refusing to wipe /srv: it is /srv, a system directory"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def bootstrap():
    return load_util("pg_replication_bootstrap")


@pytest.mark.parametrize(("case", "facts", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_decision(bootstrap, case, facts, expected):
    assert bootstrap.decide(dict(FACTS, **facts)) == expected, case


def test_every_action_is_covered(bootstrap):
    actions = {row[2]["action"] for row in TABLE}
    assert actions == {bootstrap.KEEP, bootstrap.RENEW_SLOT, bootstrap.REBUILD, bootstrap.FILL, bootstrap.REFUSE}


def test_the_facts_are_the_documented_ones():
    assert set(FACTS) == set(load_util("pg_replication_bootstrap").FACTS)
