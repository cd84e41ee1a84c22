"""Run tier: each variant's own commands, as local processes on real brokers, run the tasks.

The services' commands and environments come from the rendered compose.yaml (see
localstack.py for the three things that differ from containers).
"""

import base64
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import kombu
import psycopg
import pytest
import redis
from celery import Celery
from localstack import POSTGRES_ADMIN, LocalStack, free_port, make_venv
from variants import run_variants, variant_id

pytestmark = pytest.mark.run

RESULT_TIMEOUT = 60
# One xdist group per variant: its tests share one stack, on one xdist worker.
STACK_PARAMS = [
    pytest.param(
        variant, id=variant_id(variant), marks=pytest.mark.xdist_group(variant_id(variant))
    )
    for variant in run_variants()
]


def pytest_generate_tests(metafunc):
    """Every test that uses `stack` runs on each run variant, or on those that match its
    only_variants marker (e.g. only_variants(use_beat=True))."""
    if "stack" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("only_variants")
    wanted = marker.kwargs if marker else {}
    params = [
        param
        for param in STACK_PARAMS
        if all(param.values[0][name] == value for name, value in wanted.items())
    ]
    metafunc.parametrize("stack", params, indirect=True, scope="module")


@pytest.fixture(scope="module")
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
    answered: set[str] = set()
    while time.monotonic() < deadline:
        replies = stack.celery.control.ping(timeout=1, limit=len(stack.worker_names))
        answered = {name for reply in replies for name in reply}
        if answered >= set(stack.worker_names):
            return
        for name in stack.worker_names:
            process = stack.worker_process(name)
            assert process.alive(), f"{process.name} exited\n{process.log_tail()}"
    raise AssertionError(f"workers {stack.worker_names} did not all answer; got {answered}")


def task(stack: LocalStack, name: str) -> str:
    return f"{stack.project.name}.tasks.{name}"


# Every log record of a Celery service has these (LOG_FORMAT=json in compose.yaml).
LOG_KEYS = {"time", "level", "logger", "message"}


def log_records(path: Path) -> list[dict]:
    """The JSON records of a process log, one a line; a line that is not one, such as
    what Celery prints rather than logs at a shutdown, is kept as {"line": text}."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        records.append(record if isinstance(record, dict) else {"line": line})
    return records


def worker_log_paths(stack: LocalStack) -> set[Path]:
    # A restarted worker appends to the log of the process it replaced.
    return {p.log_path for p in stack.processes if p.name.startswith("worker")}


def wait_for_worker_log(stack: LocalStack, pattern: str, count: int = 1) -> list:
    """Every match of `pattern` in the messages the workers logged, once there are at
    least `count`. Matched against each record's message, not its JSON line: no escaping
    in the way, and `$` ends the message."""
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + RESULT_TIMEOUT
    while True:
        messages = [
            record.get("message", record.get("line", ""))
            for path in worker_log_paths(stack)
            for record in log_records(path)
        ]
        matches = [match for message in messages for match in regex.findall(message)]
        if len(matches) >= count:
            return matches
        assert time.monotonic() < deadline, f"workers logged {pattern!r} {len(matches)} times"
        time.sleep(0.5)


# What a worker prints, not logs, when it is told to stop: an empty line, then this
# (celery.apps.worker; the rendered README says these stay plain text).
SHUTDOWN_PRINTS = re.compile(r"|worker: \w+ shutdown \(MainProcess\)")


def assert_json_lines(path: Path) -> list[dict]:
    """Every line of the log is a JSON object with LOG_KEYS and a UTC ISO 8601 time,
    except the lines a worker prints when it stops; returns the JSON records."""
    records = [
        record
        for record in log_records(path)
        if not SHUTDOWN_PRINTS.fullmatch(record.get("line", "no"))
    ]
    assert records, f"{path} has no records"
    for record in records:
        assert set(record) >= LOG_KEYS, f"{path}: {record}"
        assert datetime.fromisoformat(record["time"]).utcoffset() == timedelta(0), record
    return records


def pool_slots(stack: LocalStack) -> int:
    """How many tasks all workers together run at once."""
    stats = stack.celery.control.inspect(timeout=2).stats() or {}
    return sum(worker["pool"]["max-concurrency"] for worker in stats.values())


def wait_until_running(stack: LocalStack, worker: str, task_name: str) -> list[dict]:
    """The worker's active tasks, once one of them is `task_name`."""
    # A generous reply timeout: a busy machine can take seconds to answer.
    inspect = stack.celery.control.inspect(destination=[worker], timeout=5)
    deadline = time.monotonic() + RESULT_TIMEOUT
    while True:
        active = (inspect.active() or {}).get(worker, [])
        if any(entry["name"] == task_name for entry in active):
            return active
        assert time.monotonic() < deadline, f"{worker} never ran {task_name}"
        time.sleep(0.2)


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
    result = stack.celery.send_task(task(stack, name), args=args)
    result.get(timeout=RESULT_TIMEOUT, propagate=False)
    assert result.state == "FAILURE"
    assert message in str(result.result)
    test_every_worker_answers_ping_under_its_own_name(stack)


