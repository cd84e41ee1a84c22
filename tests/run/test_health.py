"""Run tier: what keeps a stack up on its first day in production, on real processes.

- compose.yaml's healthchecks, run as Docker runs them (the argv scripts/local.py plans
  from compose.yaml, in the process's own environment and working directory), pass on a
  healthy worker, Beat and Flower and fail on unhealthy ones; the CPU one check costs is
  recorded.
- A task that leaks memory past the worker's per-process cap gets its pool process
  replaced: its result arrives, no other task is lost.
- A client's PostgreSQL result reads reuse one pooled connection.

Where a check allows a file to age for minutes, the test sets the file's time back
instead of waiting: the process is stopped (SIGSTOP) meanwhile, so nothing touches it.
"""

import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from harness.localstack import POSTGRES_ADMIN, LocalProcess, LocalStack, free_port
from harness.variants import variant_id
from harness.waiting import eventually

# Flower and Beat on (each has a check), the PostgreSQL backend (whose client reads are
# pooled): one variant per broker.
pytestmark = [
    pytest.mark.run,
    pytest.mark.only_variants(use_flower=True, use_beat=True, result_backend="postgresql"),
]

TIMEOUT = 90
# On the sys.path of the leak test's workers: tests/worker_tasks/leak.py.
WORKER_TASKS = Path(__file__).parents[1] / "worker_tasks"


# -- healthchecks ---------------------------------------------------------------------


def seconds(duration: str) -> float:
    """A Go duration as the Compose parser prints it ("5s", "1m0s")."""
    parts = re.findall(r"([\d.]+)(h|ms|m|s)", duration)
    assert parts, duration
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(number) * unit[name] for number, name in parts)


@dataclass
class Check:
    healthy: bool
    cpu_seconds: float


def run_check(stack: LocalStack, service: str, env: dict, cwd: Path) -> Check:
    """The service's compose.yaml healthcheck, once, as Docker runs it: its argv in the
    process's environment, killed (unhealthy) after the healthcheck's timeout; with the
    CPU time of the check and what it started. (Not its peak memory: a child forked from
    this large process reports this process's size as its own peak; BENCHMARKS.md has
    the checks' memory, measured from a small parent.)"""
    argv = stack.planned(service)[0]["healthcheck"]
    assert argv, f"{service} has no healthcheck"
    timeout = seconds(stack.services[service]["healthcheck"]["timeout"])
    popen = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    killer = threading.Timer(timeout, popen.kill)
    killer.start()
    try:
        # wait4: the check's own usage, its children's included.
        _, status, usage = os.wait4(popen.pid, 0)
    finally:
        killer.cancel()
    popen.returncode = os.waitstatus_to_exitcode(status)
    return Check(popen.returncode == 0, usage.ru_utime + usage.ru_stime)


def check_process(stack: LocalStack, service: str, process: LocalProcess) -> Check:
    return run_check(stack, service, process.env, process.cwd)


def cost(stack: LocalStack, service: str, process: LocalProcess, calls: int = 10) -> str:
    """What one passing check costs, over `calls` calls."""
    checks = [check_process(stack, service, process) for _ in range(calls)]
    assert all(check.healthy for check in checks)
    cpu = sum(check.cpu_seconds for check in checks) / calls
    load = os.getloadavg()[0]
    return (
        f"{variant_id(stack.variant)}: {service} healthcheck {cpu * 1000:.1f} ms CPU per "
        f"call (mean of {calls}; load {load:.2f})"
    )


def liveness_file(process: LocalProcess, variable: str) -> Path:
    return process.cwd / process.env[variable]


def set_back(path: Path, by_seconds: float) -> None:
    then = time.time() - by_seconds
    os.utime(path, (then, then))


def age_limit(stack: LocalStack, service: str) -> float:
    """The age past which the service's file check fails: its `-newermt '-N unit'`."""
    (number, unit) = re.search(
        r"-newermt '-(\d+) (\w+)'", " ".join(stack.planned(service)[0]["healthcheck"])
    ).groups()
    return int(number) * {"seconds": 1, "minutes": 60}[unit]


