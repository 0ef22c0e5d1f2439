"""A Vagrant box for the lxc provider (vagrant-lxc), made from the lab's ``bare`` image
(lab/image.py: systemd, a salt-minion in /opt/salt, the wheelhouse), so Vagrant and Test
Kitchen run the formula on the same Debian as the lab's booted hosts.

Added: DHCP on eth0 (systemd-networkd), sshd, sudo without password and Vagrant's insecure
public key for the ``vagrant`` user, ``salt-call`` on the PATH with psycopg2 in Salt's
Python, no resolver (guests have no route out: every ``sudo`` would wait on DNS) and, as
the only package source, the lab's repository where the guest mounts it
(``/opt/pgr-repo``, a synced folder).

Run ``python -m lab.box`` to build it (cached beside the images) and add it to Vagrant as
``pg_replication/debian-12``; it prints the box file and the repository to mount.
"""

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from lab import image

BOX_NAME = "pg_replication/debian-12"
RELEASE = "bookworm"
GUEST_REPO = "/opt/pgr-repo"
REPO_LINK = image.CACHE / f"{RELEASE}-repo"
# Where kitchen.lxc.yml finds it: the default cache (PGR_LAB_CACHE moves the lab's own).
DEFAULT_REPO_LINK = image.DEFAULT_CACHE / f"{RELEASE}-repo"
MIRROR = "http://deb.debian.org/debian"
LXC_CONFIG = "lxc.arch = amd64\nlxc.include = /usr/share/lxc/config/common.conf\nlxc.apparmor.profile = unconfined\n"
GUEST_SCRIPT = f"""
echo 'deb {MIRROR} {RELEASE} main' > /etc/apt/sources.list
apt-get update -qq
apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
rm /etc/apt/sources.list
apt-get clean; rm -rf /var/lib/apt/lists/*
echo 'deb [trusted=yes] file:{GUEST_REPO} ./' > /etc/apt/sources.list.d/pgr-repo.list
useradd -m -s /bin/bash vagrant
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
echo 'UseDNS no' > /etc/ssh/sshd_config.d/pgr.conf
/opt/salt/bin/pip install -q psycopg2-binary
for command in salt-call salt-minion salt-master salt salt-key salt-run; do
  ln -sf /opt/salt/bin/$command /usr/local/bin/$command
done
printf '[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n' > /etc/systemd/network/80-eth0.network
systemctl enable systemd-networkd
systemctl disable salt-minion
systemctl enable ssh
rm -f /etc/ssh/ssh_host_*
"""
# The salt provisioner's bootstrap script (configure-only: Salt is in the box) restarts the
# daemons it configures through systemd: a unit for the master too, started by Vagrant only.
SALT_MASTER_UNIT = image.salt_unit("salt-master", "Salt master (pg_replication box)")
# Host keys per guest, made at its first boot.
HOST_KEYS_UNIT = """\
[Unit]
Description=SSH host keys (pg_replication box)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""


def insecure_key():
    """Vagrant's insecure public key, from the vagrant package."""
    found = sorted(pathlib.Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-*/keys/vagrant.pub"))
    if not found:
        raise RuntimeError("Vagrant's insecure key (keys/vagrant.pub) not found: install the vagrant package")
    return found[-1].read_text()


def _key(bare):
    recipe = {"bare": bare.name, "script": GUEST_SCRIPT, "lxc": LXC_CONFIG, "units": [HOST_KEYS_UNIT, SALT_MASTER_UNIT],
              "format": 1}  # fmt: skip
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def build(log=None, niceness=0):
    """The box file (built if not cached) and the repository its guests mount (also at the
    stable path :data:`REPO_LINK`, which kitchen.lxc.yml names). ``niceness``: the box
    itself is built that much below the caller's priority (its image is not)."""
    (bare,), repo = image.image(RELEASE, "bare", log=log)
    os.nice(niceness)
    if REPO_LINK.is_symlink() or REPO_LINK.exists():
        REPO_LINK.unlink()
    REPO_LINK.symlink_to(repo.name)
    box = image.CACHE / f"{RELEASE}-vagrant-lxc-{_key(bare)}.box"
    if box.exists():
        return box, repo
    with tempfile.TemporaryDirectory(dir=image.CACHE) as tmp:
        work = pathlib.Path(tmp)
        root = work / "rootfs"
        subprocess.run(["cp", "-a", str(bare), str(root)], check=True)
        image._with_network(root)  # pylint: disable=protected-access
        try:
            image._chroot(root, GUEST_SCRIPT)  # pylint: disable=protected-access
        finally:
            image._without_network(root)  # pylint: disable=protected-access
        (root / "etc/systemd/system/pgr-ssh-host-keys.service").write_text(HOST_KEYS_UNIT)
        (root / "etc/systemd/system/salt-master.service").write_text(SALT_MASTER_UNIT)
        image._chroot(root, "systemctl enable pgr-ssh-host-keys")  # pylint: disable=protected-access
        keys = root / "home/vagrant/.ssh/authorized_keys"
        keys.write_text(insecure_key())
        shutil.chown(keys, *(_owner(root / "home/vagrant")))
        keys.chmod(0o600)
        (root / "etc/resolv.conf").write_text("")
        (root / GUEST_REPO.lstrip("/")).mkdir(parents=True, exist_ok=True)
        # vagrant-lxc strips two leading components: ./rootfs/...
        subprocess.run(["tar", "--numeric-owner", "-czf", "rootfs.tar.gz", "./rootfs"], cwd=work, check=True)
        shutil.rmtree(root)
        (work / "lxc-config").write_text(LXC_CONFIG)
        metadata = {"provider": "lxc", "version": "1.0.0", "built-on": "pg_replication lab", "template-opts": {}}
        (work / "metadata.json").write_text(json.dumps(metadata))
        partial = box.with_suffix(".tmp")
        subprocess.run(
            ["tar", "-czf", str(partial), "metadata.json", "lxc-config", "rootfs.tar.gz"], cwd=work, check=True
        )
        partial.rename(box)
    return box, repo


def _owner(path):
    stat = path.stat()
    return stat.st_uid, stat.st_gid


def add(box):
    """Add (or replace) the box in Vagrant as :data:`BOX_NAME`."""
    subprocess.run(["vagrant", "box", "add", "--force", "--name", BOX_NAME, str(box)], check=True)
    (image.CACHE / "vagrant-box-added").write_text(str(box))


def ensure_added(box):
    """Add the box unless Vagrant already has this very box as :data:`BOX_NAME`."""
    listed = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True, check=True).stdout
    marker = image.CACHE / "vagrant-box-added"
    if not (BOX_NAME in listed.split() and marker.exists() and marker.read_text() == str(box)):
        add(box)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-add", action="store_true", help="build only; do not add it to Vagrant")
    parser.add_argument("--nice", type=int, default=0, help="build the box (not its image) this much nicer")
    args = parser.parse_args(argv)
    box, repo = build(niceness=args.nice)
    if not args.no_add:
        add(box)
    print(f"box {box}\nrepository {REPO_LINK} -> {repo} (mount it at {GUEST_REPO})")


if __name__ == "__main__":
    sys.exit(main())
