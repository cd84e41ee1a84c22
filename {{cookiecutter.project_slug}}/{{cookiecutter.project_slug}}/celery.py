"""The Celery application, laid out like Celery's own examples/next-steps/proj."""

from typing import Any

from celery import Celery
from celery import Task as CeleryTask
from celery.signals import worker_init

# Imported for its signal handlers: JSON or text log lines, by LOG_FORMAT (logs.py).
from . import logs  # noqa: F401
from .liveness import LivenessFile


class Task(CeleryTask):
    """The base of every task here: how a failing task is retried, then dead-lettered."""

    # A task that names errors in autoretry_for is tried again up to max_retries
    # times, each after a random wait between 0 and 1, 2, 4 ... seconds (exponential
    # backoff with full jitter, so that many failing tasks do not retry in step),
    # capped at retry_backoff_max. config.py sizes Redis's visibility timeout with it.
    retry_backoff = True
    retry_backoff_max = 10
    retry_jitter = True
    max_retries = 3
    # ... but never less than 1 s. The retry message is sent before this worker records
    # RETRY; sent with no wait, it can finish on another worker first, and the late
    # RETRY would then overwrite its SUCCESS, leaving the caller waiting for ever.
    retry_min_wait = 1

    def retry(self, *args: Any, **options: Any) -> Any:
        if options.get("countdown") is not None and options.get("eta") is None:
            options["countdown"] = max(options["countdown"], self.retry_min_wait)
        return super().retry(*args, **options)

    # After that, or on an error it does not retry, the message goes to the
    # dead-letter queue (deadletters.py).
    Request = "{{ cookiecutter.project_slug }}.deadletters:DeadLetteringRequest"


# Typed as a plain Celery app: celery-types' helpers (start_worker) expect one.
app: Celery = Celery(
    "{{ cookiecutter.project_slug }}",
    task_cls=Task,
    include=["{{ cookiecutter.project_slug }}.tasks"],
{%- if cookiecutter.broker == "rabbitmq" %}
    # Publisher confirms waited for once per send, not once per message (confirms.py).
    amqp="{{ cookiecutter.project_slug }}.confirms:ConfirmingAMQP",
{%- endif %}
)
# All settings, each with its reason, live in config.py.
app.config_from_object("{{ cookiecutter.project_slug }}.config")
# The liveness file that the worker's health check reads (liveness.py).
app.steps["worker"].add(LivenessFile)
{%- if cookiecutter.result_backend == "postgresql" %}


@app.on_after_configure.connect
def _pool_result_connections(sender: Any, **_: Any) -> None:
    """Keep a pool of PostgreSQL connections for this process's result reads and writes."""
    # Celery's database backend pools its connections only in a process it saw forked (a
    # worker's pool process); anywhere else it opens and closes a connection for every
    # result it reads or writes: 7-8 ms of CPU per read in the app's live view
    # (BENCHMARKS.md). A process that does not fork (the app, Beat, Flower, your own
    # clients) may pool safely, so every process does once its settings are loaded, in
    # the thread that loads them (Celery gives each thread a backend of its own)...
    sender.backend.session_manager.forked = True

{%- endif %}


@worker_init.connect
def _set_up_result_backend(sender: Any, **_: Any) -> None:
    """Set up the result backend in the worker's main process, before the pool forks."""
    # Set up later, each pool process would do it on its first task: import the backend's
    # client library (about 80 modules of redis-py for a Redis backend on RabbitMQ: 0.17 s
    # of CPU per pool process, about 6% of a worker's CPU per `add` over a group of 3,000;
    # BENCHMARKS.md), and again in each process that replaces one. Forked after this, they
    # have it already. Celery's start-up banner sets it up as a side effect; --quiet, which
    # keeps the worker's logs JSON-only, leaves that out.
{%- if cookiecutter.result_backend == "postgresql" %}
    backend = sender.app.backend
    # ... except the worker's main process, which forks the pool processes at any time
    # (a replaced one, too): a pooled connection it held would be shared with them. It
    # opens one per result, as Celery means it to; each pool process pools its own.
    backend.session_manager.forked = False
    # A pool process pools only if the backend was set up before it was forked; set up
    # after, it opens and closes a new PostgreSQL connection for every result: 4x the
    # worker's CPU time per `add` (BENCHMARKS.md). (Loading the settings sets it up, too.)
    # An engine, never connected nor kept (a database_engine_callback of yours sees it):
    # making it imports SQLAlchemy's PostgreSQL dialect and psycopg here, once, instead of
    # in each pool process at its first result (BENCHMARKS.md).
    backend.session_manager.get_engine(backend.url, **backend.engine_options)
{%- else %}
    _ = sender.app.backend  # reading the property sets it up
{%- endif %}
