"""Run tier: `make local`'s edit loop. The rendered scripts/local.py itself runs (its
watching included), an edit to a task's code reaches the running workers, and killing
local.py amid a restart leaves nothing of its stack running."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.localstack import (
    RESULT_TIMEOUT,
    STARTUP_SECONDS,
    LocalProcess,
    LocalStack,
    free_port,
    listening,
    make_venv,
    processes_with,
)
from harness.variants import TEMPLATE_DIR
from harness.waiting import eventually

pytestmark = pytest.mark.run

ORIGINAL = "    return x + y\n"
EDITED = "    return x + y + 1000\n"
# Flower's port in its container, fixed in compose.yaml; as local processes, stacks that
# run side by side on this machine need one each (the harness gives its own Flower
# processes theirs through FLOWER_PORT too).
FLOWER_LISTENS = 'FLOWER_PORT: "5555"'
STACK_MARKER = "TEMPLATE_TEST_STACK"


def own_project(stack: LocalStack, directory: Path) -> tuple[Path, Path, int | None]:
    """A copy of the stack's project, its virtual environment, and its Flower's port (None
    without Flower). The environment installs the copy editable as `make local` has it:
    an edit here leaves the shared stack alone. Its Flower listens on a free port."""
    project = directory / stack.project.name
    ignore = shutil.ignore_patterns(".local", "__pycache__", ".venv")
    shutil.copytree(stack.project, project, ignore=ignore)
    compose = project / "compose.yaml"
    text = compose.read_text(encoding="utf-8")
    assert text.count(FLOWER_LISTENS) == stack.variant["use_flower"], "Flower's port moved"
    flower_port: int | None = None
    if stack.variant["use_flower"]:
        flower_port = free_port()
        own_port = f'FLOWER_PORT: "{flower_port}"'
        compose.write_text(text.replace(FLOWER_LISTENS, own_port), encoding="utf-8")
    venv = make_venv(project, stack.variant["python_version"], directory / "venv")
    return project, venv, flower_port


def start_local(own: LocalStack, venv: Path, **env: str) -> LocalProcess:
    """The own project's scripts/local.py running `own`'s services (reload on, as `make
    local` runs it) against `own`'s servers, with `env` besides."""
    servers = [f"--server={name}={host}:{port}" for name, (host, port) in own.addresses.items()]
    return own.launch(
        "make-local",
        [str(venv / "bin" / "python"), str(own.project / "scripts" / "local.py"), *servers],
        # The stack's names for vhost, user and database, as a shell setting overrides .env.
        {**own.host_environment(), **own.isolation, **env},
    )


def adds_to(own: LocalStack, expected: int) -> Callable[[], bool]:
    """A check: add(2, 3), sent to `own`'s workers, returns `expected`."""

    def check() -> bool:
        result = own.celery.send_task(own.task("add"), (2, 3))
        return result.get(timeout=RESULT_TIMEOUT) == expected

    return check


def test_an_edited_task_reaches_the_running_workers(stack, tmp_path):
    """With scripts/local.py running the stack (reload on, as `make local` runs), editing
    add's code restarts the workers, which then return the edited result; local.py says
    which file it saw edited. An edit that breaks the code ends the workers, not the run:
    the next edit starts them again."""
    project, venv, flower_port = own_project(stack, tmp_path)
    workdir = tmp_path / "stack"
    workdir.mkdir()
    with LocalStack(project, venv, workdir, stack.variant) as own:
        local = start_local(own, venv)
        eventually(
            adds_to(own, 5), STARTUP_SECONDS, "workers started by local.py adding", watching=[local]
        )
        if flower_port:
            # Flower imports tasks.py as it starts, before it listens: the typo below,
            # written before then, ends Flower and with it the run (a loaded CI run did).
            eventually(
                lambda: listening(flower_port),
                STARTUP_SECONDS,
                "Flower started by local.py listening",
                watching=[local],
            )
        workers = [process["name"] for process in own.planned("worker")]
        tasks = project / project.name / "tasks.py"
        code = tasks.read_text(encoding="utf-8")
        assert code.count(ORIGINAL) == 1, "add's return line has changed: update this test"
        # A typo first: the workers end, and wait for the next edit rather than end the run.
        tasks.write_text(code.replace(ORIGINAL, "    return x +\n"), encoding="utf-8")
        eventually(
            lambda: all(
                f"{name} ended" in local.log_path.read_text(encoding="utf-8") for name in workers
            ),
            STARTUP_SECONDS,
            "the workers ending on the typo",
            watching=[local],
        )
        tasks.write_text(code.replace(ORIGINAL, EDITED), encoding="utf-8")
        eventually(
            adds_to(own, 1005),
            STARTUP_SECONDS,
            "restarted workers running the edited add",
            watching=[local],
        )
        edited = f"edited {Path(project.name, 'tasks.py')}: restarting"
        log = local.log_path.read_text(encoding="utf-8")
        assert edited in log, local.log_tail()
        # The workers, and Beat where chosen: what compose.yaml's develop section restarts.
        restarting = [p["name"] for p in own.plan if p["watch"] and not p["one_shot"]]
        assert set(workers) <= set(restarting)
        for name in restarting:
            assert f"restarted {name}\n" in log, local.log_tail()
        # Ctrl-C's way out: local.py stops what it started before the stack goes. It
        # gives each process its own grace (STOP_SECONDS, SIGKILL after), as `docker
        # compose down` does; a process restarted a moment ago can use it (a CI run saw
        # local.py still waiting after 60 s), so it gets that grace and a margin.
        grace = own.runner.STOP_SECONDS + 30
        assert local.stop(grace_seconds=grace), f"local.py did not stop\n{local.log_tail()}"


