"""The Celery application, laid out like Celery's own examples/next-steps/proj."""

from typing import Any

from celery import Celery
from celery import Task as CeleryTask
{%- if cookiecutter.result_backend == "postgresql" %}
from celery.signals import worker_init
{%- endif %}

# Imported for its signal handlers: JSON or text log lines, by LOG_FORMAT (logs.py).
from . import logs  # noqa: F401
{%- if cookiecutter.use_kubernetes %}
from .liveness import LivenessFile
{%- endif %}


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
)
# All settings, each with its reason, live in config.py.
app.config_from_object("{{ cookiecutter.project_slug }}.config")
{%- if cookiecutter.use_kubernetes %}
# The liveness file that Kubernetes' probe checks (liveness.py).
app.steps["worker"].add(LivenessFile)
{%- endif %}
{%- if cookiecutter.result_backend == "postgresql" %}


@worker_init.connect
def _set_up_result_backend(sender: Any, **_: Any) -> None:
    """Set up the result backend in the worker's main process, before the pool forks."""
    # Celery's database backend pools its connections in a pool process only if it was
    # set up before that process was forked; set up after, it opens and closes a new
    # PostgreSQL connection for every result: 4x the worker's CPU time per `add`
    # (BENCHMARKS.md). The start-up banner used to set it up; --quiet leaves that out.
    sender.app.backend  # noqa: B018
{%- endif %}
