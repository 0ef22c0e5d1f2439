"""Lab hosts: Linux network namespaces on a bridge, each with a private mount namespace.

Only addresses the lab creates itself (on its own bridge, in its own namespaces) are used.
"""

import contextlib
import hashlib
import ipaddress
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

from lab.signals import unwind_on_signals

log = logging.getLogger(__name__)

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_PREFIX = "pgr"
DEFAULT_SUBNET = "10.47.11.0/24"
# Where the lab records what it mounted, so that a later lab with the same prefix can remove
# what an interrupted one left (and leave other labs' mounts alone).
STATE_DIR = pathlib.Path("/run/pg_replication-lab")


def worker_slot():
    """Prefix and subnet of this process's lab: the defaults, or one pair per pytest-xdist
    worker (``PYTEST_XDIST_WORKER`` gw0, gw1, ...), so that labs run side by side. Worker
    prefixes ("pgw0", ...) never start with the default's "pgr-" (its cleanup spares them).
    ``PGR_LAB_WORKER_SLOTS`` ("PREFIX:THIRD_OCTET", default "pgw:20") gives a test run of
    its own (a test that runs pytest) prefixes and subnets apart from its parent run's."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return DEFAULT_PREFIX, DEFAULT_SUBNET
    prefix, octet = worker_slots_base()
    number = int(worker[2:])
    return f"{prefix}{number}", f"10.47.{octet + number}.0/24"


def worker_slots_base():
    """The pytest-xdist workers' prefix and first subnet octet (``PGR_LAB_WORKER_SLOTS``)."""
    prefix, _, octet = os.environ.get("PGR_LAB_WORKER_SLOTS", "pgw:20").partition(":")
    if not 0 < len(prefix) <= 8:
        raise ValueError(f"PGR_LAB_WORKER_SLOTS: prefix {prefix!r} must be 1 to 8 characters (network link names)")
    return prefix, int(octet)


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Host:
    """One lab host: a network namespace with an address on the bridge, and an anchor
    process holding the host's mount and UTS namespaces (see :mod:`lab.enter`)."""

    def __init__(self, lab, name, address):
        self.lab = lab
        self.name = name
        self.address = address
        self.netns = f"{lab.prefix}-{name}"
        self.root = lab.root / "hosts" / name
        self.anchor = None

    def up(self):
        self._network_up()
        self._write_etc(self.root / "etc-upper")
        self.anchor = subprocess.Popen(  # noqa: S603
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--uts", "--propagation", "private", "--",
             sys.executable, "-m", "lab.enter", str(self.root), self.name, "--", "sleep", "infinity"],
            cwd=REPO_ROOT,
            start_new_session=True,
        )  # fmt: skip
        # Wait until the anchor has finished its mounts (its hostname is then set).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.anchor.poll() is not None:
                raise RuntimeError(f"lab host {self.name}: namespace setup failed")
            res = subprocess.run(self.wrap(["hostname"]), capture_output=True, text=True)
            if res.returncode == 0 and res.stdout.strip() == self.name:
                return
            time.sleep(0.1)
        raise RuntimeError(f"lab host {self.name}: namespace setup timed out")

    @property
    def veth(self):
        """The machine's end of the host's veth pair (on the bridge)."""
        return self._link_name("h")

    def _link_name(self, end):
        """``<netns>-<end>``, or where that passes Linux's 15 characters, the lab's prefix
        and a digest of the host's name (cut short, "standby2" and "standby3" would meet)."""
        name = f"{self.netns}-{end}"
        if len(name) <= 15:
            return name
        digest = hashlib.sha1(self.name.encode()).hexdigest()[: 15 - len(self.lab.prefix) - 2]  # noqa: S324
        return f"{self.lab.prefix}-{digest}{end}"

    def _network_up(self):
        """The host's network namespace, with eth0 on the lab's bridge."""
        veth_host, veth_ns = self.veth, self._link_name("n")
        _ip("netns", "add", self.netns)
        _ip("link", "add", veth_host, "type", "veth", "peer", "name", veth_ns)
        _ip("link", "set", veth_ns, "netns", self.netns)
        _ip("link", "set", veth_host, "master", self.lab.bridge, "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")
        _ip("-n", self.netns, "addr", "add", f"{self.address}/{self.lab.network.prefixlen}", "dev", veth_ns)
        _ip("-n", self.netns, "link", "set", veth_ns, "name", "eth0")
        _ip("-n", self.netns, "link", "set", "eth0", "up")

    def _write_etc(self, upper):
        """Seed the host's /etc (``upper``): the lab's names in /etc/hosts, and a resolver that
        fails at once (the namespaces have no DNS) instead of timing out."""
        upper.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", f"{self.lab.master_address} salt"]
        lines += [f"{h.address} {h.name}" for h in self.lab.hosts.values()]
        (upper / "hosts").write_text("\n".join(lines) + "\n")
        (upper / "resolv.conf").write_text("# lab host: no DNS\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n")

    def wrap(self, cmd):
        """The command line that runs ``cmd`` on this host (its net, mount and UTS namespaces)."""
        return ["nsenter", "-t", str(self.anchor.pid), "-n", "-m", "-u", "--", *cmd]

    def run(self, cmd, check=True, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.wrap(cmd), check=check, **kwargs)  # noqa: S603

    def psql(self, sql, dbname="postgres", port=5432):
        """Run one SQL command as the postgres superuser over the host's local socket.

        Test and demo helper only: the formula itself never runs psql.
        """
        res = self.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                "psql",
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-p",
                str(port),
                "-d",
                dbname,
                "-c",
                sql,
            ],
            check=False,
        )
        if res.returncode:
            raise RuntimeError(f"psql on {self.name} failed: {res.stderr.strip()}")
        return res.stdout.strip()

    def pids(self):
        res = _ip("netns", "pids", self.netns, check=False)
        return [int(p) for p in res.stdout.split()]

    def down(self):
        for _ in range(3):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
        for pid in self.pids():
            log.warning("lab host %s: pid %s survived SIGKILL: %s", self.name, pid, _proc_state(pid))
        if self.anchor is not None:
            with contextlib.suppress(ProcessLookupError):
                self.anchor.kill()
            self.anchor.wait(timeout=10)
        _ip("netns", "del", self.netns, check=False)
        _release_link(self.veth)


