"""Every rule an answer must meet, in one place.

cookiecutter.json's private `__answers_checked` calls `check_answers` once every prompt is
answered, before cookiecutter writes anything, so a refused bake leaves nothing on disk,
whether the answers came from the prompts, a config file or the command line. (A
pre-generation hook runs too late for one of them: an empty project_slug makes the
project directory the output directory, and cookiecutter stops at "already exists"
before any hook runs.) Choices (python_version, broker, result_backend) and booleans
cookiecutter checks itself.
"""

import keyword
import re
import sys
import unicodedata
from collections.abc import Callable, Collection, Mapping

import click

# Packages the rendered project imports, directly or through Celery. A package with
# one of these names would shadow the real one.
IMPORTED_PACKAGES = {
    "amqp", "billiard", "celery", "click", "dateutil", "flower", "greenlet",
    "humanize", "kombu", "markdown_it", "mdurl", "prometheus_client", "psycopg",
    "pygments", "pytest", "redis", "rich", "sqlalchemy", "tests", "tornado",
    "typing_extensions", "tzdata", "vine", "yaml",
}  # fmt: skip
# Also the project's name in pyproject.toml and uv.lock, which must start and end with a
# letter or digit (PEP 508; uv refuses "_private").
SLUG_PATTERN = re.compile(r"[a-z]([a-z0-9_]*[a-z0-9])?")
# The project's own top-level folders: a package of the same name would be rendered into
# one of them.
PROJECT_FOLDERS = {"k8s", "scripts", "tests"}
WORKER_COUNT_RANGE = range(1, 65)


class InvalidAnswer(click.ClickException):
    """An answer the rendered project cannot work with. cookiecutter's command line is a
    click command, which prints a ClickException as one line ("Error: <message>") and
    exits 1, without a traceback; a program that calls cookiecutter gets the exception."""


def slug_problem(slug: str, max_length: int, locked_packages: Collection[str]) -> str | None:
    if not SLUG_PATTERN.fullmatch(slug):
        return (
            "a lowercase Python identifier (a-z, 0-9, _) that starts with a letter"
            " and ends with a letter or digit"
        )
    # Every rendered line that names the package is written to fit ruff's 100 columns with
    # a name this long, and names made from it stay within PostgreSQL's 63-byte identifiers
    # and a DNS label's 63 characters (Kubernetes names, with suffixes such as "-flower").
    if len(slug) > max_length:
        return f"at most {max_length} characters"
    if keyword.iskeyword(slug):
        return "a name that is not a Python keyword"
    if slug in IMPORTED_PACKAGES or slug in sys.stdlib_module_names:
        return "a name that does not shadow a package the project imports"
    # A project named like a package in its uv.lock would stand in for it (uv refuses a
    # project that depends on itself, and locks only one of the two).
    if re.sub(r"_+", "-", slug) in locked_packages:
        return "a name that no package in uv.lock has (such as wcwidth or python_json_logger)"
    if slug in PROJECT_FOLDERS:
        return f"a name other than the project's folders ({', '.join(sorted(PROJECT_FOLDERS))})"
    return None


def control_characters(text: str) -> set[str]:
    # Cc: ASCII and C1 controls (NUL, ESC, DEL, line feeds); Zl, Zp: Unicode line and
    # paragraph separators.
    return {char for char in text if unicodedata.category(char) in ("Cc", "Zl", "Zp")}


def line_problem(text: str) -> str | None:
    # A title or an author is one line: a line break would end a Markdown heading or the
    # Author field of the wheel's metadata early, and hatchling refuses an empty author.
    if not text.strip() or control_characters(text):
        return "one line of text, not blank, without control characters"
    return None


def description_problem(text: str) -> str | None:
    # Line breaks and tabs are text; other control characters (NUL, ESC) would land raw in
    # README.md, where git takes the file for binary or a terminal runs them.
    if control_characters(text) - set("\t\n\r\u2028\u2029"):
        return "text without control characters other than tabs and line breaks"
    return None


def worker_count_problem(text: str) -> str | None:
    if not (text.isascii() and text.isdigit()) or int(text) not in WORKER_COUNT_RANGE:
        return f"a whole number from {WORKER_COUNT_RANGE.start} to {WORKER_COUNT_RANGE.stop - 1}"
    return None


def check_answers(answers: Mapping, locked_packages: Collection[str]) -> str:
    """Raise InvalidAnswer naming the first answer that breaks a rule, the value given and
    what is allowed; return "" (the value of `__answers_checked`) when all are good."""

    def slug_rule(slug: str) -> str | None:
        return slug_problem(slug, int(answers["_slug_max_length"]), locked_packages)

    rules: dict[str, Callable[[str], str | None]] = {
        "project_name": line_problem,
        "description": description_problem,
        "author_name": line_problem,
        "project_slug": slug_rule,
        "worker_count": worker_count_problem,
    }
    for field, find_problem in rules.items():
        value = str(answers[field])
        allowed = find_problem(value)
        if allowed:
            raise InvalidAnswer(f"{field} {value!r} is not allowed; allowed: {allowed}")
    return ""
