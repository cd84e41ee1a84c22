"""Run the stack without Docker: compose.yaml's own commands as local processes.

    make local                               # or: uv run python scripts/local.py
    uv run python scripts/local.py --print   # what it would start (secrets included)

The commands and their environment come from compose.yaml, never from a copy here:
through `docker compose config` where Docker Compose is installed, else read from the
file with its ${VAR} settings taken from the shell and .env, as Compose takes them. Four
things differ from containers, because processes share one host:
- the servers (the services without `build:`) are not started: Redis, RabbitMQ and
  PostgreSQL must answer on localhost, at their usual ports, with the settings in .env;
  URLs that name them by service name are pointed at 127.0.0.1;
- replicas differ by host name in Compose; here they get --hostname=<service><n>@%h;
- a container's /tmp is its own: a setting that names a file there (a liveness file)
  names one of the process's own here, <name>.<file> in the working directory;
- the one-shot services (`restart: "no"`, the app) run in the foreground, on this
  terminal, once the others are started; the others log to .local/<name>.log and run
  until Ctrl-C, which stops them as `docker compose down` does (SIGTERM, then SIGKILL).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PROJECT = Path(__file__).resolve().parent.parent
LOGS = PROJECT / ".local"
# As long as compose.yaml's longest stop_grace_period: running tasks may finish.
STOP_SECONDS = 120
# $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR
INTERPOLATION = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


class ComposeError(Exception):
    """compose.yaml cannot be read as it stands (a setting missing from .env, say)."""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; comments and blank lines skipped, quotes removed."""
    variables: dict[str, str] = {}
    if not path.exists():
        return variables
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            variables[key.strip()] = value
    return variables


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's ${...} substitution in one string."""

    def replace(match: re.Match[str]) -> str:
        if match[1]:
            return "$$"  # kept escaped, as `docker compose config` prints it (see plan)
        name, operator, argument = match[2] or match[5], match[3] or "", match[4] or ""
        value = variables.get(name)
        # With a colon, empty counts as unset.
        missing = value is None or (operator.startswith(":") and not value)
        if missing and operator.endswith("?"):
            raise ComposeError(f"required variable {name} is missing a value: {argument}")
        if missing and operator.endswith("-"):
            return argument
        return value or ""

    return INTERPOLATION.sub(replace, text)