def _netns_names(start):
    """The network namespaces whose names start with ``start``."""
    names = (line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.split())
    return [name for name in names if name.startswith(start)]


def _link_names(start):
    """The network links (of the machine's namespace) whose names start with ``start``."""
    links = []
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        if line.count(":") > 1:
            links.append(line.split(":")[1].strip().split("@")[0])
    return [link for link in links if link.startswith(start)]


def _proc_state(pid):
    try:
        return (
            pathlib.Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
            + " "
            + " ".join(pathlib.Path(f"/proc/{pid}/cmdline").read_text().split("\0"))
        )
    except OSError:
        return "gone"


def _release_link(name, timeout=10):
    """Wait for a lab link to go with its namespace; delete it if something still holds the
    namespace (the kernel frees a namespace, and its veth pair, only when its last user goes)."""
    deadline = time.monotonic() + timeout
    while _ip("link", "show", name, check=False).returncode == 0:
        if time.monotonic() >= deadline:
            log.warning("lab link %s outlived its namespace; deleting it", name)
            _ip("link", "del", name, check=False)
            return
        time.sleep(0.2)


class Lab:
    """A bridge with the salt-master's address and a set of hosts on it."""

    def __init__(self, root, hosts, prefix=None, subnet=None, image=None):
        """``image``: None for namespace hosts, or (release, kind) for hosts that boot with
        systemd from that image (:mod:`lab.booted`, :mod:`lab.image`). ``prefix`` and
        ``subnet`` default to this process's :func:`worker_slot`."""
        # A SIGTERM or SIGHUP from here on unwinds through down() (lab.signals).
        unwind_on_signals()
        default_prefix, default_subnet = worker_slot()
        self.root = pathlib.Path(root)
        self.prefix = prefix or default_prefix
        self.network = ipaddress.ip_network(subnet or default_subnet)
        self.bridge = f"{self.prefix}-br0"
        first = self.network.network_address
        self.master_address = str(first + 1)
        self.image = image
        self.repo_server = None
        self.hosts = {name: self._host(name, str(first + 101 + i)) for i, name in enumerate(hosts)}

    def _host(self, name, address):
        if self.image is None:
            return Host(self, name, address)
        from lab.booted import BootedHost  # pylint: disable=import-outside-toplevel
        from lab.image import image  # pylint: disable=import-outside-toplevel

        layers, self.repo = image(*self.image)
        return BootedHost(self, name, address, layers)

    @property
    def booted(self):
        return self.image is not None

    def __getitem__(self, name):
        return self.hosts[name]

    @classmethod
    def cleanup_stale(cls, prefix=None):
        """Remove namespaces, bridge and mounts left by an earlier lab with this prefix."""
        prefix = prefix or worker_slot()[0]
        for ns in _netns_names(f"{prefix}-"):
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", f"{prefix}-br0", check=False)
        for link in _link_names(f"{prefix}-"):
            _ip("link", "del", link, check=False)
        cls._unmount_stale_roots(prefix)

    @classmethod
    def cleanup_all(cls):
        """What every lab (the default one and the pytest-xdist workers') left behind."""
        workers = worker_slots_base()[0]
        prefixes = {DEFAULT_PREFIX} | {path.stem for path in STATE_DIR.glob("*.mounts")}
        prefixes |= {ns.split("-")[0] for ns in _netns_names(workers)}
        for prefix in sorted(prefixes):
            cls.cleanup_stale(prefix)

    @classmethod
    def leftovers(cls, prefix):
        """What labs with ``prefix`` left on the machine (namespaces, links, root overlays
        still mounted), one line each; empty when they were all torn down."""
        found = [f"network namespace {ns}" for ns in _netns_names(f"{prefix}-")]
        found += [f"link {link}" for link in _link_names(f"{prefix}-")]
        return found + [f"mount {target}" for target in sorted(cls._recorded_mounts(prefix))]

    @staticmethod
    def mounts_record(prefix):
        """The file listing the root overlays that labs with ``prefix`` mounted."""
        return STATE_DIR / f"{prefix}.mounts"

    @classmethod
    def record_mount(cls, prefix, target):
        STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        with cls.mounts_record(prefix).open("a") as fh:
            fh.write(f"{target}\n")

    @classmethod
    def _recorded_mounts(cls, prefix):
        """The root overlays that labs with ``prefix`` mounted and that are mounted still."""
        record = cls.mounts_record(prefix)
        if not record.exists():
            return set()
        with open("/proc/self/mounts") as fh:
            mounted = {line.split()[1] for line in fh if line.split()[2] == "overlay"}
        return set(record.read_text().split()) & mounted

    @classmethod
    def _unmount_stale_roots(cls, prefix):
        """Unmount the booted hosts' root overlays an earlier lab with ``prefix`` left."""
        for target in cls._recorded_mounts(prefix):
            subprocess.run(["umount", "-l", target], check=False)
        cls.mounts_record(prefix).unlink(missing_ok=True)

    def up(self):
        self.cleanup_stale(self.prefix)
        self.root.mkdir(parents=True, exist_ok=True)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.master_address}/{self.network.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        if self.booted:
            from lab.booted import RepoServer  # pylint: disable=import-outside-toplevel

            self.repo_server = RepoServer(self.repo, self.master_address).start()
        for host in self.hosts.values():
            host.up()
        return self

    def down(self, keep_files=False):
        # Newest first: a host's container holds copies of the namespaces made before it.
        for host in reversed(self.hosts.values()):
            try:
                host.down()
            except Exception:  # noqa: BLE001 - tear down as much as possible
                log.exception("tearing down %s", host.name)
        if self.repo_server is not None:
            self.repo_server.stop()
        _ip("link", "del", self.bridge, check=False)
        if not keep_files:
            shutil.rmtree(self.root / "hosts", ignore_errors=True)

    def __enter__(self):
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc):
        self.down()
