"""The log files of a stack's Celery processes: JSON lines (LOG_FORMAT=json in compose.yaml)."""

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

# Every log record of a Celery service has these.
LOG_KEYS = {"time", "level", "logger", "message"}

# What a worker prints, not logs, when it is told to stop: an empty line, then this
# (celery.apps.worker; the rendered README says these stay plain text).
SHUTDOWN_PRINTS = re.compile(r"|worker: \w+ shutdown \(MainProcess\)")


def log_records(path: Path, start: int = 0) -> list[dict]:
    """The JSON records of a process log from byte `start` on, one a line; a line that is
    not one, such as what Celery prints rather than logs at a shutdown, is kept as
    {"line": text}."""
    with path.open("rb") as log:
        log.seek(start)
        text = log.read().decode("utf-8", errors="replace")
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        records.append(record if isinstance(record, dict) else {"line": line})
    return records


def assert_json_lines(path: Path) -> list[dict]:
    """Every line of the log is a JSON object with LOG_KEYS and a UTC ISO 8601 time,
    except the lines a worker prints when it stops; returns the JSON records."""
    records = [
        record
        for record in log_records(path)
        if not SHUTDOWN_PRINTS.fullmatch(record.get("line", "no"))
    ]
    assert records, f"{path} has no records"
    for record in records:
        assert set(record) >= LOG_KEYS, f"{path}: {record}"
        assert datetime.fromisoformat(record["time"]).utcoffset() == timedelta(0), record
    return records
