"""Container tier: a use_kubernetes project's dev overlay played by `podman kube play` on
the stand-in images: the worker pod runs the tasks the app Job's command sends to the
broker pod, and the worker's liveness probe, run by `podman healthcheck run`, passes
while the worker's event loop runs and fails when it stops or the worker is stopped.

Two variants, which between them have every server pod: Redis as broker and result
backend; RabbitMQ as broker with PostgreSQL as result backend. The stand-in images give
each server's user the official image's uid and gid, which the manifests run it as
(tests/standins/). Needs podman 4.3 (Debian bookworm's, the template's own machines): the
test fails, naming the version, on any other podman, because the workarounds below were
checked on 4.3 only.

What podman 4.3's kube play does NOT do as Kubernetes would (seen on 4.3.1, rootful, CNI):
- ignored, without a word: Service (pods find each other by the pod name podman gives,
  `<deployment>-pod-0`, not by the Service's name), Namespace, Job (the app Job never
  runs), PodDisruptionBudget, NetworkPolicy, KEDA's objects, readinessProbe,
  startupProbe (4.4 adds it), terminationGracePeriodSeconds (the container's stop
  timeout stays podman's 10 s, where the worker's manifest asks 120 s), emptyDir's
  sizeLimit, CPU requests, the replica count KEDA would set (one pod per Deployment);
- a livenessProbe becomes a podman healthcheck, which nothing runs without systemd
  timers (`podman healthcheck run` does), and a failing one marks the container
  unhealthy without restarting it;
- restartPolicy Always restarts a failing container at once, again and again, with no
  back-off (Redis restarted 77 times in about 20 s while it could not write /data);
- a Job's emptyDir volumes are made although the Job is not run;
- wrong (the first two fixed in podman 4.4; the others not looked at on later versions):
  - a Secret in the played file is stored as a podman secret in YAML and then read back
    as JSON: every secretKeyRef/secretRef fails "secret ... is not valid JSON"
    (containers/podman#16269);
  - an exec probe's command is joined with spaces and run by `sh -c`
    (containers/podman#16794), so the manifests' `sh -c SCRIPT` probes run `sh -c` with
    the script's first word alone (`test`, `redis-cli`) and always fail;
  - an emptyDir becomes a podman named volume called by the volume's name, shared by
    every pod that names a volume the same (two projects' workers would share /tmp);
  - a containerPort without hostPort is published on the host at the same number on
    every address (Redis's 6379 collides with a Redis on the host);
  - $(VAR) in a command is not expanded: Redis's password would be "$(REDIS_PASSWORD)";
  - an emptyDir gets the owner and mode of the image's directory at its path, and
    fsGroup is ignored: a server whose image's directory belongs to another uid than
    its manifest's runAsUser cannot write to it (the stand-in Redis could not, while
    its user had Debian's uid rather than the official image's 999).

The test overlay (in the test's directory, over the project's own dev overlay, which it
does not change) and the steps beside it work around exactly these, each saying why;
what podman ignores is left as it is.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml

from harness import manifests
from harness.containerstack import engine_session, ensure_standins, preflight
from harness.jsonlogs import log_records
from harness.localstack import free_port
from harness.variants import deployment_variants, variant_id
from harness.waiting import eventually

# The container tier's xdist group: one image build at a time on the machine.
pytestmark = [
    pytest.mark.container,
    pytest.mark.kube_play,
    pytest.mark.xdist_group("containers"),
]

PODMAN_VERSION_CHECKED = "4.3"
WORKER_UP_SECONDS = 240
APP_SECONDS = 300


# (broker, result_backend): between them, every server pod the manifests have.
PLAYED_SERVERS = [("redis", "redis"), ("rabbitmq", "postgresql")]
PLAYED_VARIANTS = [
    next(
        variant
        for variant in deployment_variants("use_kubernetes")
        if (variant["broker"], variant["result_backend"]) == servers
    )
    for servers in PLAYED_SERVERS
]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert result.returncode == 0, (
            f"podman {' '.join(args)} exited {result.returncode}: {result.stderr.strip()[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """podman 4.3 with the stand-in images the variant names; fails at once, with one
    line, if podman is missing or is another version, or fails the container tier's
    preflight (its DNS check is the one pods need to find each other by name)."""
    if shutil.which("podman") is None:
        pytest.fail(
            "kube play tier: podman is not installed (scripts/container-engine installs it)"
        )
    version = podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    if not version.startswith(PODMAN_VERSION_CHECKED + "."):
        pytest.fail(
            f"kube play tier: checked on podman {PODMAN_VERSION_CHECKED} only, found {version}: "
            "see what this podman honours and update tests/test_kube_play.py"
        )
    with engine_session() as running:
        assert running.is_podman, "kube play tier: the container tier's engine is not podman"
        yield running


class KubePlay:
    """A project's dev overlay, under a unique name prefix, made playable by podman 4.3
    (podman_overlay), played on a network of its own; `down` removes every pod, secret,
    volume, network and image it made."""

    def __init__(self, project: Path, workdir: Path):
        self.project, self.workdir = project, workdir
        self.prefix = f"kp{uuid.uuid4().hex[:8]}-"
        self.network = f"{self.prefix}net"
        self.image = f"localhost/{self.prefix}{project.name}:local"
        self.secrets: list[str] = []
        self.volumes: list[str] = []
        self.played: Path | None = None
        self.objects_played: list[dict] = []
        self.worker = ""  # the worker container's name, once played
        self.figure = ""
        self.images_before: set[str] | None = None

    def pod(self, deployment: str) -> str:
        """The pod podman 4.3 makes of a Deployment (its only replica)."""
        return f"{deployment}-pod-0"

    def container(self, deployment: str, name: str) -> str:
        return f"{self.pod(deployment)}-{name}"

    def logs(self) -> str:
        """Each container of the play: its state, restarts and health, and its last logs."""
        lines = []
        listed = podman(
            "ps", "--all", "--filter", f"name=^{self.prefix}", "--format", "{{.Names}}",
            check=False,
        )  # fmt: skip
        for name in listed.stdout.split():
            inspected = podman("inspect", "--format", "{{json .State}}", name, check=False)
            try:
                state = json.loads(inspected.stdout)
            except json.JSONDecodeError:
                lines.append(f"--- {name}: not inspected: {inspected.stderr.strip()}")
                continue
            health = (state.get("Health") or state.get("Healthcheck") or {}).get("Status")
            restarts = podman("inspect", "--format", "{{.RestartCount}}", name, check=False)
            logs = podman("logs", "--tail", "15", name, check=False)
            lines.append(
                f"--- {name}: {state.get('Status')}, exit {state.get('ExitCode')}, "
                f"restarts {restarts.stdout.strip()}, health {health}\n"
                + (logs.stdout + logs.stderr).strip()
            )
        return "\n".join(lines)

    def build_image(self) -> None:
        self.images_before = set(podman("images", "--all", "--quiet").stdout.split())
        podman("build", "--tag", self.image, str(self.project), timeout=1200)

    def objects(self) -> list[dict]:
        """The test overlay, built with the pinned kubectl's kustomize."""
        built = manifests.kustomize(self.workdir / "overlay")
        assert built.returncode == 0, built.stderr
        return [doc for doc in yaml.safe_load_all(built.stdout) if doc]

    def write_overlay(self) -> None:
        dev = manifests.build(self.project, "dev")
        overlay = self.workdir / "overlay"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(
            podman_overlay(self.project, dev, overlay, self.prefix, self.image), encoding="utf-8"
        )

    def play(self) -> list[dict]:
        """Play the test overlay; the objects played."""
        objects = self.objects()
        # podman 4.3 stores a played Secret as YAML and reads it back as JSON, which
        # fails (containers/podman#16269); it reads a podman secret holding the JSON of
        # the Secret's `data`. So the Secret goes in as that, and the rest is played.
        for secret in manifests.find(objects, "Secret"):
            name = secret["metadata"]["name"]
            stored = self.workdir / f"{name}.json"
            stored.write_text(json.dumps(secret["data"]), encoding="utf-8")
            podman("secret", "create", name, str(stored))
            self.secrets.append(name)
        podman("network", "create", self.network)
        self.played = self.workdir / "played.yaml"
        self.played.write_text(
            yaml.safe_dump_all([obj for obj in objects if obj["kind"] != "Secret"]),
            encoding="utf-8",
        )
        self.volumes = sorted(
            {
                volume["name"]
                for _, template in manifests.pod_specs(objects)
                for volume in template["spec"].get("volumes", [])
                if "emptyDir" in volume
            }
        )
        podman("kube", "play", "--network", self.network, str(self.played), timeout=600)
        # podman 4.3 makes an emptyDir a named volume, gives it the owner and mode of the
        # image's directory at that path when its container starts, and ignores fsGroup,
        # where the kubelet would give the pod an empty directory its fsGroup can write.
        # Each volume of a pod with an fsGroup is then set up as the kubelet sets up an
        # emptyDir: mode 0777, the group fsGroup, setgid; a server that could not write
        # there at its first start is started again by podman (restartPolicy Always).
        # (Set before the start, podman's copy from the image undoes it.)
        for _, template in manifests.pod_specs(objects):
            group = template["spec"].get("securityContext", {}).get("fsGroup")
            for volume in template["spec"].get("volumes", []):
                if "emptyDir" in volume and group is not None:
                    mountpoint = podman(
                        "volume", "inspect", "--format", "{{.Mountpoint}}", volume["name"]
                    ).stdout.strip()
                    os.chown(mountpoint, -1, group)
                    os.chmod(mountpoint, 0o2777)
        return objects

    def down(self) -> None:
        """Everything this play made, removed even if the play failed half-way."""
        if self.played is not None:
            podman("kube", "down", str(self.played), timeout=300, check=False)
        listed = podman("pod", "ps", "--quiet", "--filter", f"name=^{self.prefix}", check=False)
        for pod in listed.stdout.split():
            podman("pod", "rm", "--force", pod, timeout=300, check=False)
        listed = podman("ps", "--all", "--quiet", "--filter", f"name=^{self.prefix}", check=False)
        for container in listed.stdout.split():
            podman("rm", "--force", container, timeout=300, check=False)
        for secret in self.secrets:
            podman("secret", "rm", secret, check=False)
        for volume in self.volumes:
            podman("volume", "rm", "--force", volume, check=False)
        podman("network", "rm", "--force", self.network, check=False)
        podman("rmi", "--force", self.image, check=False)
        if self.images_before is not None:
            # The build's intermediate images too (and the pod infra image podman made, if
            # it did): without --force, so that an image in use elsewhere stays.
            now = set(podman("images", "--all", "--quiet", check=False).stdout.split())
            for image in now - self.images_before:
                podman("rmi", image, check=False)


