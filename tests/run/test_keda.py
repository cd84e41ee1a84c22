"""Run tier: the Kubernetes manifests' containers as local processes. KEDA's trigger,
read on the real broker, counts the tasks the workers have not taken yet; KEDA's and the
HPA's rule, applied to real worker processes started with the Deployment's command,
scales them out and back without cutting off a task; the liveness files the probes check
are kept fresh by real processes.

No cluster runs here, so KEDA does not either: manifests.keda_queue_length reads the
metric the way KEDA's scaler does, with the parameters the rendered
TriggerAuthentication takes from the Secret. The Secret's values are the ones the
workers of this local stack use (their broker URL from compose.yaml, pointed at the
local server; the static tier proves the dev Secret's address and password are that
URL's). The stack is the run tier's LocalStack: no second copy of it.
"""

import itertools
import math
import os
import socket
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from harness import manifests
from harness.jsonlogs import log_records
from harness.kubelet import kubelet_process, pod_node
from harness.localstack import LocalStack, make_venv
from harness.variants import deployment_variants, variant_id
from harness.waiting import eventually

pytestmark = pytest.mark.run

TASKS = 25
TIMEOUT = 90


def _one_per_broker() -> list[dict]:
    """A use_kubernetes variant per broker, Beat on where there is one (its probe too),
    with 4 workers so that KEDA has room to scale (maxReplicaCount follows worker_count)."""
    chosen: dict[str, dict] = {}
    for variant in sorted(deployment_variants("use_kubernetes"), key=lambda v: not v["use_beat"]):
        chosen.setdefault(variant["broker"], {**variant, "worker_count": "4"})
    return list(chosen.values())


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(v, id=variant_id(v), marks=pytest.mark.xdist_group(f"trigger-{variant_id(v)}"))
        for v in _one_per_broker()
    ],
)
def module_servers(request, bake, tmp_path_factory):
    """The variant's broker and backend, running."""
    variant = request.param
    project = bake(variant)
    workdir = tmp_path_factory.mktemp(f"trigger-{variant_id(variant)}")
    venv = make_venv(project, variant["python_version"], workdir / "venv")
    with LocalStack(project, venv, workdir, variant) as running:
        yield running


@pytest.fixture
def servers(module_servers):
    """The variant's broker and backend with no worker running: whatever a test starts is
    stopped after it."""
    started = len(module_servers.processes)
    yield module_servers
    for process in module_servers.processes[started:]:
        process.stop()


def trigger_secret(servers: LocalStack) -> dict[str, str]:
    """The Secret's keys the trigger can read, with this stack's workers' values."""
    broker = servers.environment("worker")["CELERY_BROKER_URL"]
    url = urlsplit(broker)
    return {
        "CELERY_BROKER_URL": broker,
        "REDIS_ADDRESS": f"{url.hostname}:{url.port}",
        "REDIS_PASSWORD": url.password or "",
    }


def test_keda_reads_every_waiting_task_then_zero(servers, record_property):
    """With no worker KEDA's metric equals the tasks sent; with workers it falls to 0."""
    objects = manifests.build(servers.project, "dev")
    secret = trigger_secret(servers)
    results = [
        servers.celery.send_task(f"{servers.project.name}.tasks.add", args=(i, 1))
        for i in range(TASKS)
    ]
    readings = []

    def all_counted() -> bool:
        readings.append(manifests.keda_queue_length(objects, secret))
        return readings[-1] >= TASKS

    eventually(all_counted, 30, f"the trigger to count {TASKS} tasks")
    time.sleep(2)  # nothing else arrives, nothing is counted twice
    readings.append(manifests.keda_queue_length(objects, secret))
    assert readings[-1] == TASKS, readings
    servers.start_workers()

    def drained() -> bool:
        readings.append(manifests.keda_queue_length(objects, secret))
        return readings[-1] == 0

    eventually(drained, TIMEOUT, "the workers to take every task")
    assert [r.get(timeout=TIMEOUT) for r in results] == [i + 1 for i in range(TASKS)]
    broker = servers.variant["broker"]
    record_property("figure", f"{broker} trigger readings: sent {TASKS}, read {readings}")


