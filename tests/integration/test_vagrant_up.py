"""`vagrant up --no-parallel --provider=lxc` on the repository's Vagrantfile: the salt-master
and the three minions of the reference scenario, provisioned by Vagrant's salt provisioner
from the box lab/box.py builds, offline (lab/vagrant.py). Checked through `vagrant ssh`;
destroyed at the end, even on failure."""

import json
import re
import time

import pytest

from lab import vagrant

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(vagrant.available() is not None, reason=str(vagrant.available())),
]
MINIONS = ("master", "standby", "backup")


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    lab = vagrant.VagrantLab(tmp_path_factory.mktemp("vagrant"))
    try:
        lab.up_network()
        lab.prepare()
        lab.result = lab.vagrant("up", "--no-parallel", "--provider=lxc", timeout=1500)
        yield lab
    finally:
        lab.destroy()
        lab.down_network()


def test_vagrant_up_provisions_the_master_and_every_minion(up):
    output = re.sub(r"\x1b\[[0-9;]*m", "", up.result.stdout + up.result.stderr)
    assert up.result.returncode == 0, output[-6000:]
    # Each minion's provisioning highstate (salt-call's summary): nothing failed.
    summaries = re.findall(r"^\s*(?:\S+:\s+)?Failed:\s+(\d+)", output, re.MULTILINE)
    assert summaries == ["0"] * len(MINIONS), output[-6000:]


def test_the_master_accepted_every_minion_key(up):
    keys = json.loads(up.ssh("salt", "salt-key --out json"))
    assert sorted(keys["minions"]) == sorted(MINIONS)


def test_the_standby_streams_and_a_row_reaches_it(up):
    psql = "runuser -u postgres -- psql -XAtq"
    assert up.ssh("master", f"{psql} -c \"SELECT application_name || ':' || state FROM pg_stat_replication"
                            " WHERE application_name = 'standby'\"").strip() == "standby:streaming"  # fmt: skip
    note = f"vagrant-{time.time_ns()}"
    table = "CREATE TABLE IF NOT EXISTS vagrant_rows (note text)"
    up.ssh("master", f"{psql} -c '{table}' -c \"INSERT INTO vagrant_rows VALUES ('{note}')\"")
    deadline = time.monotonic() + 20
    while up.ssh("standby", f"{psql} -c \"SELECT count(*) FROM vagrant_rows WHERE note = '{note}'\"").strip() != "1":
        assert time.monotonic() < deadline, "the row did not reach the standby"
        time.sleep(1)


def test_barman_check_is_all_ok(up):
    checks = json.loads(up.ssh("backup", "barman -f json check master-streaming"))["master-streaming"]
    assert {name: check["status"] for name, check in checks.items() if check["status"] != "OK"} == {}


def test_a_second_apply_from_the_master_changes_nothing(up):
    returns = json.loads(up.ssh("salt", "salt -t 600 '*' state.apply --out=json --static", timeout=600))
    assert sorted(returns) == sorted(MINIONS)
    changed = {
        minion: sorted(state["__id__"] for state in states.values() if state.get("changes") or not state.get("result"))
        for minion, states in returns.items()
    }
    assert changed == {minion: [] for minion in MINIONS}
