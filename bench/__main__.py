"""Benchmark the template on this machine and write BENCHMARKS.md.

For each broker x result backend (other answers at their defaults) this bakes the
project (timing CLI bakes), installs it into a virtual environment, starts its servers
as the run tier does (tests/harness/localstack.py: a private redis-server, a RabbitMQ vhost, a
PostgreSQL database) and runs, on those servers and with the same number of workers:
- bench/driver.py in the project's environment, its workers started with compose.yaml's
  worker command;
- the same driver on stock Celery (bench/stock.py: default settings, the same three
  tasks), its worker started as Celery's docs do (`celery --app=M worker --loglevel=INFO`);
- CPU time per `add` of one worker and of the client, generated and stock
  (bench/cpu.py), which the machine's load moves far less than tasks/s;
- the raw broker floor (bench/floor.py) in the project's environment.
Then it times the static tier, and takes the run tier's time from a JUnit file if one is
given (it is not run here: it takes minutes). Figures go into BENCHMARKS.md between its
markers; the text around them is kept.

    scripts/bench [--tasks 3000] [--run-tier-junit FILE] [--skip-static-tier]

The driver, CPU and floor modules run in the project's or stock Celery's environment,
with this directory's parent on PYTHONPATH: they import only Celery, Kombu and the
broker's client library, never the project's dev tools.
"""

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from uv import find_uv_bin

from bench.driver import percentile
from bench.report import report, write
from harness.localstack import POSTGRES_ADMIN, LocalStack, find_python, make_venv, rabbitmqctl
from harness.variants import AXES, variant_id, with_defaults

TEMPLATE_DIR = Path(__file__).resolve().parent.parent

BIN = Path(sys.executable).parent
RESULTS = TEMPLATE_DIR / "BENCHMARKS.md"
STOCK_APP = "bench.stock"
# Celery's default prefetch, which a worker that runs only short tasks could use.
SHORT_TASKS_ONLY = "--prefetch-multiplier=4"


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def say(message: str) -> None:
    message = re.sub(r"://[^@/\s]*@", "://**@", message)  # no passwords in the log
    print(f"[bench {time.strftime('%H:%M:%S')} load {load()[0]}] {message}", flush=True)


def variants() -> list[dict]:
    return [
        with_defaults(broker=broker, result_backend=backend)
        for broker in AXES["broker"]
        for backend in AXES["result_backend"]
    ]


def cli_bake(variant: dict, output: Path) -> float:
    answers = [f"{name}={value}" for name, value in variant.items()]
    started = time.perf_counter()
    result = subprocess.run(
        [BIN / "cookiecutter", "--no-input", "-o", output, TEMPLATE_DIR, *answers],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"bake of {variant_id(variant)} failed:\n{result.stderr}")
    return elapsed


def in_process_bakes(variant: dict, output: Path, count: int) -> list[float]:
    """cookiecutter() called in this process, after one untimed call that pays for the
    imports: the template's own share of a bake (rendering and its two hooks)."""
    from cookiecutter.main import cookiecutter  # type: ignore[import-untyped]

    times = []
    for number in range(count + 1):
        started = time.perf_counter()
        cookiecutter(
            str(TEMPLATE_DIR),
            no_input=True,
            extra_context=variant,
            output_dir=str(output / f"in-process{number}"),
        )
        times.append(time.perf_counter() - started)
    return times[1:]


def run_json(command: list, env: dict, what: str, cwd: Path) -> dict:
    """Run a bench module, say what it printed, and return its one JSON object."""
    command = [str(part) for part in command]
    say(f"{what}: {shlex.join(command)}")
    result = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    figures: dict = json.loads(result.stdout.strip().splitlines()[-1])
    say(f"{what}: {json.dumps(figures)}")
    return figures


