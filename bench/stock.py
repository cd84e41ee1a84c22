"""Stock Celery: default settings, the generated project's three tasks, the same servers.

The benchmark's control. Its worker starts as Celery's docs start one
(`celery --app=bench.stock worker --loglevel=INFO`), in an environment of its own that
has Celery and the broker's client library at the generated project's versions.
"""

import os
import time
from typing import Any

from celery import Celery

app = Celery(
    "stock",
    broker=os.environ["CELERY_BROKER_URL"],
    backend=os.environ["CELERY_RESULT_BACKEND"],
)


@app.task
def add(x: float, y: float) -> float:
    for value in (x, y):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"add: {value!r} is not a number")
    return x + y


@app.task(bind=True)
def long_task(self: Any, seconds: int = 10) -> dict[str, Any]:
    for current in range(seconds):
        self.update_state(state="PROGRESS", meta={"current": current, "total": seconds})
        time.sleep(1)
    return {"current": seconds, "total": seconds, "status": f"worked for {seconds} s"}


@app.task
def process_data(numbers: list[float]) -> dict[str, float]:
    total = sum(numbers)
    return {
        "count": len(numbers),
        "sum": total,
        "mean": total / len(numbers),
        "min": min(numbers),
        "max": max(numbers),
    }
