"""Measure one Celery app on the broker and result backend in its environment.

bench/__main__.py runs this module twice per broker x backend, in the generated
project's virtual environment and in stock Celery's, with the template directory on
PYTHONPATH; it prints the figures as one JSON object (or a table without --json):

    python -m bench.driver --app=MODULE --worker-command="celery --app=MODULE worker ..."

It measures add throughput (a group of --tasks adds, results on), the rate at which the
workers drain a queue filled with such a group, the round trip of single adds sent one
after the other (p50, p99), worker cold start (process start to the first answered
ping), how long adds wait behind long tasks, and what long_task's progress reports cost.
It starts its own workers with the given command, adding --hostname and --queues: they
take only the bench's tasks, from a queue of its own that it deletes afterwards. Only
Celery and Kombu are imported, which both environments have.
"""

import argparse
import contextlib
import importlib
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery, group
from kombu import Exchange, Queue
from kombu.utils.url import maybe_sanitize_url

WORKER_STOP_SECONDS = 30
STARTUP_SECONDS = 60
RESULT_TIMEOUT = 300
# How often a backend without push (the database) is polled for a result.
POLL_SECONDS = 0.001


def load_app(module_name: str) -> Celery:
    """The Celery app of a module (its `app`), with its tasks imported."""
    app: Celery = importlib.import_module(module_name).app
    app.loader.import_default_modules()
    return app


def task_named(app: Celery, short_name: str) -> Any:
    """The app's task whose name ends in .short_name (tasks.add, stock.add, ...)."""
    names = [name for name in app.tasks if name.rsplit(".", 1)[-1] == short_name]
    if len(names) != 1:
        raise SystemExit(f"error: {app.main} has no single task named *.{short_name}: {names}")
    return app.tasks[names[0]]