def bake_times(variant: dict, args: argparse.Namespace, workdir: Path) -> tuple[Path, dict]:
    """Bake the variant args.bakes times by the CLI and as often in-process, timing each;
    returns the first bake's project and the times."""
    bake_load = load()
    bakes = [cli_bake(variant, workdir / f"bake{number}") for number in range(args.bakes)]
    project = next((workdir / "bake0").iterdir())
    in_process = in_process_bakes(variant, workdir, args.bakes)
    say(f"{variant_id(variant)}: CLI bakes {[round(b, 3) for b in bakes]} s")
    say(f"{variant_id(variant)}: in-process bakes {[round(b, 3) for b in in_process]} s")
    return project, {
        "bake_s": round(statistics.median(bakes), 3),
        "bake_runs_s": [round(b, 3) for b in bakes],
        "bake_load": bake_load,
        "bake_in_process_s": round(statistics.median(in_process), 3),
        "bake_in_process_runs_s": [round(b, 3) for b in in_process],
    }


class Side:
    """Generated or stock: the interpreter, the app module, the worker command and the
    environment that the driver, CPU probe and floor run with."""

    def __init__(self, label: str, python: Path, app: str, worker: list, env: dict):
        self.label, self.python, self.app, self.worker = label, python, app, worker
        # The bench package comes from the template; nothing else of it is imported.
        self.env = {**env, "PYTHONPATH": str(TEMPLATE_DIR)}

    def run(self, module: str, args: list, what: str, cwd: Path) -> dict:
        command = [self.python, "-m", f"bench.{module}", *args]
        return run_json(command, self.env, f"{what} {self.label}", cwd)


def merged(runs: list[dict], cpu_runs: list[dict]) -> dict:
    """One side's figures from its rounds, in the driver's form: medians over the rounds,
    percentiles over every round trip, the load at the first start and the last end."""

    def every(key: str) -> list:
        return [value for run in runs for value in run[key]]

    def median(values: list[float]) -> float:
        return round(float(statistics.median(values)), 3)

    latencies = every("latencies_ms")
    return {
        **runs[0],  # what ran: app, servers, worker command, workers, tasks
        "rounds": len(runs),
        "latency_calls": len(latencies),
        "add_throughput_rounds": every("add_throughput_rounds"),
        "add_throughput_per_s": median(every("add_throughput_rounds")),
        "drain_rounds": every("drain_rounds"),
        "drain_per_s": median(every("drain_rounds")),
        "latency_p50_ms": round(percentile(latencies, 0.50), 3),
        "latency_p99_ms": round(percentile(latencies, 0.99), 3),
        "cold_start_runs_s": every("cold_start_runs_s"),
        "cold_start_s": median(every("cold_start_runs_s")),
        "long_task_overhead_ms": median([run["long_task_overhead_ms"] for run in runs]),
        "short_behind_long_s": median([run["short_behind_long_s"] for run in runs]),
        "progress_update_ms": median([run["progress_update_ms"] for run in runs]),
        "loadavg_after": runs[-1]["loadavg_after"],
        "cpu": merged_cpu(cpu_runs),
    }


def merged_cpu(cpu_runs: list[dict]) -> dict:
    """One configuration's CPU per add from its rounds (bench/cpu.py, one round each):
    medians, each round's figure, and the profile of the round that took one."""
    figures: dict = {"tasks": cpu_runs[0]["tasks"]}
    for part in ("worker", "client", "servers"):
        rounds = [run[f"{part}_us_per_task"] for run in cpu_runs]
        figures[f"{part}_us_per_task"] = round(statistics.median(rounds))
        figures[f"{part}_us_rounds"] = rounds
    profiles = [run["profile_us_per_task"] for run in cpu_runs if "profile_us_per_task" in run]
    if profiles:
        figures["profile_us_per_task"] = profiles[0]
    return figures


