"""Every requisite that crosses from one SLS file to another names the file (``- sls: <file>``),
not a state ID of that file: a file's states can then move, split or be renamed inside it
without breaking another file's order. The few ID requisites kept on purpose are listed in
ALLOWED with the reason.

The check runs over the rendered high data (``state.show_sls``: each state's ``__sls__`` is
the file that defines it) of every role on both OS families, with the optional parts on (TLS,
barman:cloud, Barman from PyPI, recovery.conf, cascading standbys) so that each conditional
requisite is rendered at least once."""

import copy

import pytest

# (file of the requiring state, requisite, the state ID it names) -> why it stays an ID.
ALLOWED = {
    ("pg_replication.server.slots", "require_in", "pg_replication-replication-role"): (
        "the primary's replication role comes after each standby's slot, so a standby that can"
        " log in finds it; not after the whole of slots.sls, whose slots-follow-the-pillar fails"
        " while a host gone from the pillar still streams (the role must not fail with it)"
    ),
}

REQUISITES = ("require", "watch", "onchanges", "onfail", "prereq", "use", "listen")
KINDS = tuple(k + suffix for k in REQUISITES for suffix in ("", "_any", "_in"))

CLOUD = {
    "destination": "s3://pg-backups/cluster1",
    "endpoint_url": "http://10.0.0.5:9000",
    "access_key_id": "AKIALAB0001",
    "secret_access_key": "lab/secret+key=",
}


def _tls(example_pillar):
    from lab.tls import CertificateAuthority  # pylint: disable=import-outside-toplevel

    ca = CertificateAuthority()
    hosts = example_pillar["hosts"]
    servers = [h for h, spec in hosts.items() if spec["role"] in ("primary", "standby")]
    return {"ca_cert": ca.pem, "hosts": {h: ca.server(h, hosts[h]["address"]) for h in servers}}


def variants(example_pillar):
    """``(name, pillar)``: the example, and one pillar that turns every optional part on."""
    yield "example", example_pillar
    full = copy.deepcopy(example_pillar)
    full["hosts"]["cascade"] = {"role": "standby", "address": "192.168.11.104", "upstream": "standby"}
    full["tls"] = _tls(full)
    full["barman"]["cloud"] = dict(CLOUD, retention_policy="REDUNDANCY 3")
    full["standby"]["restore_from_cloud"] = True
    full["upstream_repo"] = True
    yield "everything", full
    pip = copy.deepcopy(example_pillar)
    pip["barman"]["install"] = {"method": "pip"}
    pip["version"] = 11
    yield "pip-and-pg11", pip
    ssh = copy.deepcopy(example_pillar)
    ssh["standby"]["restore_from_barman"] = True
    yield "restore-from-barman", ssh


def _entries(body):
    """``(kind, {module: target} | "id")`` of each requisite of one state's body."""
    for item in body:
        if not isinstance(item, dict):
            continue
        for kind, targets in item.items():
            if kind in KINDS:
                for target in targets if isinstance(targets, list) else [targets]:
                    yield kind, target


def _defined_in(states, target):
    """The file of the state a requisite names (by ID, or else by name), or None."""
    module, ref = next(iter(target.items())) if isinstance(target, dict) else (None, target)
    if ref in states:
        return states[ref]["__sls__"]
    for data in states.values():
        for mod, body in data.items():
            if mod.startswith("__") or (module and mod != module):
                continue
            if {"name": ref} in body:
                return data["__sls__"]
    return None


def crossings(states):
    """``(file, kind, target, its file)`` of every requisite naming a state of another file,
    and ``(file, kind, "sls: X", None)`` for an ``sls`` requisite naming a file with no state
    in the highstate."""
    files = {data["__sls__"] for data in states.values()}
    out = []
    for state_id, data in states.items():
        sls = data["__sls__"]
        for module, body in data.items():
            if module.startswith("__"):
                continue
            for kind, target in _entries(body):
                if isinstance(target, dict) and "sls" in target:
                    if target["sls"] not in files:
                        out.append((sls, kind, f"sls: {target['sls']}", None))
                    continue
                where = _defined_in(states, target)
                if where is None:
                    raise AssertionError(f"{state_id} ({sls}): {kind} {target} names no state")
                if where != sls:
                    name = next(iter(target.values())) if isinstance(target, dict) else target
                    out.append((sls, kind, name, where))
    return out


_FOUND = {}


def found(formula, example_pillar, os_family, sls):
    """``{(file, kind, name): [where it was seen]}`` over every variant and minion (kept for
    the module: both tests read it)."""
    if (os_family, sls) not in _FOUND:
        seen = {}
        for variant, pillar in variants(example_pillar):
            for minion_id in sorted(pillar["hosts"]):
                for sls_file, kind, name, where in crossings(formula(minion_id, pillar, os_family, sls=sls).states):
                    seen.setdefault((sls_file, kind, name), []).append(f"defined in {where}, {minion_id}, {variant}")
        _FOUND[os_family, sls] = seen
    return _FOUND[os_family, sls]


@pytest.mark.parametrize("os_family", ["Debian", "RedHat"])
@pytest.mark.parametrize("sls", ["pg_replication", "pg_replication.clean"])
def test_requisites_across_files_name_the_file(formula, example_pillar, os_family, sls):
    bad = sorted(f"{f}: {kind} {name} ({'; '.join(seen)})"
                 for (f, kind, name), seen in found(formula, example_pillar, os_family, sls).items()
                 if (f, kind, name) not in ALLOWED)  # fmt: skip
    assert not bad, "requisites naming a state of another file (use `- sls: <file>`):\n" + "\n".join(bad)


def test_the_allow_list_is_in_use(formula, example_pillar):
    """An allowed ID requisite that no rendering has any more is taken off the list."""
    seen = set()
    for os_family in ("Debian", "RedHat"):
        seen |= set(found(formula, example_pillar, os_family, "pg_replication"))
    assert set(ALLOWED) <= seen, sorted(set(ALLOWED) - seen)
