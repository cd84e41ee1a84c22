"""Static tier: each rendered project ships a uv.lock that matches its pyproject.toml, and
its image, its CI and its Makefile install from that lock, never from version ranges."""

import re
import shlex
import tomllib

import pytest
import yaml
from uv import find_uv_bin

from harness.baking import assert_refused
from harness.localstack import find_python
from harness.locks import LOCKS_DIR, every_answer_set, lock_path, rendered_pyproject
from harness.tools import run
from harness.variants import (
    ALL_VARIANTS,
    covering_variants,
    deployment_variants,
    edge_slugs,
    variant_id,
    with_defaults,
)

# Every answer that changes pyproject.toml (ALL_VARIANTS), Kubernetes, which must not, and
# the package names, which uv.lock holds too.
LOCK_VARIANTS = [
    *ALL_VARIANTS,
    *deployment_variants("use_kubernetes"),
    *(with_defaults(project_slug=slug, use_flower=True) for slug in edge_slugs()),
]


def uv_lock_check(project) -> tuple[int, str]:
    """`uv lock --check`, the test that `uv sync --locked` and `uv run --locked` make before
    they install: does uv.lock still satisfy pyproject.toml? Offline and without a cache:
    a lock that matches needs neither, one that does not fails either way."""
    version = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "requires-python"
    ].removeprefix(">=")
    result = run(
        find_uv_bin(),
        "lock",
        "--check",
        "--offline",
        "--no-cache",
        "--python",
        find_python(version),
        cwd=project,
    )
    return result.returncode, result.stderr


# uv_lock_check's answers by (pyproject.toml, uv.lock): uv reads only those two here, and
# many variants (Beat, Kubernetes, Flower) render both alike.
CHECKED: dict[tuple[bytes, bytes], tuple[int, str]] = {}


def uv_lock_check_once(project) -> tuple[int, str]:
    """uv_lock_check, once per distinct pair of files in this test process."""
    key = ((project / "pyproject.toml").read_bytes(), (project / "uv.lock").read_bytes())
    if key not in CHECKED:
        CHECKED[key] = uv_lock_check(project)
    return CHECKED[key]


@pytest.mark.parametrize("variant", LOCK_VARIANTS, ids=variant_id)
def test_rendered_lock_matches_its_pyproject(bake, variant):
    """uv accepts the rendered uv.lock as up to date with the rendered pyproject.toml."""
    returncode, stderr = uv_lock_check_once(bake(variant))
    assert returncode == 0, f"uv.lock is stale; run scripts/lock\n{stderr}"


def test_every_answer_set_has_a_lock_and_every_lock_is_used():
    """templates/uv-locks holds exactly the locks that the answers name (`__uv_lock`)."""
    named = {lock_path(rendered_pyproject(answers)[0]) for answers in every_answer_set()}
    assert named == set(LOCKS_DIR.glob("*.lock"))


@pytest.mark.parametrize("path", sorted(LOCKS_DIR.glob("*.lock")), ids=lambda path: path.stem)
def test_floors_are_the_tested_versions(path):
    """Each dependency's lowest allowed version in pyproject.toml is the one in the lock,
    which the template's tests ran: no floor allows an older, untested release."""
    lock = tomllib.loads(path.read_text(encoding="utf-8"))
    own = next(package for package in lock["package"] if package["source"] == {"editable": "."})
    requirements = own["metadata"]["requires-dist"] + [
        requirement
        for group in own["metadata"].get("requires-dev", {}).values()
        for requirement in group
    ]
    locked: dict[str, set[str]] = {}
    for package in lock["package"]:
        locked.setdefault(package["name"], set()).add(package["version"])
    for requirement in requirements:
        name, specifier = requirement["name"], requirement["specifier"]
        floor = re.search(r"(?:>=|==)([^,]+)", specifier)
        assert floor, f"{name} {specifier}: no lowest version"
        assert locked[name] == {floor[1]}, (
            f"{path.name}: {name} {specifier}, locked {sorted(locked[name])}: make the"
            " locked version the floor in the rendered pyproject.toml, then run scripts/lock"
        )


