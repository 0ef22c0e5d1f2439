"""Root filesystems for lab hosts that boot with systemd, and the package repository they
install from. Built once with mmdebstrap from the distribution's archive, then cached (keyed
by a hash of the recipe) under ``PGR_LAB_CACHE`` (default /var/cache/pg_replication-lab).

- ``bare``: what a fresh server has (systemd, cron, Python) plus a salt-minion in its own
  virtualenv (/opt/salt, like Salt's onedir: the formula must pip-install psycopg2 into it,
  from the wheelhouse /opt/wheelhouse that /etc/pip.conf names). The formula installs
  PostgreSQL and Barman itself, from the lab's repository.
- ``provisioned``: ``bare`` with PostgreSQL, Barman and psycopg2 installed, nothing configured
  (no cluster). Kept as an overlay layer over ``bare`` (only what the installation added), so
  a host's root is three layers: its own upper directory, this layer, ``bare``.
- ``upgrade`` (trixie, forky): ``provisioned`` with the previous release's PostgreSQL
  (bookworm's ``postgresql-15`` on trixie, trixie's ``postgresql-17`` on forky) installed
  beside its own, as Debian's release upgrade leaves a server (the old major and its
  libraries stay; ``pg_upgrade`` moves the cluster). Another overlay layer, over
  ``provisioned``; its packages come from both releases' lab repositories, and what neither
  holds (a library of the release that its own formula packages do not need, e.g. trixie's
  ``libgnutls30t64`` for bookworm's ``libldap-2.5-0``) from the release's archive, the same
  mirror its bare image came from.
- ``patroni`` (bookworm, benchmarks only): ``provisioned`` with Debian's Patroni and etcd
  (:data:`PATRONI_PACKAGES`, from the release's archive; their units disabled: the
  benchmark starts what it needs), the peer ``bench/switchover.py`` measures against.
  Another overlay layer over ``provisioned``, built only when a benchmark asks for it (it
  is not in ``--all``, and the formula's images do not change with it).
- the repository: the .debs of PostgreSQL, Barman and their dependencies, indexed with
  apt-ftparchive; the lab serves it over HTTP on its bridge address.

Each image has a lock of its own, so the releases build side by side and a lab waits only
for the image it boots. Every step's time goes to ``timings.jsonl`` in the cache.
``python -m lab.image`` builds (or finds) the images of the releases it is given; ``--all``
builds every release's (:data:`BUILD_ORDER`) and prints where the time went.
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from lab.signals import forward_signals, unwind_on_signals

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CACHE = pathlib.Path("/var/cache/pg_replication-lab")
CACHE = pathlib.Path(os.environ.get("PGR_LAB_CACHE", DEFAULT_CACHE))
# Debian release -> the PostgreSQL major version it ships.
RELEASES = {"bullseye": 13, "bookworm": 15, "trixie": 17, "forky": 18}
# The order --all builds them in: the release most test modules boot first, alone (on two
# cores three builds at once take as long as the slowest, ~200 s: the labs would wait), then
# the others side by side; forky (testing, the newest PostgreSQL) last.
BUILD_ORDER = (("bookworm",), ("bullseye", "trixie"), ("forky",))
# How much lower the groups after the first run than the tests (``nice``): on two cores
# the builds otherwise slow the labs beside them more than the labs that need them wait.
LATER_GROUPS_NICENESS = 10
# Minions whose Python the master's Salt does not run on: Salt 3008 declares Python >= 3.8
# but uses `str | None` at runtime (salt/cluster/ring.py), so Debian 11 (3.9) gets the 3007
# branch, which a 3008 master serves (3007.16: 3007.17 requires a certifi release that
# PyPI does not have).
MINION_SALT = {"bullseye": "3007.16"}
# Releases whose images carry barman:cloud's tools (tests/integration/test_barman.py runs
# them on bookworm; the others' images stay as they were built).
CLOUD_RELEASES = ("bookworm",)
# Release -> the release whose PostgreSQL its ``upgrade`` image keeps beside its own (the
# Debian release-upgrade path: bookworm's postgresql-15 on trixie, trixie's postgresql-17 on
# forky). The matrix upgrades trixie's: in the registry's copies trixie's 17.12 is newer
# than forky's 18.6 and records a column option (pg_attver) 18.6 does not know, so
# pg_upgrade 17 -> 18 fails on any table (upgrade_major refuses it); bookworm's 15.20 records
# it too and 17.12 knows it.
UPGRADE_FROM = {"trixie": "bookworm", "forky": "trixie"}
# Release -> what its ``patroni`` image adds (bench/switchover.py's peer): Patroni with
# python-etcd for its DCS, and etcd's server and client (etcdctl).
PATRONI_PACKAGES = {"bookworm": ("patroni", "python3-etcd", "etcd-server", "etcd-client")}
# The layers over ``provisioned``: kind -> releases that have one.
EXTRA_KINDS = {"upgrade": UPGRADE_FROM, "patroni": PATRONI_PACKAGES}
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "cron", "iproute2", "procps", "python3", "python3-venv",
    "ca-certificates", "sudo",
)  # fmt: skip
# Only while building: Salt's timelib has no wheel.
BUILD_PACKAGES = ("gcc", "python3-dev")
# The pip cache every build shares (mounted in the chroot): wheels built from source
# distributions (salt, timelib) and downloads are reused by the next build that needs them.
PIP_CACHE = CACHE / "pip-cache"
TIMINGS = CACHE / "timings.jsonl"


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
    # monitoring: the exporters on every host, Prometheus on the one the pillar names.
    packages += ["prometheus-postgres-exporter", "prometheus-node-exporter", "prometheus"]
    # The pooler role's PgBouncer, and arping for the VIP's gratuitous ARP (issue #29).
    packages += ["pgbouncer", "iputils-arping"]
    # standby:restore_from_barman: sshd on the backup host, ssh on the servers (issue #33).
    packages += ["openssh-server"]
    if release in CLOUD_RELEASES:
        packages += ["barman-cli-cloud", "python3-boto3"]
    return packages


def upgrade_packages(release):
    """The old major's packages the ``upgrade`` image of ``release`` adds."""
    version = RELEASES[UPGRADE_FROM[release]]
    return [f"postgresql-{version}", f"postgresql-client-{version}"]


