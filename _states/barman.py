# SPDX-License-Identifier: Apache-2.0
"""States for a Barman backup server: all checks OK, a fresh DONE backup, a restore.

All support ``test=True``.

.. code-block:: yaml

    master-streaming-ready:
      barman.check_ok:
        - name: master-streaming

    master-streaming-backup:
      barman.backup_fresh:
        - name: master-streaming
        - max_age: 86400
"""

import datetime
import glob
import os

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "barman"

# Checks a state run can mend: the slot (created), receive-wal (started by barman cron)
# and the WAL archive of an idle primary (a forced WAL switch).
# The checks receive-wal makes pass (its process, its slot, pg_receivewal), and with the WAL
# archive those the streaming setup makes pass.
RECEIVE_WAL_CHECKS = {"replication_slot", "receive_wal_running", "pg_receivexlog"}
STREAMING_CHECKS = RECEIVE_WAL_CHECKS | {"wal_archive"}


def __virtual__():
    if "barman.check" in __salt__:
        return __virtualname__
    return (False, "barman execution module could not be loaded")


def check_ok(name, ignore=(), timeout=120, fix=True):
    """
    Bring Barman server ``name`` to "every ``barman check`` item OK" (but those in
    ``ignore``): create the slot and start receive-wal (``barman cron``) if needed, and force
    a WAL switch when the WAL archive of an idle primary is the failure. Other failures (the
    primary not reachable yet, missing privileges...) are waited for up to ``timeout``
    seconds, then the state fails naming the failed items. With ``fix: False`` the state
    only verifies (it never changes anything, and fails if an item is not OK).
    """
    ret = __utils__["pg_replication_state.ret"](name)
    if not fix:
        return _verify(ret, name, set(ignore or ()))
    ignore = set(ignore or ())

    def failing():
        return sorted(set(__salt__["barman.failed_checks"](name)) - ignore)

    try:
        failed = failing()
        if not failed:
            ret["comment"] = f"barman check {name}: all OK"
            return ret
        if not __opts__["test"] and set(failed) - STREAMING_CHECKS:
            # e.g. the primary's roles are still being created by a concurrent state run
            __utils__["pg_replication_poll.until"](lambda: not set(failing()) - STREAMING_CHECKS, timeout)
            failed = failing()
        unfixable = sorted(set(failed) - STREAMING_CHECKS)
        if unfixable:
            hint = ""
            if "no_access_to_backup_functions" in unfixable:
                hint = " (Barman 2 also wants pg_replication:barman:user_replication: true)"
            ret.update(result=False, comment=f"barman check {name} failed: {', '.join(unfixable)}{hint}")
            return ret
        if not failed:
            ret["comment"] = f"barman check {name}: all OK"
            return ret
        actions = _fix_actions(failed)
        ret["changes"] = {"fixed": failed, "actions": actions}
        if __opts__["test"]:
            ret.update(result=None, comment=f"barman check {name}: would fix {', '.join(failed)}")
            return ret
        failure = _fix(name, failed, actions, failing, timeout)
        if failure:
            ret.update(result=False, comment=failure, changes={})
            return ret
        ret["comment"] = f"barman check {name}: all OK after {', '.join(actions)}"
    except CommandExecutionError as exc:
        if __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc):
            # A new server: the real run creates the slot, starts receive-wal, switches WAL.
            actions = ["create_slot", "start_receive_wal", "switch_wal"]
            return __utils__["pg_replication_state.predict"](
                ret,
                exc,
                {"fixed": "new server", "actions": actions},
                f"barman check {name}: a new server would be brought to OK",
            )
        return __utils__["pg_replication_state.fail"](ret, exc)
    return ret


def _fix_actions(failed):
    """What mends the ``failed`` streaming checks: the slot made, receive-wal started (by
    ``barman cron``), a WAL switch."""
    actions = []
    if "replication_slot" in failed:
        actions.append("create_slot")
    if RECEIVE_WAL_CHECKS & set(failed):
        actions.append("start_receive_wal")
    if "wal_archive" in failed:
        actions.append("switch_wal")
    return actions


