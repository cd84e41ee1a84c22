"""CPU time per `add`: what one task costs the worker (its main process and its pool
processes together) and the client that sends it and reads its result. bench/__main__.py
runs it in a project's virtual environment for the generated app, and in stock Celery's
for bench/stock.py:

    python -m bench.cpu --app=M --worker-command="celery --app=M worker ..." --tasks=N

On a machine shared with other work, throughput in tasks/s moves with the load; CPU
seconds spent per task move much less, so they show what a setting costs. The worker is
started twice with the given command, on a queue of its own: once to stop right after
its first ping (start-up and shutdown alone), once to run a group of N adds in between;
the difference, divided by N, is its CPU per task (os.wait4 counts the pool processes it
reaped). Prints one JSON object.
"""

import argparse
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from typing import Any

from celery import Celery, group

from bench.driver import load_app, task_named

START_SECONDS = 60
RESULT_SECONDS = 300


def cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def worker_run(app: Celery, add: Any, worker_command: list[str], tasks: int) -> tuple[float, float]:
    """(worker CPU s, client CPU s) of one worker's life, with `tasks` adds run in it."""
    queue = f"bench-cpu-{os.getpid()}-{tasks}"
    node = f"{queue}@{os.uname().nodename}"
    worker = subprocess.Popen(
        [*worker_command, f"--queues={queue}", f"--hostname={node}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_SECONDS
    while not app.control.ping(destination=[node], timeout=0.5):
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise SystemExit(f"worker {node} did not answer a ping: {shlex.join(worker_command)}")
    client_before = cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))
    if tasks:
        result = group(add.s(i, i) for i in range(tasks)).apply_async(queue=queue)
        if result.get(timeout=RESULT_SECONDS) != [2 * i for i in range(tasks)]:
            raise SystemExit("add returned wrong sums")
        result.forget()
    client = cpu_seconds(resource.getrusage(resource.RUSAGE_SELF)) - client_before
    worker.send_signal(signal.SIGTERM)  # warm shutdown: the pool processes are reaped
    _, _, usage = os.wait4(worker.pid, 0)
    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)  # type: ignore[attr-defined]
    return cpu_seconds(usage), client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", required=True, help="module of the Celery app")
    parser.add_argument("--worker-command", required=True, help="how to start one worker")
    parser.add_argument("--tasks", type=int, default=2000, help="adds in the group")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of worker runs")
    args = parser.parse_args()
    app = load_app(args.app)
    add = task_named(app, "add")
    command = shlex.split(args.worker_command)
    worker_us, client_us = [], []
    for _ in range(args.rounds):
        idle_worker, _ = worker_run(app, add, command, 0)
        busy_worker, client = worker_run(app, add, command, args.tasks)
        worker_us.append(round((busy_worker - idle_worker) / args.tasks * 1e6))
        client_us.append(round(client / args.tasks * 1e6))
    print(
        json.dumps(
            {
                "tasks": args.tasks,
                "worker_us_per_task": sorted(worker_us)[len(worker_us) // 2],
                "client_us_per_task": sorted(client_us)[len(client_us) // 2],
                "worker_us_rounds": worker_us,
                "client_us_rounds": client_us,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