def test_worker_healthcheck_follows_its_event_loop(stack, record_property):
    """The worker's check passes on every running worker; it fails on a worker that
    cannot reach its broker, on one whose event loop stopped (once its file is older than
    the check allows) until the loop runs again, and on a stopped worker."""
    for node in stack.worker_names:
        process = stack.worker_process(node)
        eventually(
            lambda process=process: check_process(stack, "worker", process).healthy, TIMEOUT, node
        )
    record_property("figure", cost(stack, "worker", stack.worker_process(stack.worker_names[0])))

    host = socket.gethostname()
    broker = urlsplit(stack.environment("worker")["CELERY_BROKER_URL"])
    nowhere = broker._replace(netloc=broker.netloc.replace(f":{broker.port}", f":{free_port()}"))
    unreachable = stack.start(
        "worker",
        "worker-unreachable",
        f"--hostname=unreachable@{host}",
        CELERY_BROKER_URL=nowhere.geturl(),
        CELERY_WORKER_LIVENESS_FILE="unreachable.alive",
    )
    eventually(
        lambda: "Cannot connect to" in unreachable.log_path.read_text(),
        TIMEOUT,
        "the worker to report that it cannot reach its broker",
    )
    assert unreachable.alive()
    assert not check_process(stack, "worker", unreachable).healthy
    unreachable.stop()

    worker = stack.start(
        "worker",
        "worker-health",
        f"--hostname=health@{host}",
        CELERY_WORKER_LIVENESS_FILE="health.alive",
    )
    alive = liveness_file(worker, "CELERY_WORKER_LIVENESS_FILE")
    assert not check_process(stack, "worker", worker).healthy or alive.exists()
    eventually(lambda: check_process(stack, "worker", worker).healthy, TIMEOUT, "healthy")
    os.kill(worker.popen.pid, signal.SIGSTOP)  # the main process: its event loop
    try:
        set_back(alive, age_limit(stack, "worker") + 10)
        assert not check_process(stack, "worker", worker).healthy
    finally:
        os.kill(worker.popen.pid, signal.SIGCONT)
    eventually(lambda: check_process(stack, "worker", worker).healthy, 30, "healthy again")
    assert worker.stop(), worker.log_tail()
    assert not alive.exists()
    assert not check_process(stack, "worker", worker).healthy


def test_beat_healthcheck_follows_its_scheduler(stack, record_property):
    """Beat's check fails before Beat ran, passes while its scheduler ticks, fails while
    the scheduler is stopped past the check's age limit, and passes again once it ticks."""
    env = stack.environment("beat", BEAT_INTERVAL_SECONDS="1")
    assert not run_check(stack, "beat", env, stack.workdir).healthy
    beat = stack.start("beat", "beat-health", BEAT_INTERVAL_SECONDS="1")
    eventually(lambda: check_process(stack, "beat", beat).healthy, TIMEOUT, "Beat healthy")
    record_property("figure", cost(stack, "beat", beat))
    os.kill(beat.popen.pid, signal.SIGSTOP)
    try:
        set_back(liveness_file(beat, "CELERY_BEAT_LIVENESS_FILE"), age_limit(stack, "beat") + 10)
        assert not check_process(stack, "beat", beat).healthy
    finally:
        os.kill(beat.popen.pid, signal.SIGCONT)
    eventually(lambda: check_process(stack, "beat", beat).healthy, 30, "Beat healthy again")
    assert beat.stop(), beat.log_tail()


def test_flower_healthcheck_asks_flower(stack, record_property):
    """Flower's check passes once Flower answers /healthcheck, fails while Flower hangs
    (within the healthcheck's timeout) and once it stopped."""
    flower = stack.start("flower", "flower-health", FLOWER_PORT=str(free_port()))
    eventually(lambda: check_process(stack, "flower", flower).healthy, TIMEOUT, "Flower healthy")
    record_property("figure", cost(stack, "flower", flower))
    os.kill(flower.popen.pid, signal.SIGSTOP)
    try:
        assert not check_process(stack, "flower", flower).healthy
    finally:
        os.kill(flower.popen.pid, signal.SIGCONT)
    eventually(lambda: check_process(stack, "flower", flower).healthy, 30, "Flower healthy again")
    flower.stop()
    assert not check_process(stack, "flower", flower).healthy


# -- the memory guard -----------------------------------------------------------------


def worker_pool_pids(stack: LocalStack) -> dict[str, list[int]]:
    return {node: pool["processes"] for node, pool in stack.pool_stats().items()}


