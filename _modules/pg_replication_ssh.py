# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: this host's SSH public keys for
``standby:restore_from_barman`` (what ``pg_replication.ssh_keys_published`` sends to the Salt
mine). Part of ``pg_replication`` (see pg_replication.py); the plan is
``_utils/pg_replication_ssh.py``.
"""

import salt.utils.files

__virtualname__ = "pg_replication"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
DEFAULT_KEY_FILE = "/var/lib/postgresql/.ssh/id_ed25519"


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
