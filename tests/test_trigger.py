"""Run tier: KEDA's trigger, read on the real broker, counts the tasks the workers have
not taken yet; the liveness files the probes check are kept fresh by real processes.

No cluster runs here, so KEDA does not either: manifests.keda_queue_length reads the
metric the way KEDA's scaler does, with the parameters the rendered
TriggerAuthentication takes from the Secret. The Secret's values are the ones the
workers of this local stack use (their broker URL from compose.yaml, pointed at the
local server; the static tier proves the dev Secret's address and password are that
URL's). The stack is the run tier's LocalStack: no second copy of it.
"""

import os
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import manifests
import pytest
from localstack import LocalStack, make_venv
from variants import deployment_variants, variant_id

pytestmark = pytest.mark.run

TASKS = 25
TIMEOUT = 90


def _one_per_broker() -> list[dict]:
    """A use_kubernetes variant per broker, Beat on where there is one (its probe too)."""
    chosen: dict[str, dict] = {}
    for variant in sorted(deployment_variants("use_kubernetes"), key=lambda v: not v["use_beat"]):
        chosen.setdefault(variant["broker"], variant)
    return list(chosen.values())


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(v, id=variant_id(v), marks=pytest.mark.xdist_group(f"trigger-{variant_id(v)}"))
        for v in _one_per_broker()
    ],
)
def stack(request, bake, tmp_path_factory):
    """The variant's broker and backend, running, with no worker yet."""
    variant = request.param
    project = bake(variant)
    workdir = tmp_path_factory.mktemp(f"trigger-{variant_id(variant)}")
    venv = make_venv(project, variant["python_version"], workdir / "venv")
    with LocalStack(project, venv, workdir) as running:
        running.variant = variant
        running.celery = running.client()
        yield running


def eventually(check, timeout: float, what: str):
    """check() until it returns something true; fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"gave up after {timeout} s waiting for {what}"
            return value
        time.sleep(0.5)


def trigger_secret(stack: LocalStack) -> dict[str, str]:
    """The Secret's keys the trigger can read, with this stack's workers' values."""
    broker = stack.environment("worker")["CELERY_BROKER_URL"]
    url = urlsplit(broker)
    return {
        "CELERY_BROKER_URL": broker,
        "REDIS_ADDRESS": f"{url.hostname}:{url.port}",
        "REDIS_PASSWORD": url.password or "",
    }


def test_keda_reads_every_waiting_task_then_zero(stack, record_property):
    """With no worker KEDA's metric equals the tasks sent; with workers it falls to 0."""
    objects = manifests.build(stack.project, "dev")
    secret = trigger_secret(stack)
    results = [
        stack.celery.send_task(f"{stack.project.name}.tasks.add", args=(i, 1)) for i in range(TASKS)
    ]
    readings = []

    def all_counted() -> bool:
        readings.append(manifests.keda_queue_length(objects, secret))
        return readings[-1] >= TASKS

    eventually(all_counted, 30, f"the trigger to count {TASKS} tasks")
    time.sleep(2)  # nothing else arrives, nothing is counted twice
    readings.append(manifests.keda_queue_length(objects, secret))
    assert readings[-1] == TASKS, readings
    stack.start_workers()

    def drained() -> bool:
        readings.append(manifests.keda_queue_length(objects, secret))
        return readings[-1] == 0

    eventually(drained, TIMEOUT, "the workers to take every task")
    assert [r.get(timeout=TIMEOUT) for r in results] == [i + 1 for i in range(TASKS)]
    broker = stack.variant["broker"]
    record_property("figure", f"{broker} trigger readings: sent {TASKS}, read {readings}")


def probe(stack: LocalStack, component: str, alive: Path) -> tuple[list[str], dict[str, str]]:
    """The component's liveness probe command from the dev overlay, and the environment
    that points it at a local file."""
    objects = manifests.build(stack.project, "dev")
    for _, container in manifests.containers(objects):
        if container["name"] == component:
            variable = f"CELERY_{component.upper()}_LIVENESS_FILE"
            assert any(v["name"] == variable for v in container["env"]), variable
            command = container["livenessProbe"]["exec"]["command"]
            return command, {**os.environ, variable: str(alive)}
    raise AssertionError(f"no {component} container")


def passes(probe_and_env: tuple[list[str], dict[str, str]]) -> bool:
    command, env = probe_and_env
    return subprocess.run(command, env=env, check=False, timeout=10).returncode == 0


def test_worker_keeps_its_liveness_file_fresh(stack):
    """A real worker keeps its probe's file fresh while it runs and removes it when it stops."""
    alive = stack.workdir / "worker.alive"
    command = probe(stack, "worker", alive)
    assert not passes(command)
    process = stack.start(
        "worker",
        "liveness-worker",
        f"--hostname=liveness@{socket.gethostname()}",
        CELERY_WORKER_LIVENESS_FILE=str(alive),
    )
    eventually(alive.exists, TIMEOUT, "the worker to write its liveness file")
    first = alive.stat().st_mtime
    eventually(lambda: alive.stat().st_mtime > first, 30, "the worker to touch the file again")
    assert passes(command)
    assert process.stop(), "the worker did not stop"
    assert not alive.exists()
    assert not passes(command)


def test_beat_keeps_its_liveness_file_fresh(stack):
    """Beat's scheduler touches the file its probe checks on every tick."""
    assert stack.variant["use_beat"], "_one_per_broker chooses variants with Beat"
    alive = stack.workdir / "beat.alive"
    command = probe(stack, "beat", alive)
    process = stack.start("beat", "liveness-beat", CELERY_BEAT_LIVENESS_FILE=str(alive))
    eventually(alive.exists, TIMEOUT, "Beat to write its liveness file")
    assert passes(command)
    assert process.stop(), "Beat did not stop"
