"""SIGTERM and SIGHUP unwind a lab process as Ctrl-C does.

Python's default for SIGTERM and SIGHUP is to die at once: no ``finally``, no ``with`` exit,
no pytest finalizer, so a lab killed by a CI time-out left its containers, namespaces,
bridge and overlay mounts behind. :func:`unwind_on_signals` turns the first of these signals
into :class:`Terminated` (a :class:`KeyboardInterrupt`), which every ``with Lab(...)``, every
image build's ``finally`` and pytest's interrupted session (it tears its fixtures down)
already handle. Later signals are ignored, so that a second one cannot cut the teardown short.
"""

import contextlib
import os
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by the first SIGTERM or SIGHUP."""


def _ignore_further():
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _raise_once(signum, _frame):
    _ignore_further()
    raise Terminated(f"{signal.Signals(signum).name} received: tearing the lab down")


def _install(handler):
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in SIGNALS:
        # SIG_IGN stays (nohup's SIGHUP); a handler of someone else's stays too.
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, handler)
    return True


def unwind_on_signals():
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread, once. A no-op outside
    the main thread and for a signal whose disposition is not the default."""
    return _install(_raise_once)


def forward_signals(children):
    """SIGTERM and SIGHUP are passed on, as SIGTERM, to the processes ``children()`` returns
    (pids), once; this process goes on and waits for them to finish their teardown."""

    def forward(_signum, _frame):
        _ignore_further()
        for pid in children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    return _install(forward)


def child_pids(pid=None):
    """The direct children of ``pid`` (this process by default), from /proc."""
    pid = pid or os.getpid()
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(child) for child in fh.read().split()]
    except OSError:
        pass
    return found