def dockerfile_steps(project) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = (project / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


# The Dockerfile varies by python_version and project_slug; the covering variants have
# every version.
@pytest.mark.parametrize("variant", covering_variants(), ids=variant_id)
def test_image_installs_the_lock_dependencies_first(bake, variant):
    """The build copies pyproject.toml and uv.lock, installs the locked dependencies (a
    layer that a code change leaves cached), then copies the code and installs it, from the
    same lock, not editable: the run stage copies the environment without /src."""
    project = bake(variant)
    steps = dockerfile_steps(project)
    build = steps[: next(i for i, step in enumerate(steps[1:], 1) if step.startswith("FROM"))]
    copies = [i for i, step in enumerate(build) if step.startswith("COPY")]
    syncs = [i for i, step in enumerate(build) if step.startswith("RUN uv sync")]
    assert build[copies[0]] == "COPY pyproject.toml uv.lock ./"
    assert build[syncs[0]] == "RUN uv sync --locked --no-install-project --no-dev"
    assert build[syncs[1]] == "RUN uv sync --locked --no-dev --no-editable"
    code = f"COPY {project.name} ./{project.name}"
    assert copies[0] < syncs[0] < build.index(code) < syncs[1]
    assert len(syncs) == 2 and not [step for step in build if "uv pip" in step]
    assert "uv.lock" not in (project / ".dockerignore").read_text(encoding="utf-8")


def uv_commands(lines: list[str]) -> list[list[str]]:
    return [words for line in lines if (words := shlex.split(line))[:1] == ["uv"]]


# The Makefile and the workflow vary by project_slug and the servers, which the covering
# variants render.
@pytest.mark.parametrize("variant", covering_variants(), ids=variant_id)
def test_makefile_and_ci_install_from_the_lock(bake, variant):
    """Every uv command that `make` or CI runs refuses a stale lock (--locked) instead of
    quietly re-resolving, so tests run the versions the image gets."""
    project = bake(variant)
    targets = ("test", "lint", "local")
    recipes = run("make", "--no-print-directory", "-n", *targets, cwd=project)
    assert recipes.returncode == 0, recipes.stderr
    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    steps = [
        line
        for job in workflow["jobs"].values()
        for step in job["steps"]
        for line in step.get("run", "").splitlines()
    ]
    commands = uv_commands(recipes.stdout.splitlines()) + uv_commands(steps)
    assert commands
    for words in commands:
        assert words[1] in {"run", "sync"} and "--locked" in words, shlex.join(words)


def test_a_stale_lock_is_found(bake, tmp_path):
    """The check above passes on a copy of a project and fails once the copy's
    pyproject.toml allows another range of versions than its uv.lock recorded."""
    project = bake(ALL_VARIANTS[0])
    clone = tmp_path / project.name
    clone.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        (clone / name).write_bytes((project / name).read_bytes())
    assert uv_lock_check(clone)[0] == 0
    pyproject = (clone / "pyproject.toml").read_text(encoding="utf-8")
    loosened = re.sub(r'"rich>=([^,"]*),<16"', r'"rich>=\1,<17"', pyproject)
    assert loosened != pyproject
    (clone / "pyproject.toml").write_text(loosened, encoding="utf-8")
    assert uv_lock_check(clone)[0] != 0


def test_a_package_name_in_the_lock_is_refused_as_a_slug(bake, bake_answers):
    """A package named like one that uv.lock holds would stand in for it: answer_rules.py refuses
    every such name with one line, and nothing is left on disk."""
    project = bake(ALL_VARIANTS[0])
    lock = tomllib.loads((project / "uv.lock").read_text(encoding="utf-8"))
    names = {
        package["name"].replace("-", "_")
        for package in lock["package"]
        if package["source"] != {"editable": "."}
    }
    slugs = sorted(name for name in names if re.fullmatch(r"[a-z][a-z0-9_]*", name))
    assert slugs
    for slug in slugs:
        output_dir, error = bake_answers(**ALL_VARIANTS[0], project_slug=slug)
        assert_refused(output_dir, error, "project_slug", slug)
