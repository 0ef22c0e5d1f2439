"""A stand-in for the salt-master's LocalClient and the loader's ``__utils__``, for the unit
tests of the runner's wiring: made-up member records and returns, every call logged (no
minion is asked). The pure code the runner calls is the real one."""

import tempfile
import types

from tests.conftest import REPO_ROOT, load_file, load_util


class Utils(dict):
    """What Salt's loader gives the runner as ``__utils__``: ``"file.function"``."""

    def __missing__(self, key):
        name, function = key.split(".")
        return getattr(load_util(name), function)


class FakeClient:
    """salt.client.LocalClient's ``cmd`` and ``run_job`` over made-up member records.
    ``failing``: ``{(fun, minion): error}`` (``(fun, minion, "change")``: only when asked
    with a pillar change), returned with retcode 1; ``returns``: ``{(fun,
    minion): return}``; anything else returns True."""

    def __init__(self, answers, failing=None, returns=None):
        self.answers, self.calls, self.failing, self.returns = answers, [], failing or {}, returns or {}
        self.jobs, self.event = {}, types.SimpleNamespace(unsubscribe=lambda tag: None)

    def cmd(self, tgt, fun, arg=None, kwarg=None, timeout=None, full_return=False, tgt_type="glob",
            gather_job_timeout=None):  # fmt: skip
        self.calls.append((fun, tgt))
        if fun == "test.ping":
            return {m: True for m in self.answers}
        out = {}
        for minion in tgt if isinstance(tgt, list) else [tgt]:
            ret = {"pg_replication.member": self.answers[minion], "barman.failed_checks": []}.get(fun, True)
            ret = self.returns.get((fun, minion), ret)
            failing = self.failing.get((fun, minion))
            if "change" in (kwarg or {}):  # asked with a pillar change
                failing = self.failing.get((fun, minion, "change"), failing)
            out[minion] = {"ret": failing or ret, "retcode": 1 if failing else 0} if full_return else ret
        return out

    def run_job(self, tgt, fun, arg=(), kwarg=None, timeout=None, listen=False, tgt_type="glob"):
        jid = str(len(self.jobs) + 1)
        if fun == "test.ping":  # every minion of the made-up records answers
            self.calls.append((fun, tgt))
            self.jobs[jid] = {m: {"ret": True, "retcode": 0} for m in self.answers}
        else:  # a compound target reaches every minion of the made-up records
            self.jobs[jid] = self.cmd(self._minions(tgt), fun, arg, kwarg, timeout, full_return=True)
            self.calls[-1] = (fun, tgt)
        return {"jid": jid, "minions": sorted(self.jobs[jid])}

    def _minions(self, tgt):
        return tgt if isinstance(tgt, list) or tgt in self.answers else sorted(self.answers)

    def get_returns_no_block(self, tag):
        """A job's returns: one minion's (``salt/job/<jid>/ret/<minion>``), or every job's
        (``salt/job/``)."""
        parts = tag.split("/")
        jids = [parts[2]] if len(parts) > 3 else list(self.jobs)
        for jid in jids:
            for minion, answer in self.jobs[jid].items():
                if len(parts) <= 3 or parts[4] == minion:
                    yield {"data": {"jid": jid, "id": minion, "return": answer["ret"], "retcode": answer["retcode"]}}
        while True:
            yield None


def wired_runner(name, client):
    """The runner module loaded afresh as ``name``, talking to ``client``, its master's
    cachedir (the day-2 lock's) a temporary directory removed with the module."""
    runner = load_file(name, REPO_ROOT / "_runners/pg_replication.py")
    runner.__utils__, runner.__context__ = Utils(), {"pg_replication.client": client}
    runner.cachedir_ = tempfile.TemporaryDirectory(prefix="pgr-unit-")  # pylint: disable=consider-using-with
    runner.__opts__ = {"cachedir": runner.cachedir_.name}
    return runner
