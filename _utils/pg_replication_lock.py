# SPDX-License-Identifier: Apache-2.0
"""The one lock of every day-2 operation of a cluster: a switchover, a failover (manual or
the HA engine's), a rejoin, a follow and a rolling restart never run at once.

It is an ``fcntl.flock`` on a file of the salt-master (``<cachedir>/pg_replication/day2.lock``):
the kernel drops it when its holder exits, even when it is killed, so a crashed operation
never leaves the cluster locked. Whoever holds it writes what it runs, its process id and
since when into the file, so that the one refused can say who holds it. Within one
process the lock is reentrant (an operation that calls another keeps it).

Pure code on the master's Python (standard library only).
"""

import contextlib
import fcntl
import json
import os
import time

NAME = "day2.lock"
# Held in this process: {path: [fd, depth]}.
_HELD = {}


class Held(Exception):
    """The lock is held by another process; ``holder`` is what that one wrote."""

    def __init__(self, path, holder):
        self.path = path
        self.holder = holder or {}
        super().__init__(describe(self.holder))


def path(cachedir):
    """The lock file of the master whose cache directory is ``cachedir``."""
    return os.path.join(cachedir, "pg_replication", NAME)


def describe(holder):
    """One line about the holder of the lock, for a refusal."""
    if not holder.get("operation"):
        return "another day-2 operation holds the cluster lock"
    since = holder.get("since")
    ago = f" for {max(0, round(time.time() - since))} s" if isinstance(since, (int, float)) else ""
    return f"{holder['operation']} (pid {holder.get('pid')}) holds the cluster lock{ago}"


def holder(lock_path):
    """What the holder of ``lock_path`` wrote, or None when nobody holds it."""
    if lock_path in _HELD:
        return _read(_HELD[lock_path][0])
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def held(lock_path, operation):
    """Hold the lock of ``lock_path`` while the block runs (``operation``: what to tell the
    others); :class:`Held` at once, without waiting, when another process holds it."""
    mine = _HELD.get(lock_path)
    if mine is not None:
        mine[1] += 1
        try:
            yield
        finally:
            mine[1] -= 1
        return
    os.makedirs(os.path.dirname(lock_path), mode=0o700, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Held(lock_path, _read(fd)) from None
        _write(fd, {"operation": operation, "pid": os.getpid(), "since": time.time()})
        _HELD[lock_path] = [fd, 1]
        try:
            yield
        finally:
            del _HELD[lock_path]
            _write(fd, {})
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def acquire(lock_path, operation):
    """Take the lock now: ``(release, None)``, ``release()`` giving it back; or ``(None,
    line)`` with :func:`describe`'s line about the holder. For callers that reach this file
    through Salt's loader (which packs functions only, and runs them in its own context:
    the caller's code must not run inside one of them)."""
    hold = held(lock_path, operation)
    try:
        hold.__enter__()  # pylint: disable=unnecessary-dunder-call
    except Held as exc:
        return None, str(exc)
    return (lambda: hold.__exit__(None, None, None)), None


def _write(fd, data):
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(data).encode(), 0)


def _read(fd):
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