def shell_words(argv: list[str]) -> str:
    """A command line for `sh -c` that runs `argv` as the kubelet would: each $(VAR) the
    variable's value (double-quoted, so taken whole), $$ a literal $, the rest as written."""
    words = []
    for part in argv:
        pieces = re.split(r"(\$\$|\$\(\w+\))", part)
        word = ""
        for piece in pieces:
            if piece == "$$":
                word += "'$'"
            elif piece.startswith("$("):
                word += f'"${{{piece[2:-1]}}}"'
            elif piece:
                word += shlex.quote(piece)
        words.append(word or "''")
    return " ".join(words)


def pods_by_service(dev: list[dict], prefix: str) -> dict[str, str]:
    """{Service name: the pod podman plays for the Deployment it selects}: podman ignores
    Services, and a server is reached by the name of its pod."""
    pods = {}
    for service in manifests.find(dev, "Service"):
        (deployment,) = [
            workload["metadata"]["name"]
            for workload, template in manifests.pod_specs(dev)
            if manifests.selects(
                {"matchLabels": service["spec"]["selector"]}, template["metadata"]["labels"]
            )
        ]
        pods[service["metadata"]["name"]] = f"{prefix}{deployment}-pod-0"
    return pods


def repointed_secret_data(secret: dict, pods: dict[str, str]) -> dict[str, str]:
    """The Secret's values that name a Service as a host (in a URL or as host:port),
    naming its pod instead."""
    repointed = {}
    for key, value in manifests.secret_data(secret).items():
        new = value
        for service, pod in pods.items():
            new = re.sub(
                rf"(?<=[@/]){re.escape(service)}(?=:)|^{re.escape(service)}(?=:)", pod, new
            )
        if new != value:
            repointed[key] = new
    return repointed


