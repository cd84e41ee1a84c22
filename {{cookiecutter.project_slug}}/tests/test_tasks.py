"""Each sample task, sent through the broker and run by a real worker."""

import time

import pytest

from {{ cookiecutter.project_slug }} import deadletters
from {{ cookiecutter.project_slug }}.tasks import (
    TransientError,
    add,
    flaky,
    long_task,
    process_data,
)

TIMEOUT = 60


def test_add_returns_the_sum(worker):
    """add(x, y) returns x + y."""
    assert add.delay(2, 3).get(timeout=TIMEOUT) == 5


def test_process_data_returns_statistics(worker):
    """process_data returns count, sum, mean, min and max of the numbers."""
    result = process_data.delay([1, 2, 3, 4.5]).get(timeout=TIMEOUT)
    assert result == {"count": 4, "sum": 10.5, "mean": 2.625, "min": 1, "max": 4.5}


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ([], "numbers is empty"),
        ("1,2,3", "must be a list"),
        (7, "must be a list"),
        ([1, [2, 3]], "numbers[1] is [2, 3], not a number"),
        ([1, "two"], "numbers[1] is 'two', not a number"),
        ([True, 2], "numbers[0] is True, not a number"),
    ],
)
def test_process_data_refuses_bad_input(worker, numbers, message):
    """Bad input ends in FAILURE with a message saying what was wrong."""
    result = process_data.delay(numbers)
    with pytest.raises((TypeError, ValueError), match=message.replace("[", r"\[")):
        result.get(timeout=TIMEOUT)
    assert result.state == "FAILURE"
    # The worker is still there to run the next task.
    assert add.delay(1, 1).get(timeout=TIMEOUT) == 2


def test_long_task_reports_progress(worker):
    """long_task reports PROGRESS with current and total while it runs."""
    result = long_task.delay(3)
    seen = set()
    deadline = time.monotonic() + TIMEOUT
    while not result.ready() and time.monotonic() < deadline:
        # State and meta from one read: two reads may straddle the end of the task.
        meta = result.backend.get_task_meta(result.id)
        if meta["status"] == "PROGRESS":
            seen.add((meta["result"]["current"], meta["result"]["total"]))
        time.sleep(0.1)
    assert result.get(timeout=TIMEOUT) == {"current": 3, "total": 3, "status": "worked for 3 s"}
    assert len(seen) >= 2
    assert all(total == 3 for _, total in seen)


def test_flaky_is_retried_until_it_succeeds(worker):
    """A task that fails with TransientError is retried, with backoff, and then succeeds."""
    assert flaky.delay(2).get(timeout=TIMEOUT) == {"tries": 3}


def test_task_failing_for_good_is_dead_lettered_and_replayed(worker, capsys):
    """A task that still fails after its retries is listed in the dead-letter queue with the
    reason, and replay sends it back to run again."""
    result = flaky.delay(10)
    with pytest.raises(TransientError):
        result.get(timeout=TIMEOUT)
    # The worker dead-letters the message just after it stored the result.
    wait_for_dead_letter(result.id)
    assert "replays=0  TransientError: flaky: try 4 failed" in capsys.readouterr().out
    assert deadletters.main(["replay", result.id]) == 0
    capsys.readouterr()
    wait_for_dead_letter(result.id)
    assert "replays=1  TransientError" in capsys.readouterr().out


def wait_for_dead_letter(task_id: str) -> None:
    """Wait until `deadletters list TASK_ID` finds the task's dead letter."""
    deadline = time.monotonic() + TIMEOUT
    while deadletters.main(["list", task_id]) != 0:
        assert time.monotonic() < deadline, f"{task_id} never reached the dead-letter queue"
        time.sleep(0.5)
