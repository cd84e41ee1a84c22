"""CPU time per `add`: what one task costs the worker (its main process and its pool
processes together), the client that sends it and reads its result, and the servers
(broker and result backend). bench/__main__.py runs it in a project's virtual
environment for the generated app, and in stock Celery's for bench/stock.py:

    python -m bench.cpu --app=M --worker-command="celery --app=M worker ..." --tasks=N

On a machine shared with other work, throughput in tasks/s moves with the load; CPU
seconds spent per task move much less, so they show what a setting costs. The worker is
started twice with the given command, on a queue of its own: once to stop right after
its first ping (start-up and shutdown alone), once to run a group of N adds in between;
the difference, divided by N, is its CPU per task (os.wait4 counts the pool processes it
reaped). The servers' CPU is read from /proc over the same two lives: on two cores
everything shares the CPU, so what a setting costs RabbitMQ, say, slows the tasks too.

With --profile, two more lives (with and without the adds) run under bench/sigprof.py,
a sampler of CPU time (not counted in the CPU figures: sampling costs the worker time),
and the functions where the worker spent most, by self time, are given per add.
Prints one JSON object.
"""

import argparse
import json
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from celery import Celery, group

from bench.driver import delete_queue, load_app, task_named

START_SECONDS = 60
RESULT_SECONDS = 300
# The servers' processes, by the name the kernel gives them, for each URL scheme.
SERVER_PROCESSES = {
    "redis": "redis-server",
    "rediss": "redis-server",
    "amqp": "beam.smp",
    "pyamqp": "beam.smp",
    "db+postgresql": "postgres",
    "db+postgresql+psycopg": "postgres",
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def server_names(*urls: str) -> set[str]:
    """The process names of the servers these broker and backend URLs point at."""
    return {SERVER_PROCESSES[url.split("://", 1)[0]] for url in urls}


def servers_cpu_seconds(names: set[str]) -> float:
    """CPU time of every process with one of these names, its own and that of the
    children it reaped (PostgreSQL's server process reaps a backend per connection). The
    servers run on this machine: the bench measures where it runs them."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        if text[text.index("(") + 1 : text.rindex(")")] in names:
            # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 after the name.
            ticks += sum(int(value) for value in text[text.rindex(")") + 2 :].split()[11:15])
    return ticks / CLOCK_TICKS


class Life:
    """What one worker's life cost: its own CPU, the client's, and the servers'."""

    def __init__(self, worker: float, client: float, servers: float):
        self.worker, self.client, self.servers = worker, client, servers


def worker_run(app: Celery, add: Any, worker_command: list[str], tasks: int) -> Life:
    """One worker's life, with `tasks` adds run in it."""
    queue = f"bench-cpu-{os.getpid()}-{tasks}"
    node = f"{queue}@{os.uname().nodename}"
    servers = server_names(app.conf.broker_url, app.conf.result_backend)
    servers_before = servers_cpu_seconds(servers)
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
    delete_queue(app, queue)
    return Life(cpu_seconds(usage), client, servers_cpu_seconds(servers) - servers_before)


def profile(app: Celery, add: Any, worker_command: list[str], tasks: int) -> list[list[Any]]:
    """Where the worker (main and pool processes) spends its CPU per add, by function (self
    time), in microseconds: two more lives under bench/sigprof.py, one with `tasks` adds
    and one without, less the other (start-up and shutdown), as for the CPU figures. The
    samples come once per clock tick of CPU at most, so each is worth the CPU the lives
    were measured to differ by, over the samples they differ by."""
    lives, samples = [], []
    for adds in (0, tasks):
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as workdir:
            sampled = [sys.executable, "-m", "bench.sigprof", workdir, *worker_command]
            lives.append(worker_run(app, add, sampled, adds))
            counts: Counter[str] = Counter()
            for process in Path(workdir).glob("*.json"):
                counts.update(json.loads(process.read_text()))
            samples.append(counts)
    (idle, busy), (idle_life, busy_life) = samples, lives
    per_sample = (busy_life.worker - idle_life.worker) / (busy.total() - idle.total())
    per_add = {name: (busy[name] - idle[name]) * per_sample * 1e6 / tasks for name in busy}
    ranked = sorted(per_add.items(), key=lambda item: -item[1])
    return [[name, round(us, 1)] for name, us in ranked if round(us, 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", required=True, help="module of the Celery app")
    parser.add_argument("--worker-command", required=True, help="how to start one worker")
    parser.add_argument("--tasks", type=int, default=2000, help="adds in the group")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of worker runs")
    parser.add_argument("--profile", action="store_true", help="and where the worker's CPU goes")
    args = parser.parse_args()
    app = load_app(args.app)
    add = task_named(app, "add")
    command = shlex.split(args.worker_command)
    worker_us, client_us, servers_us = [], [], []
    for _ in range(args.rounds):
        idle = worker_run(app, add, command, 0)
        busy = worker_run(app, add, command, args.tasks)
        worker_us.append(round((busy.worker - idle.worker) / args.tasks * 1e6))
        client_us.append(round(busy.client / args.tasks * 1e6))
        servers_us.append(round((busy.servers - idle.servers) / args.tasks * 1e6))
    figures: dict[str, Any] = {
        "tasks": args.tasks,
        "worker_us_per_task": statistics.median_high(worker_us),
        "client_us_per_task": statistics.median_high(client_us),
        "servers_us_per_task": statistics.median_high(servers_us),
        "worker_us_rounds": worker_us,
        "client_us_rounds": client_us,
        "servers_us_rounds": servers_us,
    }
    if args.profile:
        figures["profile_us_per_task"] = profile(app, add, command, args.tasks)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
