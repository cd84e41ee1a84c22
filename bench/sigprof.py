"""Where a command's processes spend their CPU, by Python function: runs the command (a
Celery worker) with a sampler in every process it forks, and writes each process's
counts to DIR/<pid>.json. bench/cpu.py runs the worker this way:

    python -m bench.sigprof DIR celery --app=M worker ...

The sampler is the kernel's CPU-time timer (ITIMER_PROF): SIGPROF comes after INTERVAL
of CPU the process spent, user or system, and never while it waits, so the counts are
CPU time. The kernel checks the timer at its clock tick (every 4 ms at 250 Hz), so a
sample is a tick the process was found running in: bench/cpu.py weighs them by the CPU
it measured. Each is charged to the Python function running when the handler
runs; the C code it called (a socket write, a JSON encoder) counts as its own, as in
py-spy's "self time". A wall-clock sampler (py-spy) counts a process that is ready to
run but waits for a core as busy: on two cores, right after it wakes another process
with a socket write, which would charge the broker's turn to the writer.
"""

import atexit
import json
import os
import signal
import sys
import sysconfig
from collections import Counter
from pathlib import Path
from types import FrameType

# Below the clock tick: a sample in every tick the process runs in.
INTERVAL = 0.001
# Pool processes end with os._exit, which skips atexit: counts are written every so
# many samples (tens of ms of CPU), so that little is lost at the end.
WRITE_EVERY = 10
NO_PYTHON_FRAME = "(no Python frame)"
STANDARD_LIBRARY = sysconfig.get_paths()["stdlib"] + "/"

counts: Counter[str] = Counter()
out_dir = Path()


def function_name(frame: FrameType | None) -> str:
    """ "function (file)", the file from its package on (as py-spy names it)."""
    if frame is None:
        return NO_PYTHON_FRAME
    path = frame.f_code.co_filename
    if "site-packages/" in path:
        path = path.rsplit("site-packages/", 1)[1]
    elif path.startswith(STANDARD_LIBRARY):
        path = "stdlib/" + path.removeprefix(STANDARD_LIBRARY)
    else:  # bench/, or "<frozen ...>"
        path = "/".join(Path(path).parts[-2:])
    return f"{frame.f_code.co_name} ({path})"


def sample(signum: int, frame: FrameType | None) -> None:
    if frame is not None and frame.f_code.co_filename == __file__:
        return  # the sampler's own writing: not the worker's
    counts[function_name(frame)] += 1
    if counts.total() % WRITE_EVERY == 0:
        write()


def write() -> None:
    Path(out_dir, f"{os.getpid()}.json").write_text(json.dumps(counts))


def start() -> None:
    """Sampling from here on, in this process (interval timers are not inherited)."""
    counts.clear()
    signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)


def main() -> None:
    global out_dir
    out_dir = Path(sys.argv[1])
    command = sys.argv[2:]
    signal.signal(signal.SIGPROF, sample)
    os.register_at_fork(after_in_child=start)
    atexit.register(write)
    start()
    sys.argv = command
    if Path(command[0]).name != "celery":
        raise SystemExit(f"bench.sigprof runs a celery command, not {command[0]}")
    from celery.__main__ import main as celery

    celery()


if __name__ == "__main__":
    main()
