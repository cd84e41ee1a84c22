"""Celery settings: https://docs.celeryq.dev/en/stable/userguide/configuration.html

Connection URLs come from the environment (compose.yaml builds them from .env);
every other setting is a choice made here, with its reason beside it.
"""

import os
{%- if cookiecutter.broker == "redis" %}

from .celery import Task
{%- endif %}


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
# ... but not for ever: a task that kills its own process (a segfault, the OOM killer,
# os._exit) would be requeued on every delivery. After this many deliveries that ended
# with the process running it dead, the message goes to the dead-letter queue instead
# (not a Celery setting; deadletters.py counts them in the message). Small, because
# each such delivery costs a pool process; above 1, because a pool process killed from
# outside once (the OOM killer picking it, say) should not cost the task. A worker
# killed or stopped whole is not counted at all: its main process is not there to see.
dead_letter_after_lost_deliveries = 3
# When the broker connection drops, let running tasks finish: the caller gets their
# result. Cancelling them (Celery's planned default) records REVOKED, and a caller
# waiting on the result fails although the message comes back and runs again.
# Either way the redelivered copy runs once more: at least once.
worker_cancel_long_running_tasks_on_connection_loss = False
# Keep retrying a result write while the backend restarts, instead of failing a
# task that has already done its work.
result_backend_always_retry = True
# Each pool process reserves one message at a time: a long task does not hold back
# messages that an idle worker could run now. Measured (BENCHMARKS.md): with Celery's
# default of 4, or with 2, short tasks sent while long ones held three of four
# processes waited 3.5 s for them, a process being free; with 1, 0.04 s. The price is
# paid on short tasks: about a third more worker CPU each on RabbitMQ, which delivers
# every message on its own as the one before it is acknowledged.
worker_prefetch_multiplier = 1
# Pool processes per worker; scale out with more worker replicas. Celery's default,
# the host's CPU count, would multiply with the replicas on one host.
worker_concurrency = int(os.environ.get("CELERY_WORKER_CONCURRENCY", "2"))

# A task that leaks memory must not take the host down. The worker's container has a
# memory limit (compose.yaml's deploy.resources, the Kubernetes manifest's limits, both
# this number): past it the kernel kills a process of the container, maybe the worker's
# main one, and every task it holds is delivered again. Before that, a pool process
# whose peak memory passed its share of the limit after a task is replaced by a fresh
# one: the task's result is kept, no other task is touched. Each pool process gets an
# even share of what the main process (about 60 MiB) leaves. The template sets this
# default and the containers' limits from one number; change them together.
worker_memory_limit_mib = int(os.environ.get("CELERY_WORKER_MEMORY_LIMIT_MIB", "{{ cookiecutter.__worker_memory_mib }}"))
worker_main_process_mib = 64
# In KiB, as Celery counts it (peak resident memory).
worker_max_memory_per_child = (
    (worker_memory_limit_mib - worker_main_process_mib) * 1024 // worker_concurrency
)

# A task that runs past task_time_limit seconds is killed, so a hung task cannot
# hold a pool process for ever; SoftTimeLimitExceeded is raised 5 s earlier so it
# can clean up. Every other timeout follows from this one: the sample long_task
# stays below it, and compose.yaml's stop_grace_period exceeds it. The template sets
# this default and the grace periods from one number; change them together.
task_time_limit = int(os.environ.get("CELERY_TASK_TIME_LIMIT", "{{ cookiecutter.__task_time_limit }}"))
task_soft_time_limit = task_time_limit - 5

# Report STARTED, so the app can tell "queued" from "running".
task_track_started = True

# The worker's consumer dead-letters messages it cannot run (pickle, unknown task
# names) instead of only logging and dropping them; see deadletters.py.
worker_consumer = "{{ cookiecutter.project_slug }}.deadletters:Consumer"
{%- if cookiecutter.broker == "redis" %}

# Redis has no acknowledgements of its own: a message a worker took but did not
# acknowledge (the worker was killed) goes back to the queue once it has been out
# for visibility_timeout seconds. It must be longer than a worker may hold a message:
# the longest retry wait plus the time limit (and any ETA/countdown you add), or a
# running task is delivered twice; shorter brings a lost worker's tasks back
# sooner. The sweep that requeues them runs every 5 s.
broker_transport_options: dict[str, object] = {
    "visibility_timeout": int(
        os.environ.get(
            "CELERY_VISIBILITY_TIMEOUT", str(Task.retry_backoff_max + task_time_limit + 5)
        )
    ),
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
}
{%- else %}

# A send returns only once RabbitMQ has taken the message (publisher confirms): a
# broker that stops right after cannot lose a task its caller believes was sent. A
# group's send waits for all its confirms at once, not one by one (confirms.py).
broker_transport_options: dict[str, object] = {"confirm_publish": True}
{%- endif %}

# Keep trying to reach the broker at start-up: under Compose it may still be starting.
broker_connection_retry_on_startup = True
# Keep trying to send a task while the broker restarts, for about a minute, instead
# of failing after 4 s (reconnecting) or three quick tries (sending again).
broker_transport_options["connect_retries_timeout"] = 60
task_publish_retry_policy = {
    "max_retries": 30,
    "interval_start": 0,
    "interval_step": 1,
    "interval_max": 2,
}

{%- if cookiecutter.result_backend == "postgresql" %}

# The result tables are created by the first process that reads or writes a result,
# not whenever the settings are loaded: every process sets its result backend up as
# it loads them (celery.py, to pool its connections), and a command that never touches
# a result (`celery inspect`, the app's --help) should not need PostgreSQL.
database_create_tables_at_setup = False

# Results are read soon after a task ends; after a day they are deleted by the
# celery.backend_cleanup task, which Beat sends daily at 04:00 (without Beat, call
# it yourself: celery call celery.backend_cleanup).
{%- else %}

# Results are read soon after a task ends; Redis drops them after a day.
{%- endif %}
result_expires = 24 * 60 * 60
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
# Beat's own scheduler, which also touches the file its health check reads
# (liveness.py; compose.yaml and the Kubernetes manifests name the file).
beat_scheduler = "{{ cookiecutter.project_slug }}.liveness:LivenessScheduler"
{%- endif %}

timezone = "UTC"
