"""The app: submit sample tasks, show their state live, print the results.

Run as `python -m {{ cookiecutter.project_slug }}` (compose.yaml's `app` service); `--help`
lists the options. Three ways to show the same run:
- in a terminal, a live view: a progress bar per long_task, the state of the others, then a
  table of results;
- when stdout is not a terminal (`docker compose up`, CI, a pipe), plain lines: one per
  change of state, then a "results:" block;
- with --json, one JSON document at the end, for scripts.
The exit status is 0 only if every task succeeded, 1 if one failed or timed out, and 2 if
a setting is missing or the broker cannot be reached.
"""

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Task, states
from celery.result import AsyncResult
from kombu.utils.url import maybe_sanitize_url
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from . import logs
from .celery import app
from .tasks import LONG_TASK_MAX_SECONDS, add, flaky, long_task, process_data

SAMPLE_NUMBERS = [4, 8, 15, 16, 23, 42]
POLL_SECONDS = 0.2
DEFAULT_TASKS = ("add", "long_task", "process_data")


def sample_calls(long_seconds: int) -> dict[str, tuple[Task, tuple]]:
    """Each sample task the app can send, by the name --tasks takes, with its arguments."""
    return {
        "add": (add, (2, 3)),
        "long_task": (long_task, (long_seconds,)),
        "process_data": (process_data, (SAMPLE_NUMBERS,)),
        # Fails twice on purpose, then succeeds: shows the retries with backoff.
        "flaky": (flaky, (2,)),
    }


TASK_NAMES = tuple(sample_calls(0))


@dataclass
class Submission:
    """One sent task and its state as last read from the result backend."""

    label: str
    name: str
    args: tuple
    result: AsyncResult
    state: str = states.PENDING
    info: Any = None
    done: bool = False

    def refresh(self) -> bool:
        """Read the task's state; True if it changed."""
        # State and meta from one read of the backend: two reads may straddle a change.
        meta = self.result.backend.get_task_meta(self.result.id)
        # Compared by repr: each read decodes an exception into a new, unequal object.
        changed = (meta["status"], repr(meta["result"])) != (self.state, repr(self.info))
        self.state, self.info = meta["status"], meta["result"]
        self.done = self.state in states.READY_STATES
        return changed


def describe(submission: Submission) -> str:
    """One short line for a task's last read state."""
    state, info = submission.state, submission.info
    if state == "PROGRESS" and isinstance(info, dict):
        return f"PROGRESS {info.get('current')}/{info.get('total')}"
    if state == states.SUCCESS:
        return f"SUCCESS  {info}"
    if state in (states.FAILURE, states.RETRY):
        return f"{state:<8} {info!r}"
    return state


def error_text(submission: Submission, timeout: float) -> str:
    """Why a task has no result: its exception, or that it ran out of time."""
    if submission.state == states.FAILURE:
        return f"{type(submission.info).__name__}: {submission.info}"
    return f"no result after {timeout:g} s (last state {submission.state})"


def submit(names: list[str], count: int, long_seconds: int) -> list[Submission]:
    calls = sample_calls(long_seconds)
    submissions = []
    for number in range(1, count + 1):
        for name in names:
            task, args = calls[name]
            label = f"{name}({', '.join(map(repr, args))})"
            if count > 1:
                label += f" #{number}"
            submissions.append(Submission(label, task.name, args, task.apply_async(args)))
    return submissions


def watch(
    submissions: list[Submission], timeout: float, show: Callable[[Submission], None]
) -> bool:
    """Read each unfinished task's state until all are done, calling `show` on each change;
    False if time ran out first."""
    deadline = time.monotonic() + timeout
    while True:
        for submission in submissions:
            if not submission.done and submission.refresh():
                show(submission)
        if all(submission.done for submission in submissions):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)


# -- the three ways of showing a run --------------------------------------------------


def run_plain(submissions: list[Submission], timeout: float) -> bool:
    """A line per change of state, then the results: for logs, where a redrawn view is noise."""
    width = max(len(submission.label) for submission in submissions)

    def show(submission: Submission) -> None:
        print(f"{submission.label:<{width}}  {describe(submission)}", flush=True)

    finished = watch(submissions, timeout, show)
    print("results:")
    for submission in submissions:
        print(f"  {submission.label:<{width}}  {describe(submission)}")
    return finished


def progress_cell(submission: Submission) -> ProgressBar | str:
    """long_task's bar, fed by its PROGRESS meta; nothing for the other tasks."""
    if submission.name != long_task.name:
        return ""
    (total,) = submission.args
    current = 0
    if submission.state == "PROGRESS" and isinstance(submission.info, dict):
        total = submission.info.get("total", total)
        current = submission.info.get("current", 0)
    elif submission.state == states.SUCCESS:
        current = total
    # A zero-second long_task is done as soon as it starts.
    return ProgressBar(total=max(total, 1), completed=current if total else 1, width=30)