def measure_on(stack: LocalStack, sides: list[Side], args: argparse.Namespace) -> dict:
    """Generated and stock on the stack's servers, with as many workers, in alternating
    rounds (a change in the machine's load falls on both sides alike), then the floor."""
    name, cwd = variant_id(stack.variant), stack.workdir
    replicas = stack.services["worker"]["deploy"]["replicas"]
    # A PostgreSQL backend commits each result: fewer tasks keep the run short.
    on_postgresql = stack.variant["result_backend"] == "postgresql"
    tasks = args.postgresql_tasks if on_postgresql else args.tasks
    calls = args.postgresql_latency_calls if on_postgresql else args.latency_calls
    # Each round measures a share of the round trips and cold starts, so that the rounds
    # together measure as many as asked for.
    one_round = [
        f"--tasks={tasks}",
        "--rounds=1",
        f"--latency-calls={-(-calls // args.rounds)}",
        f"--cold-starts={-(-args.cold_starts // args.rounds)}",
        f"--workers={replicas}",
    ]
    runs: dict[str, list[dict]] = {side.label: [] for side in sides}
    cpu_runs: dict[str, list[dict]] = {side.label: [] for side in sides}
    short_only_cpu_runs: list[dict] = []
    for number in range(1, args.rounds + 1):
        for side in sides:
            what = f"{name} round {number}"
            worker = shlex.join(map(str, side.worker))
            app_and_worker = [f"--app={side.app}", f"--worker-command={worker}"]
            driver_args = ["--json", *one_round, *app_and_worker]
            runs[side.label].append(side.run("driver", driver_args, what, cwd))
            cpu_args = [*app_and_worker, f"--tasks={tasks}", "--rounds=1"]
            # The first round also profiles each side, in worker lives of their own.
            profile = ["--profile"] if number == 1 else []
            cpu_runs[side.label].append(side.run("cpu", cpu_args + profile, f"{what} CPU", cwd))
            if side is sides[0]:
                # What prefetch 1 costs, in the same round: the generated worker as a
                # deployment of short tasks only could run it (config.py says why not).
                short_only = shlex.join([*map(str, side.worker), SHORT_TASKS_ONLY])
                short_only_args = [f"--app={side.app}", f"--worker-command={short_only}"]
                short_only_args += [f"--tasks={tasks}", "--rounds=1"]
                what_short = f"{what} CPU {SHORT_TASKS_ONLY}"
                short_only_cpu_runs.append(side.run("cpu", short_only_args, what_short, cwd))
    figures = {label: merged(runs[label], cpu_runs[label]) for label in runs}
    figures["generated"]["cpu_short_tasks_only"] = merged_cpu(short_only_cpu_runs)
    floor_load = load()
    floor_args = [sides[0].env["CELERY_BROKER_URL"], f"--messages={tasks}"]
    floor_args += [f"--consumers={replicas}", f"--rounds={args.rounds}"]
    figures["floor"] = sides[0].run("floor", floor_args, f"{name} floor", cwd)
    figures["floor"]["load"] = floor_load
    return figures


def bench_variant(variant: dict, args: argparse.Namespace, workdir: Path) -> dict:
    """Bake, install and measure one broker x backend."""
    project, figures = bake_times(variant, args, workdir)
    venv = make_venv(project, variant["python_version"], workdir / "venv")
    installed = versions(venv / "bin" / "python")
    stock_venv = stock_environment(variant, installed, workdir / "stock-venv")
    figures.update(
        variant=variant_id(variant),
        versions=installed,
        stock_versions=versions(stock_venv / "bin" / "python"),
    )
    stackdir = workdir / "stack"
    stackdir.mkdir()
    with LocalStack(project, venv, stackdir, variant) as stack:
        env = stack.environment("app")
        stock_worker = [stock_venv / "bin" / "celery", f"--app={STOCK_APP}", "worker"]
        sides = [
            Side("generated", venv / "bin" / "python", project.name, stack.command("worker"), env),
            Side(
                "stock",
                stock_venv / "bin" / "python",
                STOCK_APP,
                [*stock_worker, "--loglevel=INFO"],
                env,
            ),
        ]
        figures.update(measure_on(stack, sides, args))
    return figures