def own_volume_names(workload: dict, spec: dict, prefix: str) -> tuple[dict, list[dict]]:
    """({emptyDir's name: a name of this workload's own}, the JSON patch operations).
    An emptyDir is a podman named volume called by the volume's name, shared with any
    other pod's volume of that name (two servers' `data`, another project's `tmp`). (The
    Job's too: podman makes its volumes, though it never runs the Job.)"""
    renamed, operations = {}, []
    for index, volume in enumerate(spec.get("volumes", [])):
        if "emptyDir" in volume:
            renamed[volume["name"]] = f"{prefix}{workload['metadata']['name']}-{volume['name']}"
            operations.append(
                {
                    "op": "replace",
                    "path": f"/spec/template/spec/volumes/{index}/name",
                    "value": renamed[volume["name"]],
                }
            )
    return renamed, operations


def container_operations(path: str, container: dict, renamed: dict[str, str]) -> list[dict]:
    """The JSON patch operations that make one container play on podman 4.3."""
    operations = [
        {"op": "replace", "path": f"{path}/volumeMounts/{index}/name", "value": renamed[name]}
        for index, mount in enumerate(container.get("volumeMounts", []))
        if (name := mount["name"]) in renamed
    ]
    for index, _ in enumerate(container.get("ports", [])):
        # A containerPort is published on the host at its own number (6379 is the
        # host's Redis): a free port of 127.0.0.1 instead.
        operations += [
            {"op": "add", "path": f"{path}/ports/{index}/hostPort", "value": free_port()},
            {"op": "add", "path": f"{path}/ports/{index}/hostIP", "value": "127.0.0.1"},
        ]
    argv = container.get("command", []) + container.get("args", [])
    if any(re.search(r"\$\(\w+\)", part) for part in argv):
        # podman does not expand $(VAR) in a command: Redis's password would be the
        # text "$(REDIS_PASSWORD)". A shell expands the same variables.
        script = "exec " + shell_words(argv)
        operations.append(
            {"op": "replace", "path": f"{path}/command", "value": ["sh", "-c", script]}
        )
        if "args" in container:
            operations.append({"op": "remove", "path": f"{path}/args"})
    command = container.get("livenessProbe", {}).get("exec", {}).get("command", [])
    if command[:2] == ["sh", "-c"] and len(command) == 3:
        # podman joins an exec probe's command with spaces and runs it with `sh -c`
        # (containers/podman#16794): given the script alone, that shell runs it as the
        # kubelet's `sh -c SCRIPT` would.
        operations.append(
            {"op": "replace", "path": f"{path}/livenessProbe/exec/command", "value": [command[2]]}
        )
    return operations


