"""Run the stack without Docker: compose.yaml's own commands as local processes.

    make local                               # or: uv run python scripts/local.py
    uv run python scripts/local.py --print   # what it would start (secrets included)
    uv run python scripts/local.py --server redis=127.0.0.1:6380   # a server elsewhere

The commands and their environment come from compose.yaml, never from a copy here:
through `docker compose config` where Docker Compose is installed, else read from the
file with its ${VAR} settings taken from the shell and .env, as Compose takes them. Five
things differ from containers, because processes share one host:
- the servers (the services without `build:`) are not started: Redis, RabbitMQ (with
  its management plugin, for Flower's queue lengths) and PostgreSQL must answer on
  localhost, at their usual ports (or where --server says), with the settings in .env;
  URLs that name them by service name are pointed there;
- replicas differ by host name in Compose; here they get --hostname=<service><n>@%h;
- a container's /tmp is its own: a setting that names a file there (a liveness file)
  names one of the process's own here, <name>.<file> in the working directory;
- the one-shot services (`restart: "no"`, the app) run on this terminal once the
  others are started; the others log to .local/<name>.log and run
  until Ctrl-C, which stops them as `docker compose down` does (SIGTERM, then SIGKILL);
- where `docker compose watch` would copy an edited file into a service's containers and
  restart them (compose.yaml's develop section, action sync+restart), the service's
  processes restart instead, once the edits have settled; they import the package from
  the project itself (uv installs it editable). A dependency change (action rebuild)
  needs `make local` started again, which syncs the environment first (uv run).
"""

import argparse
import contextlib
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
# How often the watched files are looked at, and how long they must stay unchanged
# before the processes restart: an editor's save, or a branch switch, is one restart.
POLL_SECONDS = 1.0
SETTLE_SECONDS = 0.5
# What `docker compose watch` restarts a service's containers for.
RESTARTING_ACTIONS = {"sync+restart", "restart"}
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
    ("host:port"), or at 127.0.0.1 and the URL's own port where the address is None. An
    address given for "name:port" is that port's alone (a server with a second port, as
    RabbitMQ's management API beside AMQP), and comes first."""
    if "://" not in value:
        return value
    url = urlsplit(value)
    if url.hostname not in addresses:
        return value
    address = (
        addresses.get(f"{url.hostname}:{url.port}")
        or addresses[url.hostname]
        or ("127.0.0.1" + (f":{url.port}" if url.port else ""))
    )
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


def watched_paths(service: dict) -> list[str]:
    """The files and folders whose edits restart the service under `docker compose watch`."""
    rules = (service.get("develop") or {}).get("watch") or []
    return sorted(
        str((PROJECT / rule["path"]).resolve())
        for rule in rules
        if rule.get("action") in RESTARTING_ACTIONS
    )


def servers(model: dict) -> set[str]:
    """The services this script does not start: those without `build:`."""
    return {name for name, service in model["services"].items() if "build" not in service}


def plan(model: dict, addresses: dict[str, str] | None = None) -> list[dict]:
    """The processes to start, by name, the one-shot ones last, each with its healthcheck's
    argv (None without one; this script does not run them, the template's tests do, in
    the process's environment and working directory) and the paths whose edits restart
    it (`watch`). The servers (services without `build:`) are not among them: their URLs
    point at 127.0.0.1, or at the "host:port" that `addresses` gives a server (the
    template's tests give each stack servers of its own; "name:port" for a server's
    second port). `model` is as `docker compose config` prints it: `$$` still escaped."""
    server_addresses: dict[str, str | None] = dict.fromkeys(servers(model))
    server_addresses.update(addresses or {})
    processes = []
    for name, service in model["services"].items():
        if name in server_addresses:
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
                    "watch": watched_paths(service),
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


def modification_times(paths: set[str]) -> dict[Path, int]:
    """Each file's modification time under `paths`, Python's bytecode caches left out
    (the processes write them)."""
    times = {}
    for top in map(Path, paths):
        for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
            # A file an editor has just renamed away is no longer there.
            with contextlib.suppress(OSError):
                if "__pycache__" not in path.parts and path.is_file():
                    times[path] = path.stat().st_mtime_ns
    return times


def edited(paths: set[str], before: dict[Path, int]) -> tuple[dict[Path, int], set[Path]]:
    """The files' times once they stop changing, and which files differ from `before`."""
    now = modification_times(paths)
    if now == before:
        return now, set()
    while True:
        time.sleep(SETTLE_SECONDS)
        settled, now = now, modification_times(paths)
        if settled == now:
            return now, {
                path for path in now.keys() | before.keys() if now.get(path) != before.get(path)
            }


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


# Set by Ctrl-C or SIGTERM and acted on between the run's steps, never raised where the
# signal lands: an exception there could fall between starting a process and recording
# it in `running` (a restart's new worker then outlived this script), or inside
# subprocess's own bookkeeping.
stop_requested = False


