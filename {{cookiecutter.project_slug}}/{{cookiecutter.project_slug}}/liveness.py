"""The liveness signal of the worker and of Beat, for their health checks: compose.yaml's
healthchecks and Kubernetes' probes both check the age of a file kept fresh here.

`celery inspect ping` as a check costs about 0.3 s of CPU per call (a whole Celery
client starts, connects and waits for replies), and every worker receives every ping
(a broadcast), so its cost grows with the square of the worker count; and it fails
whenever the broker blips. Instead, the worker's own event loop touches a file every few
seconds; the check only reads the file's age, for a few milliseconds of CPU whatever the
number of workers (README.md, "Health checks"). The loop runs only once the worker is
connected to the broker and consuming: the first touch says "ready", and a hung loop
stops touching. So does a broker outage, while Celery reconnects: the checks allow a
minute of silence, and then some failed checks, before calling the worker unhealthy.

Beat's check reads a file its scheduler touches on every tick in the same way.
Both are idle unless CELERY_WORKER_LIVENESS_FILE or CELERY_BEAT_LIVENESS_FILE names
the file (compose.yaml and the Kubernetes manifests set them).
"""

import os
from pathlib import Path
from typing import Any

from celery import beat, bootsteps


def _path(variable: str) -> Path | None:
    setting = os.environ.get(variable, "")
    return Path(setting) if setting else None


# Seconds between touches; the checks' age limit is several times this.
INTERVAL = 5.0


class LivenessFile(bootsteps.StartStopStep):
    """Touch CELERY_WORKER_LIVENESS_FILE from the worker's event loop."""

    # The Hub's timer runs in the event loop: no loop, no touch.
    requires = ("celery.worker.components:Hub",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path = _path("CELERY_WORKER_LIVENESS_FILE")
        self.timer_entry: Any = None

    def start(self, parent: Any) -> None:
        if self.path is None:
            return
        # A file left by an earlier run (a restarted container keeps its /tmp) says
        # nothing about this one.
        self.path.unlink(missing_ok=True)
        # Not touched here: the first touch comes from the event loop, which runs once the
        # worker is connected and consuming, so a fresh file means ready, not just started.
        parent.timer.call_after(0, self.touch)
        self.timer_entry = parent.timer.call_repeatedly(INTERVAL, self.touch)

    def stop(self, parent: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
        if self.path is not None:
            # A worker that shuts down is no longer alive.
            self.path.unlink(missing_ok=True)

    def touch(self) -> None:
        if self.path is not None:
            self.path.touch()


class LivenessScheduler(beat.PersistentScheduler):
    """Beat's default scheduler, touching CELERY_BEAT_LIVENESS_FILE on every tick (at
    least every beat_max_loop_interval, 300 s), for Beat's health check."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        path = _path("CELERY_BEAT_LIVENESS_FILE")
        if path is not None:
            path.touch()
        return super().tick(*args, **kwargs)
