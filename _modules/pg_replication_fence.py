# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: the self-fencing watchdog's side on this server (its
fence marker, its configuration). Part of ``pg_replication`` (see pg_replication.py); the
decision itself is ``_utils/pg_replication_fence.py``.
"""

import os

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"


def __virtual__():
    # One of the files of the pg_replication module (Salt merges the functions of files
    # that share a virtual name); loads without psycopg2, like pg_replication.py.
    return __virtualname__


def _default_marker():
    return __utils__["pg_replication_fence.marker_path"]()


def fence_marker(path=None):
    """
    This server's fence marker: ``None`` when it is not fenced, else when the watchdog fenced
    it (``fenced_at``, UTC), why (``reason``) and which server (``minion_id``).

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.fence_marker
    """
    path = path or _default_marker()
    try:
        with salt.utils.files.fopen(path, "r") as marker:
            text = marker.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CommandExecutionError(f"cannot read the fence marker {path}: {exc}") from exc
    return dict(__utils__["pg_replication_fence.read_marker"](text), path=path)


def fence_clear(path=None):
    """
    Remove this server's fence marker (``salt-run pg_replication.rejoin`` does, once the
    server is rewound as a standby); returns what the marker said, or ``None``.

    CLI Example:

    .. code-block:: bash

        salt 'old-primary' pg_replication.fence_clear
    """
    path = path or _default_marker()
    was = fence_marker(path)
    if was is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CommandExecutionError(f"cannot remove the fence marker {path}: {exc}") from exc
    return was


def watchdog_config(ha, minion_id, data_dir, service, vip_drop_script=None):
    """
    The watchdog's configuration file (JSON text) for this minion: its plan's ``ha``, data
    directory and cluster unit, the VIP's drop script (``pg_replication:vip``), and the
    salt-master it checks (this minion's ``master`` and ``master_port`` options).

    CLI Example:

    .. code-block:: bash

        salt 'db1' pg_replication.watchdog_config '{...plan ha...}' db1 /var/lib/postgresql/15/main postgresql@15-main
    """
    master = __opts__.get("master") or "salt"
    return __utils__["pg_replication_fence.watchdog_config"](
        ha, minion_id, data_dir, service, master, __opts__.get("master_port", 4506), vip_drop_script
    )