def workload_patches(dev: list[dict], prefix: str) -> list[dict]:
    """A kustomize patch per workload that podman 4.3 would play wrong."""
    patches = []
    for workload, template in manifests.pod_specs(dev):
        spec = template["spec"]
        renamed, operations = own_volume_names(workload, spec, prefix)
        for index, container in enumerate(spec["containers"]):
            path = f"/spec/template/spec/containers/{index}"
            operations += container_operations(path, container, renamed)
        if operations:
            target = {"kind": workload["kind"], "name": workload["metadata"]["name"]}
            patches.append({"target": target, "patch": json.dumps(operations)})
    return patches


def podman_overlay(project: Path, dev: list[dict], directory: Path, prefix: str, image: str) -> str:
    """A kustomization over the project's dev overlay with only what podman 4.3 needs to
    play it, each change commented with why (`dev` is the dev overlay's build)."""
    (secret,) = manifests.find(dev, "Secret")
    name_of_secret = secret["metadata"]["name"].rsplit("-", 1)[0]  # without kustomize's hash
    repointed = repointed_secret_data(secret, pods_by_service(dev, prefix))
    image_name = manifests.workload_container(dev, "Deployment", "worker")["image"]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(project / "k8s" / "overlays" / "dev", directory)],
        # Pods, volumes and secrets of podman are host-wide: names of this test's own.
        "namePrefix": prefix,
        # The image this test built, under a name of its own.
        "images": [
            {
                "name": image_name.rsplit(":", 1)[0],
                "newName": image.rsplit(":", 1)[0],
                "newTag": image.rsplit(":", 1)[1],
            }
        ],
        # Services are ignored: the URLs name the servers' pods instead.
        "secretGenerator": [
            {
                "name": name_of_secret,
                "namespace": secret["metadata"]["namespace"],
                "behavior": "merge",
                "literals": [f"{key}={value}" for key, value in sorted(repointed.items())],
            }
        ],
        "patches": workload_patches(dev, prefix),
    }
    return textwrap.dedent(
        """\
        # The project's dev overlay, as podman 4.3's kube play can play it: see
        # tests/test_kube_play.py for why each change is here.
        """
    ) + yaml.safe_dump(kustomization, sort_keys=False)


