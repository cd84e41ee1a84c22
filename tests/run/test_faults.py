"""Run tier: faults with tasks in flight (a worker SIGTERMed and SIGKILLed, a pool process
killed, the broker restarted); no task may be lost."""

import os
import signal
import subprocess
import time

import pytest

from harness.localstack import RESULT_TIMEOUT
from harness.variants import FAULT_ANSWERS, variant_id
from harness.waiting import eventually

pytestmark = pytest.mark.run

FAULT_VARIANTS = pytest.mark.only_variants(**FAULT_ANSWERS)


@FAULT_VARIANTS
def test_sigterm_lets_the_running_task_finish(stack):
    """SIGTERM to a worker running long_task is a warm shutdown: the task finishes."""
    victim_name = stack.worker_names[0]
    victim = stack.worker_process(victim_name)
    results = [
        stack.celery.send_task(stack.task("long_task"), args=(3,))
        for _ in range(stack.pool_slots())
    ]
    stack.wait_until_running(victim_name, stack.task("long_task"))
    assert victim.stop(grace_seconds=30), "the worker did not stop within its grace period"
    for result in results:
        assert result.get(timeout=RESULT_TIMEOUT)["status"] == "worked for 3 s"
    stack.restart(victim)
    stack.wait_for_workers()


LONG_SECONDS = 20


@FAULT_VARIANTS
def test_killed_worker_loses_no_task(stack, record_property):
    """SIGKILL to one worker's whole process group with tasks in flight: every task still
    completes with the right result, on a surviving or the restarted worker."""
    victim_name = stack.worker_names[0]
    victim = stack.worker_process(victim_name)
    # Enough long tasks to keep every pool process busy, the victim's included, and
    # 1,000 adds queued behind them. Long enough for `inspect active` to see one on a
    # busy machine, where a reply can take its whole 5 s timeout (5 s tasks were missed).
    longs = [
        stack.celery.send_task(stack.task("long_task"), args=(LONG_SECONDS,))
        for _ in range(stack.pool_slots())
    ]
    adds = [stack.celery.send_task(stack.task("add"), args=(n, n)) for n in range(1000)]
    active = stack.wait_until_running(victim_name, stack.task("long_task"))
    dead_before = sorted(stack.dead_letters("list"))
    killed_at = time.monotonic()
    victim.kill()
    stack.restart(victim)
    for number, result in enumerate(adds):
        assert result.get(timeout=3 * RESULT_TIMEOUT) == 2 * number
    for result in longs:
        assert result.get(timeout=3 * RESULT_TIMEOUT)["status"] == f"worked for {LONG_SECONDS} s"
    recovered_after = time.monotonic() - killed_at
    stack.wait_for_workers()
    # Delivered again after the kill, but not counted as a poison message.
    assert sorted(stack.dead_letters("list")) == dead_before
    record_property(
        "figure",
        f"{variant_id(stack.variant)}: SIGKILL to {victim_name} running {len(active)} "
        f"of {len(longs)} long_tasks with 1000 adds queued; 0 lost; all results "
        f"{recovered_after:.1f} s after the kill",
    )


@FAULT_VARIANTS
def test_killed_pool_process_costs_its_task_nothing(stack, record_property):
    """SIGKILL to the one pool process running a long_task, as the OOM killer would: the
    worker's main process sends the task back, counted once, and it runs again to the end
    instead of being dead-lettered."""
    result = stack.celery.send_task(stack.task("long_task"), args=(LONG_SECONDS,))
    inspect = stack.celery.control.inspect(timeout=5)
    [(victim_name, entry)] = eventually(
        lambda: [
            (worker, entry)
            for worker, entries in (inspect.active() or {}).items()
            for entry in entries
            if entry["id"] == result.id
        ],
        RESULT_TIMEOUT,
        "a worker running the long_task",
    )
    dead_before = sorted(stack.dead_letters("list"))
    killed_at = time.monotonic()
    os.kill(entry["worker_pid"], signal.SIGKILL)
    assert result.get(timeout=3 * RESULT_TIMEOUT)["status"] == f"worked for {LONG_SECONDS} s"
    finished_after = time.monotonic() - killed_at
    counted = rf"\[{result.id}\]: the process running it died on (\d+) of"
    assert stack.wait_for_worker_log(counted) == ["1"]
    assert sorted(stack.dead_letters("list")) == dead_before
    assert stack.worker_process(victim_name).alive()
    record_property(
        "figure",
        f"{variant_id(stack.variant)}: SIGKILL to the pool process running a "
        f"{LONG_SECONDS} s long_task; counted 1 lost delivery, not dead-lettered; "
        f"its result {finished_after:.1f} s after the kill",
    )


# Sends add(n, n) for n = 0, 1, 2 ... for argv[1] seconds, through the project's own app
# and settings, and prints each task's id and n once the send has returned. It logs to
# stderr as the app does (logs.configure): with LOG_FORMAT=json a record would otherwise
# go to stdout among the ids (the Redis result backend logs one when its reconnecting
# gives up amid the restart).
SENDER = """
import sys, time
from {slug}.logs import configure
from {slug}.tasks import add
configure()
deadline = time.monotonic() + float(sys.argv[1])
number = 0
while time.monotonic() < deadline:
    print(add.delay(number, number).id, number, flush=True)
    number += 1
    time.sleep(0.01)
"""


@FAULT_VARIANTS
def test_broker_restart_loses_no_task(stack, tmp_path, record_property):
    """The broker stopped and started again amid a stream of tasks, with long_tasks running:
    workers and the sending app reconnect on their own, and every task completes."""
    broker = stack.variant["broker"]
    with stack.another(tmp_path, own_rabbitmq=True) as own:
        own.start_workers()
        own.wait_for_workers()
        if broker == "rabbitmq":
            # compose.yaml's server arguments reached the server.
            erl_args = own.services["rabbitmq"]["environment"][
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"
            ]
            timeout = erl_args.split("consumer_timeout")[1].split()[0]
            setting = own.rabbitmq_node("eval", "application:get_env(rabbit, consumer_timeout).")
            assert setting.strip() == f"{{ok,{timeout}}}"

        longs = [
            own.celery.send_task(own.task("long_task"), args=(5,)) for _ in range(own.pool_slots())
        ]
        sender = subprocess.Popen(
            own.command("app", ("python", "-c", SENDER.format(slug=own.project.name), "20")),
            env=own.environment("app"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        own.wait_until_running(own.worker_names[0], own.task("long_task"))
        time.sleep(2)
        restarted_at = time.monotonic()
        down_for = own.restart_server(broker, down_seconds=5)

        out, err = sender.communicate(timeout=180)
        assert sender.returncode == 0, err[-3000:]
        sent = [line.split() for line in out.splitlines()]
        for task_id, number in sent:
            assert own.celery.AsyncResult(task_id).get(timeout=3 * RESULT_TIMEOUT) == 2 * int(
                number
            )
        for result in longs:
            assert result.get(timeout=3 * RESULT_TIMEOUT)["status"] == "worked for 5 s"
        drained_after = time.monotonic() - restarted_at
        own.stop_workers()
    record_property(
        "figure",
        f"{variant_id(stack.variant)}: {broker} stopped and restarted ({down_for:.1f} s down) "
        f"with {len(longs)} long_tasks running and {len(sent)} adds sent over 20 s; 0 lost; "
        f"all results {drained_after:.1f} s after the stop",
    )
