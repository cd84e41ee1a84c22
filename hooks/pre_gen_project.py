"""Refuse answers the rendered project cannot work with, before anything is written.

Each refusal is one line on stderr: the field, the value given, what is allowed.
"""

import keyword
import re
import sys

# Packages the rendered project imports, directly or through Celery. A package with
# one of these names would shadow the real one.
IMPORTED_PACKAGES = {
    "amqp", "billiard", "celery", "click", "dateutil", "flower", "greenlet",
    "humanize", "kombu", "prometheus_client", "psycopg", "pytest", "redis",
    "sqlalchemy", "tests", "tornado", "typing_extensions", "tzdata", "vine",
}
SLUG_PATTERN = re.compile(r"[a-z_][a-z0-9_]*")
WORKER_COUNT_RANGE = range(1, 65)


def slug_problem(slug: str) -> str | None:
    if not SLUG_PATTERN.fullmatch(slug):
        return "a lowercase Python identifier (a-z, 0-9, _; not starting with a digit)"
    if keyword.iskeyword(slug):
        return "a name that is not a Python keyword"
    if slug in IMPORTED_PACKAGES or slug in sys.stdlib_module_names:
        return "a name that does not shadow a package the project imports"
    return None


def worker_count_problem(text: str) -> str | None:
    if not (text.isascii() and text.isdigit()) or int(text) not in WORKER_COUNT_RANGE:
        return f"a whole number from {WORKER_COUNT_RANGE.start} to {WORKER_COUNT_RANGE.stop - 1}"
    return None


def main() -> int:
    answers = {
        "project_slug": ({{ cookiecutter.project_slug | tojson }}, slug_problem),
        "worker_count": ({{ cookiecutter.worker_count | string | tojson }}, worker_count_problem),
    }
    for field, (value, find_problem) in answers.items():
        allowed = find_problem(value)
        if allowed:
            print(f"ERROR: {field} {value!r} is not allowed; allowed: {allowed}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
