"""Refuse answers the rendered project cannot work with, before anything is written.

Each refusal is one line on stderr: the field, the value given, what is allowed.
"""

import keyword
import re
import sys
import unicodedata

# Packages the rendered project imports, directly or through Celery. A package with
# one of these names would shadow the real one.
IMPORTED_PACKAGES = {
    "amqp", "billiard", "celery", "click", "dateutil", "flower", "greenlet",
    "humanize", "kombu", "markdown_it", "mdurl", "prometheus_client", "psycopg",
    "pygments", "pytest", "redis", "rich", "sqlalchemy", "tests", "tornado",
    "typing_extensions", "tzdata", "vine", "yaml",
}
# The packages in uv.lock, by normalized name: a project named like one would stand in
# for it (uv refuses a project that depends on itself, and locks only one of the two).
LOCKED_PACKAGES = set({{ locked_packages(cookiecutter.__uv_lock) | tojson }})
# Also the project's name in pyproject.toml and uv.lock, which must start and end with a
# letter or digit (PEP 508; uv refuses "_private").
SLUG_PATTERN = re.compile(r"[a-z]([a-z0-9_]*[a-z0-9])?")
# Every rendered line that names the package is written to fit ruff's 100 columns with a
# name this long, and names made from it stay within PostgreSQL's 63-byte identifiers and
# a DNS label's 63 characters (Kubernetes names, with suffixes such as "-flower").
SLUG_MAX_LENGTH = {{ cookiecutter._slug_max_length }}
# The project's own top-level folders: a package of the same name would be rendered into
# one of them.
PROJECT_FOLDERS = {"k8s", "scripts", "tests"}
WORKER_COUNT_RANGE = range(1, 65)


def slug_problem(slug: str) -> str | None:
    if not SLUG_PATTERN.fullmatch(slug):
        return (
            "a lowercase Python identifier (a-z, 0-9, _) that starts with a letter"
            " and ends with a letter or digit"
        )
    if len(slug) > SLUG_MAX_LENGTH:
        return f"at most {SLUG_MAX_LENGTH} characters"
    if keyword.iskeyword(slug):
        return "a name that is not a Python keyword"
    if slug in IMPORTED_PACKAGES or slug in sys.stdlib_module_names:
        return "a name that does not shadow a package the project imports"
    if re.sub(r"_+", "-", slug) in LOCKED_PACKAGES:
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


def main() -> int:
    answers = {
        # Free text comes through python_string, not tojson, so that emoji arrive whole.
        "project_name": ({{ cookiecutter.project_name | python_string }}, line_problem),
        "description": ({{ cookiecutter.description | python_string }}, description_problem),
        "author_name": ({{ cookiecutter.author_name | python_string }}, line_problem),
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
