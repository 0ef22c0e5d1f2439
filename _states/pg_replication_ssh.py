# SPDX-License-Identifier: Apache-2.0
"""The ``pg_replication`` states of the SSH link for ``standby:restore_from_barman`` (the plan:
``_utils/pg_replication_ssh.py``): each host's public keys in the Salt mine, the servers' keys
authorized on the backup host with a forced command, the backup host's key pinned on the
servers. The keys' lines are Salt's own ``ssh_auth`` and ``ssh_known_hosts`` states.

On fresh hosts the other side's key reaches the mine during the same highstate: a state
that needs it waits for it (``timeout``); in test mode it predicts instead of waiting.
"""

import re

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"
# A public key as pg_replication.ssh_public_keys sends it (type and base64, no comment): what
# any other value a minion put in the mine is taken for is "no key".
PUBLIC_KEY_RE = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}")
# The comment of an authorized_keys line the formula made, before the server's minion id.
COMMENT = "pg_replication:"


def __virtual__():
    if "pg_replication.ssh_public_keys" in __salt__:
        return __virtualname__
    return (False, "pg_replication execution module could not be loaded")


def ssh_keys_published(name, key_file=None):
    """
    Send this host's public SSH keys (``pg_replication.ssh_public_keys``) to the Salt mine as
    ``name``, unless the mine holds them already.

    name
        The mine entry (``pg_replication_ssh``).
    key_file
        The postgres user's key, on a server.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    keys = __salt__["pg_replication.ssh_public_keys"](key_file)
    if _mined(name, [__opts__["id"]]).get(__opts__["id"]) == keys:
        ret["comment"] = "This host's SSH public keys are in the Salt mine"
        return ret
    published = sorted(kind for kind, key in keys.items() if key)

    def send():
        if not __salt__["mine.send"](name, mine_function="pg_replication.ssh_public_keys", key_file=key_file):
            raise CommandExecutionError(f"mine.send {name} failed: is the salt-master reachable?")

    try:
        return __utils__["pg_replication_state.change"](
            __opts__, ret, {"published": published},
            would="This host's SSH public keys would be sent to the Salt mine",
            done="This host's SSH public keys were sent to the Salt mine", act=send,
        )  # fmt: skip
    except CommandExecutionError as exc:
        return __utils__["pg_replication_state.fail"](ret, exc)


def ssh_clients_authorized(name, clients, options, mine, timeout=300):
    """
    Authorize each of ``clients``' postgres keys (from the Salt mine's ``mine``) in user
    ``name``'s authorized_keys with ``options`` (``restrict`` and the forced command); the
    lines the formula made for other minions go. A key not in the mine yet is waited for.

    name
        The user on the backup host (``barman``).
    clients
        The servers' minion ids.
    options
        The options of each line.
    mine
        The mine entry (``pg_replication_ssh``).
    timeout
        Seconds to wait for a key that is not in the mine yet.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    keys = _wait_for(mine, clients, "postgres", timeout)
    user_exists = bool(__salt__["user.info"](name))
    results = {}
    for minion in clients:
        if minion in keys and user_exists:
            enc, b64 = keys[minion].split()
            comment = COMMENT + minion
            results[minion] = __states__["ssh_auth.present"](b64, name, enc=enc, comment=comment, options=options)
        elif minion in keys:  # test mode: the package making the user has not run yet
            results[minion] = {"result": None, "changes": {"new": minion}, "comment": f"{name} does not exist yet"}
    for b64, line in (_authorized(name) if user_exists else {}).items():
        minion = line.get("comment", "")[len(COMMENT) :]
        made_here = line.get("comment", "").startswith(COMMENT)
        if made_here and (minion not in clients or (minion in keys and keys[minion].split()[1] != b64)):
            results[f"{minion} (old key)"] = __states__["ssh_auth.absent"](b64, name, enc=line["enc"])
    missing = [m for m in clients if m not in keys]
    return _merged(ret, results, missing, "postgres key")


def ssh_host_known(name, minion, mine, user="postgres", timeout=300):
    """
    Pin the backup host's SSH host key (from the Salt mine's ``mine`` of ``minion``) in
    ``user``'s known_hosts for address ``name``; a changed host key replaces the old one.
    The key is waited for while it is not in the mine yet.

    name
        The backup host's address (as restore_command reaches it).
    minion
        Its minion id.
    mine
        The mine entry (``pg_replication_ssh``).
    user
        Who connects (``postgres``).
    timeout
        Seconds to wait for the key.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    keys = _wait_for(mine, [minion], "host", timeout)
    results = {}
    if minion in keys and __salt__["user.info"](user):
        enc, b64 = keys[minion].split()
        results[minion] = __states__["ssh_known_hosts.present"](
            name, user=user, key=b64, enc=enc, hash_known_hosts=False
        )
    elif minion in keys:  # test mode: the package making the user has not run yet
        results[minion] = {"result": None, "changes": {"new": name}, "comment": f"{user} does not exist yet"}
    return _merged(ret, results, [m for m in [minion] if m not in keys], "SSH host key")


def _mined(mine, minions):
    return __salt__["mine.get"](minions, mine, tgt_type="list") or {}


def _wait_for(mine, minions, kind, timeout):
    """``{minion: key}`` of ``kind`` from the mine for ``minions``; waits up to ``timeout``
    seconds for those missing (not in test mode)."""

    def found():
        mined = _mined(mine, minions)
        keys = {m: (mined.get(m) or {}).get(kind) if isinstance(mined.get(m), dict) else None for m in minions}
        return {m: key for m, key in keys.items() if isinstance(key, str) and PUBLIC_KEY_RE.fullmatch(key)}

    if not minions:
        return {}
    keys = found()
    if len(keys) < len(minions) and not __opts__["test"]:
        __utils__["pg_replication_poll.until"](lambda: len(found()) == len(minions), timeout, interval=2)
        keys = found()
    return keys


def _authorized(user):
    # Salt's ssh module loads only where the ssh client is; Debian's sshd depends on it, so
    # without it no line of authorized_keys lets anyone in: nothing to read or revoke.
    if "ssh.auth_keys" not in __salt__:
        return {}
    try:
        return __salt__["ssh.auth_keys"](user=user) or {}
    except CommandExecutionError:
        return {}


def _merged(ret, results, missing, what):
    """One return from Salt's states' ``results`` (by minion) and the minions whose key the
    mine does not hold."""
    ret["changes"] = {m: r["changes"] for m, r in results.items() if r.get("changes")}
    comments = [f"{m}: {r['comment']}" for m, r in results.items() if r.get("comment")]
    if any(r["result"] is False for r in results.values()):
        ret["result"] = False
    elif any(r["result"] is None for r in results.values()):
        ret["result"] = None
    if missing and __opts__["test"]:
        ret["result"] = None
        ret["changes"].update({m: f"{what} from the Salt mine, once published" for m in missing})
    elif missing:
        ret["result"] = False
        comments.append(
            f"No {what} of {', '.join(missing)} in the Salt mine: apply the highstate there"
            " (it publishes the key), then here again"
        )
    ret["comment"] = "\n".join(comments)
    return ret
