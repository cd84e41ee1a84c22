"""A rendered project's Compose services, run as local processes on this machine.

What runs is what a user's `make local` runs: the rendered scripts/local.py plans the
processes (each service's command and environment from compose.yaml, read here through
the real Compose parser; URLs that name a server pointed at a local address; worker
replicas told apart by --hostname=workerN@%h), and this harness starts that plan. What it
adds is isolation, so that stacks run side by side: each stack gets its own
redis-server (on a free port, started with the redis service's own command), its own
RabbitMQ vhost and user, and its own PostgreSQL role and database, all removed again
when the stack closes.
"""

import contextlib
import functools
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import ModuleType

import kombu
import psycopg
import redis
from celery import Celery
from psycopg import sql
from uv import find_uv_bin

from harness.composefile import compose_model
from harness.jsonlogs import log_records
from harness.waiting import eventually

RABBITMQ_ADDRESS = ("127.0.0.1", int(os.environ.get("TEST_RABBITMQ_PORT", "5672")))
# The shared server's management API (scripts/services enables the plugin), where
# Flower's FLOWER_BROKER_API (compose.yaml, rabbitmq:15672) is pointed.
RABBITMQ_MANAGEMENT_ADDRESS = (
    "127.0.0.1",
    int(os.environ.get("TEST_RABBITMQ_MANAGEMENT_PORT", "15672")),
)
POSTGRES_ADDRESS = ("127.0.0.1", int(os.environ.get("TEST_POSTGRES_PORT", "5432")))
# A superuser connection for creating each stack's role and database.
POSTGRES_ADMIN = os.environ.get(
    "TEST_POSTGRES_ADMIN",
    f"host=127.0.0.1 port={POSTGRES_ADDRESS[1]} user=postgres dbname=postgres",
)
STARTUP_SECONDS = 90
# How long a task's result, a log line or a dead letter may take to appear on a busy
# machine; a task that takes longer by design says so where it is sent.
RESULT_TIMEOUT = 60
# The server itself, not Debian's /usr/sbin wrapper, which runs it as the rabbitmq user.
RABBITMQ_SERVER = os.environ.get("TEST_RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server")


