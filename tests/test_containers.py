"""Container tier: each variant's rendered Dockerfile and compose.yaml, unchanged, built and
run with the real Docker Compose v2; the app service runs the sample tasks on the worker
containers, and a killed worker container and a restarted broker container lose no task.

Runs last in `scripts/run-tests`; alone: `scripts/run-container-tests` (or `pytest -m
container`, or `--containers`). The variants (variants.container_variants) have every
python_version, broker and result_backend answer, and Flower and Beat, at least once.

Where it runs, and what differs from a user's `docker compose up`:
- On GitHub (the template's CI, job "containers"), with Docker and the official images
  the rendered files name: nothing differs.
- On the template's own machines there is no Docker engine and no registry can be
  reached. The tier runs on rootful podman through its Docker-compatible API socket
  (scripts/container-engine), and the images the rendered files name (python:<ver>-slim,
  and the redis, rabbitmq and postgres tags in compose.yaml) are NOT the official
  images there but STAND-INS BUILT ON THAT MACHINE under the same names
  (scripts/standin-images, tests/standins/): Debian bookworm made with debootstrap, with
  Debian's redis-server 7.0, RabbitMQ 3.10 and PostgreSQL 15 and small entrypoints that
  honour the official images' settings, or the machine's own CPython. They stand in for
  the official images' behaviour, not their versions: the servers' users have the
  official uids and gids, each entrypoint drops root as the official one does, and a
  command run in the RabbitMQ container (its healthcheck) runs as root, as there. Each
  image's labels say so. They are built once and stay cached in podman's storage.
- There, the harness also does three things podman does not (containerstack.py,
  apishim.py): it runs every container's healthcheck every second (nothing runs them
  under podman's API; a check that never passes still fails `up --wait`, and the failure
  names the service); between Compose and podman it reports API version 1.44 (Compose
  otherwise refuses `start_interval`), puts HOSTNAME into each container's environment
  as Docker does (the worker's check pings celery@$HOSTNAME), and gives each container's
  network by its id as Docker does (else Compose re-creates the running containers at
  each `run`); and it has Compose build with its classic builder, podman having no
  BuildKit. Nothing in that shim changes a result: exit codes, health and logs are
  podman's own.
"""

import json
import re
import shutil
import textwrap
import time
import urllib.error
import urllib.request
from base64 import b64encode
from datetime import datetime

import pytest

from harness.composefile import compose_model
from harness.containerstack import ComposeStack, engine_session, ensure_standins, preflight
from harness.localstack import free_port
from harness.variants import container_variants, variant_id
from harness.waiting import eventually

# One xdist group: under `scripts/run-tests --containers` (-n 4 --dist loadgroup) the
# tier still runs on one worker, one image build and one stack at a time.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group("containers")]

WAIT_SECONDS = 300
APP_SECONDS = 300
STACK_PARAMS = [pytest.param(v, id=variant_id(v)) for v in container_variants()]


def pytest_generate_tests(metafunc):
    """Every test that uses `stack` runs on each container variant, or on those that match
    its only_variants marker."""
    if "stack" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("only_variants")
    wanted = marker.kwargs if marker else {}
    params = [p for p in STACK_PARAMS if all(p.values[0][k] == v for k, v in wanted.items())]
    metafunc.parametrize("stack", params, indirect=True, scope="module")


def registry_images(project) -> set[str]:
    """The registry images a rendered project names: its Dockerfile's FROM lines and the
    images of the compose services that are not built."""
    dockerfile = (project / "Dockerfile").read_text(encoding="utf-8")
    images = set(re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE))
    services = compose_model(project)["services"].values()
    return images | {service["image"] for service in services if "build" not in service}


@pytest.fixture(scope="session")
def engine(bake, tmp_path_factory):
    """The container engine, with the stand-in images every container variant needs; the
    whole run stops at once, with one line, if the engine fails the preflight."""
    with engine_session() as running:
        started = time.monotonic()
        images = set()
        for variant in container_variants():
            images |= registry_images(bake(variant))
        ensure_standins(running, images)
        running.standin_seconds = time.monotonic() - started
        python_image = min(image for image in images if image.startswith("python:"))
        problem = preflight(running, python_image, tmp_path_factory.mktemp("preflight"))
        if problem:
            pytest.exit(f"container tier preflight: the engine cannot run the stacks: {problem}", 1)
        yield running