class Workers:
    """Worker processes started for the bench, on its private queue."""

    def __init__(self, app: Celery, command: list[str], queue: str, logdir: Path):
        self.app, self.command, self.queue, self.logdir = app, command, queue, logdir
        self.token = uuid.uuid4().hex[:8]
        self.started = 0
        self.running: dict[str, subprocess.Popen] = {}

    def spawn(self) -> str:
        self.started += 1
        name = f"bench{self.started}-{self.token}"
        node = f"{name}@{os.uname().nodename}"
        argv = [*self.command, f"--hostname={name}@%h", f"--queues={self.queue}"]
        with (self.logdir / f"{name}.log").open("wb") as log:
            self.running[node] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return node

    def wait_answering(self, nodes: list[str]) -> None:
        """Return once every node answered a ping."""
        waiting = set(nodes)
        deadline = time.monotonic() + STARTUP_SECONDS
        while waiting:
            replies = self.app.control.ping(
                destination=sorted(waiting), timeout=0.05, limit=len(waiting)
            )
            waiting -= {node for reply in replies or [] for node in reply}
            for node in waiting:
                if self.running[node].poll() is not None:
                    raise RuntimeError(f"worker {node} exited\n{self.log_tail(node)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {sorted(waiting)} did not answer a ping")

    def stop(self, node: str) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL to whatever is left of its group."""
        process = self.running.pop(node)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(WORKER_STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for node in list(self.running):
            self.stop(node)

    def log_tail(self, node: str, lines: int = 30) -> str:
        path = self.logdir / f"{node.split('@')[0]}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def cold_start(workers: Workers) -> float:
    """Seconds from starting a worker process to its first answered ping."""
    started = time.perf_counter()
    node = workers.spawn()
    workers.wait_answering([node])
    elapsed = time.perf_counter() - started
    workers.stop(node)
    return elapsed


def throughput(add: Any, queue: str, count: int) -> float:
    """add tasks per second: a group of `count` sent and all its results read."""
    started = time.perf_counter()
    result = group(add.s(i, i) for i in range(count)).apply_async(queue=queue)
    values = result.get(timeout=RESULT_TIMEOUT, interval=POLL_SECONDS)
    elapsed = time.perf_counter() - started
    assert values == [2 * i for i in range(count)], "add returned wrong sums"
    result.forget()
    return count / elapsed


def drain(app: Celery, add: Any, queue: str, count: int, nodes: list[str]) -> float:
    """add tasks per second from a full queue: the workers stop consuming it, a group of
    `count` is sent, and the time runs from their consuming again to the last result. The
    workers alone set this pace, not the sender (and its publisher confirms)."""
    app.control.cancel_consumer(queue, destination=nodes, reply=True)
    result = group(add.s(i, i) for i in range(count)).apply_async(queue=queue)
    started = time.perf_counter()
    app.control.add_consumer(queue, destination=nodes, reply=True)
    values = result.get(timeout=RESULT_TIMEOUT, interval=POLL_SECONDS)
    elapsed = time.perf_counter() - started
    assert values == [2 * i for i in range(count)], "add returned wrong sums"
    result.forget()
    return count / elapsed


def short_behind_long(add: Any, long_task: Any, queue: str, processes: int) -> float:
    """Seconds until the last of 10 adds has its result, the adds sent while long_task(4)
    holds every pool process but one: how long short tasks wait behind long ones that
    their worker reserved (the prefetch), with a process free to run them."""
    longs = [long_task.apply_async((4,), queue=queue) for _ in range(processes - 1)]
    time.sleep(0.5)  # the long tasks have started
    started = time.perf_counter()
    adds = [add.apply_async((i, i), queue=queue) for i in range(10)]
    for result in adds:
        result.get(timeout=RESULT_TIMEOUT, interval=POLL_SECONDS)
    waited = time.perf_counter() - started
    for result in longs:
        result.get(timeout=RESULT_TIMEOUT, interval=POLL_SECONDS)
    return waited


def round_trips(add: Any, queue: str, calls: int) -> list[float]:
    """Milliseconds from sending one add to having its result, one call at a time."""
    times = []
    for i in range(calls):
        started = time.perf_counter()
        result = add.apply_async((i, 1), queue=queue)
        assert result.get(timeout=RESULT_TIMEOUT, interval=POLL_SECONDS) == i + 1
        times.append((time.perf_counter() - started) * 1000)
        result.forget()
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def long_task_overhead(long_task: Any, queue: str, seconds: int) -> float:
    """Milliseconds long_task(seconds) takes beyond its own seconds of work, sent to result."""
    started = time.perf_counter()
    result = long_task.apply_async((seconds,), queue=queue)
    result.get(timeout=RESULT_TIMEOUT, interval=POLL_SECONDS)
    elapsed = time.perf_counter() - started
    result.forget()
    return (elapsed - seconds) * 1000


def progress_update_cost(app: Celery, updates: int) -> float:
    """Milliseconds one PROGRESS report (what update_state writes) takes on this backend."""
    task_id = f"bench-progress-{uuid.uuid4()}"
    started = time.perf_counter()
    for current in range(updates):
        app.backend.store_result(task_id, {"current": current, "total": updates}, "PROGRESS")
    elapsed = time.perf_counter() - started
    app.backend.forget(task_id)
    return elapsed / updates * 1000


def pool_stats(app: Celery, nodes: list[str]) -> list[dict]:
    """Each node's `inspect stats` reply, asked until every node has answered."""
    replies: dict = {}
    deadline = time.monotonic() + STARTUP_SECONDS
    while set(replies) != set(nodes):
        replies.update(app.control.inspect(destination=nodes, timeout=1).stats() or {})
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers {sorted(set(nodes) - set(replies))} gave no stats")
    return [replies[node] for node in nodes]


def delete_queue(app: Celery, name: str) -> None:
    """Delete the bench's queue, its exchange and (on Redis) its binding keys."""
    queue = Queue(name, Exchange(name), routing_key=name)
    with app.connection_for_write() as connection:
        bound = queue(connection.default_channel)
        # Declared here too, so that this client knows the binding it removes.
        bound.declare()
        bound.purge()
        bound.delete()
        bound.exchange.delete()


def setup(app: Celery, args: argparse.Namespace) -> dict[str, Any]:
    """What is measured, on what, and the load at the start."""
    return {
        "app": args.app,
        "broker": maybe_sanitize_url(app.conf.broker_url),
        "backend": maybe_sanitize_url(app.conf.result_backend),
        "worker_command": shlex.join(args.worker_command),
        "workers": args.workers,
        "tasks": args.tasks,
        "rounds": args.rounds,
        "latency_calls": args.latency_calls,
        "loadavg_before": [round(load, 2) for load in os.getloadavg()],
    }