def live_view(submissions: list[Submission]) -> Table:
    table = Table(title="tasks", title_justify="left")
    table.add_column("task")
    table.add_column("state")
    table.add_column("progress")
    for submission in submissions:
        state = submission.state
        if state == "PROGRESS" and isinstance(submission.info, dict):
            state = f"PROGRESS {submission.info.get('current')}/{submission.info.get('total')}"
        table.add_row(submission.label, state, progress_cell(submission))
    return table


def results_table(submissions: list[Submission], timeout: float) -> Table:
    table = Table(title="results", title_justify="left")
    table.add_column("task")
    table.add_column("state")
    table.add_column("result or error")
    for submission in submissions:
        outcome = (
            str(submission.info)
            if submission.state == states.SUCCESS
            else error_text(submission, timeout)
        )
        style = "green" if submission.state == states.SUCCESS else "red"
        table.add_row(submission.label, f"[{style}]{submission.state}[/]", outcome)
    return table


def run_live(submissions: list[Submission], timeout: float, console: Console) -> bool:
    """The view redrawn in place while the tasks run, then the table of results."""
    with Live(live_view(submissions), console=console, refresh_per_second=8) as live:
        finished = watch(submissions, timeout, lambda _: live.update(live_view(submissions)))
        # The finished view replaces the running one, so the results are not shown twice.
        live.update(results_table(submissions, timeout))
    return finished


def run_json(submissions: list[Submission], timeout: float, broker: str, backend: str) -> bool:
    """One document at the end, for scripts: what a person would read off the table."""
    finished = watch(submissions, timeout, lambda _: None)
    tasks = []
    for submission in submissions:
        entry: dict[str, Any] = {
            "id": submission.result.id,
            "name": submission.name,
            "args": list(submission.args),
            "state": submission.state,
        }
        if submission.state == states.SUCCESS:
            entry["result"] = submission.info
        else:
            entry["error"] = error_text(submission, timeout)
        tasks.append(entry)
    ok = all(submission.state == states.SUCCESS for submission in submissions)
    document = {"ok": ok, "broker": broker, "backend": backend, "tasks": tasks}
    print(json.dumps(document, indent=2))
    return finished


# -- the command line -----------------------------------------------------------------


def task_names(text: str) -> list[str]:
    """--tasks: names from TASK_NAMES, comma-separated, each once."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TASK_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown task {', '.join(map(repr, unknown)) or 'list (empty)'}; "
            f"choose from {','.join(TASK_NAMES)}"
        )
    return list(dict.fromkeys(names))


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = low - 1
        if number < low or (high is not None and number > high):
            allowed = f"from {low} to {high}" if high is not None else f"from {low} up"
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number {allowed}")
        return number

    return parse


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m {{ cookiecutter.project_slug }}",
        description=(
            "Submit sample tasks and show their progress until they finish: live in a "
            "terminal, as plain lines otherwise. Exits 0 only if every task succeeded."
        ),
    )
    parser.add_argument(
        "--tasks",
        type=task_names,
        default=list(DEFAULT_TASKS),
        metavar="NAME,...",
        help=f"which tasks to send, from {','.join(TASK_NAMES)} "
        f"(default: {','.join(DEFAULT_TASKS)}); flaky fails twice, then succeeds on a retry",
    )
    parser.add_argument(
        "--count",
        type=whole_number(1),
        default=1,
        metavar="N",
        help="send each task N times (default: 1)",
    )
    parser.add_argument(
        "--long-seconds",
        type=whole_number(0, LONG_TASK_MAX_SECONDS),
        default=5,
        metavar="S",
        help=f"how long long_task works, 0 to {LONG_TASK_MAX_SECONDS} (default: 5)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="give up after this many seconds without all results (default: 120); "
        "raise it with a large --count",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document with every task's id, name, args, state and result "
        "or error, and ok, instead of the live view or lines",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Records of Celery and Kombu (a lost broker connection, say) on stderr, as
    # LOG_FORMAT says; what the app prints for people goes to stdout.
    logs.configure()
    console = Console()
    live = not args.json and sys.stdout.isatty()
    try:
        broker = maybe_sanitize_url(app.conf.broker_url)
        backend = maybe_sanitize_url(app.conf.result_backend)
        if not args.json:
            print(f"broker {broker}, results in {backend}", flush=True)
        submissions = submit(args.tasks, args.count, args.long_seconds)
        if args.json:
            finished = run_json(submissions, args.timeout, broker, backend)
        elif live:
            finished = run_live(submissions, args.timeout, console)
        else:
            finished = run_plain(submissions, args.timeout)
    except Exception as exc:
        # A missing setting or an unreachable broker or backend ends the app with
        # one line, not a traceback.
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if not finished:
        pending = ", ".join(s.label for s in submissions if not s.done)
        print(
            f"error: no result after {args.timeout:g} s for {pending}; is a worker running?",
            file=sys.stderr,
        )
    succeeded = all(submission.state == states.SUCCESS for submission in submissions)
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
