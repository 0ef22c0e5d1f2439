# SPDX-License-Identifier: Apache-2.0
"""Jobs run from the salt-master with a bound on the whole wait: one job on one minion
(:func:`ask`), or one job on many that gives a silent minion up at a deadline
(:func:`gather`).

Salt's ``LocalClient.cmd`` waits ``timeout`` seconds for a return, then asks the minion
whether the job still runs (``saltutil.find_job``) and, as long as it does, waits again,
without end: a function that hangs on the minion (a ``systemctl stop`` whose unit never
finishes stopping, say) holds the runner, and the cluster, until someone kills it.
:func:`ask` waits as ``cmd`` does, but never longer than ``limit`` seconds in all: a job
still running then is stopped (``saltutil.term_job``) and reported.

For a silent minion ``cmd`` costs ``timeout``, then ``gather_job_timeout`` more for the
``find_job`` that finds nothing. :func:`gather` publishes the job, takes the returns that
come within ``wait`` seconds and stops there: what the HA engine's tick and a failover's
cluster read need, where the silent minion is the lost primary's and every second counts.
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


def publish(client, tgt, fun, arg=(), kwarg=None, tgt_type="list"):
    """Send ``fun`` to ``tgt``: ``(jid, minions expected to return)``, or ``(None, ())``
    when nothing was published (no minion matched)."""
    pub = client.run_job(tgt, fun, arg=list(arg), kwarg=kwarg, tgt_type=tgt_type, listen=True)
    jid = (pub or {}).get("jid")
    return (jid, tuple(pub.get("minions") or ())) if jid else (None, ())


def collect(client, jobs, wait):
    """The returns of the published ``jobs`` that come within ``wait`` seconds, one dict
    per job: ``{minion: {"ret": its return, "retcode": ...}}`` (``cmd``'s ``full_return``
    shape). No ``find_job``: a minion that has not returned by then is left out."""
    out = [{} for _ in jobs]
    pending = {jid: (index, set(minions)) for index, (jid, minions) in enumerate(jobs) if jid and minions}
    deadline = time.monotonic() + wait
    try:
        for raw in client.get_returns_no_block("salt/job/"):
            data = (raw or {}).get("data") or {}
            index, waiting = pending.get(data.get("jid"), (None, ()))
            if "return" in data and data.get("id") in waiting:
                out[index][data["id"]] = {"ret": data["return"], "retcode": data.get("retcode")}
                waiting.discard(data["id"])
            if not any(left for _, left in pending.values()) or time.monotonic() > deadline:
                break
            if raw is None:
                time.sleep(0.02)
    finally:
        for jid, _ in jobs:
            if jid:
                client.event.unsubscribe(f"salt/job/{jid}")
    return out


def gather(client, tgt, fun, arg=(), kwarg=None, wait=2.0, tgt_type="list"):
    """
    Run ``fun`` on every minion of ``tgt`` at once: the returns that come within ``wait``
    seconds (:func:`collect`), ``{}`` when no minion matched.
    """
    return collect(client, [publish(client, tgt, fun, arg, kwarg, tgt_type)], wait)[0]
