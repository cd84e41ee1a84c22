"""A task only the run tier's workers have, loaded into a rendered project's worker with
`celery ... worker --include=poison` and this directory on PYTHONPATH: the sample tasks
stay free of it, and the worker's command is otherwise compose.yaml's own."""

import os
from pathlib import Path

from celery import shared_task


@shared_task(name="poison.end_process")
def end_process(deliveries: str) -> None:
    """Note this delivery (the pid of the process running it) in the file `deliveries`,
    then end that process at once, as a segfault or the OOM killer would: no cleanup, no
    result, no exception for the task's own handlers to see."""
    with Path(deliveries).open("a", encoding="utf-8") as log:
        log.write(f"{os.getpid()}\n")
    os._exit(70)