def with_workers(app: Celery, args: argparse.Namespace, queue: str, logdir: Path) -> dict:
    """Cold starts, then throughput, round trips and long_task on args.workers workers."""
    add, long_task = task_named(app, "add"), task_named(app, "long_task")
    workers = Workers(app, args.worker_command, queue, logdir)
    try:
        starts = [cold_start(workers) for _ in range(args.cold_starts)]
        nodes = [workers.spawn() for _ in range(args.workers)]
        workers.wait_answering(nodes)
        # Warm up: connections, pool processes and the result consumer.
        throughput(add, queue, min(args.tasks, 100))
        round_trips(add, queue, 10)
        rates, drains = [], []
        for _ in range(args.rounds):
            rates.append(throughput(add, queue, args.tasks))
            drains.append(drain(app, add, queue, args.tasks, nodes))
        latencies = round_trips(add, queue, args.latency_calls)
        overhead = long_task_overhead(long_task, queue, args.long_seconds)
        processes = sum(stats["pool"]["max-concurrency"] for stats in pool_stats(app, nodes))
        waited = short_behind_long(add, long_task, queue, processes)
    finally:
        workers.stop_all()
        delete_queue(app, queue)
    return {
        "add_throughput_per_s": round(statistics.median(rates), 1),
        "add_throughput_rounds": [round(rate, 1) for rate in rates],
        "drain_per_s": round(statistics.median(drains), 1),
        "drain_rounds": [round(rate, 1) for rate in drains],
        "short_behind_long_s": round(waited, 2),
        "latency_p50_ms": round(percentile(latencies, 0.50), 3),
        "latency_p99_ms": round(percentile(latencies, 0.99), 3),
        "latencies_ms": [round(latency, 3) for latency in latencies],
        "cold_start_s": round(statistics.median(starts), 3),
        "cold_start_runs_s": [round(start, 3) for start in starts],
        "long_task_seconds": args.long_seconds,
        "long_task_overhead_ms": round(overhead, 1),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure, as one flat dict."""
    app = load_app(args.app)
    figures = setup(app, args)
    with tempfile.TemporaryDirectory(prefix="bench-") as logdir:
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        figures.update(with_workers(app, args, queue, Path(logdir)))
    figures["progress_update_ms"] = round(progress_update_cost(app, 100), 3)
    figures["loadavg_after"] = [round(load, 2) for load in os.getloadavg()]
    return figures


def table(figures: dict) -> str:
    rows = [
        ("broker", figures["broker"]),
        ("result backend", figures["backend"]),
        ("workers", f"{figures['workers']} x {figures['worker_command']}"),
        (
            f"add throughput, group of {figures['tasks']}",
            f"{figures['add_throughput_per_s']:.0f} tasks/s "
            f"(median of {figures['add_throughput_rounds']})",
        ),
        (
            "draining a full queue",
            f"{figures['drain_per_s']:.0f} tasks/s (median of {figures['drain_rounds']})",
        ),
        ("10 adds behind long tasks", f"{figures['short_behind_long_s']:.2f} s"),
        (
            f"add round trip, {figures['latency_calls']} calls",
            f"p50 {figures['latency_p50_ms']:.2f} ms, p99 {figures['latency_p99_ms']:.2f} ms",
        ),
        (
            "worker cold start to first ping",
            f"{figures['cold_start_s']:.2f} s (median of {figures['cold_start_runs_s']})",
        ),
        (
            f"long_task({figures['long_task_seconds']}) beyond its work",
            f"{figures['long_task_overhead_ms']:.0f} ms",
        ),
        ("one progress report", f"{figures['progress_update_ms']:.2f} ms"),
        ("load average before, after", f"{figures['loadavg_before']}, {figures['loadavg_after']}"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.driver",
        description="Measure add throughput, round trip, worker cold start and progress "
        "reports on the configured broker and backend, with workers started for the bench.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--app",
        required=True,
        help="module of the Celery app to measure; it must have tasks named *.add and *.long_task",
    )
    parser.add_argument(
        "--worker-command",
        type=shlex.split,
        required=True,
        help="how to start one worker of that app",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument(
        "--tasks", type=int, default=3000, help="adds in the throughput group (default: 3000)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="throughput groups; the median is kept (default: 3)"
    )
    parser.add_argument(
        "--latency-calls", type=int, default=500, help="sequential adds timed (default: 500)"
    )
    parser.add_argument(
        "--cold-starts", type=int, default=3, help="worker starts timed (default: 3)"
    )
    parser.add_argument(
        "--long-seconds", type=int, default=2, help="long_task's argument (default: 2)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        figures = measure(args)
    except Exception as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(json.dumps(figures) if args.json else table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
