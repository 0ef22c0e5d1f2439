# SPDX-License-Identifier: Apache-2.0
"""What ``pg_replication.standby_bootstrapped`` does with a data directory, decided from
plain facts (what the directory holds, what the primary says, what the pillar allows).

:func:`decide` returns one action; the state only carries it out:

- ``keep``: the directory holds a standby of this primary (or, in test mode with the
  primary not reachable yet, a standby): nothing to do.
- ``renew_slot``: a standby whose slot lost its WAL, which catches up from the archive: the
  slot is made again.
- ``rebuild``: the directory is stopped, emptied and filled again with a new base backup
  (its slot made again first when it lost its WAL).
- ``fill``: an empty or missing directory gets a base backup.
- ``refuse``: nothing is touched; ``reason`` says why and what to do.

Pure logic; runs on the minion's Python (3.9 on Debian 11).
"""

import os

KEEP, RENEW_SLOT, REBUILD, FILL, REFUSE = "keep", "renew_slot", "rebuild", "fill", "refuse"
# Never emptied, whatever the pillar says.
SYSTEM_DIRS = {
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/lib/postgresql",
    "/var/lib/pgsql", "/var/lib/barman", "/var/log", "/var/tmp",
}  # fmt: skip
# The facts decide() reads, each a plain value.
FACTS = (
    "name",  # the data directory, as the state names it
    "real_path",  # its real path (links resolved)
    "primary_host",
    "slot",
    "minion_id",  # this minion (named in the rejoin hint)
    "local_id",  # the directory's system identifier (None: no cluster)
    "primary_id",  # the primary's (None: not reachable, in test mode)
    "empty",  # the directory is missing or empty
    "marked",  # it holds the standby marker (standby.signal or recovery.conf)
    "slot_lost",  # the primary's slot lost its WAL (asked only of a standby of it)
    "catch_up_from_archive",
    "rebuild_lost_slot",
    "wipe_unrelated_data",
    "wipe_promoted_copy",
)


def is_standby_of_primary(facts):
    """Whether the directory holds a standby of the primary: its system and marker."""
    return facts["local_id"] is not None and facts["local_id"] == facts["primary_id"] and facts["marked"]


def unsafe_to_wipe(real_path):
    """Why the directory at ``real_path`` must never be emptied (None: it may be)."""
    if real_path in SYSTEM_DIRS:
        return f"it is {real_path}, a system directory"
    if len([part for part in real_path.split(os.sep) if part]) < 2:
        return f"{real_path} is less than two levels below /"
    return None


def decide(facts):
    """The action for ``facts`` (:data:`FACTS`).

    :returns: ``{"action": KEEP, "comment": ...}``, ``{"action": RENEW_SLOT}``,
        ``{"action": REBUILD, "slot_lost": bool}``, ``{"action": FILL}`` or
        ``{"action": REFUSE, "reason": ...}``.
    """
    name, primary_host, local_id = facts["name"], facts["primary_host"], facts["local_id"]
    if facts["primary_id"] is None and local_id is not None and facts["marked"]:
        # test=True and the primary not reachable yet (e.g. TLS just turned on: the CA the
        # real run writes first is not there): a standby stays a standby.
        return {"action": KEEP, "comment": f"{name} holds a standby (system {local_id}); the real run checks it "
                f"against {primary_host}"}  # fmt: skip
    lost = False
    if is_standby_of_primary(facts):
        lost = bool(facts["slot_lost"])
        if not lost:
            return {"action": KEEP, "comment": f"{name} is a standby of {primary_host} (system {local_id})"}
        if facts["catch_up_from_archive"]:
            return {"action": RENEW_SLOT}
        if not facts["rebuild_lost_slot"]:
            return _refuse(
                f"slot {facts['slot']} on {primary_host} lost the WAL this standby needs (wal_status lost): it "
                "cannot catch up. Set pg_replication:standby:rebuild_lost_slot: True to let the "
                "highstate rebuild it from a new base backup, or rebuild it yourself"
            )
    elif not facts["empty"]:
        refusal = _foreign_data(facts)
        if refusal:
            return refusal
    if facts["empty"]:
        return {"action": FILL}
    refused = unsafe_to_wipe(facts["real_path"])
    if refused:
        return _refuse(f"refusing to wipe {name}: {refused}")
    return {"action": REBUILD, "slot_lost": lost}


def _foreign_data(facts):
    """A refusal for a directory that holds something else than a standby of the primary,
    unless the pillar lets the formula wipe it (None)."""
    local_id, primary_id = facts["local_id"], facts["primary_id"]
    promoted_copy = primary_id is not None and local_id == primary_id
    if promoted_copy:
        what = (
            f"a non-standby copy of system {local_id} (a former primary? "
            f"`salt-run pg_replication.rejoin host={facts['minion_id']}` rewinds it)"
        )
        flag, allowed = "wipe_promoted_copy", facts["wipe_promoted_copy"]
    else:
        what = f"system {local_id}" if local_id else "files that are not a cluster"
        flag, allowed = "wipe_unrelated_data", facts["wipe_unrelated_data"]
    if allowed:
        return None
    return _refuse(
        f"{facts['name']} holds {what}, not a standby of {facts['primary_host']} (system {primary_id}); "
        f"refusing to overwrite it. Empty it yourself, or set "
        f"pg_replication:standby:{flag}: True to let the formula do it"
    )


def _refuse(reason):
    return {"action": REFUSE, "reason": reason}
