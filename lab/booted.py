"""Lab hosts that boot like machines: a systemd-nspawn container per host, systemd as its
PID 1, in the host's network namespace on the lab's bridge.

Each host's root is an overlay of a cached image's layers (:mod:`lab.image`) and a private
upper directory, so the image is shared and a host's changes survive its reboots. The salt-minion
is a systemd service of the image; cron runs; PostgreSQL runs under its own unit. The hosts
have no route out: apt reads the lab's repository, served over HTTP on the bridge address
(:class:`RepoServer`), and pip the image's wheelhouse.
"""

import contextlib
import functools
import http.server
import os
import signal
import subprocess
import threading
import time

from lab.hosts import Host
from lab.image import UNIFIED_CGROUP_RELEASES

REPO_PORT = 8873


class BootedHost(Host):
    """A lab host whose root filesystem boots with systemd (``systemd-nspawn -b``)."""

    def __init__(self, lab, name, address, layers):
        """``layers``: the image's directories, top first (:func:`lab.image.image`)."""
        super().__init__(lab, name, address)
        self.layers = tuple(layers)
        self.image = self.layers[0]
        self.fs = self.root / "fs"
        self.nspawn = None
        self.pid1 = None

    def up(self):
        self._network_up()
        for path in (self.fs, self.root / "upper", self.root / "work"):
            path.mkdir(parents=True, exist_ok=True)
        lower = ":".join(str(layer) for layer in self.layers)
        options = f"lowerdir={lower},upperdir={self.root / 'upper'},workdir={self.root / 'work'}"
        self.lab.record_mount(self.lab.prefix, self.fs)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.fs)], check=True)
        etc = self.fs / "etc"
        self._write_etc(etc)
        (etc / "hostname").write_text(self.name + "\n")
        (etc / "apt/sources.list.d/lab.list").write_text(
            f"deb [trusted=yes] http://{self.lab.master_address}:{REPO_PORT}/ ./\n"
        )
        self.boot()

    def _nspawn_env(self):
        """systemd 258+ (forky's) boots only on a unified cgroup hierarchy, and trixie's 257
        misses empty cgroups on a legacy one: on a machine with the legacy or hybrid one,
        nspawn gives those containers a unified hierarchy of their own."""
        env = dict(os.environ)
        if self.lab.image[0] in UNIFIED_CGROUP_RELEASES:
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        return env

    def boot(self, timeout=90):
        """Start the container and wait until systemd reports the system up."""
        log = open(self.root / "console.log", "ab")  # noqa: SIM115 - the container keeps it
        self.nspawn = subprocess.Popen(  # noqa: S603
            ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "--console=pipe", "-D", str(self.fs), "-b",
             f"--network-namespace-path=/run/netns/{self.netns}", f"--machine={self.netns}",
             # As root on a machine: the VIP (issue #29) is added to its own interface (its own
             # network namespace only).
             "--capability=CAP_NET_ADMIN", f"--hostname={self.name}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=self._nspawn_env(),
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise RuntimeError(f"lab host {self.name}: systemd-nspawn exited ({self.root / 'console.log'})")
            self.pid1 = self._container_init()
            if self.pid1:
                state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return self
            time.sleep(0.3)
        raise RuntimeError(f"lab host {self.name}: did not boot within {timeout}s")

    def _container_init(self):
        """The container's PID 1 (systemd), seen from the machine: nspawn's child."""
        try:
            children = (f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children",)
            with open(children[0]) as fh:
                pids = fh.read().split()
        except OSError:
            return None
        return int(pids[0]) if pids else None

    def wrap(self, cmd):
        """The command line that runs ``cmd`` inside the container (all its namespaces)."""
        return ["nsenter", "-t", str(self.pid1), "-a", "--", *cmd]

    def freeze_unit(self, unit, timeout=20):
        """SIGSTOP every process of ``unit`` and return once all of them are stopped, and no
        new one appeared meanwhile. ``systemctl kill`` does not do it on a legacy cgroup
        hierarchy: it exits 1 and misses processes. A process is the unit's when its
        /proc/PID/cgroup names the unit's control group (read from cgroup.procs, processes
        outside the container's PID namespace show as 0, and ``kill -STOP 0`` once stopped
        the test's own process group). Undo with :meth:`kill_unit`."""
        self._signal_unit(unit, "STOP", timeout)

    def kill_unit(self, unit, timeout=20):
        """SIGKILL every process of ``unit`` (stopped ones too) and wait until none is left."""
        self._signal_unit(unit, "KILL", timeout)

    def _signal_unit(self, unit, sig, timeout):
        script = r"""
cg=$(systemctl show -p ControlGroup --value "$1")
case "$cg" in /*."service") ;; *) echo "no control group for $1: '$cg'" >&2; exit 1 ;; esac
unit_pids() {
  for dir in /proc/[1-9]*; do
    grep -qs ":$cg\$" "$dir/cgroup" && echo "${dir#/proc/}"
  done
}
end=$(( $(date +%s) + $3 ))
while [ "$(date +%s)" -lt "$end" ]; do
  pids=$(unit_pids)
  if [ -z "$pids" ]; then
    [ "$2" = KILL ] && exit 0
    echo "no process of $1" >&2; exit 1
  fi
  for p in $pids; do [ "$p" -gt 1 ] && kill "-$2" "$p" 2>/dev/null; done
  sleep 0.1
  running=
  for p in $pids; do
    state=$(awk '/^State:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
    case "$state" in T|t|"") ;; *) running="$running $p" ;; esac
  done
  [ "$2" = STOP ] && [ -z "$running" ] && [ "$(unit_pids)" = "$pids" ] && exit 0
done
echo "$1: processes left after $3 s: $(unit_pids | tr '\n' ' ')" >&2
exit 1
"""
        res = self.run(["sh", "-c", script, sig, unit, sig, str(timeout)], check=False, start_new_session=True)
        if res.returncode:
            raise RuntimeError(f"{self.name}: SIG{sig} to {unit} failed: {res.stderr.strip()}")

    def poweroff(self, timeout=60):
        """Shut the machine down cleanly (``systemctl poweroff``) and wait for it."""
        self.run(["systemctl", "poweroff"], check=False)
        self.nspawn.wait(timeout=timeout)
        self.pid1 = None

    def down(self):
        """Stop the container at once: its files are thrown away, so no clean shutdown is
        needed (``poweroff`` is the clean one). SIGKILL to the container's PID 1 ends every
        process of its PID namespace; nspawn then exits and releases what it set up."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            pid1 = self._container_init()
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(pid1, signal.SIGKILL)
            try:
                self.nspawn.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait(timeout=10)
        super().down()  # whatever is left in the network namespace, then the namespace
        subprocess.run(["umount", "-l", str(self.fs)], check=False, capture_output=True)


class RepoServer:
    """The lab's package repository over HTTP, on the bridge address only."""

    def __init__(self, directory, address, port=REPO_PORT):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer((address, port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
