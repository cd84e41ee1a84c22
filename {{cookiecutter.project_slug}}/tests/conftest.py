"""The tests run the tasks on a real worker, started in this process, against the
broker and result backend named by CELERY_BROKER_URL and CELERY_RESULT_BACKEND."""

import pytest
from celery.contrib.testing.worker import start_worker

from {{ cookiecutter.project_slug }}.celery import app


@pytest.fixture(scope="session")
def worker():
    """A worker consuming from the real broker for the whole test session."""
    # Threads let long_task report progress while the test reads it. The in-thread
    # worker sees the stop only when its event loop next wakes, which can be 10 s away
    # (kombu's longest poll), so Celery's default 10 s wait for it is too short.
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=30
    ):
        yield
