"""Root filesystems for lab hosts that boot with systemd, and the package repository they
install from. Built once with mmdebstrap from the distribution's archive, then cached (keyed
by a hash of the recipe) under ``PGR_LAB_CACHE`` (default /var/cache/pg_replication-lab).

- ``bare``: what a fresh server has (systemd, cron, Python) plus a salt-minion in its own
  virtualenv (/opt/salt, like Salt's onedir: the formula must pip-install psycopg2 into it,
  from the wheelhouse /opt/wheelhouse that /etc/pip.conf names). The formula installs
  PostgreSQL and Barman itself, from the lab's repository.
- ``provisioned``: ``bare`` with PostgreSQL, Barman and psycopg2 installed, nothing configured
  (no cluster).
- the repository: the .debs of PostgreSQL, Barman and their dependencies, indexed with
  apt-ftparchive; the lab serves it over HTTP on its bridge address.

Run ``python -m lab.image RELEASE`` to build (or find) the images of a release.
"""

import argparse
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = pathlib.Path(os.environ.get("PGR_LAB_CACHE", "/var/cache/pg_replication-lab"))
# Debian release -> the PostgreSQL major version it ships.
RELEASES = {"bullseye": 13, "bookworm": 15, "trixie": 17}
# Minions whose Python the master's Salt does not run on: Salt 3008 declares Python >= 3.8
# but uses `str | None` at runtime (salt/cluster/ring.py), so Debian 11 (3.9) gets the 3007
# branch, which a 3008 master serves (3007.16: 3007.17 requires a certifi release that
# PyPI does not have).
MINION_SALT = {"bullseye": "3007.16"}
# Releases whose images carry barman:cloud's tools (tests/integration/test_barman.py runs
# them on bookworm; the others' images stay as they were built).
CLOUD_RELEASES = ("bookworm",)
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "cron", "iproute2", "procps", "python3", "python3-venv",
    "ca-certificates", "sudo",
)  # fmt: skip
# Only while building: Salt's timelib has no wheel.
BUILD_PACKAGES = ("gcc", "python3-dev")


def salt_unit(daemon, description, extra=""):
    """A systemd unit for Salt's ``daemon`` (salt-minion, salt-master) in /opt/salt."""
    return f"""\
[Unit]
Description={description}
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/opt/salt/bin/{daemon}
{extra}Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


SALT_UNIT = salt_unit(
    "salt-minion",
    "Salt minion (pg_replication lab)",
    extra="# As Salt's own unit: a restart of the minion leaves what its states started running.\nKillMode=process\n",
)
PIP_CONF = "[global]\nno-index = true\nfind-links = /opt/wheelhouse\n"


def salt_version(release=None):
    """The Salt of ``release``'s minions: the master's (requirements-dev.txt) unless
    :data:`MINION_SALT` says otherwise."""
    if release in MINION_SALT:
        return MINION_SALT[release]
    for line in (REPO_ROOT / "requirements-dev.txt").read_text().splitlines():
        if line.startswith("salt=="):
            return line.split("==", 1)[1].strip()
    raise RuntimeError("requirements-dev.txt pins no salt version")


def formula_packages(release):
    """What the formula installs on the lab's hosts of ``release``."""
    version = RELEASES[release]
    packages = [f"postgresql-{version}", f"postgresql-client-{version}", "barman", "barman-cli"]
    if release in CLOUD_RELEASES:
        packages += ["barman-cli-cloud", "python3-boto3"]
    return packages


def _recipe(release, kind):
    return {
        "release": release,
        "kind": kind,
        "base": BASE_PACKAGES,
        "salt": salt_version(release),
        "formula_packages": formula_packages(release),
        "unit": SALT_UNIT,
        "pip": PIP_CONF,
        "format": 3,
    }


def _key(release, kind):
    digest = hashlib.sha256(json.dumps(_recipe(release, kind), sort_keys=True).encode()).hexdigest()
    return f"{release}-{kind}-{digest[:12]}"


def _chroot(root, script):
    """Run ``script`` in the image with a clean environment and the machine's CA bundle
    (the registries are reached through it)."""
    env = [
        "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "DEBIAN_FRONTEND=noninteractive",
        "PIP_CERT=/tmp/ca.crt", "SSL_CERT_FILE=/tmp/ca.crt", "PIP_DISABLE_PIP_VERSION_CHECK=1", "LC_ALL=C.UTF-8",
    ]  # fmt: skip
    subprocess.run(["chroot", str(root), *env, "sh", "-euc", script], check=True)


def _mmdebstrap(release, root, include, log):
    with open(log, "ab") as out:
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--mode=root", f"--include={','.join(include)}", release, str(root)],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _with_network(root):
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "tmp/ca.crt")
    for fs, target in (("proc", "proc"), ("sysfs", "sys")):
        subprocess.run(["mount", "-t", fs, fs, str(root / target)], check=True)


