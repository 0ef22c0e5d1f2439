"""Invalid pillars of tests/invalid_pillars.py (THROUGH_SALT: one per kind of target, the unit
test of the plan runs them all), applied through the real salt-master to a converged
reference cluster: the render fails on every minion naming the pillar key, without
a traceback, and no host changes (files, roles and their verifiers, slots, settings,
postmaster start times, Barman's files and backups)."""

import json

import pytest

from lab.results import changed_states
from lab.scenario import converge
from tests.invalid_pillars import CASES, THROUGH_SALT, mutate

pytestmark = pytest.mark.integration
LAB_IMAGE = ("bookworm", "provisioned")
HOSTS = ("master", "standby", "backup")
# Files the formula writes (owner, mode, checksum), Barman's backups, PostgreSQL's state.
SNAPSHOT_SCRIPT = r"""
for path in /etc/postgresql /etc/postgresql-common /etc/barman.conf /etc/barman.d /etc/cron.d/barman \
            /var/lib/postgresql/.pgpass /var/lib/barman/.pgpass; do
  [ -e "$path" ] && find "$path" -type f -exec stat -c '%n %U %a' {} \; -exec sha256sum {} \;
done
ls -d /var/lib/barman/*/base/* 2>/dev/null
[ -e /tmp/pwned ] && echo PWNED
[ -S /var/run/postgresql/.s.PGSQL.5432 ] && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 <<'SQL'
SELECT string_agg(rolname || ':' || coalesce(rolpassword, ''), ',' ORDER BY rolname) FROM pg_authid;
SELECT string_agg(slot_name || ':' || slot_type, ',' ORDER BY slot_name) FROM pg_replication_slots;
SELECT md5(string_agg(name || '=' || setting, ',' ORDER BY name)) FROM pg_settings;
SELECT pg_postmaster_start_time();
SQL
true
"""


def snapshot(salt_lab):
    """Per host: managed files (owner, mode, checksum), Barman's backups, and where
    PostgreSQL runs its roles with their verifiers, slots, settings and start time."""
    return {name: salt_lab.lab[name].run(["sh", "-c", SNAPSHOT_SCRIPT]).stdout.splitlines() for name in HOSTS}


@pytest.fixture(scope="module")
def converged(backup_lab):
    converge(backup_lab)
    backup_lab.good_pillar = backup_lab.pillar
    backup_lab.before = snapshot(backup_lab)
    return backup_lab


SELECTED = [case for case in CASES if case[0] in THROUGH_SALT]


@pytest.mark.parametrize(("path", "value", "key"), [c[1:] for c in SELECTED], ids=[c[0] for c in SELECTED])
def test_invalid_pillar_fails_at_render_naming_the_key_and_changes_nothing(converged, path, value, key):
    converged.set_pillar(mutate(converged.good_pillar, path, value))
    try:
        returns = converged.call("state.apply")
    finally:
        converged.set_pillar(converged.good_pillar)
    assert sorted(returns) == sorted(HOSTS)
    for name in HOSTS:
        result = returns[name]["ret"]
        # A render error is a list of messages, not state results: nothing ran.
        assert isinstance(result, list), json.dumps(result, default=str)[:2000]
        assert returns[name]["retcode"] != 0
        assert key in str(result)
        assert "Traceback" not in str(result)


def test_no_invalid_pillar_changed_anything(converged):
    """Nothing ran on any host for any of the cases above (a render error runs no state):
    one snapshot after all of them, compared with the one before. A snapshot per case would
    also say which case, at the cost of a snapshot of three hosts for each of them."""
    assert snapshot(converged) == converged.before


def test_the_good_pillar_still_changes_nothing(converged):
    ret = converged.highstate()
    assert ret.returncode == 0
    assert changed_states(ret.data) == {}
    assert snapshot(converged) == converged.before
