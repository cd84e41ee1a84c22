"""Run tier: Beat's schedule and Flower (its password, its worker list, its metrics), on
the variants that chose them."""

import json
import re
import time

import pytest

from harness.flower import start_flower
from harness.jsonlogs import assert_json_lines
from harness.localstack import RESULT_TIMEOUT
from harness.waiting import eventually

pytestmark = pytest.mark.run


@pytest.mark.only_variants(use_beat=True)
def test_beat_sends_its_schedule_and_a_worker_runs_it(stack):
    """Beat sends the scheduled add(20, 22) once a period; a worker runs it, 42 is in the
    backend, and with several workers each send still runs exactly once. Beat logs JSON
    lines."""
    # Only what the workers log from now on: another test may have added 20 and 22.
    since = stack.worker_log_ends()
    beat = stack.start("beat", "beat", BEAT_INTERVAL_SECONDS="1")
    name = re.escape(stack.task("add"))
    done = rf"Task {name}\[([0-9a-f-]+)\] succeeded in \S+: 42$"
    task_ids = stack.wait_for_worker_log(done, since=since)
    assert stack.celery.AsyncResult(task_ids[0]).get(timeout=RESULT_TIMEOUT) == 42
    time.sleep(4)  # a few more periods
    assert beat.stop(), beat.log_tail()
    beat_records = assert_json_lines(beat.log_path)
    sends = sum("Sending due task sample-add" in record["message"] for record in beat_records)
    assert sends >= 3, beat.log_tail()
    task_ids = stack.wait_for_worker_log(done, count=sends, since=since)
    assert len(task_ids) == len(set(task_ids)) == sends


@pytest.mark.only_variants(use_flower=True)
def test_flower_needs_the_generated_password_and_lists_the_workers(stack):
    """Flower answers 401 without credentials, 200 with the generated ones, and shows
    every running worker; it logs JSON lines."""
    get = start_flower(stack)
    assert get("/", authorized=False)[0] == 401
    assert get("/", authorized=True)[0] == 200
    status, body = get("/api/workers?refresh=1", authorized=True)
    assert status == 200
    assert set(json.loads(body)) >= set(stack.worker_names)
    flower = stack.process("flower")
    flower.stop()
    # Flower keeps the JSON handler it finds (logs.py).
    assert any("Visit me" in record["message"] for record in assert_json_lines(flower.log_path))


# One sample of the Prometheus text format: name{label="value",...} value
SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_sum(metrics: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (over all workers)."""
    total = 0.0
    for line in metrics.splitlines():
        sample = SAMPLE.match(line)
        if not sample or sample[1] != name:
            continue
        if labels.items() <= dict(LABEL.findall(sample[2])).items():
            total += float(sample[3])
    return total


SAMPLE_TASKS = ("add", "long_task", "process_data")


@pytest.mark.only_variants(use_flower=True)
def test_flower_metrics_count_the_tasks(stack):
    """Flower's /metrics, which Prometheus scrapes without the password, counts each
    task the app sends (sent, received, started, succeeded, runtime), a failure and a
    retry."""
    get = start_flower(stack)

    def metrics() -> str:
        status, body = get("/metrics", authorized=False)
        assert status == 200
        return body.decode()

    # Flower counts only the events it receives: wait until every worker's heartbeat
    # has reached it, then take the counts as they are before the tasks.
    for worker in stack.worker_names:
        eventually(
            lambda worker=worker: metric_sum(metrics(), "flower_worker_online", worker=worker) == 1,
            RESULT_TIMEOUT,
            f"Flower seeing {worker} online",
            interval=0.5,
        )

    # (task, event type) -> how much its count must go up; "runtime" is the number of
    # runtimes in the histogram.
    expected = {
        (name, kind): 1.0
        for name in SAMPLE_TASKS
        for kind in ("task-sent", "task-received", "task-started", "task-succeeded", "runtime")
    }
    # add also gets bad input, sent by a plain client (which sends no task-sent event).
    expected[("add", "task-received")] = expected[("add", "task-started")] = 2.0
    expected[("add", "task-failed")] = 1.0
    expected[("flaky", "task-retried")] = 1.0

    def counts() -> dict[tuple[str, str], float]:
        text = metrics()
        return {
            (name, kind): metric_sum(
                text, "flower_task_runtime_seconds_count", task=stack.task(name)
            )
            if kind == "runtime"
            else metric_sum(text, "flower_events_total", task=stack.task(name), type=kind)
            for name, kind in expected
        }

    before = counts()
    # The app sends through the project's own settings, which ask for task-sent events.
    app = stack.run("app", "python", "-m", stack.project.name, "--long-seconds", "1", timeout=180)
    assert app.returncode == 0, app.stdout + app.stderr
    bad = stack.celery.send_task(stack.task("add"), args=("x", 1))
    bad.get(timeout=RESULT_TIMEOUT, propagate=False)
    retried = stack.celery.send_task(stack.task("flaky"), args=(1,))
    assert retried.get(timeout=RESULT_TIMEOUT) == {"tries": 2}

    def moved_as_expected() -> bool:
        moved = {key: count - before[key] for key, count in counts().items()}
        assert moved == expected, f"moved by {moved}"
        return True

    eventually(
        moved_as_expected,
        RESULT_TIMEOUT,
        f"counts moving by {expected}",
        ignoring=(AssertionError,),
        interval=0.5,
    )
    stack.process("flower").stop()