@pytest.fixture(scope="module", params=PLAYED_VARIANTS, ids=variant_id)
def played(request, engine, bake, tmp_path_factory):
    """The variant's dev overlay played, each server's liveness check passing, then the
    worker's."""
    variant = request.param
    project = bake(variant)
    objects = manifests.build(project, "dev")
    images = {container["image"] for _, container in manifests.containers(objects)}
    dockerfile = (project / "Dockerfile").read_text(encoding="utf-8")
    python_image = re.search(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)[1]
    project_image = manifests.workload_container(objects, "Deployment", "worker")["image"]
    ensure_standins(engine, (images - {project_image}) | {python_image})
    problem = preflight(engine, python_image, tmp_path_factory.mktemp("preflight"))
    if problem:
        pytest.exit(f"kube play tier preflight: the engine cannot run the pods: {problem}", 1)
    stack = KubePlay(project, tmp_path_factory.mktemp(f"kube-{variant_id(variant)}"))
    try:
        started = time.monotonic()
        stack.build_image()
        built = time.monotonic() - started
        stack.write_overlay()
        stack.objects_played = stack.play()
        worker = stack.container(f"{stack.prefix}{deployment_name(objects, 'worker')}", "worker")
        stack.worker = worker
        # The servers' pods (the images that are not the project's), then the worker's.
        servers = [
            stack.container(f"{stack.prefix}{workload['metadata']['name']}", container["name"])
            for workload, template in manifests.pod_specs(objects)
            if workload["kind"] == "Deployment"
            for container in template["spec"]["containers"]
            if container["image"] != project_image and "livenessProbe" in container
        ]
        try:
            for container in [*servers, worker]:
                eventually(
                    lambda container=container: healthcheck(container).returncode == 0,
                    WORKER_UP_SECONDS,
                    f"{container}'s liveness check passing",
                    interval=2,
                )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{stack.logs()}") from None
        stack.figure = (
            f"{variant_id(variant)}: image built in {built:.0f} s, worker live "
            f"{time.monotonic() - started - built:.0f} s after kube play began"
        )
        yield stack
    finally:
        stack.down()