def stock_environment(variant: dict, installed: dict, venv: Path) -> Path:
    """Stock Celery's environment: what `pip install celery[redis]` (plus SQLAlchemy and
    psycopg for a PostgreSQL backend) installs, at the generated project's versions, so
    that only the project's own choices differ (hiredis, for one)."""
    uses_redis = "redis" in (variant["broker"], variant["result_backend"])
    packages = [f"celery{'[redis]' if uses_redis else ''}=={installed['celery']}"]
    packages += [f"{name}=={installed[name]}" for name in ("kombu", "amqp") if name in installed]
    if uses_redis:
        packages.append(f"redis=={installed['redis']}")
    if variant["result_backend"] == "postgresql":
        packages += [f"sqlalchemy=={installed['sqlalchemy']}"]
        packages += [f"psycopg[binary]=={installed['psycopg']}"]
    uv = find_uv_bin()
    python = find_python(variant["python_version"])
    for command in (
        [uv, "venv", "--quiet", "--python", python, venv],
        # Byte-compiled, as make_venv makes the generated side's: no worker start pays
        # for compiling Celery.
        [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", venv, *packages],
    ):
        subprocess.run([str(part) for part in command], capture_output=True, check=True)
    return venv


def versions(python: Path) -> dict:
    code = (
        "import importlib.metadata as m, json, platform\n"
        "names = ['celery', 'kombu', 'redis', 'hiredis', 'amqp', 'sqlalchemy', 'psycopg',\n"
        "         'python-json-logger']\n"
        "found = {}\n"
        "for name in names:\n"
        "    try: found[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps({'python': platform.python_version(), **found}))"
    )
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    found: dict = json.loads(result.stdout)
    return found


def time_static_tier(jobs: int) -> dict:
    command: list[str | Path] = [
        BIN / "pytest",
        "-p",
        "no:cacheprovider",
        "-m",
        "not run",
        "-n",
        str(jobs),
        "-q",
    ]
    say(f"static tier: {shlex.join(map(str, command))}")
    load_before = load()
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=TEMPLATE_DIR, capture_output=True, text=True, timeout=1800, check=False
    )
    elapsed = time.perf_counter() - started
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    say(f"static tier: {elapsed:.1f} s, {summary}")
    return {
        "seconds": round(elapsed, 1),
        "summary": summary,
        "load": load_before,
        "passed": result.returncode == 0,
        "jobs": jobs,
    }


def run_tier_from_junit(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    seconds = sum(float(suite.get("time", 0)) for suite in suites)
    tests = sum(int(suite.get("tests", 0)) for suite in suites)
    failed = sum(int(suite.get("failures", 0)) + int(suite.get("errors", 0)) for suite in suites)
    return {"seconds": round(seconds, 1), "tests": tests, "failed": failed, "source": str(path)}


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    memory_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024
    redis_words = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    redis_version = next((word[2:] for word in redis_words if word.startswith("v=")), "?")
    with psycopg.connect(POSTGRES_ADMIN) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    postgres_version = row[0] if row else "?"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} x {model}",
        "memory": f"{memory_gib:.0f} GiB",
        "os": platform.platform(),
        "redis-server": redis_version,
        "rabbitmq": rabbitmqctl("version").strip(),
        "postgresql": postgres_version.split()[0],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000, help="adds per group (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="groups per bench (default 3)")
    parser.add_argument("--latency-calls", type=int, default=500)
    parser.add_argument(
        "--postgresql-tasks", type=int, default=600, help="adds per group, PostgreSQL backend"
    )
    parser.add_argument("--postgresql-latency-calls", type=int, default=200)
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--bakes", type=int, default=3, help="CLI bakes timed per variant")
    parser.add_argument("--only", help="variant ids containing this text, e.g. redis-redis")
    parser.add_argument("--skip-static-tier", action="store_true")
    parser.add_argument("--static-jobs", type=int, default=2, help="pytest -n for the static tier")
    parser.add_argument(
        "--run-tier-junit",
        type=Path,
        help="take the run tier's time from this pytest --junitxml file",
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not write BENCHMARKS.md")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    host = machine()
    results = []
    for variant in variants():
        if args.only and args.only not in variant_id(variant):
            continue
        with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
            results.append(bench_variant(variant, args, Path(workdir)))
    static = None if args.skip_static_tier else time_static_tier(args.static_jobs)
    run_tier = run_tier_from_junit(args.run_tier_junit) if args.run_tier_junit else None
    text = report(host, results, static, run_tier, args)
    print(text)
    if not args.no_write:
        write(RESULTS, text)
    say(f"done in {time.perf_counter() - started:.0f} s")
    return 0 if static is None or static["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
