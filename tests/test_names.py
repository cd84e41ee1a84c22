"""Static tier: the package names users type, not only the default. Every name answer_rules.py
accepts renders a project that passes its own `make lint` (ruff check, ruff format
--check, mypy); every other name is refused with one line. The run tier runs the longest
and the shortest name too (variants.run_variants)."""

import shutil
import string

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.baking import assert_refused
from harness.tools import BIN, mypy, run
from harness.variants import (
    AXES,
    DEPLOYMENT_TARGETS,
    SLUG_MAX_LENGTH,
    deployment_variants,
    edge_slugs,
    variant_id,
    with_defaults,
)

# The Python code varies by the package name and by the blocks the covering variants
# render between them, Kubernetes' liveness code included (see test_types.py).
NAMED_VARIANTS = [
    {**variant, "project_slug": slug}
    for slug in edge_slugs()
    for variant in deployment_variants("use_kubernetes")
]
# Lowercase identifiers of every length up to a few past the limit, drawn evenly by length
# (a regex strategy draws mostly short ones, where a too-long line never shows).
IDENTIFIERS = (
    st.integers(1, SLUG_MAX_LENGTH + 5)
    .flatmap(
        lambda size: st.text(
            string.ascii_lowercase + string.digits + "_", min_size=size, max_size=size
        )
    )
    .filter(lambda text: not text[0].isdigit())
)
# Every optional part on, deployment targets (Kubernetes) included: every folder and
# every module the project can have.
EVERYTHING_ON = with_defaults(
    **{name: True for name, values in AXES.items() if isinstance(values[0], bool)},
    **dict.fromkeys(DEPLOYMENT_TARGETS, True),
)


def lint_problems(project) -> str:
    """What ruff check and ruff format --check find in the project; empty when clean."""
    found = []
    for command in (["check", "."], ["format", "--check", "--diff", "."]):
        result = run(BIN / "ruff", *command, cwd=project)
        if result.returncode != 0:
            found.append(result.stdout + result.stderr)
    return "\n".join(found)


def test_the_longest_allowed_name_is_tested():
    """The names tried include one of exactly the longest length answer_rules.py allows."""
    assert max(len(slug) for slug in edge_slugs()) == SLUG_MAX_LENGTH


@pytest.mark.parametrize("variant", NAMED_VARIANTS, ids=variant_id)
def test_accepted_name_renders_a_ruff_clean_project(bake, variant):
    """ruff check and ruff format --check pass whatever the package name's length or form."""
    assert not lint_problems(bake(variant))


@pytest.mark.parametrize(
    "variant",
    [{**EVERYTHING_ON, "project_slug": slug} for slug in edge_slugs()],
    ids=variant_id,
)
def test_accepted_name_renders_a_type_clean_project(bake, variant, mypy_cache):
    """mypy passes whatever the package name, names of the package's own modules included."""
    project = bake(variant)
    result = mypy(project, mypy_cache)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_project_folder_is_refused_as_a_name(bake, bake_answers):
    """A package named like one of the project's top-level folders would be rendered into
    it; answer_rules.py refuses each such name with one line, and nothing is left on disk."""
    project = bake(EVERYTHING_ON)
    folders = sorted(path.name for path in project.iterdir() if path.is_dir())
    for name in folders:
        if name == project.name or name.startswith("."):
            continue  # the package itself; a dot-name is no identifier anyway
        output_dir, error = bake_answers(project_slug=name)
        assert_refused(output_dir, error, "project_slug", name)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(slug=IDENTIFIERS)
def test_any_identifier_renders_ruff_clean_or_is_refused(bake_answers, slug):
    """Any lowercase identifier, up to a few characters past the limit, renders a ruff-clean
    project or is refused with one line naming project_slug."""
    output_dir, error = bake_answers(project_slug=slug)
    event("rendered" if error is None else "refused")
    if error is None:
        assert len(slug) <= SLUG_MAX_LENGTH
        assert not lint_problems(output_dir / slug)
    else:
        assert_refused(output_dir, error, "project_slug", slug)
    shutil.rmtree(output_dir)
