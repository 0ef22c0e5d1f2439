# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: this host's SSH public keys for
``standby:restore_from_barman`` (what ``pg_replication.ssh_keys_published`` sends to the Salt
mine). Part of ``pg_replication`` (see pg_replication.py); the plan is
``_utils/pg_replication_ssh.py``.
"""

import subprocess

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
DEFAULT_KEY_FILE = "/var/lib/postgresql/.ssh/id_ed25519"
# The backup host's pg_replication-send-backup exit status for "no backup it can send".
NO_BACKUP = 3


def __virtual__():
    # One of the files of the pg_replication module (Salt merges the functions of files
    # that share a virtual name); loads without psycopg2, like pg_replication.py.
    return __virtualname__


def _read_key(path):
    try:
        with salt.utils.files.fopen(path, "r") as fh:
            words = fh.read().split()
    except FileNotFoundError:
        return None
    return " ".join(words[:2]) if len(words) >= 2 else None


def ssh_public_keys(key_file=None):
    """
    This host's public SSH keys, without their comments: ``postgres`` (a server's: the
    postgres user's ``key_file`` + ``.pub``) and ``host`` (sshd's ed25519 host key: the
    backup host's); ``None`` for a key the host does not have. No private key is read.

    key_file
        The postgres user's key (default: ``/var/lib/postgresql/.ssh/id_ed25519``).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.ssh_public_keys
    """
    return {
        "postgres": _read_key((key_file or DEFAULT_KEY_FILE) + ".pub"),
        "host": _read_key(HOST_KEY),
    }


def barman_backup_fetch(datadir, barman_host, server, user="barman", runas="postgres"):
    """
    Fill the empty ``datadir`` with Barman server ``server``'s latest DONE backup, pulled
    from the backup host over SSH as ``runas`` (the forced command's
    ``pg_replication-send-backup``: the backup's plain data directory as a tar stream); its
    WAL then comes through restore_command. True once restored; False when Barman has no
    backup it can send (none DONE yet, tablespaces, a compressed backup): bootstrap from the
    primary then. Any other failure raises.

    CLI Example:

    .. code-block:: bash

        salt standby pg_replication.barman_backup_fetch /var/lib/postgresql/15/main 192.168.11.103 master-streaming
    """
    as_user = ["runuser", "-u", runas, "--"]
    remote = f"pg_replication-send-backup {server}"
    ssh = [*as_user, "ssh", "-q", "-T", "-o", "BatchMode=yes", f"{user}@{barman_host}", remote]
    tar = [*as_user, "tar", "-C", datadir, "-xf", "-"]
    with subprocess.Popen(ssh, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as sender:
        with subprocess.Popen(tar, stdin=sender.stdout, stderr=subprocess.PIPE) as receiver:
            sender.stdout.close()
            _, tar_err = receiver.communicate()
        ssh_err = sender.stderr.read().decode(errors="replace").strip()
    if sender.returncode == NO_BACKUP:
        return False
    if sender.returncode:
        raise CommandExecutionError(f"{user}@{barman_host} {remote}: exit {sender.returncode}: {ssh_err}")
    if receiver.returncode:
        raise CommandExecutionError(f"tar into {datadir}: {tar_err.decode(errors='replace').strip()}")
    return True
