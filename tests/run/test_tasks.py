"""Run tier: the sample tasks on the variant's workers, sent by name from a plain Celery
client; bad input; the workers' JSON logs; the broker's credentials."""

import socket
import time
from pathlib import Path

import kombu
import psycopg
import pytest
import redis

from harness.jsonlogs import assert_json_lines
from harness.localstack import POSTGRES_ADMIN, RESULT_TIMEOUT, STARTUP_SECONDS
from harness.waiting import eventually

pytestmark = pytest.mark.run


def test_every_worker_answers_ping_under_its_own_name(stack):
    """All worker_count workers are up, each with its own node name."""
    replies = stack.celery.control.ping(timeout=5, limit=len(stack.worker_names))
    answered = sorted(name for reply in replies for name in reply)
    assert answered == sorted(stack.worker_names)
    assert len(answered) == stack.services["worker"]["deploy"]["replicas"]


def test_broker_refuses_clients_without_the_generated_credentials(stack):
    """The broker refuses a client without the password generated into .env, or with a
    wrong one."""
    if "redis" in stack.addresses:
        host, port = stack.addresses["redis"]
        for password in (None, "wrong-password"):
            client = redis.Redis(host=host, port=port, password=password)
            try:
                with pytest.raises(redis.AuthenticationError):
                    client.set("probe", "1")
            finally:
                client.close()
    if "rabbitmq" in stack.addresses:
        env = stack.services["rabbitmq"]["environment"]
        user, vhost = env["RABBITMQ_DEFAULT_USER"], env["RABBITMQ_DEFAULT_VHOST"]
        host, port = stack.addresses["rabbitmq"]
        wrong = kombu.Connection(f"amqp://{user}:wrong-password@{host}:{port}/{vhost}")
        try:
            with pytest.raises(Exception, match=r"ACCESS_REFUSED|Login was refused"):
                wrong.connect()
        finally:
            wrong.release()


def test_add_returns_the_sum(stack):
    """add(2, 3) sent by name comes back as 5."""
    result = stack.celery.send_task(stack.task("add"), args=(2, 3))
    assert result.get(timeout=RESULT_TIMEOUT) == 5


def test_process_data_returns_statistics(stack):
    """process_data returns count, sum, mean, min and max."""
    result = stack.celery.send_task(stack.task("process_data"), args=([3, 1, 4, 1, 5],))
    assert result.get(timeout=RESULT_TIMEOUT) == {
        "count": 5,
        "sum": 14,
        "mean": 2.8,
        "min": 1,
        "max": 5,
    }


def test_long_task_reports_progress_while_it_runs(stack):
    """long_task's PROGRESS meta is seen at least twice before its summary arrives."""
    result = stack.celery.send_task(stack.task("long_task"), args=(3,))
    seen = []
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not result.ready() and time.monotonic() < deadline:
        # State and meta from one read: two reads may straddle the end of the task.
        meta = stack.celery.backend.get_task_meta(result.id)
        if meta["status"] == "PROGRESS" and meta["result"] not in seen:
            seen.append(meta["result"])
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
    result = stack.celery.send_task(stack.task(name), args=args)
    result.get(timeout=RESULT_TIMEOUT, propagate=False)
    assert result.state == "FAILURE"
    assert message in str(result.result)
    assert stack.answering_workers() == sorted(stack.worker_names)


@pytest.mark.only_variants(result_backend="postgresql")
def test_pool_processes_keep_their_postgresql_connections(stack):
    """Each pool process keeps one PostgreSQL connection for its results, instead of
    opening and closing one per result (which cost 4x the worker's CPU per task)."""
    database = stack.services["postgres"]["environment"]["POSTGRES_DB"]
    # Sums from 1000 up: the Beat test counts the worker log's results of 42.
    results = [stack.celery.send_task(stack.task("add"), args=(i, 1000)) for i in range(100)]
    assert [result.get(timeout=RESULT_TIMEOUT) for result in results] == [
        1000 + i for i in range(100)
    ]
    with psycopg.connect(POSTGRES_ADMIN) as connection:
        open_connections = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone()[0]
    # This test's client polls through a connection of its own each time, closed after.
    assert 1 <= open_connections <= stack.pool_slots(), open_connections


# Compiled parts of each result backend's client libraries, loaded when they are
# imported: for PostgreSQL, SQLAlchemy's and the driver's (psycopg, which SQLAlchemy
# imports only when an engine is made).
BACKEND_LIBRARIES = {"redis": ["hiredis"], "postgresql": ["sqlalchemy", "psycopg_binary"]}


def test_pool_processes_start_with_the_result_backend_loaded(stack):
    """A new worker's pool processes have the result backend's client libraries loaded
    before they run a task (the main process set the backend up before forking them), so
    none imports them on its first task (BENCHMARKS.md has what that cost)."""
    libraries = BACKEND_LIBRARIES[stack.variant["result_backend"]]
    node = f"unused-pool@{socket.gethostname()}"
    # On a queue of its own: it must run no task, not even another test's.
    worker = stack.start(
        "worker",
        "worker-unused-pool",
        f"--hostname={node}",
        "--queues=unused-pool",
        CELERY_WORKER_LIVENESS_FILE="unused-pool.alive",
    )
    try:
        inspect = stack.celery.control.inspect(destination=[node], timeout=5)
        stats = eventually(
            lambda: (inspect.stats() or {}).get(node), STARTUP_SECONDS, f"{node} answering stats"
        )
        pids = stats["pool"]["processes"]
        assert pids, stats["pool"]
        for pid in pids:
            mapped = Path(f"/proc/{pid}/maps").read_text()
            for library in libraries:
                assert f"/site-packages/{library}/" in mapped, f"pool process {pid}: no {library}"
    finally:
        assert worker.stop(), worker.log_tail()


def test_worker_logs_are_json_lines_naming_the_task(stack):
    """Every line a worker logged so far (Celery's own records, the earlier tests'
    failures, refusals and retries; not what it prints when told to stop) is one JSON
    object with time, level, logger and message; Celery's "received" and "succeeded"
    records and a task's own record carry its task_id and task_name, and a failure's
    traceback stays inside its line."""
    good = stack.celery.send_task(stack.task("add"), args=(4, 5))
    bad = stack.celery.send_task(stack.task("add"), args=("x", 1))
    own = stack.celery.send_task(stack.task("long_task"), args=(0,))
    for result in (good, bad, own):
        result.get(timeout=RESULT_TIMEOUT, propagate=False)
    # The worker logs the outcome just after it stored the result.
    stack.wait_for_worker_log(rf"\[{good.id}\] succeeded in")
    stack.wait_for_worker_log(rf"\[{bad.id}\] raised")
    records = [record for path in stack.worker_log_paths() for record in assert_json_lines(path)]

    def about(result, name: str, words: str) -> dict:
        [record] = [r for r in records if r.get("task_id") == result.id and words in r["message"]]
        assert record["task_name"] == stack.task(name), record
        return record

    about(good, "add", "received")
    assert about(good, "add", "succeeded in")["level"] == "INFO"
    failed = about(bad, "add", "raised unexpected")
    assert failed["level"] == "ERROR"
    assert "TypeError: add: x must be a number" in failed["exc_info"]
    assert about(own, "long_task", "long_task: working for 0 s")["logger"].endswith(".tasks")
