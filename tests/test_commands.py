"""Static tier: the rendered Makefile's one-word commands, and scripts/local.py (`make local`)
starting exactly the commands compose.yaml has."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.composefile import COMPOSE_BINARY, compose_model
from harness.variants import covering_variants, variant_id

# The Makefile and scripts/local.py vary by project_slug alone; the compose.yaml that
# local.py reads varies by every choice, which the covering variants render.
pytestmark = pytest.mark.parametrize("variant", covering_variants(), ids=variant_id)

SERVERS = {"redis", "rabbitmq", "postgres"}


def make(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def recipe(project: Path, *args: str) -> list[str]:
    """The commands `make -n` would run, one per line."""
    result = make(project, "-n", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_every_target_expands_to_its_commands(bake, variant):
    """Each target parses (recipe lines start with tabs) and runs the commands the README
    names; plain `make` lists every target."""
    project = bake(variant)
    expected = {
        "up": ["docker compose up --build"],
        "down": ["docker compose down"],
        "logs": ["docker compose logs --follow"],
        "test": ["uv run --locked pytest"],
        "lint": [
            "uv run --locked ruff check .",
            "uv run --locked ruff format --check .",
            "uv run --locked mypy",
        ],
        "local": ["uv run --locked python scripts/local.py"],
    }
    for target, commands in expected.items():
        assert recipe(project, target) == commands, target
    assert recipe(project, "scale", "N=4")[-1] == (
        "docker compose up --detach --wait --scale worker=4 worker"
    )
    listed = make(project).stdout
    assert {line.split()[0] for line in listed.splitlines()} == {"help", "scale", *expected}
    for line in (project / "Makefile").read_text(encoding="utf-8").splitlines():
        assert not line.startswith(" "), f"a recipe line must start with a tab: {line!r}"


def test_scale_without_n_says_how(bake, variant):
    """`make scale` without N stops before Docker, saying how to give the number."""
    result = make(bake(variant), "scale")
    assert result.returncode != 0
    assert "error: say how many workers, e.g. make scale N=4" in result.stderr
    assert "docker" not in result.stdout


def test_make_test_runs_what_ci_tests_with(bake, variant):
    """`make test` is the command CI's test job runs."""
    project = bake(variant)
    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    ci_test = workflow["jobs"]["test"]["steps"][-1]["run"]
    assert recipe(project, "test") == [ci_test]


def local_plan(project: Path, path_dir: Path) -> dict:
    """scripts/local.py --print, with only `path_dir` on PATH."""
    result = subprocess.run(
        [sys.executable, "scripts/local.py", "--print"],
        cwd=project,
        env={"PATH": str(path_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def with_docker_compose(directory: Path) -> Path:
    """A `docker` on PATH whose `docker compose` is the real Compose v2 binary."""
    directory.mkdir()
    docker = directory / "docker"
    docker.write_text(f'#!/bin/sh\n[ "$1" = compose ] && shift\nexec "{COMPOSE_BINARY}" "$@"\n')
    docker.chmod(0o755)
    return directory


def test_local_starts_the_commands_compose_has(bake, variant, tmp_path):
    """`make local` starts each non-server service's compose.yaml command (each worker replica
    once, with its own node name), with its environment pointed at 127.0.0.1, whether it
    reads them through `docker compose config` or from compose.yaml itself."""
    project = bake(variant)
    services = compose_model(project)["services"]
    from_compose = local_plan(project, with_docker_compose(tmp_path / "with-docker"))
    (tmp_path / "no-docker").mkdir()
    from_file = local_plan(project, tmp_path / "no-docker")
    assert from_compose["source"] == "docker compose config"
    assert from_file["source"] == "compose.yaml"
    # The file read by local.py itself resolves as Compose resolves it.
    assert from_file["processes"] == from_compose["processes"]

    processes = from_compose["processes"]
    assert {p["service"] for p in processes} == set(services) - SERVERS
    replicas = services["worker"]["deploy"]["replicas"]
    workers = [p for p in processes if p["service"] == "worker"]
    assert len(workers) == replicas
    for process in processes:
        service = services[process["service"]]
        if process["service"] == "worker" and replicas > 1:
            *argv, hostname = process["argv"]
            assert hostname == f"--hostname={process['name']}@%h"
        else:
            argv = process["argv"]
        assert argv == service["command"], process["name"]
        assert process["one_shot"] == (service.get("restart") == "no"), process["name"]
        assert set(process["environment"]) == set(service["environment"])
        for name, value in service["environment"].items():
            local_value = process["environment"][name]
            for server in SERVERS:
                value = value.replace(f"@{server}:", "@127.0.0.1:")
            if value.startswith("/tmp/"):  # the container's own /tmp: the process's own file
                value = f"{process['name']}.{value.removeprefix('/tmp/')}"
            assert local_value == value, name
    # The app runs last, in the foreground, once the others are started.
    assert [p["service"] for p in processes if p["one_shot"]] == ["app"]
    assert processes[-1]["service"] == "app"
    assert len({p["name"] for p in processes}) == len(processes)


def test_local_without_a_setting_stops_with_one_line(bake, variant, tmp_path):
    """Without .env, local.py (reading compose.yaml itself) stops with exit status 2 and
    compose.yaml's message naming the missing setting, as Compose would."""
    clone = tmp_path / "project"
    shutil.copytree(bake(variant), clone)
    (clone / ".env").unlink()
    result = subprocess.run(
        [sys.executable, "scripts/local.py"],
        cwd=clone,
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: required variable ")
    assert line.endswith("in .env (see .env.example)")
    assert not (clone / ".local").exists()