@pytest.mark.only_variants(result_backend="postgresql")
def test_pool_processes_keep_their_postgresql_connections(stack):
    """Each pool process keeps one PostgreSQL connection for its results, instead of
    opening and closing one per result (which cost 4x the worker's CPU per task)."""
    database = stack.services["postgres"]["environment"]["POSTGRES_DB"]
    # Sums from 1000 up: the Beat test counts the worker log's results of 42.
    results = [stack.celery.send_task(task(stack, "add"), args=(i, 1000)) for i in range(100)]
    assert [result.get(timeout=RESULT_TIMEOUT) for result in results] == [
        1000 + i for i in range(100)
    ]
    with psycopg.connect(POSTGRES_ADMIN) as connection:
        open_connections = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone()[0]
    # This test's client polls through a connection of its own each time, closed after.
    assert 1 <= open_connections <= pool_slots(stack), open_connections


def test_app_command_runs_the_sample_tasks(stack):
    """The app service's command, its stdout not a terminal, submits the three tasks, prints
    plain lines (a line per change of state, then a results block) and exits 0 when all
    succeeded."""
    result = stack.run("app", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-4] == "results:", result.stdout
    final_states = lines[-3:]
    assert all("SUCCESS" in line for line in final_states), result.stdout
    assert any(re.match(r"long_task\(5\) +PROGRESS \d/5$", line) for line in lines), result.stdout
    # Plain text: no escape sequences of a redrawn view in logs.
    assert "\x1b" not in result.stdout


