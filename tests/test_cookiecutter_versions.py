"""Static tier: the template works with every cookiecutter it admits, not only the
locked one. The oldest (the floor in pyproject.toml's test group) renders every covering
variant byte for byte as the locked, newest one does, and refuses and keeps answers
alike: the template relies on cookiecutter's public behaviour only."""

import re
import tomllib
from pathlib import Path

import pytest

from harness.baking import bake_cli
from harness.tools import BIN, run
from harness.variants import (
    TEMPLATE_DIR,
    covering_variants,
    deployment_variants,
    variant_id,
)

TEST_GROUP = tomllib.loads((TEMPLATE_DIR / "pyproject.toml").read_text(encoding="utf-8"))[
    "dependency-groups"
]["test"]
[OLDEST] = [
    match[1] for spec in TEST_GROUP if (match := re.fullmatch(r"cookiecutter>=([\d.]+),<\d+", spec))
]
# Made at bake time with random content (the post-generation hook).
SECRETS = {Path(".env"), Path("k8s", "overlays", "dev", "secrets.env")}


@pytest.fixture(scope="module")
def oldest_cookiecutter(tmp_path_factory) -> Path:
    """The oldest cookiecutter the template admits, in a virtual environment of its own."""
    venv = tmp_path_factory.mktemp("oldest-cookiecutter") / "venv"
    install = [BIN / "uv", "pip", "install", "--quiet", "--python", venv]
    # Byte-compiled at install, or each of its command-line bakes would compile its
    # imports again where Python may not write bytecode caches (PYTHONDONTWRITEBYTECODE).
    for command in (
        [BIN / "uv", "venv", "--quiet", "--python", BIN / "python", venv],
        [*install, "--compile-bytecode", f"cookiecutter=={OLDEST}"],
    ):
        result = run(*command)
        assert result.returncode == 0, result.stdout + result.stderr
    return venv / "bin" / "cookiecutter"


def files(project: Path) -> dict[Path, bytes]:
    return {
        path.relative_to(project): path.read_bytes()
        for path in sorted(project.rglob("*"))
        if path.is_file() and path.relative_to(project) not in SECRETS
    }


def bake_with_both(tmp_path: Path, oldest: Path, **answers) -> dict[str, tuple]:
    """{"newest": (output_dir, result), "oldest": ...}: the same answers, each version."""
    bakes = {}
    for name, command in (("newest", None), ("oldest", oldest)):
        extra = {"command": command} if command else {}
        bakes[name] = (tmp_path / name, bake_cli(tmp_path / name, **extra, **answers))
    return bakes


@pytest.mark.parametrize(
    "variant", covering_variants() + deployment_variants("use_kubernetes"), ids=variant_id
)
def test_oldest_cookiecutter_renders_what_the_newest_does(
    oldest_cookiecutter, bake_answers, tmp_path, variant
):
    """Every file of the project, its name and its bytes, is the same with both: the
    oldest's command line given the answers as text, the newest's cookiecutter() given
    them as Python values."""
    answers = {k: str(v).lower() if isinstance(v, bool) else v for k, v in variant.items()}
    result = bake_cli(tmp_path, command=oldest_cookiecutter, **answers)
    assert result.returncode == 0, result.stdout + result.stderr
    output_dir, error = bake_answers(**variant)
    assert error is None, repr(error)
    [oldest_project], [newest_project] = tmp_path.iterdir(), output_dir.iterdir()
    assert oldest_project.name == newest_project.name
    oldest, newest = files(oldest_project), files(newest_project)
    assert sorted(oldest) == sorted(newest)
    assert [path for path in newest if oldest[path] != newest[path]] == []


@pytest.mark.parametrize(
    ("field", "value"), [("project_slug", ""), ("project_slug", "class"), ("worker_count", "0")]
)
def test_oldest_refuses_with_the_same_line(oldest_cookiecutter, tmp_path, field, value):
    """A bad answer stops the oldest cookiecutter with the newest's one line, and nothing
    is left on disk."""
    lines = []
    for name, (output_dir, result) in bake_with_both(
        tmp_path, oldest_cookiecutter, **{field: value}
    ).items():
        assert result.returncode != 0, f"{name}: {result.stdout}{result.stderr}"
        assert not output_dir.exists() or list(output_dir.iterdir()) == [], name
        lines.append([line for line in result.stderr.splitlines() if line.startswith("Error:")])
    newest, oldest = lines
    assert newest == oldest, lines
    [line] = newest
    assert line.startswith(f"Error: {field} {value!r} is not allowed; allowed: "), line


def test_oldest_cookiecutter_keeps_answers_literal(oldest_cookiecutter, tmp_path):
    """Jinja in an answer is text with the oldest cookiecutter too."""
    result = bake_cli(tmp_path, command=oldest_cookiecutter, description="{{ 7*7 }}")
    assert result.returncode == 0, result.stdout + result.stderr
    pyproject = tomllib.loads((tmp_path / "celery_service" / "pyproject.toml").read_text())
    assert pyproject["project"]["description"] == "{{ 7*7 }}"
