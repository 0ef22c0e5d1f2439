"""Turn a fresh mount + UTS namespace into a lab host, then exec a command in it.

Run as ``unshare --mount --uts --propagation private -- python -m lab.enter ROOT NAME -- CMD...``
inside the host's network namespace. The host gets:

- a private, copy-on-write ``/etc`` (overlayfs over the machine's ``/etc``), so files the
  formula writes there (postgresql-common, barman.conf, ...) stay on this host;
- empty private directories over PostgreSQL's, Barman's and cron's state directories, owned
  and moded as on the machine, so each host starts like a machine where the packages are
  installed but no cluster has been created yet;
- its own hostname.
"""

import os
import pathlib
import socket
import subprocess
import sys

# Directories each host gets a private, empty copy of (when the machine has them).
PRIVATE_DIRS = (
    "/etc/postgresql",
    "/var/lib/postgresql",
    "/run/postgresql",
    "/var/log/postgresql",
    "/var/lib/barman",
    "/var/log/barman",
    "/var/spool/cron/crontabs",
)


def _mount(*args):
    subprocess.run(["mount", *args], check=True)


def _private_copy(root, path):
    real = pathlib.Path(path)
    if not real.is_dir():
        return
    st = real.stat()
    src = root / "fs" / real.relative_to("/")
    src.mkdir(parents=True, exist_ok=True)
    os.chown(src, st.st_uid, st.st_gid)
    os.chmod(src, st.st_mode & 0o7777)
    _mount("--bind", str(src), path)


def setup_host(root, name):
    root = pathlib.Path(root)
    upper, work = root / "etc-upper", root / "etc-work"
    upper.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    _mount("-t", "overlay", "overlay", "-o", f"lowerdir=/etc,upperdir={upper},workdir={work}", "/etc")
    pathlib.Path("/etc/hostname").write_text(name + "\n")
    socket.sethostname(name)
    for path in PRIVATE_DIRS:
        _private_copy(root, path)


def main(argv):
    root, name, sep, *cmd = argv
    if sep != "--" or not cmd:
        raise SystemExit("usage: python -m lab.enter ROOT NAME -- CMD...")
    setup_host(root, name)
    os.execvp(cmd[0], cmd)  # noqa: S606 - replace this process by the host's command


if __name__ == "__main__":
    main(sys.argv[1:])