def _fix(name, failed, actions, failing, timeout):
    """Carry out ``actions`` (those of ``_fix_actions`` for the ``failed`` checks) on server
    ``name``, then wait up to ``timeout`` seconds until ``failing()`` is empty. None, or why
    the checks are not all OK."""
    if "create_slot" in actions:
        __salt__["barman.create_slot"](name)
    if "start_receive_wal" in actions:
        if "replication_slot" in failed and "receive_wal_running" not in failed:
            # receive-wal runs but not on this slot: it streams from the server's former
            # primary (the conninfo changed, e.g. after a switchover). Start it again.
            __salt__["barman.receive_wal_stop"](name)
        __salt__["barman.cron"]()
        if not __utils__["pg_replication_poll.until"](lambda: __salt__["barman.receive_wal_running"](name), timeout):
            return f"receive-wal for {name} did not start"
    if "switch_wal" in actions:
        # Not ``switch-wal --archive``: it waits for the closed segment, which Barman
        # holds back until the next one has data (up to 15 s on an idle primary).
        __salt__["barman.close_segment"](name)

    def fixed():
        if "switch_wal" in actions:
            __salt__["barman.archive_wal"](name)  # what barman cron does, now
        return not failing()

    if not __utils__["pg_replication_poll.until"](fixed, timeout, interval=0.5):
        return f"barman check {name} still failing: {', '.join(failing())}"
    return None


def _verify(ret, name, ignore):
    try:
        # The ready check's result, unless a barman command since may have changed it.
        failed = sorted(set(__salt__["barman.failed_checks"](name, reuse=True)) - ignore)
    except CommandExecutionError as exc:
        if __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc):
            # Verifying changes nothing: say so, and that the real run checks.
            ret["comment"] = f"barman check {name} is verified by the real run (not checked: {exc})"
            return ret
        ret.update(result=False, comment=str(exc))
        return ret
    if failed:
        ret.update(result=False, comment=f"barman check {name} failed: {', '.join(failed)}")
    else:
        ret["comment"] = f"barman check {name}: all OK"
    return ret


def _end_time(backup):
    value = backup.get("end_time")
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        parsed = datetime.datetime.strptime(str(value), "%a %b %d %H:%M:%S %Y")
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed


def backup_fresh(name, max_age=86400):
    """
    Ensure server ``name`` has a DONE backup that ended less than ``max_age`` seconds ago;
    take one (``barman backup --wait``) otherwise.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    try:
        now = datetime.datetime.now(datetime.timezone.utc)
        for backup in __salt__["barman.list_backups"](name):
            ended = _end_time(backup)
            if backup.get("status") == "DONE" and ended and (now - ended).total_seconds() < float(max_age):
                ret["comment"] = f"backup {backup['backup_id']} of {name} is DONE and fresh"
                return ret
        ret["changes"] = {"backup": "taken"}
        if __opts__["test"]:
            ret.update(result=None, comment=f"a backup of {name} would be taken")
            return ret
        new = __salt__["barman.backup"](name)
        ret["changes"] = {"backup": new["backup_id"], "status": new.get("status")}
        if new.get("status") != "DONE":
            ret.update(result=False, comment=f"backup {new['backup_id']} of {name} ended {new.get('status')}")
            return ret
        ret["comment"] = f"backup {new['backup_id']} of {name} taken"
    except CommandExecutionError as exc:
        if __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc):
            ret.update(result=None, changes={"backup": "taken"}, comment=f"a first backup of {name} would be taken")
            return ret
        return __utils__["pg_replication_state.fail"](ret, exc)
    return ret


def kept(name, backups):
    """
    Ensure ``barman keep`` holds each of server ``name``'s ``backups`` (``{backup id:
    full | standalone | none}``) as the pillar says: ``none`` releases a keep (the retention
    policy may then remove the backup). A backup the pillar does not list is left as it is.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    try:
        wrong = {}
        for backup_id, target in sorted(backups.items()):
            held = __salt__["barman.keep_status"](name, backup_id)
            if held != ("nokeep" if target == "none" else target):
                wrong[backup_id] = {"old": held, "new": target}
        if not wrong:
            ret["comment"] = f"{name}: every backup the pillar lists is kept as it says"
            return ret

        def apply():
            for backup_id, change in wrong.items():  # a new target replaces the old one at once
                __salt__["barman.keep"](name, backup_id, change["new"])

        return __utils__["pg_replication_state.change"](
            __opts__, ret, wrong, would=f"{name}: keeps would change", done=f"{name}: keeps changed", act=apply
        )
    except CommandExecutionError as exc:
        if __utils__["pg_replication_state.unavailable_in_test"](__opts__, exc):
            changes = {b: {"new": t} for b, t in backups.items()}
            ret.update(result=None, changes=changes, comment=f"{name}: keeps would be set")
            return ret
        return __utils__["pg_replication_state.fail"](ret, exc)


