"""Static tier: every variant bakes into a project whose files lint and parse clean."""

import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from harness.composefile import compose_model, run_compose
from harness.tools import BIN, run, unrendered
from harness.variants import ALL_VARIANTS, COOKIECUTTER_JSON, variant_id

pytestmark = pytest.mark.parametrize("variant", ALL_VARIANTS, ids=variant_id)


def expected_services(variant: dict) -> set[str]:
    wanted = {"worker", "app", variant["broker"]}
    if variant["result_backend"] == "postgresql":
        wanted.add("postgres")
    else:
        wanted.add(variant["result_backend"])
    if variant["use_flower"]:
        wanted.add("flower")
    if variant["use_beat"]:
        wanted.add("beat")
    return wanted


def test_no_template_syntax_is_left(bake, variant):
    """No file name or file content keeps Jinja or cookiecutter syntax; no folder is empty."""
    assert not unrendered(bake(variant))


def test_python_is_ruff_clean(bake, variant):
    """ruff check and ruff format --check pass on the rendered project."""
    project = bake(variant)
    for command in (["check", "."], ["format", "--check", "."]):
        result = run(BIN / "ruff", *command, cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr


def test_pyproject_states_the_choices(bake, variant):
    """pyproject.toml parses and asks for the chosen Python and only the needed packages;
    .python-version names that Python, so that uv makes the local environment with the
    image's version, not the newest one it finds or can download."""
    project = bake(variant)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    version = variant["python_version"]
    assert pyproject["project"]["requires-python"] == f">={version}"
    assert (project / ".python-version").read_text(encoding="utf-8") == f"{version}\n"
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + version.replace(".", "")
    requirements = " ".join(pyproject["project"]["dependencies"])
    uses_redis = "redis" in (variant["broker"], variant["result_backend"])
    assert ("celery[redis]" in requirements) == uses_redis
    assert ("hiredis" in requirements) == uses_redis
    assert ("psycopg" in requirements) == (variant["result_backend"] == "postgresql")
    assert ("sqlalchemy" in requirements) == (variant["result_backend"] == "postgresql")
    assert ("flower" in requirements) == variant["use_flower"]


def test_compose_is_valid_and_has_the_chosen_services(bake, variant):
    """The real Compose v2 parser accepts compose.yaml, which has exactly the chosen services."""
    project = bake(variant)
    raw = yaml.safe_load((project / "compose.yaml").read_text(encoding="utf-8"))
    assert "version" not in raw
    # compose_model fails the test with Compose's message if Compose refuses the file.
    services = compose_model(project)["services"]
    assert set(services) == expected_services(variant)
    assert services["worker"]["deploy"]["replicas"] == int(
        variant.get("worker_count", COOKIECUTTER_JSON["worker_count"])
    )


def test_compose_services_follow_the_house_rules(bake, variant):
    """Exec-form commands, pinned images, healthchecks gating start-up, no published broker."""
    project = bake(variant)
    services = compose_model(project)["services"]
    infrastructure = {"redis", "rabbitmq", "postgres"} & set(services)
    for name, service in services.items():
        assert "container_name" not in service, name
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
        if name in infrastructure:
            assert re.search(r":\d+\.\d+", image), (name, image)
            assert "ports" not in service, name
            assert service["healthcheck"]["test"], name
        else:
            command = service["command"]
            assert isinstance(command, list) and command[0] in {"celery", "python"}, name
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] == "service_healthy", name
    assert services["worker"]["healthcheck"]["test"]
    # Start-up order: servers healthy, then workers healthy, then the app.
    assert set(services["app"]["depends_on"]) == {"worker"}
    for name in set(services) - infrastructure - {"app"}:
        assert set(services[name]["depends_on"]) == infrastructure, name
    if "flower" in services:
        assert [port["host_ip"] for port in services["flower"]["ports"]] == ["127.0.0.1"]


def test_compose_logs_json_and_rotates_every_log(bake, variant):
    """Every Celery service has LOG_FORMAT=json; every service's log is rotated by size,
    all with the same settings (one anchor)."""
    project = bake(variant)
    services = compose_model(project)["services"]
    infrastructure = {"redis", "rabbitmq", "postgres"}
    for name, service in services.items():
        if name not in infrastructure:
            assert service["environment"]["LOG_FORMAT"] == "json", name
    rotations = [service.get("logging") for service in services.values()]
    first = rotations[0]
    assert first["driver"] == "json-file"
    assert re.fullmatch(r"\d+[kmg]", first["options"]["max-size"])
    assert int(first["options"]["max-file"]) >= 2
    assert all(rotation == first for rotation in rotations), rotations


def test_compose_refuses_to_start_without_secrets(bake, variant):
    """Without .env, Compose stops with a message naming the missing setting."""
    project = bake(variant)
    result = run_compose(project, "--env-file", "/dev/null", "config", "--quiet")
    assert result.returncode != 0
    assert re.search(r"required variable \w+ is missing a value: set \w+ in \.env", result.stderr)


