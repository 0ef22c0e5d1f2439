"""pg_replication._mapdata (template-formula's _mapdata): the file it writes holds this
minion's plan as the formula validated it, per platform, with no secret in it.

The expectations are tests/packaging/mapdata/<platform>.yaml, the primary of pillar.example;
after a change of the plan, rewrite them with PG_REPLICATION_UPDATE_MAPDATA=1 and read the
diff."""

import copy
import difflib
import os
import pathlib

import pytest

EXPECTED = pathlib.Path(__file__).parent / "mapdata"
PLATFORMS = {"debian": "Debian", "redhat": "RedHat"}
MINION = "master"


def dump(formula, pillar, os_family, minion_id=MINION):
    """The file pg_replication._mapdata writes on ``minion_id``, and the state's arguments."""
    rendering = formula(minion_id, pillar, os_family, sls="pg_replication._mapdata")
    args = rendering.args("pg_replication-mapdata-dump")
    assert args["name"] == f"/tmp/salt_mapdata_pg_replication_{minion_id}.yaml"
    return rendering.template("_mapdata/_mapdata.jinja", **args["context"]), args


def secrets(pillar):
    """Every secret of ``pillar``: passwords, TLS keys, barman:cloud's secret key."""
    out = [pillar["replication"]["password"], pillar["barman"]["password"], pillar["barman"]["streaming_password"]]
    out += [host["key"] for host in (pillar.get("tls") or {}).get("hosts", {}).values()]
    out += [(pillar["barman"].get("cloud") or {}).get("secret_access_key")]
    return [s for s in out if s]


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_mapdata_matches_the_expectation(formula, example_pillar, platform):
    text, _ = dump(formula, example_pillar, PLATFORMS[platform])
    path = EXPECTED / f"{platform}.yaml"
    if os.environ.get("PG_REPLICATION_UPDATE_MAPDATA"):
        path.write_text(text)
    want = path.read_text()
    diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True), str(path), "rendered"))
    assert text == want, (
        f"the plan dump differs from {path.name} (PG_REPLICATION_UPDATE_MAPDATA=1 rewrites it):\n{diff}"
    )


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_no_secret_in_the_expectation(example_pillar, platform):
    text = (EXPECTED / f"{platform}.yaml").read_text()
    for secret in secrets(example_pillar):
        assert secret not in text
    assert "'********'" in text  # redacted, not left out


@pytest.mark.parametrize("minion_id", ["master", "standby", "backup"])
def test_no_secret_in_the_dump_or_its_arguments(formula, example_pillar, minion_id):
    """With every kind of secret in the pillar (TLS keys, barman:cloud's key too)."""
    from lab.tls import CertificateAuthority  # pylint: disable=import-outside-toplevel

    pillar = copy.deepcopy(example_pillar)
    ca = CertificateAuthority()
    pillar["tls"] = {
        "ca_cert": ca.pem,
        "hosts": {h: ca.server(h, pillar["hosts"][h]["address"]) for h in ("master", "standby")},
    }
    pillar["barman"]["cloud"] = {"destination": "s3://pg-backups/cluster1", "access_key_id": "AKIALAB0001",
                                 "secret_access_key": "lab/secret+key="}  # fmt: skip
    text, args = dump(formula, pillar, "Debian", minion_id)
    for secret in secrets(pillar):
        for line in secret.strip().splitlines()[1:-1] or [secret]:  # a PEM's body, line by line
            assert line not in text
            assert line not in str(args)
