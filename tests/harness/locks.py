"""The uv locks the template carries in templates/uv-locks/: one per distinct set of
dependencies and requires-python that the answers put in the rendered pyproject.toml.
The rendered uv.lock is the one named by cookiecutter.json's `__uv_lock`, with the
project's own name put in (local_extensions.uv_lock_for); scripts/lock makes them."""

import itertools
from pathlib import Path

from cookiecutter.environment import StrictEnvironment
from cookiecutter.generate import generate_context
from cookiecutter.prompt import prompt_for_config
from jinja2 import FileSystemLoader

from harness.variants import AXES, DEPLOYMENT_TARGETS, TEMPLATE_DIR

LOCKS_DIR = TEMPLATE_DIR / "templates" / "uv-locks"
PROJECT_TEMPLATE = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"


def every_answer_set() -> list[dict]:
    """Every combination of every choice and boolean, deployment targets included."""
    axes = {**AXES, **{name: [False, True] for name in DEPLOYMENT_TARGETS}}
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def lock_path(lock_name: str) -> Path:
    return LOCKS_DIR / f"{lock_name}.lock"


def rendered_pyproject(answers: dict) -> tuple[str, str]:
    """(`__uv_lock`, pyproject.toml) as cookiecutter renders them for these answers, without
    rendering the rest of the project (whose uv.lock needs the lock that may not exist yet)."""
    context = generate_context(
        context_file=str(TEMPLATE_DIR / "cookiecutter.json"), extra_context=answers
    )
    context["cookiecutter"] = prompt_for_config(context, no_input=True)
    environment = StrictEnvironment(context=context, keep_trailing_newline=True)
    environment.loader = FileSystemLoader(str(PROJECT_TEMPLATE))
    pyproject = environment.get_template("pyproject.toml").render(**context)
    return context["cookiecutter"]["__uv_lock"], pyproject
