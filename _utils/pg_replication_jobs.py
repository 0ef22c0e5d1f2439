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
    expected = [(jid, set(minions)) for jid, minions in jobs if jid]

    def everyone(seen):
        return all(minions <= set(seen[jid]) for jid, minions in expected)

    seen = _listen(client, [jid for jid, _ in expected], everyone, wait)
    return [{m: a for m, a in seen.get(jid, {}).items() if m in minions} for jid, minions in jobs]


def answering_with(client, tgt, fun, arg=(), kwarg=None, ping_wait=2.0, wait=20.0, tgt_type="list"):
    """
    ``test.ping`` and ``fun`` sent to ``tgt`` at once: ``(the minions that answered, sorted;
    their returns of fun)``. A minion answers with either return (a busy master may pass on
    its ``fun`` before its ping). One that has answered neither when ``ping_wait`` seconds
    have passed and every other has returned ``fun`` is silent: it costs ``ping_wait``
    only, and the ``fun`` of the others runs meanwhile (a failover's cluster read: ping and
    ``saltutil.refresh_pillar`` together, one wait instead of two). ``fun`` is awaited up to
    ``wait`` seconds from the start.
    """
    ping, job = publish(client, tgt, "test.ping", tgt_type=tgt_type), publish(client, tgt, fun, arg, kwarg, tgt_type)
    expected = set(ping[1]) | set(job[1])
    started = time.monotonic()

    def returned(seen):
        return {m for m in seen.get(job[0], {}) if m in job[1]}

    def alive(seen):
        pinged = {m for m, a in seen.get(ping[0], {}).items() if m in ping[1] and a["ret"] is True}
        return pinged | returned(seen)

    def answered(seen):
        pinging = time.monotonic() - started < ping_wait and alive(seen) != expected
        return not pinging and alive(seen) <= returned(seen)

    seen = _listen(client, [ping[0], job[0]], answered, wait)
    minions = sorted(alive(seen))
    return minions, {m: seen[job[0]][m] for m in minions if m in seen.get(job[0], {})}


def _listen(client, jids, done, wait):
    """The returns of the jobs ``jids`` as they come, ``{jid: {minion: {"ret", "retcode"}}}``,
    until ``done(returns so far)`` or ``wait`` seconds."""
    seen = {jid: {} for jid in jids if jid}
    deadline = time.monotonic() + wait
    try:
        for raw in client.get_returns_no_block("salt/job/"):
            data = (raw or {}).get("data") or {}
            if "return" in data and data.get("jid") in seen and data.get("id"):
                seen[data["jid"]][data["id"]] = {"ret": data["return"], "retcode": data.get("retcode")}
            if done(seen) or time.monotonic() > deadline:
                break
            if raw is None:
                time.sleep(0.02)
    finally:
        for jid in seen:
            client.event.unsubscribe(f"salt/job/{jid}")
    return seen


def gather(client, tgt, fun, arg=(), kwarg=None, wait=2.0, tgt_type="list"):
    """
    Run ``fun`` on every minion of ``tgt`` at once: the returns that come within ``wait``
    seconds (:func:`collect`), ``{}`` when no minion matched.
    """
    return collect(client, [publish(client, tgt, fun, arg, kwarg, tgt_type)], wait)[0]