def run_prefix() -> str:
    """The prefix of every vhost, user, role and database this test run makes on the shared
    servers: set once per run (conftest.py), so that a run tells its own from another's."""
    return os.environ.setdefault("TEMPLATE_TEST_RUN_PREFIX", f"t{uuid.uuid4().hex[:5]}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback's `port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return True
    except OSError:
        return False


def find_python(version: str) -> Path:
    """A working interpreter for a python_version answer: on PATH, or installed by pyenv."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(pyenv_root.glob(f"versions/{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        # pyenv's shims are on PATH but fail unless PYENV_VERSION names the version.
        probe = subprocess.run([candidate, "-c", ""], capture_output=True, check=False)
        if probe.returncode == 0:
            return Path(candidate)
    raise RuntimeError(f"no working Python {version} on PATH or under {pyenv_root}/versions")


def make_venv(project: Path, version: str, venv: Path) -> Path:
    """A virtual environment of the chosen Python with what `make test` installs: the
    versions in the project's uv.lock (refused if it is stale), dev group included.
    Byte-compiled, as the image is (UV_COMPILE_BYTECODE=1): where Python may not write
    bytecode caches (PYTHONDONTWRITEBYTECODE, which these machines set), every process a
    test starts would compile Celery again, 1.4 s of CPU instead of 0.4 s."""
    command = [find_uv_bin(), "sync", "--locked", "--quiet", "--compile-bytecode"]
    command += ["--python", find_python(version)]
    result = subprocess.run(
        command,
        cwd=project,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
    return venv


def local_runner(project: Path) -> ModuleType:
    """The project's scripts/local.py, the runner `make local` ships, as a module."""
    path = project / "scripts" / "local.py"
    spec = importlib.util.spec_from_file_location(f"local_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def process_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command: state (R, S, T stopped, Z ended),
    parent, process group, session, ...; none if the process is gone."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return []


def descendants(pid: int) -> list[tuple[int, int]]:
    """Every process below `pid` in the process tree now, as (pid, process group)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := process_stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append((int(entry.name), int(fields[2])))
    found, parents = [], [pid]
    while parents:
        for child, group in children.get(parents.pop(), []):
            found.append((child, group))
            parents.append(child)
    return found


def processes_with(variable: str, value: str) -> list[int]:
    """The live processes whose environment sets `variable` to `value`: a process passes
    its environment on to what it starts, so a variable set for one names all it starts,
    in whatever session or process group, orphaned or not."""
    wanted = f"{variable}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        # A zombie's environment reads empty; one that ended meanwhile is gone.
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


class LocalProcess:
    """A process in its own process group, logging to <name>.log in its directory: started
    by the project's scripts/local.py (`runner`), as `make local` starts one."""

    def __init__(self, runner: ModuleType, name: str, argv: list[str], env: dict, cwd: Path):
        self.runner, self.name, self.argv, self.env, self.cwd = runner, name, argv, env, cwd
        self.log_path = cwd / f"{name}.log"
        # Exactly `env`, none of this test process's own; the log is appended to, so a
        # restart keeps the log of the process it replaces.
        planned = {"name": name, "argv": argv, "environment": env}
        self.popen: subprocess.Popen = runner.start(planned, cwd, environ={})

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_seconds: float = 30) -> bool:
        """Stop as `docker stop` does: SIGTERM to the main process (a warm shutdown for
        Celery), then SIGKILL to everything left (kill). True if the process ended by
        itself within the grace period."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        ended_by_itself = True
        try:
            self.popen.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            ended_by_itself = False
        self.kill()
        return ended_by_itself

    def kill(self) -> None:
        """SIGKILL the process group and every process below the process, at once, as the
        OOM killer or a lost node would. scripts/local.py starts each service in a session
        of its own, out of its process group: those are found in the process tree, read
        while the process is stopped (SIGSTOP) and can start no more."""
        # Not yet waited for, its pid is its own: what is below it is what it started.
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGSTOP)
                eventually(self._stopped, 10, f"{self.name} stopped by SIGSTOP")
            finally:
                # The pid, too: a child between fork and setsid is read in the stopped
                # group. The group, too: what a child forks meanwhile (a worker's pool).
                for pid, group in descendants(self.popen.pid):
                    for kill, target in ((os.kill, pid), (os.killpg, group)):
                        with contextlib.suppress(ProcessLookupError):
                            kill(target, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def _stopped(self) -> bool:
        """Stopped, ended (a zombie) or gone: it starts nothing new."""
        fields = process_stat(self.popen.pid)
        return not fields or fields[0] in {"T", "Z"}

    def restarted(self) -> "LocalProcess":
        """The same command started again, as Compose's restart policy would."""
        return LocalProcess(self.runner, self.name, self.argv, self.env, self.cwd)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return f"--- last lines of {self.name} ({self.log_path}) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )


def node_name(hostname: str) -> str:
    """The Celery node name a worker started with --hostname=`hostname` answers as: Celery
    expands %h to this host's name."""
    return hostname.replace("%h", socket.gethostname())


class LocalStack:
    """The project's services on localhost; use as a context manager."""

    # .env settings overridden per stack, as a user may do from the shell.
    ISOLATED_SETTINGS = ("RABBITMQ_USER", "RABBITMQ_VHOST", "POSTGRES_USER", "POSTGRES_DB")

    def __init__(
        self,
        project: Path,
        venv: Path,
        workdir: Path,
        variant: dict,
        own_rabbitmq: bool = False,
    ):
        """variant: the answers the project was baked with. own_rabbitmq: a RabbitMQ node
        of the stack's own, which a test may restart, instead of a vhost on the shared
        server."""
        self.variant = variant
        self.own_rabbitmq = own_rabbitmq
        self.project = project
        self.venv = venv
        self.workdir = workdir
        self.processes: list[LocalProcess] = []
        self._cleanup = contextlib.ExitStack()
        # Unique names keep stacks that run side by side apart on the shared servers.
        unique = f"{run_prefix()}{uuid.uuid4().hex[:8]}"
        self.isolation = {name: unique for name in self.ISOLATED_SETTINGS}
        self.model = compose_model(project, env=self.isolation)
        self.runner = local_runner(project)
        self.services = self.model["services"]
        self.addresses: dict[str, tuple[str, int]] = {}
        # What `make local` would start, once the servers' addresses are known.
        self.plan: list[dict] = []
        self.worker_nodes: dict[str, str] = {}  # Celery node name -> process name

    def another(self, workdir: Path, own_rabbitmq: bool = False) -> "LocalStack":
        """A new stack of the same project and environment, with servers of its own and
        no process started yet: for a test that needs workers started otherwise, or a
        server it may restart."""
        return LocalStack(self.project, self.venv, workdir, self.variant, own_rabbitmq)

    def __enter__(self) -> "LocalStack":
        try:
            if "redis" in self.services:
                self.addresses["redis"] = self._start_redis()
            if "rabbitmq" in self.services:
                self.addresses["rabbitmq"] = (
                    self._start_rabbitmq() if self.own_rabbitmq else self._provision_rabbitmq()
                )
            if "postgres" in self.services:
                self.addresses["postgres"] = self._provision_postgres()
            local_addresses = {
                name: f"{host}:{port}" for name, (host, port) in self.addresses.items()
            }
            if "rabbitmq" in self.addresses and not self.own_rabbitmq:
                host, port = RABBITMQ_MANAGEMENT_ADDRESS
                local_addresses["rabbitmq:15672"] = f"{host}:{port}"
            self.plan = self.runner.plan(self.model, local_addresses)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process (workers before servers), then remove what was provisioned."""
        try:
            self.stop_all()
        finally:
            self._cleanup.close()

    # -- the servers -------------------------------------------------------------

    def _start_redis(self) -> tuple[str, int]:
        port = free_port()
        data = self.workdir / "redis"
        data.mkdir()
        program, *args = self.services["redis"]["command"]
        local = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--logfile", ""]
        command = [shutil.which(program) or program, *args, *local]
        process = LocalProcess(self.runner, "redis", command, {}, self.workdir)
        self.processes.append(process)
        self._wait_for_redis(process, port)
        return ("127.0.0.1", port)

    def _wait_for_redis(self, process: "LocalProcess", port: int) -> None:
        password = self.services["redis"]["environment"]["REDISCLI_AUTH"]
        client = redis.Redis(port=port, password=password)
        try:
            self._wait_for(client.ping, "redis-server to answer", process)
        finally:
            client.close()

    def _provision_rabbitmq(self) -> tuple[str, int]:
        env = self.services["rabbitmq"]["environment"]
        user, vhost = env["RABBITMQ_DEFAULT_USER"], env["RABBITMQ_DEFAULT_VHOST"]
        rabbitmqctl("add_vhost", vhost)
        self._cleanup.callback(rabbitmqctl, "delete_vhost", vhost)
        rabbitmqctl("add_user", user, env["RABBITMQ_DEFAULT_PASS"])
        self._cleanup.callback(rabbitmqctl, "delete_user", user)
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        # As the image tags the user it makes (default_user_tags): the management API,
        # where Flower reads queue lengths, takes only users with a tag.
        rabbitmqctl("set_user_tags", user, "administrator")
        return RABBITMQ_ADDRESS

    def _start_rabbitmq(self) -> tuple[str, int]:
        """A RabbitMQ node configured by the rabbitmq service's environment (its user,
        password, vhost and server arguments), on free ports, with its data, Erlang
        cookie and config in the stack's directory."""
        port = free_port()
        base = self.workdir / "rabbitmq"
        (base / "home").mkdir(parents=True)
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{port}\n")
        (base / "rabbitmq-env.conf").write_text("")
        (base / "enabled_plugins").write_text("[].\n")
        env = {
            **self.services["rabbitmq"]["environment"],
            "PATH": os.environ["PATH"],
            "HOME": str(base / "home"),
            "RABBITMQ_NODENAME": f"{self.isolation['RABBITMQ_VHOST']}@localhost",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
        }
        process = LocalProcess(self.runner, "rabbitmq", [RABBITMQ_SERVER], env, self.workdir)
        self.processes.append(process)
        self._wait_for_rabbitmq(process, port)
        return ("127.0.0.1", port)

    def _wait_for_rabbitmq(self, process: "LocalProcess", port: int) -> None:
        """Wait until the stack's own RabbitMQ node takes logins of the service's user."""
        env = self.services["rabbitmq"]["environment"]
        url = (
            f"amqp://{env['RABBITMQ_DEFAULT_USER']}:{env['RABBITMQ_DEFAULT_PASS']}@127.0.0.1:{port}"
        )

        def logs_in() -> bool:
            with kombu.Connection(f"{url}/{env['RABBITMQ_DEFAULT_VHOST']}", connect_timeout=2) as c:
                c.connect()
            return True

        self._wait_for(logs_in, "RabbitMQ to take logins", process)

    def rabbitmq_node(self, *args: str) -> str:
        """rabbitmqctl on the stack's own node."""
        process = self.process("rabbitmq")
        env = {"PATH": os.environ["PATH"], "HOME": process.env["HOME"]}
        ctl = Path(RABBITMQ_SERVER).with_name("rabbitmqctl")
        result = subprocess.run(
            [str(ctl), "--silent", "-n", process.env["RABBITMQ_NODENAME"], *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"rabbitmqctl {args[0]}: {result.stderr}"
        return result.stdout

    def _provision_postgres(self) -> tuple[str, int]:
        env = self.services["postgres"]["environment"]
        role, database = sql.Identifier(env["POSTGRES_USER"]), sql.Identifier(env["POSTGRES_DB"])
        postgres_admin(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                role, sql.Literal(env["POSTGRES_PASSWORD"])
            )
        )
        self._cleanup.callback(postgres_admin, sql.SQL("DROP ROLE IF EXISTS {}").format(role))
        postgres_admin(sql.SQL("CREATE DATABASE {} OWNER {}").format(database, role))
        self._cleanup.callback(
            postgres_admin, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database)
        )
        return POSTGRES_ADDRESS

    # -- the project's services --------------------------------------------------

    def planned(self, service: str) -> list[dict]:
        """The service's processes in scripts/local.py's plan (a worker per replica)."""
        processes = [process for process in self.plan if process["service"] == service]
        assert processes, f"scripts/local.py plans no process for {service}"
        return processes

    def host_environment(self) -> dict[str, str]:
        """What every process gets from this machine: the project's virtual environment
        first on PATH, a home of the stack's own, a UTF-8 locale."""
        return {
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
        }

    def environment(self, service: str, **overrides: str) -> dict[str, str]:
        """The service's environment as scripts/local.py plans it, URLs pointed at this
        stack's servers."""
        env = self.host_environment()
        env.update(self.planned(service)[0]["environment"])
        env.update(overrides)
        return env

    def make_environment(self) -> dict[str, str]:
        """The worker's environment for the project's `make` targets: uv (the template's
        pinned one) uses this stack's virtual environment; pytest writes no cache into
        the bake."""
        env = self.environment("worker")
        env["PATH"] = f"{Path(find_uv_bin()).parent}{os.pathsep}{env['PATH']}"
        env.update(
            UV_PROJECT_ENVIRONMENT=str(self.venv),
            UV_PYTHON_DOWNLOADS="never",
            PYTEST_ADDOPTS="-p no:cacheprovider",
        )
        return env

    def command(self, service: str, argv: tuple[str, ...] = ()) -> list[str]:
        """The service's planned command (or `argv` instead), its program taken from the
        project's virtual environment."""
        program, *args = argv or self.planned(service)[0]["argv"]
        installed = self.venv / "bin" / program
        assert installed.exists(), f"{service}: {program} is not installed in {self.venv}"
        return [str(installed), *args]

    def start(self, service: str, name: str, *extra_args: str, **env: str) -> LocalProcess:
        """Start the service's planned command, `extra_args` appended, as process `name`."""
        return self.launch(
            name, self.command(service) + list(extra_args), self.environment(service, **env)
        )

    def launch(self, name: str, argv: list[str], environment: dict[str, str]) -> LocalProcess:
        """Start `argv` with exactly `environment` (see host_environment) as process
        `name`, logging to the stack's directory; stopped with the stack."""
        process = LocalProcess(self.runner, name, argv, environment, self.workdir)
        self.processes.append(process)
        return process

    def start_workers(self, *extra_args: str, **env: str) -> list[str]:
        """Start the planned workers (deploy.replicas of them), their command given
        `extra_args` and their environment `env` besides; returns their node names."""
        for planned in self.planned("worker"):
            argv = tuple(planned["argv"])
            self.launch(
                planned["name"],
                self.command("worker", argv) + list(extra_args),
                # Each replica's own (its liveness file, say), then the test's.
                self.environment("worker", **{**planned["environment"], **env}),
            )
            hostnames = [arg.removeprefix("--hostname=") for arg in argv if "--hostname=" in arg]
            node = node_name((hostnames or ["celery@%h"])[-1])
            self.worker_nodes[node] = planned["name"]
        return list(self.worker_nodes)

    def worker_process(self, node: str) -> LocalProcess:
        """The newest process of the worker with this Celery node name."""
        return self.process(self.worker_nodes[node])

    @property
    def worker_names(self) -> list[str]:
        """The Celery node names of the workers started so far."""
        return list(self.worker_nodes)

    def wait_for_workers(self, timeout: float = STARTUP_SECONDS) -> None:
        """Until every started worker answers a ping; fails at once if one has exited."""
        names = set(self.worker_names)

        def all_answer() -> bool:
            replies = self.celery.control.ping(timeout=1, limit=len(names))
            return {name for reply in replies for name in reply} >= names

        workers = [self.worker_process(name) for name in names]
        eventually(
            all_answer, timeout, f"workers {sorted(names)} answering a ping", watching=workers
        )

    def answering_workers(self) -> list[str]:
        """The node names of the workers that answer a ping now, sorted."""
        replies = self.celery.control.ping(timeout=5, limit=len(self.worker_names))
        return sorted(name for reply in replies for name in reply)

    def worker_log_paths(self) -> set[Path]:
        # A restarted worker appends to the log of the process it replaced.
        return {p.log_path for p in self.processes if p.name.startswith("worker")}

    def worker_log_ends(self) -> dict[Path, int]:
        """Where each worker log ends now; given to wait_for_worker_log(since=...), only
        what the workers log after this moment counts."""
        return {path: path.stat().st_size for path in self.worker_log_paths()}

    def wait_for_worker_log(
        self, pattern: str, count: int = 1, since: dict[Path, int] | None = None
    ) -> list:
        """Every match of `pattern` in the messages the workers logged (after `since`),
        once there are at least `count`. Matched against each record's message, not its
        JSON line: no escaping in the way, and `$` ends the message."""
        regex = re.compile(pattern, re.MULTILINE)
        since = since or {}

        def matches() -> list:
            messages = [
                record.get("message", record.get("line", ""))
                for path in self.worker_log_paths()
                for record in log_records(path, since.get(path, 0))
            ]
            found = [match for message in messages for match in regex.findall(message)]
            return found if len(found) >= count else []

        return eventually(
            matches, RESULT_TIMEOUT, f"workers logging {pattern!r} {count}x", interval=0.5
        )

    def task(self, name: str) -> str:
        """A sample task's registered name (the client knows tasks by name only)."""
        return f"{self.project.name}.tasks.{name}"

    def pool_stats(self) -> dict[str, dict]:
        """Every started worker's pool, by node name, as `inspect stats` gives it
        ("max-concurrency", "processes": the pool processes' pids, ...). Asks until each
        worker has answered: on a busy machine one can miss a reply's timeout, and a
        count without it would be short (a fault test then sends too few long tasks to
        keep its victim busy)."""
        names = set(self.worker_names)
        # A generous reply timeout: a busy machine can take seconds to answer.
        inspect = self.celery.control.inspect(destination=sorted(names), timeout=5)

        def all_answered() -> dict[str, dict]:
            stats = inspect.stats() or {}
            return stats if set(stats) >= names else {}

        stats = eventually(all_answered, STARTUP_SECONDS, f"{sorted(names)} answering stats")
        return {node: worker["pool"] for node, worker in stats.items()}

    def pool_slots(self) -> int:
        """How many tasks all workers together run at once."""
        return sum(pool["max-concurrency"] for pool in self.pool_stats().values())

    def wait_until_running(self, worker: str, task_name: str) -> list[dict]:
        """The worker's active tasks, once one of them is `task_name`."""
        # A generous reply timeout: a busy machine can take seconds to answer.
        inspect = self.celery.control.inspect(destination=[worker], timeout=5)

        def active() -> list[dict]:
            entries = (inspect.active() or {}).get(worker, [])
            return entries if any(entry["name"] == task_name for entry in entries) else []

        return eventually(active, RESULT_TIMEOUT, f"{worker} running {task_name}")

    def setting(self, name: str):
        """A setting of the project's Celery app, as its workers have it."""
        code = (
            f"import json; from {self.project.name}.celery import app;"
            f" print(json.dumps(app.conf.{name}))"
        )
        result = self.run("app", "python", "-c", code, timeout=RESULT_TIMEOUT)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def dead_letters(self, *argv: str) -> list[str]:
        """The lines of `python -m <slug>.deadletters ARGV`, run as the README says: in
        the app service's environment."""
        module = f"{self.project.name}.deadletters"
        result = self.run("app", "python", "-m", module, *argv, timeout=RESULT_TIMEOUT)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    def dead_letter_of(self, task_id: str) -> str:
        """The dead-letter queue's one line for a task id, once it is there (the worker
        dead-letters a message just after it stored the task's result)."""
        lines = eventually(
            lambda: [line for line in self.dead_letters("list") if task_id in line],
            RESULT_TIMEOUT,
            f"{task_id} in the dead-letter queue",
            interval=0.5,
        )
        assert len(lines) == 1, lines
        return lines[0]

    def run(
        self, service: str, *argv: str, timeout: float, **env: str
    ) -> subprocess.CompletedProcess:
        """Run a one-shot service (such as app) to the end, like `docker compose run --rm
        SERVICE [ARGV]`: its own command, or `argv` in its environment."""
        return subprocess.run(
            self.command(service, argv),
            env=self.environment(service, **env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @functools.cached_property
    def celery(self) -> Celery:
        """The stack's plain Celery client (see client())."""
        return self.client()

    def client(self) -> Celery:
        """A plain Celery client with the app's connection settings; it knows no task code."""
        env = self.environment("app")
        client = Celery("client", set_as_current=False)
        client.conf.update(
            broker_url=env["CELERY_BROKER_URL"],
            result_backend=env["CELERY_RESULT_BACKEND"],
            task_serializer="json",
            accept_content=["json"],
            result_accept_content=["json"],
        )
        self._cleanup.callback(client.close)
        return client

    def process(self, name: str) -> LocalProcess:
        """The newest process started under this name."""
        return next(p for p in reversed(self.processes) if p.name == name)

    def restart(self, process: LocalProcess) -> LocalProcess:
        """Start an ended process's command again, as Compose's restart policy would."""
        replacement = process.restarted()
        self.processes.append(replacement)
        return replacement

    def restart_server(self, name: str, down_seconds: float) -> float:
        """Restart a server of the stack's own (redis, or rabbitmq with own_rabbitmq) as
        `docker compose stop; sleep; docker compose start` would: SIGTERM, wait, start
        again on the same data, and wait until it answers. Returns how long it was down."""
        stopped_at = time.monotonic()
        assert self.process(name).stop(grace_seconds=60), f"{name} did not stop within 60 s"
        time.sleep(down_seconds)
        replacement = self.restart(self.process(name))
        wait = {"redis": self._wait_for_redis, "rabbitmq": self._wait_for_rabbitmq}[name]
        wait(replacement, self.addresses[name][1])
        return time.monotonic() - stopped_at

    def logs(self) -> str:
        return "\n".join(process.log_tail() for process in self.processes)

    def stop_workers(self) -> None:
        for process in self.processes:
            if process.name.startswith("worker"):
                process.stop()

    def restart_workers(self) -> None:
        """Stop every worker (a warm shutdown, then SIGKILL), start each again and wait
        until all answer."""
        self.stop_workers()
        for node in self.worker_names:
            self.restart(self.worker_process(node))
        self.wait_for_workers()

    def why_no_task_runs(self) -> str | None:
        """None if every worker is running and an add sent now returns its sum; else what
        is wrong, with what the workers say they hold (for a report)."""
        ended = [node for node in self.worker_names if not self.worker_process(node).alive()]
        if ended:
            return f"workers {ended} have ended"
        try:
            self.celery.send_task(self.task("add"), args=(20, 22)).get(timeout=RESULT_TIMEOUT)
        except Exception as error:
            inspect = self.celery.control.inspect(timeout=5)
            return (
                f"add(20, 22) sent after the test: {error!r}; ping: "
                f"{self.celery.control.ping(timeout=5)}; active: {inspect.active()}; "
                f"reserved: {inspect.reserved()}"
            )
        return None

    def stop_all(self) -> None:
        """Stop every process, newest first, even when stopping one is interrupted."""
        interrupted: BaseException | None = None
        for process in reversed(self.processes):
            try:
                process.stop()
            except BaseException as error:  # Ctrl-C during a grace period, for one
                interrupted = interrupted or error
                process.kill()
        if interrupted:
            raise interrupted

    def _wait_for(self, probe, what: str, process: LocalProcess) -> None:
        eventually(probe, STARTUP_SECONDS, what, ignoring=(Exception,), watching=[process])


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "--silent", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {result.stderr}")
    return result.stdout


def postgres_admin(statement: sql.Composable) -> None:
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        connection.execute(statement)


def shared_server_inventory() -> dict[str, list[str]] | None:
    """What a stack creates on the shared servers, as it is now; None if they are not up
    (then the run tier fails on its own)."""
    try:
        vhosts, users = rabbitmqctl("list_vhosts"), rabbitmqctl("list_users")
        with psycopg.connect(POSTGRES_ADMIN) as connection:
            databases = connection.execute("SELECT datname FROM pg_database").fetchall()
            roles = connection.execute("SELECT rolname FROM pg_roles").fetchall()
    except (OSError, RuntimeError, subprocess.SubprocessError, psycopg.Error):
        return None
    return {
        "RabbitMQ vhosts": sorted(vhosts.split()),
        "RabbitMQ users": sorted(line.split("\t")[0] for line in users.splitlines()),
        "PostgreSQL databases": sorted(name for (name,) in databases),
        "PostgreSQL roles": sorted(name for (name,) in roles),
    }