# The process tree is the same whatever the broker and backend: one variant, with every
# kind of service local.py starts.
@pytest.mark.only_variants(
    broker="rabbitmq", result_backend="postgresql", use_beat=True, use_flower=True
)
def test_a_killed_local_py_leaves_no_process_of_its_stack(stack, tmp_path):
    """SIGKILL to local.py as the harness sends it (LocalProcess.kill: a test's timeout, a
    stop whose grace ran out) right after an edit restarted its workers: no process of its
    stack survives, neither the services it started in sessions of their own, the ones
    started a moment ago included, nor their pool processes."""
    project, venv, _ = own_project(stack, tmp_path)
    workdir = tmp_path / "stack"
    workdir.mkdir()
    # Passed on to every process local.py starts, and theirs: names them all, whatever
    # their session or process group, without asking local.py or the harness.
    marker = uuid.uuid4().hex
    with LocalStack(project, venv, workdir, stack.variant) as own:
        local = start_local(own, venv, **{STACK_MARKER: marker})
        eventually(
            adds_to(own, 5), STARTUP_SECONDS, "workers started by local.py adding", watching=[local]
        )
        tasks = project / project.name / "tasks.py"
        tasks.write_text(tasks.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
        restarting = [p["name"] for p in own.plan if p["watch"] and not p["one_shot"]]
        eventually(
            lambda: all(
                f"restarted {name}\n" in local.log_path.read_text(encoding="utf-8")
                for name in restarting
            ),
            STARTUP_SECONDS,
            "local.py restarting the services after the edit",
            watching=[local],
        )
        services = [p["name"] for p in own.plan if not p["one_shot"]]
        started = processes_with(STACK_MARKER, marker)
        assert len(started) > len(services), f"local.py and {services}: only pids {started}"
        try:
            local.kill()
            eventually(
                lambda: not processes_with(STACK_MARKER, marker),
                10,
                "every process of the killed local.py's stack gone",
            )
        finally:
            kill_marked(marker)  # whatever the kill missed


# Runs the template's local.py with a SIGTERM amid a restart (its docstring says how).
SIGTERM_AMID_RESTART = Path(__file__).with_name("sigterm_amid_restart.py")


def kill_marked(marker: str) -> None:
    """SIGKILL whatever still carries the stack's marker: nothing may outlive a test."""
    for pid in processes_with(STACK_MARKER, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_sigterm_amid_a_restart_stops_the_restarted_process(tmp_path):
    """SIGTERM to local.py just as a restart has started a process, before local.py has
    recorded it: local.py still stops that process, and ends."""
    (tmp_path / "pkg").mkdir()
    code = tmp_path / "pkg" / "code.py"
    code.write_text("x = 1\n", encoding="utf-8")
    marker = uuid.uuid4().hex
    local_py = TEMPLATE_DIR / "{{cookiecutter.project_slug}}" / "scripts" / "local.py"
    log = tmp_path / "local.log"
    with log.open("wb") as output:
        local = subprocess.Popen(
            [sys.executable, SIGTERM_AMID_RESTART, local_py, STACK_MARKER, marker],
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        eventually(
            lambda: "keep running" in log.read_text(encoding="utf-8"),
            STARTUP_SECONDS,
            "local.py starting the sleeper",
        )
        code.write_text("x = 2\n", encoding="utf-8")
        try:
            local.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"local.py still running 60 s after SIGTERM\n{log.read_text()}"
            ) from None
        eventually(
            lambda: not processes_with(STACK_MARKER, marker),
            10,
            "the restarted sleeper stopped with local.py",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(local.pid, signal.SIGKILL)
        local.wait()
        kill_marked(marker)