def extra_packages(release, kind):
    """What the layer of ``kind`` (:data:`EXTRA_KINDS`) adds over ``release``'s provisioned one."""
    return upgrade_packages(release) if kind == "upgrade" else list(PATRONI_PACKAGES[release])


def _recipe(release, kind):
    if kind == "patroni":
        return {"provisioned": _key(release, "provisioned"), "packages": extra_packages(release, kind), "format": 1}
    if kind == "upgrade":
        old = UPGRADE_FROM[release]
        # Rebuilt when either release's repository (its bare image) or the provisioned layer is.
        return {
            "provisioned": _key(release, "provisioned"),
            "old_repo": _key(old, "bare"),
            "packages": upgrade_packages(release),
            "format": 2,
        }
    return {
        "release": release,
        "kind": kind,
        "base": BASE_PACKAGES,
        "salt": salt_version(release),
        "formula_packages": formula_packages(release),
        "unit": SALT_UNIT,
        "pip": PIP_CONF,
        "format": 4,
    }


def _key(release, kind):
    digest = hashlib.sha256(json.dumps(_recipe(release, kind), sort_keys=True).encode()).hexdigest()
    return f"{release}-{kind}-{digest[:12]}"


@contextlib.contextmanager
def _timed(image_key, step):
    """Record how long ``step`` of building ``image_key`` took (``timings.jsonl``)."""
    started = time.time()
    try:
        yield
    finally:
        entry = {"image": image_key, "step": step, "start": started, "seconds": round(time.time() - started, 1)}
        with TIMINGS.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")


def _chroot(root, script):
    """Run ``script`` in the image with a clean environment and the machine's CA bundle
    (the registries are reached through it)."""
    env = [
        "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "DEBIAN_FRONTEND=noninteractive",
        "PIP_CERT=/tmp/ca.crt", "SSL_CERT_FILE=/tmp/ca.crt", "PIP_DISABLE_PIP_VERSION_CHECK=1", "LC_ALL=C.UTF-8",
    ]  # fmt: skip
    subprocess.run(["chroot", str(root), *env, "sh", "-euc", script], check=True)


# Releases booted on a unified cgroup hierarchy of their own (lab.booted): systemd 258+
# (forky) boots only on it, and trixie's systemd 257 on this machine's legacy hierarchy misses
# that a stopped unit's cgroup went empty: `systemctl stop postgresql@17-main` then waits
# for TimeoutStopSec (1 h) with every process gone (seen in a switchover, about 1 in 10).
UNIFIED_CGROUP_RELEASES = ("trixie", "forky")
# Releases whose Release file in the registry's copy may be past its Valid-Until (testing):
# apt in the build chroot is told not to check it (mmdebstrap keeps the option in the image).
UNDATED_RELEASES = ("forky",)


