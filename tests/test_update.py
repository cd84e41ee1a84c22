"""Static tier: a rendered project takes in later template changes with cruft, as its
README says, keeping its own changes and its .env."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.variants import TEMPLATE_DIR

CRUFT = Path(sys.executable).with_name("cruft")
# What a clone of the template would not have.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"
)
TEMPLATE_CHANGE = "This paragraph came with a later version of the template."
PROJECT_CHANGE = "# A line of the project's own, made after the bake."


def git_env(home: Path) -> dict[str, str]:
    # A home of its own: no user's git or cookiecutter configuration takes part.
    return {
        **os.environ,
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }


def run(env: dict, cwd: Path, *command: str | Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result


def commit_all(env: dict, repo: Path, message: str) -> None:
    for command in (["add", "--all"], ["commit", "--quiet", "--message", message]):
        result = run(env, repo, "git", *command)
        assert result.returncode == 0, result.stdout + result.stderr


def test_cruft_update_brings_template_changes(tmp_path):
    """cruft update brings a template change and keeps the project's changes and its .env."""
    env = git_env(tmp_path / "home")
    (tmp_path / "home").mkdir()

    # The template as a git repository of its own, as users would clone it.
    template = tmp_path / "template"
    shutil.copytree(TEMPLATE_DIR, template, ignore=NOT_IN_A_CLONE)
    assert run(env, template, "git", "init", "--quiet").returncode == 0
    commit_all(env, template, "template v1")

    answers = json.dumps({"broker": "rabbitmq", "result_backend": "postgresql", "use_flower": True})
    created = run(
        env, tmp_path, CRUFT, "create", "--no-input", "--extra-context", answers,
        "--output-dir", tmp_path / "out", template,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    project = tmp_path / "out" / "celery_service"
    env_before = (project / ".env").read_text(encoding="utf-8")
    assert run(env, project, "git", "init", "--quiet").returncode == 0
    with (project / "celery_service" / "tasks.py").open("a", encoding="utf-8") as tasks:
        tasks.write(f"\n{PROJECT_CHANGE}\n")
    commit_all(env, project, "the project, with a change of its own")
    checked = run(env, project, CRUFT, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # A later template version adds a paragraph to the rendered README.
    readme = template / "{{cookiecutter.project_slug}}" / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + f"\n{TEMPLATE_CHANGE}\n", "utf-8")
    commit_all(env, template, "template v2")
    checked = run(env, project, CRUFT, "check")
    assert checked.returncode != 0, "cruft check missed the new template commit"

    updated = run(env, project, CRUFT, "update", "--skip-apply-ask")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert TEMPLATE_CHANGE in (project / "README.md").read_text(encoding="utf-8")
    assert PROJECT_CHANGE in (project / "celery_service" / "tasks.py").read_text(encoding="utf-8")
    assert (project / ".env").read_text(encoding="utf-8") == env_before
    assert not list(project.rglob("*.rej"))
    checked = run(env, project, CRUFT, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The answers survive in .cruft.json, so the next update renders the same variant.
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["context"]["cookiecutter"]["broker"] == "rabbitmq"