def request_stop(signum: int, frame: object) -> None:
    global stop_requested
    stop_requested = True


def restart_on_edits(
    processes: list[dict],
    running: dict[str, subprocess.Popen],
    times: dict[Path, int],
    one_shot: dict[str, subprocess.Popen],
) -> None:
    """Until a stop is requested, or a process in `running` that is not one of
    `processes` ends: restart each of `processes` whose watched paths hold edited files
    (`times`: the files' times at the start), as `docker compose watch` restarts a
    container, SIGTERM first. One of them that ends (an edit with a typo, say) waits for
    the next edit. Says when a `one_shot` process exits."""
    paths = {path for process in processes for path in process["watch"]}
    names = {process["name"] for process in processes}
    ended: set[str] = set()
    others = [popen for name, popen in running.items() if name not in names]
    while not stop_requested and all(popen.poll() is None for popen in others):
        for name in sorted(set(one_shot) - ended):
            if one_shot[name].poll() is not None:
                ended.add(name)
                print(f"{name} exited with status {one_shot[name].returncode}", flush=True)
        for name in sorted(names - ended):
            if running[name].poll() is not None:
                ended.add(name)
                print(f"{name} ended, see .local/{name}.log; an edit starts it again", flush=True)
        time.sleep(POLL_SECONDS)
        times, changed = edited(paths, times)
        restarting = [
            process
            for process in processes
            if any(path.is_relative_to(top) for path in changed for top in process["watch"])
        ]
        if not restarting or stop_requested:
            continue
        files = sorted(os.path.relpath(path, PROJECT) for path in changed)
        print(f"edited {', '.join(files)}: restarting", flush=True)
        stop({process["name"]: running[process["name"]] for process in restarting})
        for process in restarting:
            if stop_requested:
                break
            running[process["name"]] = start(process, LOGS)
            ended.discard(process["name"])
            print(f"restarted {process['name']}", flush=True)


def run(processes: list[dict], reload: bool = True) -> int:
    # Ctrl-C, and SIGTERM (a `kill`, a stopping CI job), stop the services in order.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    LOGS.mkdir(exist_ok=True)
    reloading = [p for p in processes if reload and p["watch"] and not p["one_shot"]]
    # Taken before anything starts: an edit made while the app runs counts too.
    times = modification_times({path for process in reloading for path in process["watch"]})
    running: dict[str, subprocess.Popen] = {}
    one_shot: dict[str, subprocess.Popen] = {}
    status = 130  # as for Ctrl-C, unless a one-shot service ends by itself
    try:
        for process in processes:
            if stop_requested:
                break
            if process["one_shot"]:
                # On this terminal, while edits restart the others; stopped as they are.
                print(f"running {process['name']}: {' '.join(process['argv'])}", flush=True)
                env = {**os.environ, **process["environment"]}
                one_shot[process["name"]] = subprocess.Popen(
                    process["argv"], env=env, cwd=LOGS, start_new_session=True
                )
                continue
            running[process["name"]] = start(process, LOGS)
            print(f"started {process['name']}, logging to .local/{process['name']}.log")
        print(f"{', '.join(running)} keep running; Ctrl-C stops them", flush=True)
        if reloading:
            names = ", ".join(p["name"] for p in reloading)
            # Flushed now, not with the next line: it belongs before the restarts' lines.
            print(f"an edit to the code restarts {names}", flush=True)
        restart_on_edits(reloading, running, times, one_shot)
        if stop_requested:
            exits = [popen.returncode for popen in one_shot.values() if popen.poll() is not None]
            status = exits[0] if exits else status
        else:
            ended = [name for name, popen in running.items() if popen.poll() is not None]
            print(f"error: {', '.join(ended)} ended; see .local/*.log", file=sys.stderr)
            status = 1
    finally:
        stop({name: popen for name, popen in one_shot.items() if popen.poll() is None})
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
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="where a server of compose.yaml answers, if not at 127.0.0.1 and its usual port",
    )
    parser.add_argument(
        "--no-reload",
        dest="reload",
        action="store_false",
        help="do not restart the processes when their code is edited",
    )
    args = parser.parse_args(argv)
    addresses = {name: address for name, _, address in (s.partition("=") for s in args.server)}
    try:
        model, source = compose_model()
    except ComposeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if unknown := sorted(set(addresses) - servers(model)):
        known = ", ".join(sorted(servers(model)))
        print(f"error: --server {unknown[0]}: the servers are {known}", file=sys.stderr)
        return 2
    processes = plan(model, addresses)
    if args.print:
        print(json.dumps({"source": source, "processes": processes}, indent=2))
        return 0
    where = ", ".join(
        f"{name} on {addresses.get(name, '127.0.0.1')}" for name in sorted(servers(model))
    )
    print(f"commands from {source}; servers expected: {where}", flush=True)
    return run(processes, args.reload)


if __name__ == "__main__":
    sys.exit(main())