def _mmdebstrap(release, root, include, log):
    # The package lists stay for the chroot's own apt runs (no second `apt-get update`; they
    # are removed before the image is kept).
    undated = ['--aptopt=Acquire::Check-Valid-Until "false"'] if release in UNDATED_RELEASES else []
    with open(log, "ab") as out:
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--mode=root", "--skip=cleanup/apt/lists", *undated,
             f"--include={','.join(include)}", release, str(root)],
            check=True, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _bind(source, target):
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)


def _with_network(root):
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "tmp/ca.crt")
    for fs, target in (("proc", "proc"), ("sysfs", "sys")):
        subprocess.run(["mount", "-t", fs, fs, str(root / target)], check=True)
    PIP_CACHE.mkdir(parents=True, exist_ok=True)
    _bind(PIP_CACHE, root / "root/.cache/pip")


def _without_network(root):
    _unmount_below(root)
    for path in ("tmp/ca.crt", "etc/resolv.conf"):
        (root / path).unlink(missing_ok=True)


def _mounts_below(path):
    """Mount points at or under ``path``, deepest first."""
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1].encode().decode("unicode_escape") for line in fh]
    return sorted((p for p in points if p == path or p.startswith(path + "/")), key=len, reverse=True)


def _unmount_below(path):
    for point in _mounts_below(path):
        subprocess.run(["umount", "-l", point], check=False)


def remove_tree(path):
    """Remove a build directory, unmounting first whatever an interrupted build left mounted
    in it (/proc, /sys, the pip cache): never delete through a mount."""
    _unmount_below(path)
    if _mounts_below(path):
        raise RuntimeError(f"{path}: still mounted, not removed")
    shutil.rmtree(path, ignore_errors=True)


# The repository first, while the image holds only the base system: apt downloads every
# dependency a bare host lacks (the build packages are gone again before the image is kept).
DOWNLOAD_SCRIPT = """
mkdir -p /tmp/debs/partial
apt-get install -y -qq --download-only --no-install-recommends -o Dir::Cache::archives=/tmp/debs {packages}
rm -r /tmp/debs/partial
"""
SALT_SCRIPT = """
apt-get install -y -qq --no-install-recommends {build} >/dev/null
python3 -m venv /opt/salt
/opt/salt/bin/pip install -q salt=={salt}
/opt/salt/bin/pip download -q -d /opt/wheelhouse psycopg2-binary
apt-get purge -y -qq --autoremove {build} >/dev/null
apt-get clean; rm -rf /var/lib/apt/lists/*
"""


def _build_bare(release, root, repo, log, key):
    with _timed(key, "mmdebstrap"):
        _mmdebstrap(release, root, BASE_PACKAGES, log)
    _with_network(root)
    try:
        with _timed(key, "repository download"):
            _chroot(root, DOWNLOAD_SCRIPT.format(packages=" ".join(formula_packages(release))))
        with _timed(key, "salt virtualenv"):
            _chroot(root, SALT_SCRIPT.format(salt=salt_version(release), build=" ".join(BUILD_PACKAGES)))
    finally:
        _without_network(root)
    repo.mkdir(parents=True, exist_ok=True)
    for deb in (root / "tmp/debs").glob("*.deb"):
        shutil.move(str(deb), repo / deb.name)
    shutil.rmtree(root / "tmp/debs")
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


PROVISION_SCRIPT = """
mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/lab-build.conf
echo 'deb [trusted=yes] file:/tmp/repo ./' > /etc/apt/sources.list.d/build.list
apt-get update -qq
apt-get install -y -qq --no-install-recommends {packages} >/dev/null
/opt/salt/bin/pip install -q psycopg2-binary
rm /etc/apt/sources.list.d/build.list /etc/postgresql-common/createcluster.d/lab-build.conf
apt-get clean; rm -rf /var/lib/apt/lists/*
"""


@contextlib.contextmanager
def _overlay(lower, layer):
    """An overlay over ``lower`` (directories, top first) whose changes land in ``layer``:
    yields its merged root; then everything mounted below it is unmounted, and after a
    build that went through, its work and merged directories are removed."""
    work, merged = layer.with_suffix(".work"), layer.with_suffix(".merged")
    for path in (layer, work, merged):
        path.mkdir(parents=True)
    options = f"lowerdir={':'.join(str(p) for p in lower)},upperdir={layer},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)
    try:
        yield merged
    finally:
        _unmount_below(merged)
    for path in (work, merged):
        remove_tree(path)


