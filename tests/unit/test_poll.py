"""The shared waiting helpers (_utils/pg_replication_poll.py): pure logic, no host."""

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_util


@pytest.fixture(scope="module")
def poll():
    return load_util("pg_replication_poll")


def test_until_returns_the_first_true_value(poll):
    values = iter([0, "", "ready", "later"])
    assert poll.until(lambda: next(values), timeout=5, interval=0) == "ready"


def test_until_returns_the_last_false_value_at_the_deadline(poll):
    calls = []
    assert poll.until(lambda: calls.append(1), timeout=0.05, interval=0.01) is None
    assert len(calls) >= 2


def test_retry_returns_once_the_action_succeeds_and_prepares_each_new_try(poll):
    outcomes = iter([CommandExecutionError("slot missing"), CommandExecutionError("slot missing"), "done"])
    cleared = []

    def action():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert poll.retry(action, timeout=5, interval=0, before_retry=lambda: cleared.append(1)) == "done"
    assert cleared == [1, 1]


def test_retry_raises_at_once_an_error_that_is_not_retriable(poll):
    calls = []

    def action():
        calls.append(1)
        raise CommandExecutionError("permission denied")

    with pytest.raises(CommandExecutionError, match="permission denied"):
        poll.retry(action, timeout=60, interval=0, retriable=lambda exc: "in use" in str(exc))
    assert calls == [1]


def test_retry_raises_the_last_error_at_the_deadline(poll):
    with pytest.raises(CommandExecutionError, match="in use"):
        poll.retry(lambda: (_ for _ in ()).throw(CommandExecutionError("in use")), timeout=0.05, interval=0.01)
