# SPDX-License-Identifier: Apache-2.0
"""One job on one minion, run from the salt-master with a bound on the whole wait.

Salt's ``LocalClient.cmd`` waits ``timeout`` seconds for a return, then asks the minion
whether the job still runs (``saltutil.find_job``) and, as long as it does, waits again,
without end: a function that hangs on the minion (a ``systemctl stop`` whose unit never
finishes stopping, say) holds the runner, and the cluster, until someone kills it.
:func:`ask` waits as ``cmd`` does, but never longer than ``limit`` seconds in all: a job
still running then is stopped (``saltutil.term_job``) and reported.
"""

import time

from salt.exceptions import CommandExecutionError

# After find_job says the job no longer runs, its return may still be on its way.
LATE_RETURN_GRACE = 2.0


def ask(client, minion, fun, arg=(), kwarg=None, timeout=120, limit=900):
    """
    Run ``fun`` on ``minion`` through ``client`` (a ``salt.client.LocalClient``); return the
    minion's return event data (``{"return": ..., "retcode": ...}``), or None when the minion
    does not answer (it is not connected, or the job ended without a return).

    :param timeout: seconds without a return before the minion is asked whether the job
        still runs (Salt's meaning of ``timeout``)
    :param limit: seconds after which a job that still runs is stopped: CommandExecutionError
    """
    pub = client.run_job(minion, fun, arg=list(arg), kwarg=kwarg, timeout=timeout, listen=True)
    jid = (pub or {}).get("jid")
    if not jid or minion not in (pub.get("minions") or ()):
        return None
    try:
        return _wait(client, minion, fun, jid, timeout, limit)
    finally:
        client.event.unsubscribe(f"salt/job/{jid}")


def _wait(client, minion, fun, jid, timeout, limit):
    started = time.monotonic()
    asked, gone = started, None
    for raw in client.get_returns_no_block(f"salt/job/{jid}/ret/{minion}"):
        data = (raw or {}).get("data") or {}
        if "return" in data:
            return data
        now = time.monotonic()
        if gone is not None and now - gone > LATE_RETURN_GRACE:
            return None
        if now - started > limit:
            client.cmd(minion, "saltutil.term_job", [jid], timeout=10)
            raise CommandExecutionError(f"{minion}: {fun} still ran after {limit}s: the job ({jid}) was stopped")
        if gone is None and now - asked > timeout:
            asked = now
            if not client.cmd(minion, "saltutil.find_job", [jid], timeout=10).get(minion):
                gone = now
    return None