@pytest.fixture(scope="module")
def stack(request, engine, bake):
    """The variant's image built and every service but app up and healthy; always taken
    down with its volumes and image afterwards."""
    variant = request.param
    project = bake(variant)
    with ComposeStack(engine, project, FLOWER_HOST_PORT=str(free_port())) as running:
        running.variant = variant
        started = time.monotonic()
        running.compose("build", timeout=1200)
        running.build_seconds = time.monotonic() - started
        running.up_seconds = running.up_wait(long_running(running), WAIT_SECONDS)
        yield running


def long_running(stack: ComposeStack) -> list[str]:
    """Every service but the one-shot app."""
    return [name for name in stack.services if name != "app"]


@pytest.fixture(autouse=True)
def healthy(request):
    """Each test starts on a stack whose services are all up and healthy, whatever an
    earlier test did to it (the fault test kills a worker and restarts the broker), so
    that no test depends on the order the tests run in."""
    if "stack" in request.fixturenames:
        stack = request.getfixturevalue("stack")
        stack.up_wait(long_running(stack), WAIT_SECONDS)


def worker_messages(stack: ComposeStack) -> list[str]:
    """The messages of the worker containers' JSON log lines."""
    messages = []
    for line in stack.logs("worker", prefix=False).splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "message" in record:
            messages.append(record["message"])
    return messages