def _without_network(root):
    for target in ("proc", "sys"):
        subprocess.run(["umount", "-l", str(root / target)], check=False)
    for path in ("tmp/ca.crt", "etc/resolv.conf"):
        (root / path).unlink(missing_ok=True)


def _build_bare(release, root, repo, log):
    _mmdebstrap(release, root, BASE_PACKAGES, log)
    _with_network(root)
    try:
        salt = salt_version(release)
        _chroot(
            root,
            f"""
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends {" ".join(BUILD_PACKAGES)} >/dev/null
            python3 -m venv /opt/salt
            /opt/salt/bin/pip install -q salt=={salt}
            /opt/salt/bin/pip download -q -d /opt/wheelhouse psycopg2-binary
            apt-get purge -y -qq --autoremove {" ".join(BUILD_PACKAGES)} >/dev/null
            # the repository: what the formula installs, with what it depends on
            rm -f /var/cache/apt/archives/*.deb
            apt-get install -y -qq --download-only --no-install-recommends {" ".join(formula_packages(release))}
            """,
        )
        repo.mkdir(parents=True, exist_ok=True)
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            shutil.move(str(deb), repo / deb.name)
        _chroot(root, "apt-get clean; rm -rf /var/lib/apt/lists/*")
    finally:
        _without_network(root)
    _write_files(root)
    _chroot(root, "systemctl enable salt-minion cron")
    _index(repo)


def _index(repo):
    """Packages and Release files of the flat repository ``repo`` (apt-ftparchive)."""
    for what, name in (("packages", "Packages"), ("release", "Release")):
        data = subprocess.run(["apt-ftparchive", what, "."], cwd=repo, check=True, capture_output=True).stdout
        (repo / name).write_bytes(data)


def _write_files(root):
    (root / "etc/systemd/system/salt-minion.service").write_text(SALT_UNIT)
    (root / "etc/pip.conf").write_text(PIP_CONF)
    (root / "etc/salt/minion.d").mkdir(parents=True, exist_ok=True)
    # No route out: the lab's hosts get their sources from the lab (lab.systemd).
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    for path in (root / "etc/apt/sources.list.d").glob("*"):
        path.unlink()


def _provision(root, repo):
    """Install what the formula would, from the repository, and create no cluster."""
    (root / "tmp/repo").mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(repo), str(root / "tmp/repo")], check=True)
    try:
        _chroot(
            root,
            f"""
            mkdir -p /etc/postgresql-common/createcluster.d
            echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/lab-build.conf
            echo 'deb [trusted=yes] file:/tmp/repo ./' > /etc/apt/sources.list.d/build.list
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends {" ".join(_recorded_packages(root))} >/dev/null
            /opt/salt/bin/pip install -q psycopg2-binary
            rm /etc/apt/sources.list.d/build.list /etc/postgresql-common/createcluster.d/lab-build.conf
            apt-get clean; rm -rf /var/lib/apt/lists/*
            """,
        )
    finally:
        subprocess.run(["umount", str(root / "tmp/repo")], check=False)


def _recorded_packages(root):
    return json.loads((root / ".pgr-image.json").read_text())["formula_packages"]


def image(release, kind="provisioned", log=None):
    """The root filesystem of ``kind`` for ``release`` (built if not cached), and its repository.
    Labs running side by side wait for each other's builds (a lock on the cache)."""
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r} (one of {', '.join(RELEASES)})")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _cached_image(release, kind, log)


def _cached_image(release, kind, log):
    log = log or CACHE / "build.log"
    bare_key = _key(release, "bare")
    bare, repo = CACHE / bare_key, CACHE / f"{bare_key}-repo"
    if not (bare / ".pgr-image.json").exists():
        for stale in (bare, repo):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = CACHE / f"{bare_key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _build_bare(release, tmp, repo, log)
        (tmp / ".pgr-image.json").write_text(json.dumps(_recipe(release, "bare")))
        tmp.rename(bare)
    if kind == "bare":
        return bare, repo
    key = _key(release, kind)
    root = CACHE / key
    if not (root / ".pgr-image.json").exists():
        tmp = CACHE / f"{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["cp", "-a", str(bare), str(tmp)], check=True)
        _provision(tmp, repo)
        (tmp / ".pgr-image.json").write_text(json.dumps(_recipe(release, kind)))
        tmp.rename(root)
    return root, repo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release", nargs="*", default=["bookworm"], choices=list(RELEASES))
    args = parser.parse_args(argv)
    for release in args.release:
        for kind in ("bare", "provisioned"):
            print(kind, *image(release, kind))


if __name__ == "__main__":
    sys.exit(main())
