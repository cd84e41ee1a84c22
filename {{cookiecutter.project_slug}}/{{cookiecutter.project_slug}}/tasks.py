"""The sample tasks, registered as {{ cookiecutter.project_slug }}.tasks.<name>.

Bad arguments raise TypeError or ValueError with a message that says what was
wrong: the task ends in FAILURE with that message and the worker carries on.
"""

import math
import reprlib
import time

from celery.utils.log import get_task_logger

from .celery import app

# A task's records name the task (task_id, task_name in JSON lines; logs.py).
logger = get_task_logger(__name__)

# Below config.task_soft_time_limit, so that long_task always ends by itself.
LONG_TASK_MAX_SECONDS = 60


def _is_number(value: object) -> bool:
    # bool is an int in Python, but True + 1 is not a sum anybody meant.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# add ends within a millisecond: a STARTED report (config.task_track_started) would be
# one more result-backend write per call than the result itself, for nobody to see.
@app.task(track_started=False)
def add(x: float, y: float) -> float:
    """Return x + y."""
    for name, value in (("x", x), ("y", y)):
        if not _is_number(value):
            raise TypeError(f"add: {name} must be a number, got {reprlib.repr(value)}")
    return x + y


@app.task(bind=True)
def long_task(self, seconds: int = 10) -> dict:
    """Work for `seconds` seconds, reporting PROGRESS {"current", "total"} every second."""
    if not (isinstance(seconds, int) and not isinstance(seconds, bool)) or not (
        0 <= seconds <= LONG_TASK_MAX_SECONDS
    ):
        raise ValueError(
            f"long_task: seconds must be a whole number from 0 to {LONG_TASK_MAX_SECONDS}, "
            f"got {seconds!r}"
        )
    logger.info("long_task: working for %d s", seconds)
    for current in range(seconds):
        self.update_state(state="PROGRESS", meta={"current": current, "total": seconds})
        time.sleep(1)
    return {"current": seconds, "total": seconds, "status": f"worked for {seconds} s"}


class TransientError(Exception):
    """A failure that may pass if tried again: a service briefly down, a timeout."""


@app.task(bind=True, autoretry_for=(TransientError,))
def flaky(self, failures: int = 2) -> dict:
    """Fail with TransientError on the first `failures` tries, then succeed.

    It stands in for a call to a service that is briefly down: the base Task class
    (celery.py) retries it with backoff; a task that still fails after max_retries
    ends in the dead-letter queue.
    """
    if not (isinstance(failures, int) and not isinstance(failures, bool)) or failures < 0:
        raise ValueError(f"flaky: failures must be a whole number from 0 up, got {failures!r}")
    tries = self.request.retries + 1
    if tries <= failures:
        raise TransientError(f"flaky: try {tries} failed on purpose ({failures} to fail)")
    return {"tries": tries}


@app.task
def process_data(numbers: list) -> dict:
    """Return count, sum, mean, min and max of a non-empty list of numbers."""
    if not isinstance(numbers, list):
        raise TypeError(
            f"process_data: numbers must be a list of numbers, got {type(numbers).__name__}"
        )
    if not numbers:
        raise ValueError("process_data: numbers is empty, give at least one number")
    for index, value in enumerate(numbers):
        if not _is_number(value):
            raise TypeError(
                f"process_data: numbers[{index}] is {reprlib.repr(value)}, not a number"
            )
        if not math.isfinite(value):
            raise ValueError(f"process_data: numbers[{index}] is {value!r}, not a finite number")
    total = sum(numbers)
    return {
        "count": len(numbers),
        "sum": total,
        "mean": total / len(numbers),
        "min": min(numbers),
        "max": max(numbers),
    }
