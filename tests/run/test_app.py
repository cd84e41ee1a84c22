"""Run tier: the app service, which submits the sample tasks and shows their state: plain
lines for logs, one JSON document for scripts, a live view in a terminal."""

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

import pytest

from harness.localstack import RESULT_TIMEOUT, LocalStack

pytestmark = pytest.mark.run


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
    assert names == [stack.task(name) for name in tasks.split(",")] * 2
    for entry in document["tasks"]:
        assert entry["state"] == "SUCCESS", entry
        stored = stack.celery.AsyncResult(entry["id"]).get(timeout=RESULT_TIMEOUT)
        assert stored == entry["result"], entry
    long_tasks = [entry for entry in document["tasks"] if entry["name"] == stack.task("long_task")]
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
