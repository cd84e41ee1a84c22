"""The test tools installed beside pytest, and how the static tests call them."""

import re
import subprocess
import sys
from pathlib import Path

# Unrendered variables name cookiecutter; unrendered blocks keep their braces.
TEMPLATE_SYNTAX = re.compile(r"cookiecutter\.|\{%|%\}")


def unrendered(project: Path) -> list[str]:
    """Every file name or file that still holds Jinja or cookiecutter syntax, and every
    empty directory (an optional part's folder left behind)."""
    found = []
    for path in project.rglob("*"):
        if TEMPLATE_SYNTAX.search(path.name):
            found.append(f"{path}: name")
        elif path.is_file() and TEMPLATE_SYNTAX.search(path.read_text(encoding="utf-8")):
            found.append(f"{path}: content")
        elif path.is_dir() and not any(path.iterdir()):
            found.append(f"{path}: empty directory")
    return found


# ruff, mypy, hadolint, check-jsonschema ...: the locked test tools in pytest's environment.
BIN = Path(sys.executable).parent


def run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command to the end, output captured; the caller checks the exit status."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def mypy(project: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    """mypy as the rendered project's `make lint` runs it, configured by its pyproject.toml.
    A cache shared between projects saves re-reading Celery's stubs (seconds a project);
    mypy still checks every project file anew, its contents being its own."""
    return subprocess.run(
        [BIN / "mypy", "--cache-dir", cache_dir],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
