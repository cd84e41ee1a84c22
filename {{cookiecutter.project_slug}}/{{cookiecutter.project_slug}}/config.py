"""Celery settings: https://docs.celeryq.dev/en/stable/userguide/configuration.html

Connection URLs come from the environment (compose.yaml builds them from .env);
every other setting is a choice made here, with its reason beside it.
"""

import os


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        # Without this, Celery would quietly fall back to amqp://guest@localhost.
        raise RuntimeError(f"{name} is not set: export it or use docker compose, which sets it")
    return value


broker_url = _required("CELERY_BROKER_URL")
result_backend = _required("CELERY_RESULT_BACKEND")

# JSON only: a worker that accepts pickle runs any code a broker client sends it.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# Acknowledge a task after it ran, not when it was received, so a worker that dies
# mid-task leaves the message to be delivered again (at least once; tasks must be
# safe to run twice).
task_acks_late = True
# ... and reject (requeue) it too when the pool process running it is killed.
task_reject_on_worker_lost = True
# With late acks, on a lost broker connection the message is redelivered anyway,
# so stop the running copy instead of finishing a duplicate.
worker_cancel_long_running_tasks_on_connection_loss = True
# Each pool process reserves one message at a time: a long task does not hold back
# messages that an idle worker could run now.
worker_prefetch_multiplier = 1

# Report STARTED, so the app can tell "queued" from "running".
task_track_started = True

# Keep trying to reach the broker at start-up: under Compose it may still be starting.
broker_connection_retry_on_startup = True

# Results are read soon after a task ends; a day keeps the backend small.
result_expires = 24 * 60 * 60
{%- if cookiecutter.result_backend == "postgresql" %}

# Check pooled database connections before use, so a PostgreSQL restart does not
# fail the next task's result write.
database_engine_options = {"pool_pre_ping": True}
{%- endif %}
{%- if cookiecutter.use_flower %}

# Flower builds its views from task events.
worker_send_task_events = True
task_send_sent_event = True
{%- endif %}
{%- if cookiecutter.use_beat %}

# Beat sends the sample task every BEAT_INTERVAL_SECONDS seconds (default 60).
beat_schedule = {
    "sample-add": {
        "task": "{{ cookiecutter.project_slug }}.tasks.add",
        "schedule": float(os.environ.get("BEAT_INTERVAL_SECONDS", "60")),
        "args": (20, 22),
    },
}
{%- endif %}

timezone = "UTC"
