"""Run tier: each variant's own commands, as local processes on real brokers, run the tasks.

The services' commands and environments come from the rendered compose.yaml (see
localstack.py for the three things that differ from containers).
"""

import subprocess
import time

import kombu
import pytest
import redis
from localstack import LocalStack, make_venv
from variants import variant_id, with_defaults

pytestmark = pytest.mark.run

RUN_VARIANTS = [
    with_defaults(),
    with_defaults(broker="rabbitmq", result_backend="postgresql"),
]
RESULT_TIMEOUT = 60


def as_param(variant: dict):
    # One xdist group per variant: its tests share one stack, on one xdist worker.
    key = variant_id(variant)
    return pytest.param(variant, id=key, marks=pytest.mark.xdist_group(key))


@pytest.fixture(scope="module", params=[as_param(v) for v in RUN_VARIANTS])
def stack(request, bake, tmp_path_factory):
    """The variant's broker, backend and workers, running; all removed afterwards."""
    variant = request.param
    project = bake(variant)
    workdir = tmp_path_factory.mktemp(variant_id(variant))
    venv = make_venv(project, variant["python_version"], workdir / "venv")
    with LocalStack(project, venv, workdir) as running:
        running.variant = variant
        running.worker_names = running.start_workers()
        running.celery = running.client()
        wait_for_workers(running)
        yield running


def wait_for_workers(stack: LocalStack, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = {name for reply in stack.celery.control.ping(timeout=1) for name in reply}
        if answered >= set(stack.worker_names):
            return
        for process in stack.processes:
            assert process.alive(), f"{process.name} exited\n{process.log_tail()}"
    raise AssertionError(f"workers {stack.worker_names} did not all answer; got {answered}")


def task(stack: LocalStack, name: str) -> str:
    return f"{stack.project.name}.tasks.{name}"


def test_every_worker_answers_ping_under_its_own_name(stack):
    """All worker_count workers are up, each with its own node name."""
    replies = stack.celery.control.ping(timeout=2)
    answered = sorted(name for reply in replies for name in reply)
    assert answered == sorted(stack.worker_names)
    assert len(answered) == stack.services["worker"]["deploy"]["replicas"]


def test_broker_refuses_clients_without_the_generated_credentials(stack):
    """The broker answers only to the credentials generated into .env."""
    if "redis" in stack.addresses:
        host, port = stack.addresses["redis"]
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=host, port=port).set("probe", "1")
    if "rabbitmq" in stack.addresses:
        url = stack.environment("app")["CELERY_BROKER_URL"]
        vhost = url.rsplit("/", 1)[1]
        host, port = stack.addresses["rabbitmq"]
        wrong = kombu.Connection(f"amqp://{vhost}:wrong-password@{host}:{port}/{vhost}")
        with pytest.raises(Exception, match="ACCESS_REFUSED|Login was refused"):
            wrong.connect()
        wrong.release()


def test_add_returns_the_sum(stack):
    """add(2, 3) sent by name comes back as 5."""
    result = stack.celery.send_task(task(stack, "add"), args=(2, 3))
    assert result.get(timeout=RESULT_TIMEOUT) == 5


def test_process_data_returns_statistics(stack):
    """process_data returns count, sum, mean, min and max."""
    result = stack.celery.send_task(task(stack, "process_data"), args=([3, 1, 4, 1, 5],))
    assert result.get(timeout=RESULT_TIMEOUT) == {
        "count": 5,
        "sum": 14,
        "mean": 2.8,
        "min": 1,
        "max": 5,
    }


def test_long_task_reports_progress_while_it_runs(stack):
    """long_task's PROGRESS meta is seen at least twice before its summary arrives."""
    result = stack.celery.send_task(task(stack, "long_task"), args=(3,))
    seen = []
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not result.ready() and time.monotonic() < deadline:
        if result.state == "PROGRESS" and result.info not in seen:
            seen.append(result.info)
        time.sleep(0.1)
    assert result.get(timeout=RESULT_TIMEOUT) == {
        "current": 3,
        "total": 3,
        "status": "worked for 3 s",
    }
    assert len(seen) >= 2, seen
    assert all(meta["total"] == 3 and 0 <= meta["current"] < 3 for meta in seen), seen


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("process_data", ([],), "numbers is empty"),
        ("process_data", ("1,2,3",), "must be a list of numbers, got str"),
        ("process_data", (7,), "must be a list of numbers, got int"),
        ("process_data", ([1, [2, 3]],), "numbers[1] is [2, 3], not a number"),
        ("process_data", ([1, "two"],), "numbers[1] is 'two', not a number"),
        ("process_data", ([1, None],), "numbers[1] is None, not a number"),
        ("add", ("2", 3), "x must be a number, got '2'"),
        ("long_task", (-1,), "seconds must be a whole number from 0 to"),
    ],
)
def test_bad_input_fails_with_a_message_and_workers_carry_on(stack, name, args, message):
    """A task given bad input ends in FAILURE saying what was wrong; every worker stays up."""
    result = stack.celery.send_task(task(stack, name), args=args)
    result.get(timeout=RESULT_TIMEOUT, propagate=False)
    assert result.state == "FAILURE"
    assert message in str(result.result)
    test_every_worker_answers_ping_under_its_own_name(stack)


def test_app_command_runs_the_sample_tasks(stack):
    """The app service's command submits the three tasks and exits 0 when all succeeded."""
    result = stack.run("app", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    final_states = result.stdout.splitlines()[-3:]
    assert all("SUCCESS" in line for line in final_states), result.stdout


def test_project_own_tests_pass(stack):
    """The rendered project's test suite passes against the variant's broker and backend."""
    result = subprocess.run(
        [str(stack.venv / "bin" / "pytest"), "-q", "-p", "no:cacheprovider"],
        cwd=stack.project,
        env=stack.environment("worker"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
