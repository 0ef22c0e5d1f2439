"""`vagrant up` of the repository's Vagrantfile on the lxc provider (vagrant-lxc), offline.

The guests boot the box :mod:`lab.box` builds, on a bridge of the lab's own: its eth0 gets an
address by DHCP (dnsmasq: no router, no DNS) for Vagrant's ssh, and the cluster's addresses
(the Vagrantfile's second NIC) are in a second network the bridge also holds. PostgreSQL and
Barman come from the lab's package repository, mounted in each guest; Salt's own
bootstrap-salt.sh replaces the downloader Vagrant ships. Nothing leaves the machine.
"""

import os
import pathlib
import shlex
import shutil
import subprocess

import salt

from lab import box
from lab.hosts import REPO_ROOT, _ip

BRIDGE = "pgv-br0"
SSH_NETWORK = "10.47.40"  # eth0, DHCP
CLUSTER_NETWORK = "10.47.41"  # eth1, the Vagrantfile's addresses (PG_REPLICATION_NETWORK)
# What the Vagrantfile reads (a copy, so that .vagrant/ stays out of the checkout).
PROJECT_FILES = ("Vagrantfile", "vagrant", "pillar.example", "pg_replication", "_modules", "_states", "_utils",
                 "_runners", "_beacons")  # fmt: skip
BOOTSTRAP = pathlib.Path(salt.__file__).parent / "cloud" / "deploy" / "bootstrap-salt.sh"


def available():
    """Why ``vagrant up --provider=lxc`` cannot run here (None: it can)."""
    for command in ("vagrant", "lxc-start", "dnsmasq"):
        if shutil.which(command) is None and not pathlib.Path(f"/usr/sbin/{command}").exists():
            return f"{command} is not installed (lab/install-deps.sh installs it)"
    plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True).stdout
    if "vagrant-lxc" not in plugins:
        return "the vagrant-lxc plugin is missing"
    return None


class VagrantLab:
    """A copy of the project, the bridge with DHCP, and ``vagrant`` commands run in the copy."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.project = self.root / "project"
        self.dnsmasq = None
        self.env = None

    def up_network(self):
        self.down_network()
        _ip("link", "add", BRIDGE, "type", "bridge")
        for network in (SSH_NETWORK, CLUSTER_NETWORK):
            _ip("addr", "add", f"{network}.1/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        self.dnsmasq = subprocess.Popen(  # noqa: S603
            ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--bind-interfaces",
             f"--interface={BRIDGE}", "--except-interface=lo", f"--dhcp-range={SSH_NETWORK}.100,{SSH_NETWORK}.199,1h",
             "--dhcp-option=3", "--dhcp-option=6", f"--dhcp-leasefile={self.root / 'leases'}",
             f"--pid-file={self.root / 'dnsmasq.pid'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def down_network(self):
        if self.dnsmasq is not None:
            self.dnsmasq.terminate()
            self.dnsmasq.wait(timeout=10)
            self.dnsmasq = None
        _ip("link", "del", BRIDGE, check=False)

    def prepare(self):
        """The box (built and added if needed), the project copy, the environment."""
        built, repo = box.build()
        box.ensure_added(built)
        self.project.mkdir(parents=True, exist_ok=True)
        for name in PROJECT_FILES:
            src = REPO_ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, self.project / name)
        self.env = dict(
            os.environ,
            VAGRANT_CHECKPOINT_DISABLE="1",
            PG_REPLICATION_NETWORK=CLUSTER_NETWORK,
            PG_REPLICATION_LXC_BRIDGE=BRIDGE,
            PG_REPLICATION_LXC_REPO=str(repo),
            PG_REPLICATION_BOOTSTRAP=str(BOOTSTRAP),
        )
        return self

    def vagrant(self, *args, timeout=900, check=False):
        return subprocess.run(["vagrant", *args], cwd=self.project, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=check)  # fmt: skip

    def ssh(self, machine, command, timeout=300):
        """Run ``command`` (as root) on ``machine``; its stdout, or raise with its output."""
        res = self.vagrant("ssh", machine, "-c", f"sudo sh -c {shlex.quote(command)}", "--", "-q", timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"vagrant ssh {machine} -c {command!r}: exit {res.returncode}\n{res.stdout}{res.stderr}")
        return res.stdout

    def destroy(self):
        """Kill the containers (their files are thrown away: no clean shutdown needed), then
        ``vagrant destroy -f``."""
        if self.env is None or not (self.project / ".vagrant").exists():
            return
        for container in (self.project / ".vagrant" / "machines").glob("*/lxc/id"):
            subprocess.run(
                ["lxc-stop", "--kill", "-n", container.read_text().strip()], capture_output=True, check=False
            )
        self.vagrant("destroy", "-f", timeout=600)
