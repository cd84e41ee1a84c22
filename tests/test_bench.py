"""The template's benchmark (bench/, run by `make bench`): its driver measures a generated
project and stock Celery on real servers and prints the documented figures, and a
rendered project carries none of it. No speed is asserted here: figures belong in
BENCHMARKS.md, where the machine's load is written beside them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from harness.localstack import LocalStack
from harness.tools import BIN, run
from harness.variants import TEMPLATE_DIR, with_defaults

FIGURE_KEYS = {"add_throughput_per_s", "drain_per_s", "short_behind_long_s"}
FIGURE_KEYS |= {"latency_p50_ms", "latency_p99_ms", "cold_start_s"}
# A run of a few seconds: the figures exist and are positive, nothing more.
SMALL = ["--tasks=20", "--rounds=1", "--latency-calls=5", "--cold-starts=1", "--long-seconds=0"]


def driver(*args: str, env: dict[str, str], pythonpath: list[Path]) -> subprocess.CompletedProcess:
    """bench/driver.py in the template's environment (Celery, redis-py and the generated
    project's own dependencies), as bench/__main__.py runs it in a project's."""
    path = os.pathsep.join(str(entry) for entry in [TEMPLATE_DIR, *pythonpath])
    return subprocess.run(
        [sys.executable, "-m", "bench.driver", *args],
        cwd=TEMPLATE_DIR,
        # The bake is shared with the other tests: leave no __pycache__ in it.
        env={**env, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_driver_has_help():
    """`python -m bench.driver --help` works and offers --json, --app, --worker-command."""
    result = driver("--help", env={"PATH": os.environ["PATH"]}, pythonpath=[])
    assert result.returncode == 0, result.stderr
    assert {"--json", "--app", "--worker-command"} <= set(result.stdout.split())


# Run tier: it starts a Redis server and workers (the static tier's CI job has no servers).
@pytest.mark.run
def test_driver_measures_generated_and_stock_and_leaves_no_queue(bake, tmp_path):
    """With a tiny load on a private Redis, the driver prints its figures for the
    generated app (compose.yaml's worker command) and for stock Celery (bench/stock.py),
    and its queues are gone afterwards."""
    variant = with_defaults(broker="redis", result_backend="redis")
    project = bake(variant)
    with LocalStack(project, Path(sys.prefix), tmp_path, variant) as stack:
        env = stack.environment("app")
        stock_worker = [str(BIN / "celery"), "--app=bench.stock", "worker", "--loglevel=INFO"]
        sides = {
            project.name: stack.command("worker"),
            "bench.stock": stock_worker,
        }
        for app, worker in sides.items():
            result = driver(
                "--json",
                f"--app={app}",
                f"--worker-command={subprocess.list2cmdline(worker)}",
                "--workers=2",
                *SMALL,
                env=env,
                pythonpath=[project],
            )
            assert result.returncode == 0, result.stdout + result.stderr
            figures = json.loads(result.stdout)
            assert set(figures) >= FIGURE_KEYS
            assert all(figures[key] > 0 for key in FIGURE_KEYS), figures
            assert figures["worker_command"].split() == worker
            assert figures["workers"] == 2
        host, port = stack.addresses["redis"]
        password = stack.services["redis"]["environment"]["REDISCLI_AUTH"]
        client = redis.Redis(host=host, port=port, password=password)
        try:
            assert not [key for key in client.keys("*") if b"bench-" in key]
        finally:
            client.close()


def test_bench_code_is_lint_and_type_clean(mypy_cache):
    """ruff (check, format) and mypy, configured by the template's pyproject.toml, pass on
    bench/, the stock Celery app included."""
    for command in (("ruff", "check", "bench"), ("ruff", "format", "--check", "bench")):
        result = run(BIN / command[0], *command[1:], cwd=TEMPLATE_DIR)
        assert result.returncode == 0, result.stdout + result.stderr
    result = run(BIN / "mypy", "--cache-dir", mypy_cache, cwd=TEMPLATE_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout, result.stdout


def test_rendered_project_carries_no_benchmark(bake):
    """A rendered project keeps the Celery core and nothing of the benchmark: no module,
    no make target, no word of it in any file."""
    project = bake(with_defaults())
    mentions = [
        path
        for path in project.rglob("*")
        if path.is_file() and "bench" in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert not mentions
