"""Static tier: the CI workflows (the template's own and each rendered project's) and the
rendered pre-commit hooks are valid, locked down, and run what they say they run."""

import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from harness.composefile import compose_model, run_compose
from harness.tools import BIN, run
from harness.variants import (
    ALL_VARIANTS,
    AXES,
    TEMPLATE_DIR,
    covering_variants,
    deployment_variants,
    variant_id,
)

TEMPLATE_WORKFLOW = TEMPLATE_DIR / ".github" / "workflows" / "ci.yml"
RENDERED_WORKFLOW = Path(".github", "workflows", "ci.yml")
# An action pinned to a full commit, with the release it is in a comment, e.g.
# "uses: actions/checkout@<40 hex digits> # v5.0.0".
PINNED_USES = re.compile(
    r"uses: (?P<action>[\w.-]+/[\w.-]+)@(?P<sha>[0-9a-f]{40}) # v\d+\.\d+\.\d+$", re.MULTILINE
)
SERVERS = {"redis", "rabbitmq", "postgres"}
# The Kubernetes job is rendered only with use_kubernetes, which ALL_VARIANTS leaves off.
WORKFLOW_VARIANTS = ALL_VARIANTS + deployment_variants("use_kubernetes")
GATE = "all-green"


def load_workflow(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def steps_using(job: dict, action: str) -> list[dict]:
    """The job's steps that use `action` ("actions/cache"), at whatever pinned commit."""
    return [step for step in job["steps"] if step.get("uses", "").startswith(action + "@")]


def step_commands(job: dict) -> list[str]:
    return [step["run"].strip() for step in job["steps"] if "run" in step]


def distinct_rendered_files(bake, relative: Path) -> list[Path]:
    """One baked copy of each distinct content the file takes over all variants."""
    by_content: dict[str, Path] = {}
    for variant in WORKFLOW_VARIANTS:
        path = bake(variant) / relative
        by_content.setdefault(path.read_text(encoding="utf-8"), path)
    return list(by_content.values())


def assert_locked_down(path: Path) -> None:
    """No token permission by default, contents: read where a job checks out, actions
    pinned to commits, only pull requests' runs cancelled by newer ones, and a final job
    that fails unless every other job succeeded."""
    workflow = load_workflow(path)
    assert workflow["permissions"] == {}, path
    # Only a pull request's newer push cancels a run; every push to main runs to the end.
    cancel = workflow["concurrency"]["cancel-in-progress"]
    assert cancel == "${{ github.event_name == 'pull_request' }}", path
    for line in path.read_text(encoding="utf-8").splitlines():
        if "uses:" in line:
            assert PINNED_USES.search(line.strip()), f"{path}: not pinned: {line.strip()}"
    jobs = workflow["jobs"]
    for name, job in jobs.items():
        checkouts = steps_using(job, "actions/checkout")
        assert job.get("permissions", {}) == ({"contents": "read"} if checkouts else {}), name
        for step in checkouts:
            # The token stays out of .git/config, where later steps could read it.
            assert step["with"]["persist-credentials"] is False, name
    gate = jobs[GATE]
    assert gate["if"] == "always()"
    assert set(gate["needs"]) == set(jobs) - {GATE}
    assert "${{ join(needs.*.result, ' ') }}" in gate["steps"][-1]["env"]["RESULTS"]


def test_workflows_pass_the_github_schema(bake):
    """The template's workflow and every distinct rendered one pass the GitHub workflow schema."""
    workflows = [TEMPLATE_WORKFLOW, *distinct_rendered_files(bake, RENDERED_WORKFLOW)]
    result = run(
        BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pre_commit_config_is_valid(bake):
    """Every distinct rendered .pre-commit-config.yaml passes pre-commit's own validation."""
    configs = distinct_rendered_files(bake, Path(".pre-commit-config.yaml"))
    result = run(BIN / "pre-commit", "validate-config", *configs)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actions_are_pinned_alike(bake):
    """Each action is pinned to one and the same commit in every workflow."""
    pins: dict[str, set[str]] = {}
    for path in [TEMPLATE_WORKFLOW, *distinct_rendered_files(bake, RENDERED_WORKFLOW)]:
        for match in PINNED_USES.finditer(path.read_text(encoding="utf-8")):
            pins.setdefault(match["action"], set()).add(match["sha"])
    assert pins, "no pinned action found"
    assert all(len(shas) == 1 for shas in pins.values()), pins


def test_template_workflow_runs_both_tiers_with_every_python():
    """The template's CI runs scripts/run-tests once per tier, with every choosable Python;
    only the run tier's job has servers."""
    assert_locked_down(TEMPLATE_WORKFLOW)
    jobs = load_workflow(TEMPLATE_WORKFLOW)["jobs"]
    static, run_tier = jobs["static"], jobs["run"]
    assert step_commands(static) == ['scripts/run-tests -m "not run"']
    assert "services" not in static
    (command,) = step_commands(run_tier)
    assert re.search(r"scripts/run-tests -m run$", command), command
    for job in (static, run_tier):
        (setup,) = steps_using(job, "actions/setup-python")
        assert set(setup["with"]["python-version"].split()) == set(AXES["python_version"])
    # The run tier's PostgreSQL superuser is the service container's.
    postgres_password = run_tier["services"]["postgres"]["env"]["POSTGRES_PASSWORD"]
    admin = dict(
        item.split("=", 1) for item in run_tier["steps"][-1]["env"]["TEST_POSTGRES_ADMIN"].split()
    )
    assert admin["password"] == postgres_password and admin["user"] == "postgres"


def test_template_workflow_caches_uv_downloads_where_uv_runs():
    """Each tier job that runs uv keeps uv's downloads in a cache keyed by every lock."""
    jobs = load_workflow(TEMPLATE_WORKFLOW)["jobs"]
    for name in ("static", "run"):
        job = jobs[name]
        (cache,) = steps_using(job, "actions/cache")
        assert cache["with"]["path"] == "${{ env.UV_CACHE_DIR }}", name
        assert "hashFiles('uv.lock', 'templates/uv-locks/*.lock')" in cache["with"]["key"], name
        assert job["env"]["UV_CACHE_DIR"].startswith("${{ runner.temp }}"), name
    # sudo drops the environment: the run tier's command hands the cache's path on.
    assert '"UV_CACHE_DIR=$UV_CACHE_DIR"' in step_commands(jobs["run"])[0]


def test_template_workflow_runs_the_container_tier_with_docker():
    """The template's CI runs the container tier's script on a runner with Docker, where it
    uses the official images rather than this machine's stand-ins; podman's kube play
    tests are left to machines whose engine is podman 4.3."""
    job = load_workflow(TEMPLATE_WORKFLOW)["jobs"]["containers"]
    assert job["runs-on"].startswith("ubuntu-")
    assert step_commands(job) == ['scripts/run-container-tests -m "container and not kube_play"']


def test_template_tool_pins_match_the_rendered_dev_group(bake):
    """The project's CI and hooks pin ruff, mypy and the stubs as the static tier runs them."""
    template = tomllib.loads((TEMPLATE_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    template_pins = {req.split("==")[0]: req for req in template["dependency-groups"]["test"]}
    project = bake(ALL_VARIANTS[0])
    rendered = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    checkers = {"ruff", "mypy", "celery-types", "types-PyYAML"}
    dev = {re.split(r"[=<>]", req)[0]: req for req in rendered["dependency-groups"]["dev"]}
    assert checkers <= set(dev)
    for name in checkers:
        assert dev[name] == template_pins[name]


@pytest.mark.parametrize("variant", WORKFLOW_VARIANTS, ids=variant_id)
def test_rendered_workflow_is_locked_down(bake, variant):
    """The rendered CI grants no permission by default, pins actions and ends in a gate job."""
    assert_locked_down(bake(variant) / RENDERED_WORKFLOW)


def test_rendered_workflow_caches_uv_downloads(bake):
    """Every rendered job that runs uv keeps uv's downloads in a cache keyed by uv.lock."""
    for path in distinct_rendered_files(bake, RENDERED_WORKFLOW):
        for name, job in load_workflow(path)["jobs"].items():
            if not any("uv run" in command for command in step_commands(job)):
                continue
            (cache,) = steps_using(job, "actions/cache")
            assert cache["with"]["path"] == "~/.cache/uv", (path, name)
            assert "hashFiles('uv.lock')" in cache["with"]["key"], (path, name)


# The servers depend on broker and result_backend alone; the covering variants have every
# pair of them, and the Compose parser is too slow to run on all variants a second time.
@pytest.mark.parametrize("variant", covering_variants(), ids=variant_id)
def test_rendered_workflow_tests_against_the_variants_servers(bake, variant):
    """The test job runs the tests on compose.yaml's servers and images, with its URL schemes."""
    project = bake(variant)
    job = load_workflow(project / RENDERED_WORKFLOW)["jobs"]["test"]
    services = compose_model(project)["services"]
    assert set(job["services"]) == SERVERS & set(services)
    for name, service in job["services"].items():
        assert service["image"] == services[name]["image"], name
    if "rabbitmq" in job["services"]:
        # Both run as root in the official image: the same guarded check.
        kind, check = services["rabbitmq"]["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        assert f'--health-cmd "{check}"' in job["services"]["rabbitmq"]["options"]
    compose_env = services["worker"]["environment"]
    for setting in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        ci_url, compose_url = urlsplit(job["env"][setting]), urlsplit(compose_env[setting])
        assert ci_url.scheme == compose_url.scheme, setting
        assert ci_url.hostname == "localhost", setting
        # compose.yaml's URL names its server by service name; CI reaches it on the
        # port that service publishes.
        published = job["services"][compose_url.hostname]["ports"]
        assert f"{ci_url.port}:{compose_url.port}" in published, setting
    assert step_commands(job)[-1] == "uv run --locked pytest"


@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=variant_id)
def test_rendered_workflow_uses_the_chosen_python(bake, variant):
    """Every job that sets up Python sets up the variant's version, and uv uses it."""
    workflow = load_workflow(bake(variant) / RENDERED_WORKFLOW)
    assert workflow["env"]["UV_PYTHON"] == variant["python_version"]
    jobs = workflow["jobs"].values()
    setups = [step for job in jobs for step in steps_using(job, "actions/setup-python")]
    assert setups
    assert all(step["with"]["python-version"] == variant["python_version"] for step in setups)


@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=variant_id)
def test_rendered_workflow_brings_the_stack_up_and_down(bake, variant):
    """The stack job writes .env, starts, runs the app, and always removes all with volumes."""
    project = bake(variant)
    job = load_workflow(project / RENDERED_WORKFLOW)["jobs"]["stack"]
    commands = step_commands(job)
    order = [
        "python3 scripts/make_env.py",
        "docker compose build",
        "docker compose up --wait --wait-timeout 300"
        " $(docker compose config --services | grep -vx app)",
        "docker compose run --rm app",
    ]
    assert [command for command in commands if command in order] == order
    teardown = job["steps"][-1]
    assert teardown["if"] == "always()"
    assert shlex.split(teardown["run"])[:4] == ["docker", "compose", "down", "--volumes"]


@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=variant_id)
def test_pre_commit_hooks_run_what_ci_lint_runs(bake, variant):
    """The pre-commit hook and CI's lint job both run `make lint`, the one list of the checks
    (test_commands.py proves what it runs)."""
    project = bake(variant)
    lint = load_workflow(project / RENDERED_WORKFLOW)["jobs"]["lint"]
    hooks_config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    entries = [hook["entry"] for repo in hooks_config["repos"] for hook in repo["hooks"]]
    assert entries == ["make lint"]
    assert [command for command in step_commands(lint) if not command.startswith("pip")] == [
        "make lint"
    ]


# .env.example has one block per server and one for Flower; the covering variants render each.
@pytest.mark.parametrize("variant", covering_variants(), ids=variant_id)
def test_ci_env_command_makes_a_usable_env(bake, variant, tmp_path):
    """make_env.py writes a new .env that Compose accepts and refuses to overwrite one."""
    project = bake(variant)
    clone = tmp_path / project.name
    subprocess.run(["cp", "-r", project, clone], check=True)
    (clone / ".env").unlink()
    made = run("python3", "scripts/make_env.py", cwd=clone)
    assert made.returncode == 0, made.stderr
    env_text = (clone / ".env").read_text(encoding="utf-8")
    assert "generate-a-secret" not in env_text
    assert (clone / ".env").stat().st_mode & 0o777 == 0o600
    baked_secrets = set((project / ".env").read_text(encoding="utf-8").splitlines())
    new_secret_lines = set(env_text.splitlines()) - baked_secrets
    assert new_secret_lines, "the new .env repeats the baked secrets"
    assert run_compose(clone, "config", "--quiet").returncode == 0
    again = run("python3", "scripts/make_env.py", cwd=clone)
    assert again.returncode != 0 and ".env exists" in again.stderr
    assert (clone / ".env").read_text(encoding="utf-8") == env_text


# The Dockerfile varies by python_version only; the covering variants have every version.
@pytest.mark.parametrize("variant", covering_variants(), ids=variant_id)
def test_ci_installs_the_uv_of_the_dockerfile_and_the_template(bake, variant):
    """CI's uv install step asks pip for exactly the uv the Dockerfile and the template use."""
    project = bake(variant)
    jobs = load_workflow(project / RENDERED_WORKFLOW)["jobs"]
    installs = {cmd for job in jobs.values() if "steps" in job for cmd in step_commands(job)}
    installs = {command for command in installs if command.startswith("pip install")}
    assert len(installs) == 1, installs
    # The step's own shell line, with pip replaced by a function that prints its arguments.
    shown = run("bash", "-c", "pip() { printf '%s\\n' \"$@\"; }; " + installs.pop(), cwd=project)
    template = tomllib.loads((TEMPLATE_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    template_uv = next(r for r in template["dependency-groups"]["test"] if r.startswith("uv=="))
    assert shown.stdout.splitlines() == ["install", template_uv], shown.stdout + shown.stderr