def substitute(node: Any, variables: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, dict):
        return {key: substitute(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute(value, variables) for value in node]
    return node


def model_from_file() -> dict:
    """compose.yaml read with PyYAML (anchors and merge keys), ${VAR}s from the shell, then
    .env, as Compose resolves them."""
    import yaml  # only here: with Docker Compose installed, PyYAML is not needed

    raw = yaml.safe_load((PROJECT / "compose.yaml").read_text(encoding="utf-8"))
    variables = {**read_env_file(PROJECT / ".env"), **os.environ}
    model = substitute(raw, variables)
    for service in model["services"].values():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        service["environment"] = {key: str(value) for key, value in environment.items()}
    return model


def compose_model() -> tuple[dict, str]:
    """The resolved compose.yaml and where it came from."""
    docker = shutil.which("docker")
    if docker:
        result = subprocess.run(
            [docker, "compose", "config", "--format", "json"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            return json.loads(result.stdout), "docker compose config"
        # Without the Compose plugin `docker compose` fails; a bad compose.yaml or .env
        # fails again below, with the same message.
    return model_from_file(), "compose.yaml"


def localize(value: str, addresses: dict[str, str | None]) -> str:
    """A URL that names a server by its service name, pointed at the server's local address
    ("host:port"), or at 127.0.0.1 and the URL's own port where the address is None."""
    if "://" not in value:
        return value
    url = urlsplit(value)
    if url.hostname not in addresses:
        return value
    address = addresses[url.hostname] or ("127.0.0.1" + (f":{url.port}" if url.port else ""))
    userinfo = url.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{address}" if userinfo else address
    return urlunsplit(url._replace(netloc=netloc))


def unescape(value: str) -> str:
    """Compose's `$$`, a literal `$` once Compose has interpolated the file."""
    return value.replace("$$", "$")


def own_temp(value: str, name: str) -> str:
    """A path under a container's private /tmp, made the process's own (see the top)."""
    if value.startswith("/tmp/"):
        return f"{name}.{value.removeprefix('/tmp/').replace('/', '.')}"
    return value


def health_check(service: dict) -> list[str] | None:
    """The argv of the service's healthcheck `test`, as Docker runs it in the container."""
    test = (service.get("healthcheck") or {}).get("test") or ["NONE"]
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    kind, *rest = test
    if kind == "CMD":
        return [unescape(part) for part in rest]
    if kind == "CMD-SHELL":
        return ["/bin/sh", "-c", unescape(" ".join(rest))]
    return None


def plan(model: dict, addresses: dict[str, str] | None = None) -> list[dict]:
    """The processes to start, by name, the one-shot ones last, each with its healthcheck's
    argv (None without one; this script does not run them, the template's tests do, in
    the process's environment and working directory). The servers (services without
    `build:`) are not among them: their URLs point at 127.0.0.1, or at the "host:port"
    that `addresses` gives a server (the template's tests give each stack servers of
    its own). `model` is as `docker compose config` prints it: `$$` still escaped."""
    services = model["services"]
    servers = {name for name, service in services.items() if "build" not in service}
    server_addresses: dict[str, str | None] = dict.fromkeys(servers)
    server_addresses.update(addresses or {})
    processes = []
    for name, service in services.items():
        if name in servers:
            continue
        environment = {
            key: localize(unescape(value), server_addresses)
            for key, value in (service.get("environment") or {}).items()
        }
        replicas = (service.get("deploy") or {}).get("replicas", 1)
        for number in range(1, replicas + 1):
            process_name = f"{name}{number}" if replicas > 1 else name
            argv = [unescape(arg) for arg in service["command"]]
            if replicas > 1:
                argv.append(f"--hostname={name}{number}@%h")
            processes.append(
                {
                    "service": name,
                    "name": process_name,
                    "argv": argv,
                    "environment": {
                        key: own_temp(value, process_name) for key, value in environment.items()
                    },
                    "healthcheck": health_check(service),
                    "one_shot": service.get("restart") == "no",
                }
            )
    return sorted(processes, key=lambda process: (process["one_shot"], process["name"]))


def start(
    process: dict, directory: Path, environ: Mapping[str, str] = os.environ
) -> subprocess.Popen:
    """Start a planned process in `directory`, its output appended to <name>.log there
    (kept across restarts), in a session of its own: Ctrl-C reaches this script, which
    stops it in order."""
    with (directory / f"{process['name']}.log").open("ab") as log:
        return subprocess.Popen(
            process["argv"],
            env={**environ, **process["environment"]},
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(running: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to each (a warm shutdown for Celery), SIGKILL to what is left after the grace."""
    for popen in running.values():
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for name, popen in running.items():
        try:
            popen.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
        print(f"stopped {name}", flush=True)


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(processes: list[dict]) -> int:
    # Ctrl-C, and SIGTERM (a `kill`, a stopping CI job), stop the services in order.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    LOGS.mkdir(exist_ok=True)
    running: dict[str, subprocess.Popen] = {}
    status = 130  # as for Ctrl-C, unless a one-shot service ends by itself
    try:
        for process in processes:
            if process["one_shot"]:
                print(f"running {process['name']}: {' '.join(process['argv'])}", flush=True)
                env = {**os.environ, **process["environment"]}
                status = subprocess.run(process["argv"], env=env, cwd=LOGS, check=False).returncode
                print(f"{process['name']} exited with status {status}", flush=True)
                continue
            running[process["name"]] = start(process, LOGS)
            print(f"started {process['name']}, logging to .local/{process['name']}.log")
        print(f"{', '.join(running)} keep running; Ctrl-C stops them", flush=True)
        while all(popen.poll() is None for popen in running.values()):
            time.sleep(1)
        ended = [name for name, popen in running.items() if popen.poll() is not None]
        print(f"error: {', '.join(ended)} ended; see .local/*.log", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        pass
    finally:
        stop(running)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/local.py",
        description="Run compose.yaml's services as local processes, against the servers "
        "on localhost; Ctrl-C stops them.",
    )
    parser.add_argument(
        "--print",
        action="store_true",
        help="print the processes as JSON (service, name, argv, environment) and start none",
    )
    args = parser.parse_args(argv)
    try:
        model, source = compose_model()
    except ComposeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    processes = plan(model)
    if args.print:
        print(json.dumps({"source": source, "processes": processes}, indent=2))
        return 0
    print(f"commands from {source}; servers expected on 127.0.0.1", flush=True)
    return run(processes)


if __name__ == "__main__":
    sys.exit(main())