def deployment_name(objects: list[dict], component: str) -> str:
    (name,) = [
        workload["metadata"]["name"]
        for workload, template in manifests.pod_specs(objects)
        if workload["kind"] == "Deployment"
        and template["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    return name


def healthcheck(container: str) -> subprocess.CompletedProcess:
    return podman("healthcheck", "run", container, timeout=60, check=False)


def test_worker_pod_runs_the_app_jobs_tasks(played, record_property):
    """The app Job's container (which podman 4.3 does not run by itself), started with the
    Job's command and its environment resolved from the played ConfigMap and Secret,
    exits 0 with every sample task SUCCESS, and the worker pod is what ran them."""
    objects = played.objects_played
    (job,) = manifests.find(objects, "Job")
    (app,) = job["spec"]["template"]["spec"]["containers"]
    environment = manifests.container_environment(objects, app)
    argv = manifests.container_argv(app, environment)
    env_file = played.workdir / "app.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in environment.items()))
    result = podman(
        "run", "--rm", "--name", f"{played.prefix}app", "--network", played.network,
        "--env-file", str(env_file), app["image"], *argv, timeout=APP_SECONDS, check=False,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"app exited {result.returncode}\n{result.stdout}\n{result.stderr}\n{played.logs()}"
    )
    results = result.stdout.partition("results:")[2]
    slug = played.project.name
    logs = played.workdir / "worker.log"
    logs.write_text(podman("logs", played.worker).stdout)
    messages = "\n".join(record.get("message", "") for record in log_records(logs))
    for name in ("add", "long_task", "process_data"):
        assert re.search(rf"^\s+{name}\(.*\)\s+SUCCESS\s", results, re.MULTILINE), result.stdout
        assert re.search(rf"Task {slug}\.tasks\.{name}\[[0-9a-f-]+\] succeeded", messages), name
    record_property("figure", played.figure)


def test_worker_runs_as_its_manifest_says(played):
    """The worker's securityContext and memory limit hold under podman: user 10001, a
    read-only root filesystem, no capabilities, a seccomp filter, the 512Mi limit."""
    worker = played.worker
    (deployment,) = [
        workload
        for workload, template in manifests.pod_specs(played.objects_played)
        if any(c["name"] == "worker" for c in template["spec"]["containers"])
    ]
    pod_context = deployment["spec"]["template"]["spec"]["securityContext"]
    container = manifests.workload_container(played.objects_played, "Deployment", "worker")
    status = podman("exec", worker, "cat", "/proc/self/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[0] == str(pod_context["runAsUser"])
    assert fields["Gid"].split()[0] == str(pod_context["runAsGroup"])
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert int(fields["CapEff"].strip(), 16) == 0 and int(fields["CapBnd"].strip(), 16) == 0
    assert fields["Seccomp"].strip() == "2"  # a filter, as RuntimeDefault gives
    assert fields["NoNewPrivs"].strip() == "1"  # allowPrivilegeEscalation: false
    written = podman("exec", worker, "touch", "/written", check=False)
    assert written.returncode != 0 and "Read-only file system" in written.stderr
    memory = podman("inspect", "--format", "{{.HostConfig.Memory}}", worker).stdout.strip()
    assert int(memory) == manifests.quantity_bytes(container["resources"]["limits"]["memory"])


def test_liveness_check_fails_when_the_event_loop_stops_and_when_the_worker_stops(played):
    """`podman healthcheck run` of the worker's liveness probe: passing while the worker
    runs; failing once the liveness file is older than the probe allows while the
    worker's main process is stopped (SIGSTOP: no loop touches the file); passing again
    once it runs on; failing once the worker container is stopped."""
    worker = played.worker
    container = manifests.workload_container(played.objects_played, "Deployment", "worker")
    liveness_file = next(
        variable["value"]
        for variable in container["env"]
        if variable["name"] == "CELERY_WORKER_LIVENESS_FILE"
    )
    assert healthcheck(worker).returncode == 0
    # The worker's main process (the container's first) stopped, so its event loop no
    # longer touches the file; the file then aged as the probe finds it after more than
    # 60 s of that, rather than waiting those 60 s.
    podman("kill", "--signal", "STOP", worker)
    try:
        podman("exec", worker, "touch", "-d", "-2 minutes", liveness_file)
        stale = healthcheck(worker)
        assert stale.returncode == 1 and "unhealthy" in stale.stdout, (
            f"a stale liveness file passed: {stale.stdout}{stale.stderr}"
        )
    finally:
        podman("kill", "--signal", "CONT", worker)
    eventually(
        lambda: healthcheck(worker).returncode == 0,
        60,
        f"{worker}'s liveness check passing again once its loop runs",
        interval=1,
    )
    podman("stop", "--time", "30", worker, timeout=120)
    stopped = healthcheck(worker)
    assert stopped.returncode != 0, f"a stopped worker passed: {stopped.stdout}"