def _build_layer(bare, repo, layer, key):
    """The provisioned layer: what installing the formula's packages on ``bare`` adds, caught
    in the upper directory of an overlay over it."""
    with _overlay([bare], layer) as merged:
        _bind(repo, merged / "tmp/repo")
        # postgresql-common's postinst runs systemd-tmpfiles, which fails without /proc (forky).
        subprocess.run(["mount", "-t", "proc", "proc", str(merged / "proc")], check=True)
        with _timed(key, "packages installed"):
            _chroot(merged, PROVISION_SCRIPT.format(packages=" ".join(_recorded_packages(bare))))
    # The (now empty) mount point of the repository is the layer's; the host makes its own.
    with contextlib.suppress(OSError):
        (layer / "tmp/repo").rmdir()


EXTRA_SCRIPT = """
mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/lab-build.conf
: > /etc/apt/sources.list.d/build.list
{sources}
{archive}
apt-get update -qq
apt-get install -y -qq --no-install-recommends {packages} >/dev/null
{after}
rm /etc/apt/sources.list.d/build.list /etc/postgresql-common/createcluster.d/lab-build.conf
apt-get clean; rm -rf /var/lib/apt/lists/*
"""
# What runs after the layer's installation: a host of the patroni image starts no etcd or
# Patroni of its own (the benchmark configures and starts them where it wants them).
EXTRA_AFTER = {"patroni": "systemctl disable etcd.service patroni.service 2>/dev/null || true"}


def _archive_sources(release):
    """Shell lines adding ``release``'s archive to the build's sources (mmdebstrap's default
    mirror; a stable release's security suite too)."""
    lines = [f"deb http://deb.debian.org/debian {release} main"]
    if release not in UNDATED_RELEASES:
        lines.append(f"deb http://deb.debian.org/debian-security {release}-security main")
    return "\n".join(f"echo '{line}' >> /etc/apt/sources.list.d/build.list" for line in lines)


def _build_extra_layer(release, kind, lower, repos, layer, key):
    """The layer of ``kind`` (:data:`EXTRA_KINDS`): its packages installed over ``lower``
    (the provisioned layers, top first), from the lab repositories ``repos`` (the upgrade
    layer's: both releases', apt takes the newer release's build of what both have, the old
    one's libraries that the new release dropped) and the release's archive for what they
    do not hold."""
    mounts = [f"tmp/repo{i or ''}" for i in range(len(repos))]
    sources = "\n".join(f"echo 'deb [trusted=yes] file:/{m} ./' >> /etc/apt/sources.list.d/build.list" for m in mounts)
    script = EXTRA_SCRIPT.format(
        sources=sources, archive=_archive_sources(release), packages=" ".join(extra_packages(release, kind)),
        after=EXTRA_AFTER.get(kind, ""),
    )  # fmt: skip
    with _overlay(lower, layer) as merged:
        try:
            for mount, repo in zip(mounts, repos):
                _bind(repo, merged / mount)
            _with_network(merged)
            with _timed(key, "packages installed"):
                _chroot(merged, script)
        finally:
            for path in ("tmp/ca.crt", "etc/resolv.conf"):
                (merged / path).unlink(missing_ok=True)
    for mount_point in (*mounts, "root/.cache/pip"):
        with contextlib.suppress(OSError):
            (layer / mount_point).rmdir()


def _recorded_packages(root):
    return json.loads((root / ".pgr-image.json").read_text())["formula_packages"]


