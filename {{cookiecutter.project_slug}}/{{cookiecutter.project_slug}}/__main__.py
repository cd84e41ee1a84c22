"""The app: submit the sample tasks, show their state live, print the results.

Run as `python -m {{ cookiecutter.project_slug }}` (compose.yaml's `app` service). The exit
status is 0 only if every task succeeded.
"""

import argparse
import sys
import time

from celery.result import AsyncResult
from kombu.utils.url import maybe_sanitize_url

from . import logs
from .celery import app
from .tasks import add, long_task, process_data

SAMPLE_NUMBERS = [4, 8, 15, 16, 23, 42]
POLL_SECONDS = 0.2


def describe(result: AsyncResult) -> str:
    """One short line for a task's current state."""
    # State and meta from one read of the backend: two reads may straddle a change.
    meta = result.backend.get_task_meta(result.id)
    state, info = meta["status"], meta["result"]
    if state == "PROGRESS" and isinstance(info, dict):
        return f"PROGRESS {info.get('current')}/{info.get('total')}"
    if state == "SUCCESS":
        return f"SUCCESS  {info}"
    if state == "FAILURE":
        return f"FAILURE  {info!r}"
    return state


def watch(results: dict[str, AsyncResult], timeout: float) -> bool:
    """Print each task's state whenever it changes; True once all succeeded."""
    shown: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    width = max(map(len, results))
    while True:
        for label, result in results.items():
            line = describe(result)
            if shown.get(label) != line:
                shown[label] = line
                print(f"{label:<{width}}  {line}", flush=True)
        if all(result.ready() for result in results.values()):
            return all(result.successful() for result in results.values())
        if time.monotonic() > deadline:
            pending = ", ".join(label for label, r in results.items() if not r.ready())
            print(
                f"error: no result after {timeout:g} s for {pending}; is a worker running?",
                file=sys.stderr,
            )
            return False
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m {{ cookiecutter.project_slug }}",
        description="Submit the sample tasks and show their progress until they finish.",
    )
    parser.add_argument(
        "--long-seconds", type=int, default=5, help="how long long_task works (default: 5)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="give up after this many seconds without all results (default: 120)",
    )
    args = parser.parse_args(argv)
    # Records of Celery and Kombu (a lost broker connection, say) on stderr, as
    # LOG_FORMAT says; the status lines below are printed for people, on stdout.
    logs.configure()

    try:
        broker = maybe_sanitize_url(app.conf.broker_url)
        backend = maybe_sanitize_url(app.conf.result_backend)
        print(f"broker {broker}, results in {backend}", flush=True)
        results = {
            "add(2, 3)": add.delay(2, 3),
            f"long_task({args.long_seconds})": long_task.delay(args.long_seconds),
            f"process_data({SAMPLE_NUMBERS})": process_data.delay(SAMPLE_NUMBERS),
        }
        succeeded = watch(results, args.timeout)
        print("results:")
        width = max(map(len, results))
        for label, result in results.items():
            print(f"  {label:<{width}}  {describe(result)}")
    except Exception as exc:
        # A missing setting or an unreachable broker or backend ends the app with
        # one line, not a traceback.
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