def test_leaking_task_gets_its_pool_process_replaced(stack, tmp_path, record_property):
    """A task that leaks past the per-process cap (worker_max_memory_per_child, config.py)
    finishes with its result; its pool process is then replaced by a fresh one, which runs
    the next leak; every add sent before, during and after is answered, nothing is
    dead-lettered and the workers stay up."""
    slug = stack.project.name
    cap_kib = stack.setting("worker_max_memory_per_child")
    leak_mib = cap_kib // 1024 + 32
    with stack.another(tmp_path) as own:
        own.start_workers("--include=leak", PYTHONPATH=str(WORKER_TASKS))
        own.wait_for_workers()
        pids_before = worker_pool_pids(own)
        adds: list = []

        def send_add() -> None:
            adds.append(own.celery.send_task(f"{slug}.tasks.add", args=(len(adds), len(adds))))

        for _ in range(50):
            send_add()
        leaks = []
        for _ in range(2):
            leak = own.celery.send_task("leak.hold", args=(leak_mib,))
            while not leak.ready():
                send_add()
                time.sleep(0.1)
            leaks.append(leak.get(timeout=TIMEOUT))
        for _ in range(50):
            send_add()
        assert [result.get(timeout=TIMEOUT) for result in adds] == [2 * n for n in range(len(adds))]

        first, second = leaks
        assert first != second  # the second leak ran in a fresh process
        for pid in leaks:
            eventually(lambda pid=pid: not Path(f"/proc/{pid}").exists(), TIMEOUT, f"{pid} to end")
        concurrency = {name: len(pids) for name, pids in pids_before.items()}

        def pools_replaced() -> bool:
            # Asked until true: a worker may list a pool process that has ended (and been
            # reaped) until its next maintenance of the pool (seen once in CI).
            pids_after = worker_pool_pids(own)
            listed = {pid for pids in pids_after.values() for pid in pids}
            counts = {name: len(pids) for name, pids in pids_after.items()}
            return counts == concurrency and not set(leaks) & listed

        eventually(
            pools_replaced,
            TIMEOUT,
            f"each pool back at {concurrency} processes, the leaking ones {leaks} not among them",
        )
        dead = own.run("app", "python", "-m", f"{slug}.deadletters", "list", timeout=TIMEOUT)
        assert dead.returncode == 0 and dead.stdout == "", dead.stdout + dead.stderr
        for name in own.worker_names:
            assert own.worker_process(name).alive()
        own.stop_workers()
    record_property(
        "figure",
        f"{variant_id(stack.variant)}: two tasks each leaking {leak_mib} MiB past a "
        f"{cap_kib // 1024} MiB cap per pool process: both results back, both processes "
        f"replaced, {len(adds)} adds answered, 0 dead-lettered",
    )


# -- pooled PostgreSQL reads in a client ------------------------------------------------

# Reads one finished task's result argv[2] times through the project's own app, as the
# app's live view does (backend.get_task_meta), and prints the CPU per read. "unpooled"
# undoes celery.py's pooling first, as a control. Between steps it waits for a line on
# stdin, so that the test can count PostgreSQL's sessions at each.
READER = """
import sys, time
from {slug}.tasks import add
from {slug}.celery import app
if sys.argv[1] == "unpooled":
    app.backend.session_manager.forked = False
result = add.delay(1, 2)
assert result.get(timeout=60) == 3
print("ready", flush=True); sys.stdin.readline()
reads = int(sys.argv[2])
started = time.process_time()
for _ in range(reads):
    app.backend.get_task_meta(result.id)
print("read", (time.process_time() - started) / reads, flush=True); sys.stdin.readline()
"""


def postgres_counts(database: str) -> tuple[int, int]:
    """Sessions ever opened to the database, and connections open to it now."""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        # Each statement sees the statistics as they are now, not a cached snapshot.
        connection.execute("SET stats_fetch_consistency = none")
        (sessions,) = connection.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
        (open_now,) = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone()
    return sessions, open_now


def read_results(stack: LocalStack, mode: str, reads: int) -> tuple[int, float]:
    """Run READER; the sessions PostgreSQL counted while it read, and its CPU seconds per
    read. A pooled reader must also hold exactly one connection, which closes with it."""
    database = stack.services["postgres"]["environment"]["POSTGRES_DB"]
    code = READER.format(slug=stack.project.name)
    reader = subprocess.Popen(
        [*stack.command("app", ("python", "-c", code)), mode, str(reads)],
        env=stack.environment("app"),
        cwd=stack.workdir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    try:
        assert reader.stdout.readline() == "ready\n"
        # A backend reports its session to the statistics when it goes idle, within 1 s.
        time.sleep(1)
        sessions_before, _ = postgres_counts(database)
        reader.stdin.write("go\n")
        reader.stdin.flush()
        word, cpu_per_read = reader.stdout.readline().split()
        assert word == "read"
        time.sleep(1)
        sessions_after, open_with_reader = postgres_counts(database)
        reader.stdin.write("end\n")
        reader.stdin.flush()
        assert reader.wait(TIMEOUT) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    if mode == "pooled":
        eventually(
            lambda: postgres_counts(database)[1] == open_with_reader - 1,
            TIMEOUT,
            "the reader's one connection to close with it",
        )
    return sessions_after - sessions_before, float(cpu_per_read)


def test_client_reads_reuse_one_postgresql_connection(stack, record_property):
    """A process that imports the app (the live view, any client) reads results through
    one pooled PostgreSQL connection: 200 reads open no new session, where without the
    pooling (the control) each read opens one."""
    reads = 200
    opened_pooled, cpu_pooled = read_results(stack, "pooled", reads)
    opened_unpooled, cpu_unpooled = read_results(stack, "unpooled", reads)
    # At most the reader's one connection, if PostgreSQL counted it late.
    assert opened_pooled <= 1, opened_pooled
    assert opened_unpooled >= reads, opened_unpooled
    record_property(
        "figure",
        f"{variant_id(stack.variant)}: a client's result read costs {cpu_unpooled * 1000:.2f} "
        f"ms CPU unpooled ({opened_unpooled} sessions for {reads} reads), "
        f"{cpu_pooled * 1000:.2f} ms pooled ({opened_pooled}); load {os.getloadavg()[0]:.2f}",
    )
