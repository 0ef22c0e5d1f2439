"""Integration fixtures: a lab of three hosts (network + mount namespaces) driven by a real
salt-master and real salt-minions. Everything is torn down even when a test fails."""

import os
import shutil
import tempfile

import pytest

from lab.hosts import Lab
from lab.salt import SaltLab, reference_pillar, second_cluster_pillars
from lab.tls import tls_pillar

HOSTS = ("master", "standby", "backup")


def pytest_collection_modifyitems(items):
    if os.geteuid() != 0:
        for item in items:
            item.add_marker(pytest.mark.skip(reason="the lab needs root (network namespaces)"))


@pytest.fixture(scope="session")
def salt_factories_config():
    """The daemons' directories in a short temporary root removed after the session
    (salt-factories' default root is the system's temporary directory itself, where each
    master left its pki, cache and logs behind). Short: Salt's unix sockets live there."""
    root = tempfile.mkdtemp(prefix="pgr-salt-")
    try:
        yield {"start_timeout": 120, "root_dir": root}
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(request, tmp_path_factory):
    """The lab hosts: HOSTS, or the test module's LAB_HOSTS; namespace hosts, or hosts that
    boot with systemd from the module's LAB_IMAGE, (release, "bare" | "provisioned")."""
    hosts = getattr(request.module, "LAB_HOSTS", HOSTS)
    with Lab(tmp_path_factory.mktemp("lab"), hosts, image=getattr(request.module, "LAB_IMAGE", None)) as lab:
        yield lab


def make_salt_lab(salt_factories, lab, **pillar_overrides):
    return SaltLab(salt_factories, lab, reference_pillar(lab, **pillar_overrides))


@pytest.fixture(scope="module")
def replication_lab(salt_factories, lab):
    """Master + standby in the pillar; backup is a plain minion (no role)."""
    salt_lab = make_salt_lab(salt_factories, lab, roles={"master": "primary", "standby": "standby", "backup": None})
    with salt_lab.started():
        yield salt_lab


@pytest.fixture(scope="module")
def backup_lab(request, salt_factories, lab):
    """The reference scenario: primary, standby and a Barman backup host; with a fourth lab
    host ``other``, the backup host also backs up that host's own one-server cluster; with the
    module's ``LAB_TLS`` true, the reference cluster runs TLS only (a throw-away CA; a tuple
    of host names: those get a certificate, e.g. the backup host's exporter too); with
    its ``LAB_GITFS`` true, the master serves the formula from a tag through gitfs only; the
    module's ``LAB_MONITORING`` is the pillar's ``monitoring`` section (default: off)."""
    pillar, others = reference_pillar(lab), {}
    if getattr(request.module, "LAB_MONITORING", None):
        pillar["monitoring"] = request.module.LAB_MONITORING
    lab_tls = getattr(request.module, "LAB_TLS", False)
    if lab_tls:
        pillar["tls"] = tls_pillar(lab, lab_tls if isinstance(lab_tls, tuple) else ("master", "standby"))
    if "other" in lab.hosts:
        pillar, others["other"] = second_cluster_pillars(lab, pillar)
    salt_lab = SaltLab(salt_factories, lab, pillar, others, gitfs=getattr(request.module, "LAB_GITFS", False))
    with salt_lab.started():
        yield salt_lab
