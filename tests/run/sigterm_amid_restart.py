"""Run by test_edit_loop.py: the template's scripts/local.py `run()` on one `sleep` that an
edit to pkg/ (in the working directory) restarts, with its start() wrapped to send this
process SIGTERM as soon as a restart has started the new process: the moment between
starting a process and recording it. The template copies local.py unrendered, so the
template's own file runs.

Arguments: the path of local.py, then a variable and a value to set in the sleeper's
environment (to find it by).
"""

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

local_py, variable, value = sys.argv[1:]
spec = importlib.util.spec_from_file_location("local", local_py)
assert spec is not None and spec.loader is not None
local = importlib.util.module_from_spec(spec)
spec.loader.exec_module(local)
local.PROJECT = local.LOGS = Path.cwd()
local.POLL_SECONDS = local.SETTLE_SECONDS = 0.05
started: list[subprocess.Popen] = []
start_process = local.start


def start_then_sigterm(process, directory, environ=os.environ) -> subprocess.Popen:
    started.append(start_process(process, directory, environ))
    if len(started) > 1:  # the restart's
        os.kill(os.getpid(), signal.SIGTERM)
    return started[-1]


local.start = start_then_sigterm
plan = [
    {
        "service": "sleeper",
        "name": "sleeper",
        "argv": ["sleep", "600"],
        "environment": {variable: value},
        "healthcheck": None,
        "watch": [str(Path.cwd() / "pkg")],
        "one_shot": False,
    }
]
sys.exit(local.run(plan))