def test_app_runs_the_sample_tasks_on_the_workers(stack, engine, record_property):
    """`docker compose run --rm app` exits 0 with every sample task SUCCESS, and the worker
    containers are the ones that ran them."""
    started = time.monotonic()
    result = stack.compose("run", "--rm", "-T", "app", timeout=APP_SECONDS, check=False)
    app_seconds = time.monotonic() - started
    assert result.returncode == 0, (
        f"app exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    results = result.stdout.partition("results:")[2]
    slug = stack.project.name
    for name in ("add", "long_task", "process_data"):
        assert re.search(rf"^\s+{name}\(.*\)\s+SUCCESS\s", results, re.MULTILINE), result.stdout
    messages = "\n".join(worker_messages(stack))
    for name in ("add", "long_task", "process_data"):
        assert re.search(rf"Task {slug}\.tasks\.{name}\[[0-9a-f-]+\] succeeded", messages), name
    record_property(
        "figure",
        f"{variant_id(stack.variant)}: build {stack.build_seconds:.0f} s, "
        f"up --wait {stack.up_seconds:.0f} s, app run {app_seconds:.0f} s "
        f"(stand-ins ready after {engine.standin_seconds:.0f} s this session)",
    )


def test_the_running_worker_imports_the_code_compose_watch_syncs(stack):
    """`docker compose watch` copies an edit to the worker's develop.watch sync target;
    the worker must import its package from there, not from the image's installed copy,
    or the edit would change nothing. Asked of a running worker container, in its own
    working directory, as `celery --app` imports it."""
    slug = stack.project.name
    [sync] = [
        rule
        for rule in stack.services["worker"]["develop"]["watch"]
        if rule["action"] == "sync+restart"
    ]
    code = f"import {slug}, os; print('PACKAGE', os.path.dirname({slug}.__file__))"
    result = stack.compose("exec", "-T", "worker", "python", "-c", code, check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    [line] = [line for line in result.stdout.splitlines() if line.startswith("PACKAGE ")]
    assert line.removeprefix("PACKAGE ") == sync["target"], result.stdout


def test_a_healthcheck_that_never_passes_fails_up_wait(engine, bake, tmp_path):
    """The harness's healthcheck runs do not let a failing check pass: `up --wait` fails,
    naming the service. (A compose file of the test's own, not a rendered one, on the
    first variant's base image.)"""
    dockerfile = (bake(container_variants()[0]) / "Dockerfile").read_text(encoding="utf-8")
    image = re.search(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)[1]
    (tmp_path / "compose.yaml").write_text(
        textwrap.dedent(
            f"""\
            services:
              never-healthy:
                image: {image}
                command: ["sleep", "600"]
                healthcheck:
                  test: ["CMD", "false"]
                  interval: 2s
                  retries: 2
            """
        ),
        encoding="utf-8",
    )
    failure = pytest.raises(AssertionError, match=r"did not pass: never-healthy \(")
    with ComposeStack(engine, tmp_path) as stack, failure:
        stack.up_wait(["never-healthy"], wait_seconds=60)


# Sourced by RabbitMQ's start scripts (RABBITMQ_CONF_ENV_FILE), and by every RabbitMQ
# command: the server, which the image's entrypoint has started as the rabbitmq user,
# waits here until the test opens the gate; a command run as root (a healthcheck) passes.
RABBITMQ_GATE = """\
if [ "$(id -u)" != 0 ]; then
    touch /gate/reached
    while [ ! -e /gate/open ]; do sleep 0.2; done
fi
"""


def test_rabbitmq_healthcheck_before_the_servers_cookie_leaves_the_server_starting(
    engine, bake, tmp_path
):
    """The rendered RabbitMQ healthcheck, run by the engine as the container's user (root)
    after the entrypoint has started the server and before the server has written its
    Erlang cookie, leaves no cookie the server cannot read: the server starts once, without
    a restart, and the cookie is the rabbitmq user's (docker-library/rabbitmq#695). The
    rendered compose.yaml, with an override that only holds the server at that moment."""
    variant = next(v for v in container_variants() if v["broker"] == "rabbitmq")
    project = tmp_path / "project"
    shutil.copytree(bake(variant), project, symlinks=True)
    gate = project / "gate"
    gate.mkdir()
    gate.chmod(0o777)  # the server, as the rabbitmq user, marks that it reached the gate
    (gate / "rabbitmq-env.conf").write_text(RABBITMQ_GATE, encoding="utf-8")
    (project / "compose.override.yaml").write_text(
        textwrap.dedent(
            """\
            services:
              rabbitmq:
                environment:
                  RABBITMQ_CONF_ENV_FILE: /gate/rabbitmq-env.conf
                volumes:
                  - ./gate:/gate
            """
        ),
        encoding="utf-8",
    )
    with ComposeStack(engine, project) as stack:
        stack.compose("up", "--detach", "rabbitmq", timeout=180)
        (container,) = stack.containers("rabbitmq")
        eventually(
            lambda: (gate / "reached").exists(),
            WAIT_SECONDS,
            "the RabbitMQ server, started by the entrypoint, reaching the gate",
            interval=0.5,
        )

        def last_check() -> dict | None:  # the log holds the last few checks, in order
            return (stack.health(container)[1].get("Log") or [None])[-1]

        # A check that ends after the server reached the gate: one more run as root while
        # the server waits, after the entrypoint has handed it the data directory.
        before = last_check()
        eventually(
            lambda: last_check() != before,
            60,
            f"a healthcheck of {container} while its server waits at the gate",
            interval=0.5,
        )
        (gate / "open").touch()
        stack.up_wait(["rabbitmq"], WAIT_SECONDS)
        restarts = engine.run("inspect", "--format", "{{.RestartCount}}", container).strip()
        logs = stack.logs("rabbitmq")
        assert restarts == "0" and "eacces" not in logs, (
            f"{container} restarted {restarts} times; its server could not read the cookie "
            f"a healthcheck made:\n{logs[-4000:]}"
        )
        cookie = engine.run(
            "exec", container, "stat", "-c", "%U %a", "/var/lib/rabbitmq/.erlang.cookie"
        )
        assert cookie.split() == ["rabbitmq", "400"], cookie


@pytest.mark.only_variants(use_flower=True)
def test_flower_answers_with_its_password_only(stack):
    """Flower, published on 127.0.0.1, refuses a request without the password and answers
    one with it."""
    port = stack.env["FLOWER_HOST_PORT"]
    flower_env = stack.services["flower"]["environment"]
    credentials = b64encode(flower_env["FLOWER_BASIC_AUTH"].encode()).decode()

    def status_without_password() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    # URLError (an OSError) until Flower listens; HTTPError is answered above.
    status = eventually(
        status_without_password,
        60,
        f"Flower answering on port {port}",
        ignoring=(OSError,),
        interval=1,
    )
    assert status == 401, f"Flower answered {status} without a password"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", headers={"Authorization": f"Basic {credentials}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.mark.only_variants(use_beat=True)
def test_beat_sends_its_scheduled_task(stack):
    """The Beat container sends the sample schedule's add(20, 22); a worker returns 42."""
    slug = stack.project.name
    pattern = re.compile(rf"Task {slug}\.tasks\.add\[[0-9a-f-]+\] succeeded in [\d.e-]+s: 42$")
    # The schedule's first run is 60 s after Beat starts.
    eventually(
        lambda: any(pattern.search(message) for message in worker_messages(stack)),
        150,
        "a worker running Beat's add(20, 22)",
        interval=3,
    )


# Run inside an app container: the project's own code sends the tasks or reads results.
SUBMIT = """
import json
from {slug}.tasks import add, long_task
adds = [[add.delay(i, i).id, 2 * i] for i in range({adds})]
longs = [long_task.delay({seconds}).id for _ in range({longs})]
print("TASKS " + json.dumps({{"add": adds, "long_task": longs}}))
"""
COLLECT = """
import json, os
from datetime import timezone
from celery.result import AsyncResult
from {slug}.celery import app
ids = json.loads(os.environ["TASK_IDS"])
out = {{}}
for task_id in ids:
    result = AsyncResult(task_id, app=app)
    result.get(timeout={timeout}, propagate=False)
    done = result.date_done  # UTC; naive from the database backend
    if done is not None and done.tzinfo is None:
        done = done.replace(tzinfo=timezone.utc)
    out[task_id] = [result.state, result.result, done.isoformat() if done else None]
print("RESULTS " + json.dumps(out, default=str))
"""


def in_app_container(stack: ComposeStack, code: str, marker: str, timeout: float, **env) -> dict:
    """Run Python code in a one-off app container (no dependency started or recreated)
    and return the JSON it printed after `marker`."""
    env_args = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    result = stack.compose(
        "run", "--rm", "--no-deps", "-T", *env_args, "app", "python", "-c",
        textwrap.dedent(code), timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    lines = [line for line in result.stdout.splitlines() if line.startswith(marker + " ")]
    assert lines, f"no {marker} line in the output:\n{result.stdout}\n{result.stderr}"
    return json.loads(lines[-1].removeprefix(marker + " "))


def test_killed_worker_and_restarted_broker_lose_no_task(stack, engine, record_property):
    """With tasks in flight, a worker container SIGKILLed and the broker container
    restarted: every task still ends SUCCESS with its right result."""
    slug = stack.project.name
    broker = stack.variant["broker"]
    sent = in_app_container(
        stack, SUBMIT.format(slug=slug, adds=24, longs=4, seconds=8), "TASKS", timeout=120
    )
    # Kill a worker that is running a long_task, once one has started.
    running_long_task = eventually(
        lambda: [
            line for line in stack.logs("worker").splitlines() if "long_task: working" in line
        ],
        60,
        "a worker starting a long_task",
        interval=0.5,
    )
    victim = f"{stack.name}-{running_long_task[0].split('|')[0].strip()}"
    (broker_container,) = stack.containers(broker)
    broker_started = engine.run("inspect", "--format", "{{.State.StartedAt}}", broker_container)
    killed_at = time.time()
    engine.run("kill", "--signal", "KILL", victim)
    stack.compose("restart", broker, timeout=180)
    restarted_seconds = time.time() - killed_at
    assert (
        engine.run("inspect", "--format", "{{.State.StartedAt}}", broker_container)
        != broker_started
    ), f"{broker_container} was not restarted"
    ids = [task_id for task_id, _ in sent["add"]] + sent["long_task"]
    results = in_app_container(
        stack, COLLECT.format(slug=slug, timeout=240), "RESULTS", timeout=420,
        TASK_IDS=json.dumps(ids),
    )  # fmt: skip
    wrong = {}
    for task_id, expected in sent["add"]:
        state, value, _ = results[task_id]
        if (state, value) != ("SUCCESS", expected):
            wrong[task_id] = (state, value, expected)
    for task_id in sent["long_task"]:
        state, value, _ = results[task_id]
        if state != "SUCCESS" or value.get("current") != 8:
            wrong[task_id] = (state, value)
    assert not wrong, f"tasks lost or wrong after the faults: {wrong}"
    last_done = max(datetime.fromisoformat(done).timestamp() for *_, done in results.values())
    record_property(
        "figure",
        f"{variant_id(stack.variant)} fault: {len(ids)} tasks in flight "
        f"({len(sent['add'])} add, {len(sent['long_task'])} long_task of 8 s), worker "
        f"{victim} SIGKILLed, {broker} restarted ({restarted_seconds:.1f} s after the kill); "
        f"lost 0; last task done {last_done - killed_at:.0f} s after the kill",
    )
