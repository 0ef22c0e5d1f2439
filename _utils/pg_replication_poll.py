# SPDX-License-Identifier: Apache-2.0
"""Waiting for another process or host to catch up, shared by the formula's modules, states
and runner: poll a predicate until it holds, or retry an action until it stops failing.

Both take a ``timeout`` in seconds and return (or raise) as soon as the outcome is known,
after one last try at the deadline.
"""

import time

from salt.exceptions import CommandExecutionError


def until(predicate, timeout, interval=1.0):
    """Call ``predicate`` until it returns something true or ``timeout`` seconds pass;
    return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def retry(action, timeout, interval=1.0, retriable=None, before_retry=None):
    """Call ``action`` until it raises no :class:`CommandExecutionError` and return its
    value. An error is raised again at once if ``retriable(exc)`` is false, and once
    ``timeout`` seconds have passed; ``before_retry()`` runs before each new try."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except CommandExecutionError as exc:
            if (retriable is not None and not retriable(exc)) or time.monotonic() >= deadline:
                raise
        if before_retry is not None:
            before_retry()
        time.sleep(interval)
