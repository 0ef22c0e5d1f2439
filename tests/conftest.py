"""Shared pytest configuration."""

import logging
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Salt's log handlers flush after pytest has closed its capture streams; don't print
# "--- Logging error ---" tracebacks for that at interpreter exit.
logging.raiseExceptions = False
