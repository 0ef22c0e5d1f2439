"""A pytest plugin: SIGTERM and SIGHUP unwind a test run as Ctrl-C does (:mod:`lab.signals`).

Where labs run (a pytest-xdist worker, or pytest without workers) the signals raise
KeyboardInterrupt, so that the session tears its fixtures, and their labs, down; the xdist
controller passes them on to its workers and waits for them to finish. tests/conftest.py
loads it; ``-p lab.pytest_signals`` loads it into another run.
"""

from lab.signals import child_pids, forward_signals, unwind_on_signals


def pytest_configure(config):
    controller = not hasattr(config, "workerinput") and (config.getoption("numprocesses", None) or 0)
    if controller:
        forward_signals(child_pids)
    else:
        unwind_on_signals()
