"""Run tier: how many tasks wait in the queue, as a user sees it. The project's own figure
(python -m <slug>.queues, read from the broker) on every variant, and Flower's (its
/api/queues/length: RabbitMQ's management API, or Redis's lists) where Flower is on,
equal the tasks queued while no worker runs, and drop to 0 once the workers drain them."""

import json

import pytest

from harness.flower import start_flower
from harness.localstack import RESULT_TIMEOUT, LocalStack
from harness.waiting import eventually

pytestmark = pytest.mark.run

QUEUED = 25


def project_figure(stack: LocalStack) -> dict[str, int]:
    """`python -m <slug>.queues --json`, run as the README says: in the app's environment."""
    module = f"{stack.project.name}.queues"
    result = stack.run("app", "python", "-m", module, "--json", timeout=RESULT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def flower_figure(get) -> dict[str, int]:
    """Flower's queue lengths, by queue name, as its API gives them with the password."""
    status, body = get("/api/queues/length", authorized=True)
    assert status == 200, body
    return {queue["name"]: queue.get("messages") for queue in json.loads(body)["active_queues"]}


def test_queue_depth_shown_is_the_number_of_waiting_tasks(stack):
    """With the workers stopped, QUEUED tasks sent: the project's figure and Flower's are
    QUEUED for the workers' queue (0 before); once the workers are back and have run
    them, both are 0."""
    queue = stack.setting("task_default_queue")
    get = start_flower(stack) if stack.variant["use_flower"] else None

    def figures() -> dict[str, int | None]:
        shown = {"project": project_figure(stack).get(queue)}
        if get:
            shown["flower"] = flower_figure(get).get(queue)
        return shown

    def showing(expected: int):
        def check() -> bool:
            shown = figures()
            assert set(shown.values()) == {expected}, f"shown: {shown}"
            return True

        return check

    def wait_until_shown(expected: int, what: str) -> None:
        # Flower's figure on RabbitMQ lags the queue by the management plugin's
        # statistics interval (5 s).
        eventually(showing(expected), RESULT_TIMEOUT, what, ignoring=(AssertionError,), interval=1)

    stack.stop_workers()
    try:
        wait_until_shown(0, f"{queue} shown empty before")
        results = [
            stack.celery.send_task(stack.task("add"), args=(number, 1000))
            for number in range(QUEUED)
        ]
        wait_until_shown(QUEUED, f"{QUEUED} tasks shown waiting in {queue}")
    finally:
        stack.restart_workers()
    assert [result.get(timeout=RESULT_TIMEOUT) for result in results] == [
        number + 1000 for number in range(QUEUED)
    ]
    wait_until_shown(0, f"{queue} shown empty after the workers ran its tasks")
    if get:
        stack.process("flower").stop()