def test_app_json_document_names_each_task_and_its_result(stack):
    """`--json` prints one document: every task sent, with an id the backend knows, its
    name, args, state and result, and ok true."""
    slug = stack.project.name
    tasks = "add,long_task,process_data,flaky"
    argv = ["--json", "--tasks", tasks, "--long-seconds", "2", "--count", "2"]
    result = stack.run("app", "python", "-m", slug, *argv, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True
    names = [entry["name"] for entry in document["tasks"]]
    assert names == [task(stack, name) for name in tasks.split(",")] * 2
    for entry in document["tasks"]:
        assert entry["state"] == "SUCCESS", entry
        stored = stack.celery.AsyncResult(entry["id"]).get(timeout=RESULT_TIMEOUT)
        assert stored == entry["result"], entry
    long_tasks = [entry for entry in document["tasks"] if entry["name"] == task(stack, "long_task")]
    assert [entry["args"] for entry in long_tasks] == [[2], [2]]
    assert long_tasks[0]["result"]["status"] == "worked for 2 s"


# What a terminal draws, less its control sequences (colours, cursor moves).
TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def run_in_terminal(stack: LocalStack, *argv: str, timeout: float) -> tuple[int, str]:
    """Run `argv` in the app service's environment with a pseudo-terminal of 120 x 40 as its
    stdin, stdout and stderr, as `docker compose run app` gives it one; its exit status and
    everything it drew."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = stack.environment("app", TERM="xterm-256color")
    try:
        process = subprocess.Popen(
            stack.command("app", argv),
            env=env,
            cwd=stack.workdir,
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
            start_new_session=True,
        )
    finally:
        os.close(secondary)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        status = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(primary)
    return status, output.decode("utf-8", errors="replace")


def test_app_in_a_terminal_shows_a_live_view_then_a_table(stack):
    """In a terminal the app draws a progress bar for long_task that fills as it reports
    PROGRESS, the state of the other tasks, and at the end a table of every task's result."""
    slug = stack.project.name
    argv = ["--tasks", "add,long_task,process_data", "--long-seconds", "3"]
    status, drawn = run_in_terminal(stack, "python", "-m", slug, *argv, timeout=180)
    text = TERMINAL_CONTROL.sub("", drawn)
    assert status == 0, drawn
    rows = [line for line in text.splitlines() if "│" in line]
    # While it runs: long_task's row has a bar, part-way filled, next to its progress.
    bars = [row for row in rows if "long_task(3)" in row and "PROGRESS" in row and "━" in row]
    assert any(re.search(r"PROGRESS [12]/3", row) for row in bars), text
    # At the end: the results table, one row per task, each SUCCESS with its result.
    results = text[text.rindex("results") :]
    assert re.search(r"add\(2, 3\) +│ SUCCESS │ 5 ", results), results
    assert re.search(r"long_task\(3\) +│ SUCCESS │ .*worked for 3 s", results), results
    assert re.search(r"process_data\(.*\) +│ SUCCESS │ .*'count': 6", results), results


@pytest.mark.only_variants(use_beat=True)
def test_beat_sends_its_schedule_and_a_worker_runs_it(stack):
    """Beat sends the scheduled add(20, 22) once a period; a worker runs it, 42 is in the
    backend, and with several workers each send still runs exactly once. Beat logs JSON
    lines."""
    beat = stack.start("beat", "beat", BEAT_INTERVAL_SECONDS="1")
    name = re.escape(task(stack, "add"))
    done = rf"Task {name}\[([0-9a-f-]+)\] succeeded in \S+: 42$"
    task_ids = wait_for_worker_log(stack, done)
    assert stack.celery.AsyncResult(task_ids[0]).get(timeout=RESULT_TIMEOUT) == 42
    time.sleep(4)  # a few more periods
    assert beat.stop(), beat.log_tail()
    beat_records = assert_json_lines(beat.log_path)
    sends = sum("Sending due task sample-add" in record["message"] for record in beat_records)
    assert sends >= 3, beat.log_tail()
    deadline = time.monotonic() + RESULT_TIMEOUT
    while len(task_ids := wait_for_worker_log(stack, done)) < sends:
        assert time.monotonic() < deadline, f"{sends} sent, {len(task_ids)} run"
        time.sleep(0.5)
    assert len(task_ids) == len(set(task_ids)) == sends


def start_flower(stack: LocalStack):
    """Flower's command on a free port, once it listens; returns get(path, authorized)
    -> (status, body), authorized with the generated user and password."""
    port = free_port()
    flower = stack.start("flower", "flower", FLOWER_PORT=str(port))
    user, password = stack.environment("flower")["FLOWER_BASIC_AUTH"].split(":", 1)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()

    def get(path: str, authorized: bool) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if authorized:
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    deadline = time.monotonic() + RESULT_TIMEOUT
    while True:
        try:
            get("/healthcheck", authorized=False)
            return get
        except urllib.error.URLError:
            assert flower.alive(), flower.log_tail()
            assert time.monotonic() < deadline, "Flower did not start listening"
            time.sleep(0.2)


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
    deadline = time.monotonic() + RESULT_TIMEOUT
    for worker in stack.worker_names:
        while metric_sum(metrics(), "flower_worker_online", worker=worker) != 1:
            assert time.monotonic() < deadline, f"Flower never saw {worker} online"
            time.sleep(0.5)

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
                text, "flower_task_runtime_seconds_count", task=task(stack, name)
            )
            if kind == "runtime"
            else metric_sum(text, "flower_events_total", task=task(stack, name), type=kind)
            for name, kind in expected
        }

    before = counts()
    # The app sends through the project's own settings, which ask for task-sent events.
    app = stack.run("app", "python", "-m", stack.project.name, "--long-seconds", "1", timeout=180)
    assert app.returncode == 0, app.stdout + app.stderr
    bad = stack.celery.send_task(task(stack, "add"), args=("x", 1))
    bad.get(timeout=RESULT_TIMEOUT, propagate=False)
    retried = stack.celery.send_task(task(stack, "flaky"), args=(1,))
    assert retried.get(timeout=RESULT_TIMEOUT) == {"tries": 2}

    deadline = time.monotonic() + RESULT_TIMEOUT
    while True:
        moved = {key: count - before[key] for key, count in counts().items()}
        if moved == expected:
            break
        assert time.monotonic() < deadline, f"counts moved by {moved}, expected {expected}"
        time.sleep(0.5)
    stack.process("flower").stop()


