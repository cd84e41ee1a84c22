"""Answers to the prompts: good ones bake, bad ones are refused with one clear line."""

import tomllib

import pytest
import yaml

from harness.baking import assert_refused, bake_cli
from harness.variants import SLUG_MAX_LENGTH

# Refused by answer_rules.py; the command line prints its line after "Error: " (see
# test_cookiecutter_versions.py, which compares that line across cookiecutter versions).
BAD_ANSWERS = [
    ("worker_count", "0"),
    ("worker_count", "-3"),
    ("worker_count", "abc"),
    ("worker_count", "1000"),
    ("project_slug", ""),
    ("project_slug", "my-app"),
    ("project_slug", "9lives"),
    ("project_slug", "class"),
    ("project_slug", "celery"),
    ("project_slug", "redis"),
    ("project_slug", "kombu"),
    ("project_slug", "json"),
    ("project_slug", "tests"),
    ("project_slug", "Celery_Service"),
    ("project_slug", "x" * (SLUG_MAX_LENGTH + 1)),
    ("project_slug", "scripts"),
    # Taken literally, not rendered to 49, and then not an identifier.
    ("project_slug", "{{ 7*7 }}"),
]


# Outside a choice's list: cookiecutter refuses these itself, before answer_rules.py.
BAD_CHOICES = [
    ("python_version", "2.7"),
    ("broker", "kafka"),
    ("result_backend", "mongodb"),
]


@pytest.mark.parametrize(("field", "value"), BAD_ANSWERS, ids=lambda v: repr(v))
def test_bad_answer_is_refused_with_a_line_naming_the_field(bake_answers, field, value):
    """A bad answer stops the bake with one line naming the field, the value and what is
    allowed, and leaves nothing on disk."""
    output_dir, error = bake_answers(**{field: value})
    assert_refused(output_dir, error, field, value)


@pytest.mark.parametrize(("field", "value"), BAD_CHOICES, ids=lambda v: repr(v))
def test_answer_outside_the_choices_is_refused(tmp_path, field, value):
    """An answer that is not one of a choice's values stops the command line's bake (after
    cookiecutter's traceback) with a line naming the field, the value and the choices, and
    leaves nothing on disk."""
    result = bake_cli(tmp_path, **{field: value})
    assert result.returncode != 0, result.stdout + result.stderr
    last_line = result.stderr.splitlines()[-1]
    assert f"{value} provided for choice variable {field}, but the choices are" in last_line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("worker_count", ["1", "64"])
def test_worker_count_limits_are_accepted(bake_answers, worker_count):
    """The smallest and largest worker counts bake."""
    _, error = bake_answers(worker_count=worker_count)
    assert error is None, repr(error)


def test_slug_is_derived_from_the_project_name(cookies):
    """The package name follows the project name unless given."""
    result = cookies.bake(extra_context={"project_name": "Image Resizer 2"})
    assert result.exit_code == 0, result.exception
    assert result.project_path.name == "image_resizer_2"
    assert (result.project_path / "image_resizer_2" / "tasks.py").is_file()


def test_each_bake_has_its_own_secrets(cookies):
    """.env gets fresh random secrets at every bake; none is left as a placeholder."""
    answers = {"broker": "rabbitmq", "result_backend": "postgresql", "use_flower": True}
    secrets = []
    for _ in range(2):
        result = cookies.bake(extra_context=answers)
        assert result.exit_code == 0, result.exception
        env = dict(
            line.split("=", 1)
            for line in (result.project_path / ".env").read_text().splitlines()
            if line and not line.startswith("#")
        )
        secrets.append({k: v for k, v in env.items() if k.endswith("PASSWORD")})
    first, second = secrets
    assert set(first) == {"RABBITMQ_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_PASSWORD"}
    for key, value in first.items():
        assert len(value) >= 32 and value != "generate-a-secret"
        assert value != second[key]
    assert first["RABBITMQ_PASSWORD"] != first["POSTGRES_PASSWORD"]


def test_team_config_file_gives_the_defaults_and_the_command_line_wins(tmp_path):
    """A --config-file with default_context answers for a team, as the README shows; an
    answer on the command line still overrides it."""
    config = tmp_path / "team-celery.yaml"
    config.write_text(
        "default_context:\n"
        '  author_name: "Payments team"\n'
        '  broker: "rabbitmq"\n'
        '  result_backend: "postgresql"\n'
        "  use_flower: true\n"
    )
    output = tmp_path / "out"
    result = bake_cli(
        output, "--config-file", config, project_name="Invoice mailer", use_flower="no"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    project = output / "invoice_mailer"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["authors"] == [{"name": "Payments team"}]
    services = yaml.safe_load((project / "compose.yaml").read_text())["services"]
    assert {"rabbitmq", "postgres"} <= set(services)
    assert "flower" not in services
