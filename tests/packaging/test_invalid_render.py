"""Every invalid pillar of tests/invalid_pillars.py rendered through the real Salt loader and
map.jinja (as a minion would, in-process): the render fails, naming the key, without a
traceback. The lab (tests/integration/test_topology.py) applies one case of each kind through
a real salt-master and proves that no host changed."""

import pathlib

import pytest
import yaml

from tests.invalid_pillars import CASES, mutate

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((REPO / "pillar.example").read_text())["pg_replication"]


@pytest.mark.parametrize(("path", "value", "key"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_pillar_fails_at_render_naming_the_key(formula, path, value, key):
    said = formula("standby", mutate(EXAMPLE, path, value), failing=True)
    assert isinstance(said, list), f"rendered: {sorted(said)[:5]}"
    text = "\n".join(map(str, said))
    assert key in text, text[-1500:]
    assert "Traceback" not in text, text[-1500:]
