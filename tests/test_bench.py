"""The rendered project's benchmark command, `python -m <slug>.bench`: it exists, and its
JSON has the documented keys. No speed is asserted here: figures belong in BENCHMARKS.md
(scripts/bench), where the machine's load is written beside them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from harness.localstack import LocalStack
from harness.variants import with_defaults

# The template's own environment has Celery, redis-py and PyYAML, which is all the
# bench needs; the baked package is imported from the project directory.
VENV = Path(sys.prefix)
FIGURE_KEYS = {"add_throughput_per_s", "latency_p50_ms", "latency_p99_ms", "cold_start_s"}


def bench(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"{project.name}.bench", *args],
        cwd=project,
        # The bake is shared with the other tests: leave no __pycache__ in it.
        env={**env, "PYTHONPATH": str(project), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_bench_command_has_help(bake):
    """`python -m <slug>.bench --help` works and offers --json."""
    project = bake(with_defaults())
    env = {
        "PATH": os.environ["PATH"],
        "CELERY_BROKER_URL": "redis://localhost:1/0",
        "CELERY_RESULT_BACKEND": "redis://localhost:1/1",
    }
    result = bench(project, "--help", env=env)
    assert result.returncode == 0, result.stderr
    assert "--json" in result.stdout


def test_bench_json_has_the_figures_and_leaves_no_queue(bake, tmp_path):
    """With a tiny load on a private Redis, --json prints one object with the four figures,
    its workers run compose.yaml's worker command, and its queue is gone afterwards."""
    variant = with_defaults(broker="redis", result_backend="redis")
    project = bake(variant)
    with LocalStack(project, VENV, tmp_path, variant) as stack:
        small = ["--tasks=20", "--rounds=1", "--latency-calls=5", "--cold-starts=1"]
        result = bench(project, "--json", *small, "--long-seconds=0", env=stack.environment("app"))
        assert result.returncode == 0, result.stdout + result.stderr
        figures = json.loads(result.stdout)
        assert set(figures) >= FIGURE_KEYS
        assert all(figures[key] > 0 for key in FIGURE_KEYS), figures
        compose_worker = stack.services["worker"]["command"]
        assert figures["worker_command"].endswith(" ".join(compose_worker[1:]))
        assert figures["workers"] == stack.services["worker"]["deploy"]["replicas"]
        host, port = stack.addresses["redis"]
        password = stack.services["redis"]["environment"]["REDISCLI_AUTH"]
        client = redis.Redis(host=host, port=port, password=password)
        try:
            assert not [key for key in client.keys("*") if b"bench-" in key]
        finally:
            client.close()
