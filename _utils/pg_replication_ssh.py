# SPDX-License-Identifier: Apache-2.0
"""SSH between the servers and the backup host, for ``standby:restore_from_barman``: a
standby's restore_command fetches the WAL its primary no longer keeps from Barman with
``barman-wal-restore`` (``barman get-wal`` over SSH, as the postgres user); with
``standby:bootstrap_from: barman`` a new or rebuilt standby pulls Barman's latest backup
over the same link.

Each host makes its own key; the public keys go through the Salt mine (:data:`MINE`). The
backup host authorizes each server's key for ``barman get-wal`` and the backup's sending,
of this cluster's Barman server only (a forced command, :data:`FORCED_COMMAND`), and each
server pins the backup host's host key in the postgres user's known_hosts.

Functions append ``"pillar:key: message"`` to ``errors`` for each fault. Pure logic; runs on
the minion's Python (3.9 on Debian 11).
"""

import os
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
syntax = _sibling("pg_replication_syntax")
KEY = _sibling("pg_replication_schema").KEY
# The Salt mine entry each host's public keys go to (pg_replication_ssh.public_keys).
MINE = "pg_replication_ssh"
# The backup host's forced command: `barman get-wal` and the latest backup's sending, of the
# servers it names, nothing else.
FORCED_COMMAND = "/usr/local/lib/pg_replication/barman-forced-command"
# The system user Barman runs as (both families' packages make it).
BARMAN_USER = "barman"
# The postgres user's key (made on the server, never leaves it; its .pub goes to the mine).
KEY_FILE = ".ssh/id_ed25519"


def wanted(config):
    return bool((config.get("standby") or {}).get("restore_from_barman"))


def bootstraps_from_barman(config):
    return (config.get("standby") or {}).get("bootstrap_from") == "barman"


def restore_command(config, backup_hosts, servers, errors):
    """A standby's restore_command with standby:restore_from_barman: this cluster's WAL from
    the (first) backup host's Barman server over SSH, or None without the switch."""
    if bootstraps_from_barman(config) and not wanted(config):
        errors.append(
            f"{KEY}:standby:bootstrap_from: barman needs {KEY}:standby:restore_from_barman"
            " (the SSH link it pulls the backup through, and the WAL after it)"
        )
    if not wanted(config):
        return None
    own = [s for s in servers if not s["external"]]
    if (config.get("standby") or {}).get("restore_from_cloud"):
        errors.append(f"{KEY}:standby:restore_from_barman: set it or {KEY}:standby:restore_from_cloud, not both")
        return None
    if not backup_hosts or not own:
        errors.append(f"{KEY}:standby:restore_from_barman: needs a barman host backing up this cluster")
        return None
    if bootstraps_from_barman(config) and own[0]["backup_compression"] != "none":
        errors.append(
            f"{KEY}:standby:bootstrap_from: barman sends plain backups only; set {KEY}:barman:backup_compression none"
        )
    # --partial: the segment Barman is still receiving (its .partial) too, so that a standby
    # gets from Barman all that Barman has (barman-cli 2.12 and later have it).
    words = ["barman-wal-restore", "--partial", "-U", BARMAN_USER, backup_hosts[0]["address"], own[0]["name"]]
    return syntax.shell_words(words) + " %f %p"


def own_server(plan):
    return [s["name"] for s in plan["barman_servers"] if not s["external"]][0]


def minion_ssh(plan):
    """What this minion does for the SSH link, or None: a server makes a key, publishes it and
    pins the backup host's host key; the backup host runs sshd, publishes its host key and
    authorizes the servers' keys for its forced command only."""
    if not wanted(plan) or not plan["restore_command"]:
        return None
    barman, role = plan["barman"], plan["role"]
    if role in ("primary", "standby"):
        backup = plan["backup_hosts"][0]
        key_file = f"{plan['home']}/{KEY_FILE}"
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pg_replication@{plan['minion_id']}"]
        return {
            "mine": MINE,
            "pkgs": list(barman.get("ssh_client_pkgs") or []),
            "home": plan["home"],
            "key_file": key_file,
            "keygen": syntax.shell_words([*keygen, "-f", key_file]),
            "barman_id": backup["id"],
            "barman_address": backup["address"],
            # standby:bootstrap_from barman: a new or rebuilt standby pulls Barman's latest backup.
            "bootstrap": {"barman_host": backup["address"], "server": own_server(plan)}
            if bootstraps_from_barman(plan)
            else None,
        }
    if role == "barman" and plan["backup_hosts"][0]["id"] == plan["minion_id"]:
        command = syntax.shell_words([FORCED_COMMAND, barman["bin"], barman["config_file"], own_server(plan)])
        return {
            "mine": MINE,
            "user": BARMAN_USER,
            "forced_command": FORCED_COMMAND,
            "pkgs": list(barman.get("ssh_server_pkgs") or []),
            "service": barman.get("ssh_service"),
            "clients": sorted(h["id"] for h in plan["hosts"].values() if h["role"] in ("primary", "standby")),
            # restrict: no forwarding, no pty; the key runs this command whatever it asks.
            "options": ["restrict", f'command="{command}"'],
        }
    return None


def revoked(plan):
    """On a backup host without standby:restore_from_barman (``plan["ssh"]`` is None: after
    :func:`minion_ssh`), the user whose authorized_keys loses every line the formula made
    (the switch turned off), and the mine entry; else None."""
    if plan["role"] != "barman" or plan["ssh"]:
        return None
    return {"user": BARMAN_USER, "mine": MINE}