def restored(name, server, backup_id="latest", **targets):
    """
    Restore a backup of ``server`` into directory ``name`` (to ``target_time``,
    ``target_lsn``, ``target_xid``, ``target_name`` or ``target_immediate``). A directory
    that already holds a cluster is left alone: nothing is ever restored over data.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    if os.path.exists(os.path.join(name, "PG_VERSION")):
        ret["comment"] = f"{name} already holds a restored cluster"
        return ret
    if os.path.isdir(name) and os.listdir(name):
        ret.update(result=False, comment=f"{name} is not empty; refusing to restore over it")
        return ret
    ret["changes"] = {"restored": backup_id, "server": server, **{k: v for k, v in targets.items() if v}}
    if __opts__["test"]:
        ret.update(result=None, comment=f"backup {backup_id} of {server} would be restored into {name}")
        return ret
    try:
        __salt__["barman.restore"](server, name, backup_id=backup_id, **targets)
    except CommandExecutionError as exc:
        return __utils__["pg_replication_state.fail"](ret, exc)
    ret["comment"] = f"backup {backup_id} of {server} restored into {name}"
    return ret


def _on_running_receive_wal(name, done, act):
    """A state that acts on server ``name``'s receive-wal if it runs (``act()``: None, or
    why it failed); ``done`` says what it did, for the changes and comments."""
    ret = __utils__["pg_replication_state.ret"](name)
    try:
        running = __salt__["barman.receive_wal_running"](name)
    except CommandExecutionError as exc:
        ret["comment"] = f"Barman has no receive-wal for {name} ({exc})"
        return ret
    if not running:
        ret["comment"] = f"receive-wal for {name} is not running"
        return ret
    ret["changes"] = {done: f"receive-wal {name}"}
    if __opts__["test"]:
        ret.update(result=None, comment=f"receive-wal for {name} would be {done}")
        return ret
    try:
        failure = act()
    except CommandExecutionError as exc:
        failure = str(exc)
    if failure:
        ret.update(result=False, changes={}, comment=f"receive-wal for {name} was not {done}: {failure}")
    else:
        ret["comment"] = f"receive-wal for {name} {done}"
    return ret


def receive_wal_stopped(name):
    """
    Ensure Barman's receive-wal for server ``name`` is not running (``barman receive-wal
    --stop``): for the clean states, once cron no longer starts it again, and with
    ``prereq`` on a server file that makes the server inactive (barman:retired; Barman does
    not stop an inactive server's). A server Barman no longer knows (its configuration
    already removed) has none. Backups and WAL stay.

    name
        Barman server name.
    """

    def stop():
        __salt__["barman.receive_wal_stop"](name)

    return _on_running_receive_wal(name, "stopped", stop)


def receive_wal_reconnected(name, timeout=120):
    """
    Restart Barman's receive-wal for server ``name`` if it runs, so that it connects again
    with the settings its server file holds now (use it with ``onchanges`` on that file: a
    new primary address, TLS...). The state returns once receive-wal streams again (``barman
    check``'s streaming items OK), or fails after ``timeout`` seconds. A receive-wal that does
    not run has nothing to reconnect (``check_ok`` starts it).

    name
        Barman server name.
    """

    def streaming():
        # The slot stays in use until the primary notices the old connection gone, and
        # receive-wal started meanwhile gives up: start it again until it holds.
        if not __salt__["barman.receive_wal_running"](name):
            __salt__["barman.cron"]()
            return False
        return not RECEIVE_WAL_CHECKS & set(__salt__["barman.failed_checks"](name))

    def reconnect():
        __salt__["barman.receive_wal_stop"](name)
        return (
            None
            if __utils__["pg_replication_poll.until"](streaming, timeout)
            else f"it did not stream again in {timeout}s"
        )

    return _on_running_receive_wal(name, "reconnected", reconnect)


# How every server file the formula writes begins (server.conf.jinja: one of its first lines).
MANAGED_MARKER = "; Managed by Salt (pg_replication)"


def _managed_servers(config_dir):
    """``{server name: path}`` of the server files in ``config_dir`` this formula wrote."""
    found = {}
    for path in sorted(glob.glob(os.path.join(config_dir, "*.conf"))):
        with salt.utils.files.fopen(path, "r") as fh:
            head = [fh.readline() for _ in range(5)]
        if any(line.startswith(MANAGED_MARKER) for line in head):
            found[os.path.basename(path)[: -len(".conf")]] = path
    return found


def _stop_and_drop_slot(server, timeout=30):
    """Stop the server's receive-wal and drop its slot. The slot stays in use until its
    primary's walsender sees the client gone (and cron may start receive-wal again
    meanwhile): stop and try again until ``timeout``."""

    def stop_and_drop():
        __salt__["barman.receive_wal_stop"](server)
        return __salt__["barman.drop_slot"](server)

    return __utils__["pg_replication_poll.retry"](
        stop_and_drop, timeout, retriable=lambda exc: any(busy in str(exc) for busy in ("in use", "is active"))
    )


def servers_follow(name, servers, drop_slot=True):
    """
    Keep Barman's servers in step with the pillar: each server file in directory ``name`` that
    this formula wrote, for a server no longer in ``servers``, has its receive-wal stopped, its
    replication slot dropped on its primary (Barman's ``receive-wal --drop-slot``: a slot
    nobody streams from pins WAL until the primary's disk fills), then the file removed. With
    ``drop_slot`` false, or when the primary cannot be reached, the slot is reported instead.
    Its backups and WAL archive stay in Barman's home. Files the formula did not write are
    never touched.

    name
        Barman's server configuration directory (``barman:config_dir``).
    servers
        The server names the pillar wants.
    """
    ret = __utils__["pg_replication_state.ret"](name)
    stale = {server: path for server, path in _managed_servers(name).items() if server not in set(servers)}
    if not stale:
        ret["comment"] = "Barman's servers follow the pillar"
        return ret
    ret["changes"] = {"removed": sorted(stale)}
    if __opts__["test"]:
        ret.update(result=None, comment=f"would stop and remove Barman server(s) {', '.join(sorted(stale))}")
        return ret
    warnings, dropped = [], []
    for server, path in sorted(stale.items()):
        try:
            if drop_slot:
                _stop_and_drop_slot(server)
                dropped.append(server)
            else:
                __salt__["barman.receive_wal_stop"](server)
        except CommandExecutionError as exc:
            warnings.append(f"{server}: its replication slot on its primary is left, drop it there: {exc}")
        __salt__["file.remove"](path)
    if dropped:
        ret["changes"]["slots_dropped"] = dropped
    ret["comment"] = f"removed Barman server(s) {', '.join(sorted(stale))}; their backups and WAL stay"
    if warnings:
        ret["warnings"] = warnings
    return ret