def probe(servers: LocalStack, component: str, alive: Path) -> tuple[list[str], dict[str, str]]:
    """The component's liveness probe command from the dev overlay, and the environment
    that points it at a local file."""
    objects = manifests.build(servers.project, "dev")
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


def test_worker_keeps_its_liveness_file_fresh(servers):
    """A real worker keeps its probe's file fresh while it runs and removes it when it stops."""
    alive = servers.workdir / "worker.alive"
    command = probe(servers, "worker", alive)
    assert not passes(command)
    process = servers.start(
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


def test_beat_keeps_its_liveness_file_fresh(servers):
    """Beat's scheduler touches the file its probe checks on every tick."""
    assert servers.variant["use_beat"], "_one_per_broker chooses variants with Beat"
    alive = servers.workdir / "beat.alive"
    command = probe(servers, "beat", alive)
    process = servers.start("beat", "liveness-beat", CELERY_BEAT_LIVENESS_FILE=str(alive))
    eventually(alive.exists, TIMEOUT, "Beat to write its liveness file")
    assert passes(command)
    assert process.stop(), "Beat did not stop"


# --- the dev overlay's containers, started as the kubelet would ----------------------


def test_dev_overlay_containers_run_the_sample_tasks(servers):
    """The dev overlay's worker Deployment and app Job, run as the kubelet would run their
    containers: the app submits the sample tasks, the workers run them, the app exits 0."""
    objects = manifests.build(servers.project, "dev")
    worker = kubelet_process(servers, objects, "worker", "kubelet-worker")
    eventually(
        lambda: servers.celery.control.ping(destination=[pod_node(worker.name)], timeout=1),
        TIMEOUT,
        "the Deployment's worker answering a ping",
        watching=[worker],
    )
    app = kubelet_process(servers, objects, "app", "kubelet-app")
    try:
        status = app.popen.wait(timeout=180)
    finally:
        app.stop()
        assert worker.stop(), worker.log_tail()
    assert status == 0, app.log_tail()
    assert "results:" in app.log_path.read_text(encoding="utf-8"), app.log_tail()


# --- autoscaling: KEDA's and the HPA's rule on real worker processes ----------------

# Every period of the ScaledObject (polling, cooldown, stabilization window, scale-down
# policy period) is divided by this, so that a scale-out and the scale-in after it take
# about two minutes instead of twenty. The workers' grace period is NOT shortened: it is
# what must let running tasks finish.
SPEEDUP = 10
# The burst; then, until the second scale-in, one more long_task every TRICKLE_POLLS
# polling intervals (fewer than two workers run, so that the queue stays short), so that
# the scale-in meets workers with tasks running, as it does in a real service.
LONG_TASKS, LONG_SECONDS, ADDS, TRICKLE_POLLS = 32, 15, 300, 4


# The trigger's metadata keys for its target (per replica) and its activation threshold.
TRIGGER_THRESHOLDS = {
    "redis": ("listLength", "activationListLength"),
    "rabbitmq": ("value", "activationValue"),
}
# The HPA's scale-down policy when none is given: all surplus pods at once.
DEFAULT_SCALE_DOWN_POLICY = {"type": "Percent", "value": 100, "periodSeconds": 15}


class ScalingRule:
    """How KEDA and the HPA set a Deployment's replicas from a ScaledObject, as their docs
    state the rule: KEDA feeds the trigger's metric to an HPA with an AverageValue target,
    and itself scales 0 <-> 1 around the activation threshold (after cooldownPeriod, when
    minReplicaCount is 0); the HPA wants ceil(metric / target) within [min, max] (no
    change within its 10 % tolerance); it scales up at once (its default scale-up
    stabilization is 0 s, by at most max(100 %, 4 pods) a step), and down only to the
    highest recommendation of the stabilization window, by at most what the scale-down
    policies allow per period."""

    def __init__(self, scaled_object: dict, speedup: float):
        spec = scaled_object["spec"]
        (trigger,) = spec["triggers"]
        target, activation = TRIGGER_THRESHOLDS[trigger["type"]]
        self.target = float(trigger["metadata"][target])
        self.activation = float(trigger["metadata"].get(activation, "0"))
        self.minimum = spec.get("minReplicaCount", 0)
        self.maximum = spec.get("maxReplicaCount", 100)
        self.polling = spec.get("pollingInterval", 30) / speedup
        self.cooldown = spec.get("cooldownPeriod", 300) / speedup
        behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
        scale_down = behavior.get("behavior", {}).get("scaleDown", {})
        self.window = scale_down.get("stabilizationWindowSeconds", 300) / speedup
        self.down_policies = [
            (policy["type"], policy["value"], policy["periodSeconds"] / speedup)
            for policy in scale_down.get(
                "policies", [{"type": "Percent", "value": 100, "periodSeconds": 15}]
            )
        ]
        self.recommendations: list[tuple[float, int]] = []
        self.removals: list[tuple[float, int]] = []
        self.last_active = -math.inf

    def replicas(self, now: float, metric: int, current: int) -> int:
        if metric > self.activation:
            self.last_active = now
        if current == 0:
            return 1 if metric > self.activation else 0
        if self.minimum == 0 and now - self.last_active >= self.cooldown:
            return 0
        ratio = metric / (self.target * current)
        wanted = current if abs(ratio - 1) <= 0.1 else math.ceil(metric / self.target)
        wanted = min(max(wanted, self.minimum, 1), self.maximum)
        self.recommendations = [
            (at, count) for at, count in self.recommendations if now - at < self.window
        ] + [(now, wanted)]
        if wanted > current:
            return min(wanted, max(2 * current, current + 4))
        stabilized = max(count for _, count in self.recommendations)
        if stabilized >= current:
            return current
        allowed = max(self._removable(now, current, *policy) for policy in self.down_policies)
        replicas = max(stabilized, current - allowed)
        if replicas < current:
            self.removals.append((now, current - replicas))
        return replicas

    def _removable(self, now: float, current: int, kind: str, value: int, period: float) -> int:
        removed = sum(count for at, count in self.removals if now - at < period)
        limit = value if kind == "Pods" else math.ceil(current * value / 100)
        return max(limit - removed, 0)


class WorkerDeployment:
    """The worker Deployment's pods as local processes (kubelet_process), scaled as the
    ReplicaSet controller and the kubelet do: a new pod per missing replica; per surplus
    one, the newest pod gets SIGTERM and the Deployment's grace period, on a thread of its
    own (the autoscaler goes on meanwhile), then SIGKILL if it is still there."""

    def __init__(self, servers: LocalStack, objects: list[dict], name: str):
        self.servers, self.objects = servers, objects
        (deployment,) = manifests.find(objects, "Deployment", name)
        self.grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        self.running: list = []  # oldest first
        self.every_pod: dict = {}
        # (pod, when its SIGTERM was sent, the thread stopping it, [ended by itself?])
        self.stops: list[tuple[str, float, threading.Thread, list[bool]]] = []

    def scale_to(self, replicas: int) -> None:
        while len(self.running) < replicas:
            pod = f"scaled-{len(self.every_pod)}"
            self.every_pod[pod] = kubelet_process(self.servers, self.objects, "worker", pod)
            self.running.append(self.every_pod[pod])
        while len(self.running) > replicas:
            victim = self.running.pop()
            ended: list[bool] = []
            stopper = threading.Thread(
                target=lambda p=victim, e=ended: e.append(p.stop(self.grace))
            )
            stopper.start()
            self.stops.append((victim.name, time.time(), stopper, ended))

    def wait_for_stops(self) -> None:
        for _, _, stopper, _ in self.stops:
            stopper.join()

    def finished_while_stopping(self) -> list[str]:
        """A pod's name for each task it finished after it was told to stop."""
        return [
            pod
            for pod, stopped_at, *_ in self.stops
            for record in log_records(self.every_pod[pod].log_path)
            if " succeeded in " in record.get("message", "")
            and datetime.fromisoformat(record["time"]).timestamp() > stopped_at
        ]


def received_and_started(pods: dict) -> tuple[dict[str, int], dict[str, int]]:
    """How often each long_task was received, and started ("working for"), by any pod."""
    received: dict[str, int] = {}
    started: dict[str, int] = {}
    for process in pods.values():
        for record in log_records(process.log_path):
            task_id = record.get("task_id")
            if not task_id or not record.get("task_name", "").endswith(".long_task"):
                continue
            if record["message"].startswith("Task ") and " received" in record["message"]:
                received[task_id] = received.get(task_id, 0) + 1
            if "working for" in record["message"]:
                started[task_id] = started.get(task_id, 0) + 1
    return received, started


def test_keda_rule_scales_the_workers_out_and_back_without_cutting_a_task(servers, record_property):
    """A burst of long_tasks and adds, then a trickle of long_tasks until the second
    scale-in, with no worker but the minimum at first: the rule (ScalingRule, with the
    ScaledObject's own numbers) reads the trigger's metric as KEDA does every polling
    interval and scales the Deployment's pods (WorkerDeployment) as the kubelet would. The
    workers scale out to maxReplicaCount and back to minReplicaCount; every task succeeds,
    none is lost, no long_task starts twice (none was cut off by a scale-in), every
    stopped worker ended by itself within its grace period, and at least one scale-in met
    a running task."""
    objects = manifests.build(servers.project, "dev")
    (scaled,) = manifests.find(objects, "ScaledObject")
    rule = ScalingRule(scaled, SPEEDUP)
    workers = WorkerDeployment(servers, objects, scaled["spec"]["scaleTargetRef"]["name"])
    secret = trigger_secret(servers)
    minimum = max(rule.minimum, 1)
    workers.scale_to(minimum)
    first = workers.running[0]
    eventually(
        lambda: servers.celery.control.ping(destination=[pod_node(first.name)], timeout=1),
        TIMEOUT,
        "the first worker answering a ping",
        watching=[first],
    )
    send = servers.celery.send_task
    longs = [send(servers.task("long_task"), args=(LONG_SECONDS,)) for _ in range(LONG_TASKS)]
    adds = [send(servers.task("add"), args=(n, n)) for n in range(ADDS)]
    started_at = time.monotonic()
    timeline: list[tuple[float, int, int]] = []  # (seconds, metric, replicas) at each change
    for poll in itertools.count():
        now = time.monotonic() - started_at
        metric = manifests.keda_queue_length(objects, secret)
        workers.scale_to(rule.replicas(now, metric, len(workers.running)))
        if len(workers.stops) < 2 and poll % TRICKLE_POLLS == 0:
            longs.append(send(servers.task("long_task"), args=(LONG_SECONDS,)))
        if not timeline or timeline[-1][1:] != (metric, len(workers.running)):
            timeline.append((round(now, 1), metric, len(workers.running)))
        done = all(result.ready() for result in longs + adds)
        if done and len(workers.running) == minimum and workers.stops:
            break
        assert now < 900, f"not back at the minimum after 900 s: {timeline}"
        time.sleep(rule.polling)
    workers.wait_for_stops()

    assert [result.get(timeout=1) for result in adds] == [2 * n for n in range(ADDS)]
    assert all(
        result.get(timeout=1)["status"] == f"worked for {LONG_SECONDS} s" for result in longs
    )
    received, started = received_and_started(workers.every_pod)
    assert len(started) == len(longs), f"{len(started)} of {len(longs)} long_tasks started"
    cut_off = {task: count for task, count in started.items() if count > 1}
    assert not cut_off, f"long_tasks started again after a scale-in: {cut_off}"
    assert max(replicas for *_, replicas in timeline) == rule.maximum, timeline
    assert all(ended == [True] for *_, ended in workers.stops), "a worker outlived its grace"
    finished_while_stopping = workers.finished_while_stopping()
    assert finished_while_stopping, f"no scale-in met a running task: {timeline}"
    record_property(
        "figure",
        f"{servers.variant['broker']}: KEDA/HPA rule (periods /{SPEEDUP}) over {len(longs)} "
        f"long_task({LONG_SECONDS}) and {ADDS} adds; (s, metric, replicas) at each change: "
        f"{timeline}; {len(workers.stops)} scale-ins, {len(finished_while_stopping)} tasks "
        f"finished by workers already told to stop; 0 lost, 0 cut off; "
        f"received twice (prefetched, given back): {sum(c > 1 for c in received.values())}",
    )
