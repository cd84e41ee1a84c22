"""Run tier: retries, the dead-letter queue (reasons, replay), messages no worker should
run (unknown, pickled) and poison messages (a task that kills its own process)."""

import re
import time
from pathlib import Path

import pytest
from celery import Celery

from harness.localstack import RESULT_TIMEOUT
from harness.variants import FAULT_ANSWERS, variant_id
from harness.waiting import eventually

pytestmark = pytest.mark.run
FAULT_VARIANTS = pytest.mark.only_variants(**FAULT_ANSWERS)

# On the sys.path of the poison test's workers: tests/worker_tasks/poison.py.
WORKER_TASKS = Path(__file__).parents[1] / "worker_tasks"


def test_transient_error_is_retried_with_backoff_then_succeeds(stack):
    """A task that fails twice with an error it retries succeeds on its third try; each
    wait is a random backoff no longer than 1 s, then 2 s."""
    result = stack.celery.send_task(stack.task("flaky"), args=(2,))
    assert result.get(timeout=RESULT_TIMEOUT) == {"tries": 3}
    # A retry is logged after its message was sent, so the next try may finish first.
    retries = stack.wait_for_worker_log(
        rf"flaky\[{result.id}\] retry: Retry in (\d+)s: \S+'flaky: try (\d+) failed", 2
    )
    assert sorted(int(number) for _, number in retries) == [1, 2]
    assert all(int(wait) <= 2 ** (int(number) - 1) for wait, number in retries)
    assert not any(result.id in line for line in stack.dead_letters("list"))


def test_failed_task_is_dead_lettered_with_its_reason_and_replays(stack):
    """A task that fails for good (retries used up, or bad input) lands in the dead-letter
    queue with the reason; replay sends it back to run again with all its retries."""
    keeps_failing = stack.celery.send_task(stack.task("flaky"), args=(10,))
    bad_input = stack.celery.send_task(stack.task("add"), args=("a", 1))
    for result in (keeps_failing, bad_input):
        result.get(timeout=RESULT_TIMEOUT, propagate=False)
        assert result.state == "FAILURE"
    assert stack.dead_letter_of(keeps_failing.id).endswith(
        "replays=0  TransientError: flaky: try 4 failed on purpose (10 to fail)"
    )
    assert stack.dead_letter_of(bad_input.id).endswith(
        "replays=0  TypeError: add: x must be a number, got 'a'"
    )

    before = stack.dead_letter_of(keeps_failing.id)
    assert stack.dead_letters("replay", keeps_failing.id) == [before]
    # Back in its queue it runs again, from its first try, and fails for good again.
    assert stack.dead_letter_of(keeps_failing.id).endswith(
        "replays=1  TransientError: flaky: try 4 failed on purpose (10 to fail)"
    )
    assert stack.dead_letter_of(bad_input.id)


def test_unknown_task_is_rejected_and_dead_lettered(stack):
    """A message naming a task no worker has is logged and dead-lettered, never run: the
    caller sees FAILURE (NotRegistered) instead of waiting for ever."""
    name = stack.task("no_such_task")
    result = stack.celery.send_task(name, args=(1,))
    stack.wait_for_worker_log(rf"Received unregistered task of type '{re.escape(name)}'")
    result.get(timeout=RESULT_TIMEOUT, propagate=False)
    assert result.state == "FAILURE"
    assert name in str(result.result)
    assert stack.dead_letter_of(result.id).endswith(f"unknown task: '{name}'")
    assert stack.answering_workers() == sorted(stack.worker_names)


class LeavesAMark:
    """Unpickling this creates a file: proof that pickled content was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_message_is_refused_and_never_run(stack, tmp_path):
    """A message serialized with pickle is refused, logged and dead-lettered; its payload
    never runs."""
    mark = tmp_path / "pickle-was-loaded"
    pickling = Celery("pickling-client", set_as_current=False)
    pickling.conf.update(broker_url=stack.celery.conf.broker_url, task_serializer="pickle")
    try:
        sent = pickling.send_task(stack.task("add"), args=(LeavesAMark(mark), 1))
    finally:
        pickling.close()
    stack.wait_for_worker_log(r"Refusing to deserialize untrusted content of type pickle")
    assert not mark.exists()
    assert "Refusing to deserialize untrusted content" in stack.dead_letter_of(sent.id)
    assert not mark.exists()
    assert stack.answering_workers() == sorted(stack.worker_names)


@FAULT_VARIANTS
def test_poison_message_is_dead_lettered_after_the_cap(stack, tmp_path, record_property):
    """A task that ends the process running it on every delivery runs exactly
    dead_letter_after_lost_deliveries times, each in a new pool process, and is then
    dead-lettered with a reason that says so, its caller told FAILURE; the workers stay up,
    every add sent before, during and after is answered, nothing else is dead-lettered, and
    a replay gets the whole count again."""
    cap = stack.setting("dead_letter_after_lost_deliveries")
    # A stack of its own, so that every worker has the poison task (a worker without it
    # would dead-letter the message as an unknown task).
    with stack.another(tmp_path) as own:
        own.start_workers("--include=poison", PYTHONPATH=str(WORKER_TASKS))
        own.wait_for_workers()
        deliveries = tmp_path / "deliveries"

        def send_add():
            number = len(adds)
            adds.append(own.celery.send_task(own.task("add"), args=(number, number)))

        adds: list = []
        for _ in range(50):
            send_add()
        before = len(adds)
        sent_at = time.monotonic()
        poison = own.celery.send_task("poison.end_process", args=(str(deliveries),))
        # Adds keep coming while the poison message kills pool processes.
        eventually(
            lambda: poison.ready() or send_add(),
            3 * RESULT_TIMEOUT,
            "the poison message failing",
        )
        failed_after = time.monotonic() - sent_at
        during = len(adds) - before
        line = own.dead_letter_of(poison.id)
        for _ in range(50):
            send_add()
        for number, result in enumerate(adds):
            assert result.get(timeout=RESULT_TIMEOUT) == 2 * number

        assert poison.state == "FAILURE"
        reason = f"PoisonMessage: the process running it died on {cap} deliveries, the last: "
        assert f"replays=0  {reason}WorkerLostError: Worker exited prematurely" in line, line
        assert f"died on {cap} deliveries" in str(poison.result)
        pids = deliveries.read_text().split()
        assert len(pids) == cap and len(set(pids)) == cap, pids
        assert own.dead_letters("list") == [line]
        for name in own.worker_names:
            assert own.worker_process(name).alive()
        own.wait_for_workers()

        # Replayed, it starts from a count of 0: cap more deliveries, then dead again.
        assert own.dead_letters("replay", poison.id) == [line]
        eventually(
            lambda: len(deliveries.read_text().split()) >= 2 * cap,
            3 * RESULT_TIMEOUT,
            "the replayed message running again",
            interval=0.5,
        )
        replayed = own.dead_letter_of(poison.id)
        assert f"replays=1  {reason}" in replayed, replayed
        assert len(deliveries.read_text().split()) == 2 * cap
        assert own.celery.send_task(own.task("add"), args=(1, 2)).get(timeout=RESULT_TIMEOUT) == 3
        own.stop_workers()
    record_property(
        "figure",
        f"{variant_id(stack.variant)}: a task that ends its process on every delivery ran "
        f"{len(pids)} times (cap {cap}), dead-lettered and FAILURE {failed_after:.1f} s after "
        f"it was sent; {len(adds)} adds answered ({before} before, {during} during, 50 after); "
        f"replayed, it ran {cap} more times and was dead-lettered again",
    )