@contextlib.contextmanager
def _locked(key):
    """Hold the lock of image ``key``; time spent waiting for another process's build of it
    is recorded as its step ``waited``."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".lock-{key}", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with _timed(key, "waited"):
                fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_once(key, build):
    """``CACHE/key``, made by ``build(tmp)`` into a temporary directory unless it is there."""
    done = CACHE / key
    if (done / ".pgr-image.json").exists():
        return done
    tmp = CACHE / f"{key}.tmp"
    for stale in (done, tmp, tmp.with_suffix(".work"), tmp.with_suffix(".merged")):
        remove_tree(stale)
    try:
        with _timed(key, "total"):
            build(tmp)
    except BaseException:
        remove_tree(tmp)
        raise
    tmp.rename(done)
    return done


def image(release, kind="provisioned", log=None):
    """The layers of ``kind`` for ``release``, top first (built if not cached), and its
    repository. A lab waits while another process builds the same image."""
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r} (one of {', '.join(RELEASES)})")
    log = log or CACHE / "build.log"
    bare_key = _key(release, "bare")
    repo = CACHE / f"{bare_key}-repo"

    def build_bare(tmp):
        remove_tree(repo)
        _build_bare(release, tmp, repo, log, bare_key)
        (tmp / ".pgr-image.json").write_text(json.dumps(_recipe(release, "bare")))

    with _locked(bare_key):
        bare = _build_once(bare_key, build_bare)
    if kind == "bare":
        return (bare,), repo
    if kind in EXTRA_KINDS:
        if release not in EXTRA_KINDS[kind]:
            raise ValueError(f"no {kind} image for {release!r} (one of {', '.join(EXTRA_KINDS[kind])})")
        lower, _ = image(release, "provisioned", log)
        repos = [repo]
        if kind == "upgrade":
            repos.append(image(UPGRADE_FROM[release], "bare", log)[1])
        key = _key(release, kind)

        def build_extra(tmp):
            _build_extra_layer(release, kind, lower, repos, tmp, key)
            (tmp / ".pgr-image.json").write_text(json.dumps(_recipe(release, kind)))

        with _locked(key):
            return (_build_once(key, build_extra), *lower), repo
    key = _key(release, kind)

    def build_layer(tmp):
        _build_layer(bare, repo, tmp, key)
        (tmp / ".pgr-image.json").write_text(json.dumps(_recipe(release, kind)))

    with _locked(key):
        return (_build_once(key, build_layer), bare), repo


def timings_since(started):
    """The build steps recorded since ``started`` (a time.time()), oldest first."""
    if not TIMINGS.exists():
        return []
    entries = [json.loads(line) for line in TIMINGS.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["start"] >= started]


def build_report(started):
    """What the image builds since ``started`` cost: (wall seconds from the first step's start
    to the last one's end, or 0 when nothing was built; one line per image)."""
    totals = [e for e in timings_since(started) if e["step"] == "total"]
    if not totals:
        return 0.0, []
    wall = max(e["start"] + e["seconds"] for e in totals) - min(e["start"] for e in totals)
    steps = timings_since(started)
    lines = []
    for total in totals:
        parts = [
            f"{e['step']} {e['seconds']:.0f} s"
            for e in steps
            if e["image"] == total["image"] and e["step"] not in ("total", "waited")
        ]
        lines.append(f"{total['image']}: {total['seconds']:.0f} s ({', '.join(parts) or 'one step'})")
    return wall, lines


def build_all(groups=BUILD_ORDER, kinds=("bare", "provisioned")):
    """Build (or find) the images of every release: ``groups`` one after the other, the
    releases of a group side by side (one process each). Returns the exit codes. SIGTERM
    and SIGHUP are passed on to the builds, which unwind; no group starts after them."""
    procs, codes = [], []
    stopped = []
    forward_signals(lambda: stopped.append(True) or [p.pid for p in procs if p.poll() is None])
    for number, group in enumerate(groups):
        if stopped:
            break
        if number == 1:
            # The first group is the release most labs boot, which they wait for; the others
            # are needed later and build at a lower priority than the tests beside them.
            os.nice(LATER_GROUPS_NICENESS)
        procs = [
            subprocess.Popen([sys.executable, "-m", "lab.image", "--kind", *kinds, "--", release], cwd=REPO_ROOT)  # noqa: S603
            for release in group
        ]
        codes += [p.wait() for p in procs]
    return codes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release", nargs="*", help=f"one of {', '.join(RELEASES)} (default: bookworm)")
    parser.add_argument("--all", action="store_true", help="every release: bookworm, then the others side by side")
    parser.add_argument(
        "--kind", nargs="+", default=["bare", "provisioned"], choices=["bare", "provisioned", *EXTRA_KINDS]
    )
    args = parser.parse_args(argv)
    unknown = set(args.release) - set(RELEASES)
    if unknown:
        parser.error(f"unknown release {', '.join(sorted(unknown))} (one of {', '.join(RELEASES)})")
    started = time.time()
    if args.all:
        codes = build_all(BUILD_ORDER, args.kind)
        wall, lines = build_report(started)
        print("\n".join(lines + [f"images built in {wall:.0f} s"]), flush=True)
        return max(codes, default=143)
    unwind_on_signals()
    for release in args.release or ["bookworm"]:
        for kind in args.kind:
            layers, repo = image(release, kind)
            print(kind, *layers, repo, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
