"""Log records as JSON lines or as readable text, chosen by LOG_FORMAT.

LOG_FORMAT=json (compose.yaml sets it for every Celery service): one JSON object per
line on stdout, with time, level, logger and message, plus task_id and task_name when
the record is about a task; a log collector can then filter and count without parsing
text. Anything else: Celery's own text format, for reading in a terminal.

The worker and Beat set up logging through Celery; the signal handlers below give
Celery's handlers this formatter, so Celery's own records ("Task ... received",
"... succeeded in ...") come out like the tasks' own. The app calls `configure()`.
"""

import logging
import os
import sys
from typing import Any

from celery._state import get_current_task
from celery.signals import after_setup_logger, after_setup_task_logger
from celery.utils.log import get_multiprocessing_logger
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

JSON = os.environ.get("LOG_FORMAT", "text").strip().lower() == "json"


class TaskJsonFormatter(JsonFormatter):
    """python-json-logger's formatter, with the id and name of the task a record is about."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            # ISO 8601 in UTC, whatever the container's time zone.
            timestamp="time",
            # Celery's extra `data` repeats what the message says (and a failure's
            # whole traceback, which is in exc_info already).
            reserved_attrs=[*RESERVED_ATTRS, "data"],
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        # Inside a running task, Celery's task context names it (as Celery's own
        # TaskFormatter does); outside one, Celery passes the task of its records
        # ("received", "retry", "succeeded", "raised") in extra={"data": ...}.
        task = get_current_task()
        data = getattr(record, "data", None)
        if task is not None and task.request.id:
            log_data["task_id"], log_data["task_name"] = task.request.id, task.name
        elif isinstance(data, dict) and data.get("id") and data.get("name"):
            log_data["task_id"], log_data["task_name"] = data["id"], data["name"]


def _use_json(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        handler.setFormatter(TaskJsonFormatter())
        # Celery logs to stderr; logs go to stdout, so that a collector that takes
        # stderr for errors does not mark every line an error (the level is in the line).
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
            handler.setStream(sys.__stdout__)


if JSON:
    # JSON from the start, before Celery sets up logging (which replaces this handler
    # with its own): Celery's start-up warnings are records too, and so is what
    # Flower logs, as it keeps the handler it finds.
    logging.captureWarnings(True)
    _start = logging.StreamHandler(sys.stdout)
    _start.setFormatter(TaskJsonFormatter())
    logging.basicConfig(handlers=[_start])


@after_setup_logger.connect
def _root_logger(logger: logging.Logger, **_: object) -> None:
    if JSON:
        _use_json(logger)
        # Celery gives the pool's own logger a handler of its own as well.
        if pool_logger := get_multiprocessing_logger():
            _use_json(pool_logger)


@after_setup_task_logger.connect
def _task_logger(logger: logging.Logger, **_: object) -> None:
    # get_task_logger() loggers write through this one, which does not propagate.
    if JSON:
        _use_json(logger)


def configure(level: int = logging.WARNING) -> None:
    """Logging for a program that is not a Celery worker or Beat, such as the app: records
    on stderr, so they stay apart from what the program prints as its output."""
    handler = logging.StreamHandler(sys.stderr)
    if JSON:
        handler.setFormatter(TaskJsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