def dead_letters(stack: LocalStack, *argv: str) -> list[str]:
    """The lines of `python -m <slug>.deadletters ARGV`, run as the README says: in the
    app service's environment."""
    module = f"{stack.project.name}.deadletters"
    result = stack.run("app", "python", "-m", module, *argv, timeout=RESULT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def dead_letter_of(stack: LocalStack, task_id: str) -> str:
    """The dead-letter queue's one line for a task id, once it is there (the worker
    dead-letters a message just after it stored the task's result)."""
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not (lines := [line for line in dead_letters(stack, "list") if task_id in line]):
        assert time.monotonic() < deadline, f"{task_id} never reached the dead-letter queue"
        time.sleep(0.5)
    assert len(lines) == 1, lines
    return lines[0]


def test_transient_error_is_retried_with_backoff_then_succeeds(stack):
    """A task that fails twice with an error it retries succeeds on its third try; each
    wait is a random backoff no longer than 1 s, then 2 s."""
    result = stack.celery.send_task(task(stack, "flaky"), args=(2,))
    assert result.get(timeout=RESULT_TIMEOUT) == {"tries": 3}
    # A retry is logged after its message was sent, so the next try may finish first.
    retries = wait_for_worker_log(
        stack, rf"flaky\[{result.id}\] retry: Retry in (\d+)s: \S+'flaky: try (\d+) failed", 2
    )
    assert sorted(int(number) for _, number in retries) == [1, 2]
    assert all(int(wait) <= 2 ** (int(number) - 1) for wait, number in retries)
    assert not any(result.id in line for line in dead_letters(stack, "list"))


def test_failed_task_is_dead_lettered_with_its_reason_and_replays(stack):
    """A task that fails for good (retries used up, or bad input) lands in the dead-letter
    queue with the reason; replay sends it back to run again with all its retries."""
    keeps_failing = stack.celery.send_task(task(stack, "flaky"), args=(10,))
    bad_input = stack.celery.send_task(task(stack, "add"), args=("a", 1))
    for result in (keeps_failing, bad_input):
        result.get(timeout=RESULT_TIMEOUT, propagate=False)
        assert result.state == "FAILURE"
    assert dead_letter_of(stack, keeps_failing.id).endswith(
        "replays=0  TransientError: flaky: try 4 failed on purpose (10 to fail)"
    )
    assert dead_letter_of(stack, bad_input.id).endswith(
        "replays=0  TypeError: add: x must be a number, got 'a'"
    )

    before = dead_letter_of(stack, keeps_failing.id)
    assert dead_letters(stack, "replay", keeps_failing.id) == [before]
    # Back in its queue it runs again, from its first try, and fails for good again.
    assert dead_letter_of(stack, keeps_failing.id).endswith(
        "replays=1  TransientError: flaky: try 4 failed on purpose (10 to fail)"
    )
    assert dead_letter_of(stack, bad_input.id)


def test_unknown_task_is_rejected_and_dead_lettered(stack):
    """A message naming a task no worker has is logged and dead-lettered, never run: the
    caller sees FAILURE (NotRegistered) instead of waiting for ever."""
    name = task(stack, "no_such_task")
    result = stack.celery.send_task(name, args=(1,))
    wait_for_worker_log(stack, rf"Received unregistered task of type '{re.escape(name)}'")
    result.get(timeout=RESULT_TIMEOUT, propagate=False)
    assert result.state == "FAILURE"
    assert name in str(result.result)
    assert dead_letter_of(stack, result.id).endswith(f"unknown task: '{name}'")
    test_every_worker_answers_ping_under_its_own_name(stack)


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
        sent = pickling.send_task(task(stack, "add"), args=(LeavesAMark(mark), 1))
    finally:
        pickling.close()
    wait_for_worker_log(stack, r"Refusing to deserialize untrusted content of type pickle")
    assert not mark.exists()
    assert "Refusing to deserialize untrusted content" in dead_letter_of(stack, sent.id)
    assert not mark.exists()
    test_every_worker_answers_ping_under_its_own_name(stack)


def test_worker_logs_are_json_lines_naming_the_task(stack):
    """Every line a worker logged so far (Celery's own records, the earlier tests'
    failures, refusals and retries; not what it prints when told to stop) is one JSON
    object with time, level, logger and message; Celery's "received" and "succeeded"
    records and a task's own record carry its task_id and task_name, and a failure's
    traceback stays inside its line."""
    good = stack.celery.send_task(task(stack, "add"), args=(4, 5))
    bad = stack.celery.send_task(task(stack, "add"), args=("x", 1))
    own = stack.celery.send_task(task(stack, "long_task"), args=(0,))
    for result in (good, bad, own):
        result.get(timeout=RESULT_TIMEOUT, propagate=False)
    # The worker logs the outcome just after it stored the result.
    wait_for_worker_log(stack, rf"\[{good.id}\] succeeded in")
    wait_for_worker_log(stack, rf"\[{bad.id}\] raised")
    records = [record for path in worker_log_paths(stack) for record in assert_json_lines(path)]

    def about(result, name: str, words: str) -> dict:
        [record] = [r for r in records if r.get("task_id") == result.id and words in r["message"]]
        assert record["task_name"] == task(stack, name), record
        return record

    about(good, "add", "received")
    assert about(good, "add", "succeeded in")["level"] == "INFO"
    failed = about(bad, "add", "raised unexpected")
    assert failed["level"] == "ERROR"
    assert "TypeError: add: x must be a number" in failed["exc_info"]
    assert about(own, "long_task", "long_task: working for 0 s")["logger"].endswith(".tasks")


# The fault tests stop and restart workers, so they come last in the module. They run on
# one variant per broker x result_backend pair.
FAULT_VARIANTS = pytest.mark.only_variants(use_flower=False, use_beat=False)


@FAULT_VARIANTS
def test_sigterm_lets_the_running_task_finish(stack):
    """SIGTERM to a worker running long_task is a warm shutdown: the task finishes."""
    victim_name = stack.worker_names[0]
    victim = stack.worker_process(victim_name)
    results = [
        stack.celery.send_task(task(stack, "long_task"), args=(3,))
        for _ in range(pool_slots(stack))
    ]
    wait_until_running(stack, victim_name, task(stack, "long_task"))
    assert victim.stop(grace_seconds=30), "the worker did not stop within its grace period"
    for result in results:
        assert result.get(timeout=RESULT_TIMEOUT)["status"] == "worked for 3 s"
    stack.restart(victim)
    wait_for_workers(stack)


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
        stack.celery.send_task(task(stack, "long_task"), args=(LONG_SECONDS,))
        for _ in range(pool_slots(stack))
    ]
    adds = [stack.celery.send_task(task(stack, "add"), args=(n, n)) for n in range(1000)]
    active = wait_until_running(stack, victim_name, task(stack, "long_task"))
    dead_before = sorted(dead_letters(stack, "list"))
    killed_at = time.monotonic()
    victim.kill()
    stack.restart(victim)
    for number, result in enumerate(adds):
        assert result.get(timeout=3 * RESULT_TIMEOUT) == 2 * number
    for result in longs:
        assert result.get(timeout=3 * RESULT_TIMEOUT)["status"] == f"worked for {LONG_SECONDS} s"
    recovered_after = time.monotonic() - killed_at
    wait_for_workers(stack)
    # Delivered again after the kill, but not counted as a poison message.
    assert sorted(dead_letters(stack, "list")) == dead_before
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
    result = stack.celery.send_task(task(stack, "long_task"), args=(LONG_SECONDS,))
    inspect = stack.celery.control.inspect(timeout=5)
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not (
        running := [
            (worker, entry)
            for worker, entries in (inspect.active() or {}).items()
            for entry in entries
            if entry["id"] == result.id
        ]
    ):
        assert time.monotonic() < deadline, "no worker ever ran the long_task"
        time.sleep(0.2)
    [(victim_name, entry)] = running
    dead_before = sorted(dead_letters(stack, "list"))
    killed_at = time.monotonic()
    os.kill(entry["worker_pid"], signal.SIGKILL)
    assert result.get(timeout=3 * RESULT_TIMEOUT)["status"] == f"worked for {LONG_SECONDS} s"
    finished_after = time.monotonic() - killed_at
    counted = rf"\[{result.id}\]: the process running it died on (\d+) of"
    assert wait_for_worker_log(stack, counted) == ["1"]
    assert sorted(dead_letters(stack, "list")) == dead_before
    assert stack.worker_process(victim_name).alive()
    record_property(
        "figure",
        f"{variant_id(stack.variant)}: SIGKILL to the pool process running a "
        f"{LONG_SECONDS} s long_task; counted 1 lost delivery, not dead-lettered; "
        f"its result {finished_after:.1f} s after the kill",
    )