def run_stage(project) -> list[tuple[str, str]]:
    """The Dockerfile's last stage, the image that runs: (instruction, arguments) pairs."""
    lines = (project / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ").splitlines()
    steps = [tuple(line.split(maxsplit=1)) for line in lines if line.strip() and line[0] != "#"]
    last_from = max(i for i, (instruction, _) in enumerate(steps) if instruction == "FROM")
    return steps[last_from:]


def test_compose_watch_syncs_the_code_the_containers_import(bake, variant):
    """`docker compose watch` (compose.yaml's develop section, read by the real Compose
    parser) copies an edit to the package into the worker and Beat containers and restarts
    them, and rebuilds on pyproject.toml and uv.lock; every watched path exists. The copy
    lands in the image's working directory, where the run stage keeps the package's source
    owned by the user the containers run as: `celery --app` and `python -m` import the
    package from there before the installed one."""
    project = bake(variant)
    slug = project.name
    services = compose_model(project)["services"]
    stage = run_stage(project)
    workdir = [arguments for instruction, arguments in stage if instruction == "WORKDIR"][-1]
    user = [arguments for instruction, arguments in stage if instruction == "USER"][-1]
    assert ("COPY", f"--chown={user} {slug} ./{slug}") in stage
    watched = {name for name, service in services.items() if "develop" in service}
    assert watched == {"worker", "beat"} & set(services)
    for name in watched:
        rules = {
            Path(rule["path"]).relative_to(project.resolve()).as_posix(): rule
            for rule in services[name]["develop"]["watch"]
        }
        assert set(rules) == {slug, "pyproject.toml", "uv.lock"}, name
        assert all((project / path).exists() for path in rules), name
        assert rules[slug]["action"] == "sync+restart", name
        assert rules[slug]["target"] == f"{workdir}/{slug}", name
        assert rules["pyproject.toml"]["action"] == rules["uv.lock"]["action"] == "rebuild"


def test_dockerfile_passes_hadolint(bake, variant):
    """The Dockerfile starts from the chosen Python and is clean under hadolint (warnings)."""
    project = bake(variant)
    dockerfile = (project / "Dockerfile").read_text(encoding="utf-8")
    assert f"FROM python:{variant['python_version']}-slim" in dockerfile
    result = run(BIN / "hadolint", "--failure-threshold", "warning", "Dockerfile", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_secrets_stay_out_of_git_and_images(bake, variant):
    """.env exists with no placeholder left, and git and docker both ignore it."""
    project = bake(variant)
    assert "=generate-a-secret" not in (project / ".env").read_text(encoding="utf-8")
    assert ".env" in (project / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in (project / ".dockerignore").read_text(encoding="utf-8").splitlines()


def test_flower_reads_queue_depth_from_rabbitmq_without_a_published_port(bake, variant):
    """With RabbitMQ and Flower, the rabbitmq service turns the management plugin and its
    queue statistics on, publishes no port, and Flower's FLOWER_BROKER_API reaches it on
    the project's network with the RabbitMQ user and password from .env. Without that
    pair, no management plugin is turned on and Flower reads Redis's lists itself."""
    project = bake(variant)
    model = compose_model(project)
    services = model["services"]
    flower_env = services.get("flower", {}).get("environment", {})
    if variant["broker"] != "rabbitmq" or not variant["use_flower"]:
        assert "FLOWER_BROKER_API" not in flower_env
        assert "configs" not in model and "configs" not in services.get("rabbitmq", {})
        return
    rabbitmq = services["rabbitmq"]
    assert "ports" not in rabbitmq
    files = {
        mount["target"]: model["configs"][mount["source"]]["content"]
        for mount in rabbitmq["configs"]
    }
    plugins = files["/etc/rabbitmq/enabled_plugins"].strip().removesuffix(".")
    # An Erlang list: the image's own rabbitmq_prometheus kept, the management plugin added.
    assert set(plugins.strip("[]").split(",")) == {"rabbitmq_management", "rabbitmq_prometheus"}
    # The file of the image's that turns the metrics collector off, replaced.
    collector = files["/etc/rabbitmq/conf.d/20-management_agent.disable_metrics_collector.conf"]
    assert collector.split() == ["management_agent.disable_metrics_collector", "=", "false"]
    settings = dict(
        line.split("=", 1)
        for line in (project / ".env").read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    )
    api = urlsplit(flower_env["FLOWER_BROKER_API"])
    assert (api.scheme, api.hostname, api.port, api.path) == ("http", "rabbitmq", 15672, "/api/")
    credentials = (settings["RABBITMQ_USER"], settings["RABBITMQ_PASSWORD"])
    assert (api.username, api.password) == credentials
