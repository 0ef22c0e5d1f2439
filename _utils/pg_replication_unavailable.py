# SPDX-License-Identifier: Apache-2.0
"""The "not there yet" error shared by the pg_replication and barman modules and states.

An execution function raises it when what it needs (psycopg2, a running server, Barman, a
configured Barman server) does not exist yet; in test mode a state then predicts what the
real run will do instead of failing, because earlier states of that run create it.
"""

from salt.exceptions import CommandExecutionError


def error(message):
    """A CommandExecutionError marked unavailable."""
    return CommandExecutionError(message, info={"unavailable": True})


def marked(exc):
    """True if ``exc`` was made by :func:`error`."""
    return bool((getattr(exc, "info", None) or {}).get("unavailable"))