# On the sys.path of the poison test's workers: tests/worker_tasks/poison.py.
WORKER_TASKS = Path(__file__).parent / "worker_tasks"


def setting(stack: LocalStack, name: str):
    """A setting of the project's Celery app, as its workers have it."""
    code = (
        f"import json; from {stack.project.name}.celery import app;"
        f" print(json.dumps(app.conf.{name}))"
    )
    result = stack.run("app", "python", "-c", code, timeout=RESULT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@FAULT_VARIANTS
def test_poison_message_is_dead_lettered_after_the_cap(stack, tmp_path, record_property):
    """A task that ends the process running it on every delivery runs exactly
    dead_letter_after_lost_deliveries times, each in a new pool process, and is then
    dead-lettered with a reason that says so, its caller told FAILURE; the workers stay up,
    every add sent before, during and after is answered, nothing else is dead-lettered, and
    a replay gets the whole count again."""
    cap = setting(stack, "dead_letter_after_lost_deliveries")
    # A stack of its own, so that every worker has the poison task (a worker without it
    # would dead-letter the message as an unknown task).
    with LocalStack(stack.project, stack.venv, tmp_path) as own:
        own.worker_names = own.start_workers("--include=poison", PYTHONPATH=str(WORKER_TASKS))
        own.celery = own.client()
        wait_for_workers(own)
        deliveries = tmp_path / "deliveries"

        def send_add():
            number = len(adds)
            adds.append(own.celery.send_task(task(own, "add"), args=(number, number)))

        adds: list = []
        for _ in range(50):
            send_add()
        before = len(adds)
        sent_at = time.monotonic()
        poison = own.celery.send_task("poison.end_process", args=(str(deliveries),))
        deadline = sent_at + 3 * RESULT_TIMEOUT
        while not poison.ready():
            assert time.monotonic() < deadline, f"the poison message is still {poison.state}"
            send_add()
            time.sleep(0.2)
        failed_after = time.monotonic() - sent_at
        during = len(adds) - before
        line = dead_letter_of(own, poison.id)
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
        assert dead_letters(own, "list") == [line]
        for name in own.worker_names:
            assert own.worker_process(name).alive()
        wait_for_workers(own)

        # Replayed, it starts from a count of 0: cap more deliveries, then dead again.
        assert dead_letters(own, "replay", poison.id) == [line]
        deadline = time.monotonic() + 3 * RESULT_TIMEOUT
        while len(deliveries.read_text().split()) < 2 * cap:
            assert time.monotonic() < deadline, "the replayed message was not run again"
            time.sleep(0.5)
        replayed = dead_letter_of(own, poison.id)
        assert f"replays=1  {reason}" in replayed, replayed
        assert len(deliveries.read_text().split()) == 2 * cap
        assert own.celery.send_task(task(own, "add"), args=(1, 2)).get(timeout=RESULT_TIMEOUT) == 3
        own.stop_workers()
    record_property(
        "figure",
        f"{variant_id(stack.variant)}: a task that ends its process on every delivery ran "
        f"{len(pids)} times (cap {cap}), dead-lettered and FAILURE {failed_after:.1f} s after "
        f"it was sent; {len(adds)} adds answered ({before} before, {during} during, 50 after); "
        f"replayed, it ran {cap} more times and was dead-lettered again",
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
    with LocalStack(stack.project, stack.venv, tmp_path, own_rabbitmq=True) as own:
        own.worker_names = own.start_workers()
        own.celery = own.client()
        wait_for_workers(own)
        if broker == "rabbitmq":
            # compose.yaml's server arguments reached the server.
            erl_args = own.services["rabbitmq"]["environment"][
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"
            ]
            timeout = erl_args.split("consumer_timeout")[1].split()[0]
            setting = own.rabbitmq_node("eval", "application:get_env(rabbit, consumer_timeout).")
            assert setting.strip() == f"{{ok,{timeout}}}"

        longs = [
            own.celery.send_task(task(own, "long_task"), args=(5,)) for _ in range(pool_slots(own))
        ]
        sender = subprocess.Popen(
            own.command("app", ("python", "-c", SENDER.format(slug=own.project.name), "20")),
            env=own.environment("app"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until_running(own, own.worker_names[0], task(own, "long_task"))
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


def test_project_own_tests_pass(stack):
    """`make test` (uv run --locked pytest) passes against the variant's broker and backend,
    with the tests' own in-process worker the only one consuming (so it comes last)."""
    stack.stop_workers()
    result = subprocess.run(
        ["make", "test"],
        cwd=stack.project,
        env=stack.make_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
