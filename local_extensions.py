"""Jinja helpers for the template, loaded through `_extensions` in cookiecutter.json."""

import json
import os
import re
from pathlib import Path

from jinja2.ext import Extension

from answer_rules import check_answers

_TEMPLATE_ROOT = Path(__file__).parent


def toml_string(value: str) -> str:
    """Quote free text as a TOML basic string that reads back unchanged."""
    # A JSON string is a TOML basic string, except that TOML also wants DEL escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def python_string(value: str) -> str:
    """Quote free text as a Python string literal that reads back unchanged."""
    # Not tojson: JSON writes an emoji as two \\u surrogate escapes, which Python reads
    # back as two lone surrogates instead of the emoji.
    return repr(value)


# A uv.lock is a header, then one "[[package]]" table per package, in name order; the
# project's own table is the one installed from its own directory.
_LOCK_PACKAGE = "\n[[package]]\n"
_LOCK_OWN_SOURCE = '\nsource = { editable = "." }\n'


def uv_lock_for(lock: str, slug: str) -> str:
    """A lock made by scripts/lock, for the project named `slug`: uv.lock names the project
    by its normalized name (PEP 503: "billing__v2" is "billing-v2") and keeps the packages
    in name order, so its own table is renamed and moved where `uv lock` would write it.
    Every other byte stays as uv wrote it."""
    name = re.sub(r"[-_.]+", "-", slug).lower()
    header, *packages = lock.split(_LOCK_PACKAGE)
    (own,) = [package for package in packages if _LOCK_OWN_SOURCE in package]
    packages.remove(own)
    own = re.sub(r'\Aname = "[^"]*"\n', f'name = "{name}"\n', own)
    names = [re.match(r'name = "([^"]*)"', package)[1] for package in packages]
    position = next((i for i, other in enumerate(names) if other > name), len(packages))
    packages.insert(position, own)
    return _LOCK_PACKAGE.join([header, *packages])


# Where cookiecutter's loader finds includes too ("../templates" from the project folder).
_LOCKS_DIR = Path(__file__).with_name("templates") / "uv-locks"


def _lock_source(lock_name: str) -> str:
    """templates/uv-locks/<lock_name>.lock. Read, not included: an include would compile
    the lock as Jinja, which costs more than the rest of a bake's files together, and the
    hooks, which need it too, are rendered without a loader."""
    path = _LOCKS_DIR / f"{lock_name}.lock"
    if not path.exists():
        raise FileNotFoundError(f"no lock for these answers: {path}; make it with scripts/lock")
    return path.read_text(encoding="utf-8")


def uv_lock(lock_name: str, slug: str) -> str:
    """The lock named `lock_name` for the project `slug` (uv_lock_for)."""
    return uv_lock_for(_lock_source(lock_name), slug)


def locked_packages(lock_name: str) -> list[str]:
    """The normalized names of the packages in the lock named `lock_name`, the project's
    own excepted."""
    _, *packages = _lock_source(lock_name).split(_LOCK_PACKAGE)
    return [
        re.match(r'name = "([^"]*)"', package)[1]
        for package in packages
        if _LOCK_OWN_SOURCE not in package
    ]


def _strings(value) -> set[str]:
    """Every string in a cookiecutter.json value, nested ones included."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return {s for k, v in value.items() for s in _strings(k) | _strings(v)}
    if isinstance(value, list):
        return {s for item in value for s in _strings(item)}
    return set()


# The template's own text that cookiecutter renders from strings, as it does every answer
# (not through the loader, so Jinja gives no name to tell them apart): cookiecutter.json's
# values (defaults such as project_slug's "{{ cookiecutter.project_name | slugify(...) }}",
# choices, prompts), the hooks' source, and file and folder names, which it renders as
# paths: relative to the template ("k8s/base/worker.yaml") or joined to the project
# directory it writes ("/out/celery_service/./{{cookiecutter.project_slug}}").
_JSON_STRINGS = _strings(
    json.loads((_TEMPLATE_ROOT / "cookiecutter.json").read_text(encoding="utf-8"))
)
_HOOK_SOURCES = {p.read_text(encoding="utf-8") for p in (_TEMPLATE_ROOT / "hooks").glob("*.py")}
_PROJECT_FOLDER = "{{cookiecutter.project_slug}}"
_TEMPLATE_NAMES = {_PROJECT_FOLDER} | {
    path.name for path in (_TEMPLATE_ROOT / _PROJECT_FOLDER).rglob("*")
}
_JINJA_MARK = re.compile(r"{{|{%|{#")


def _is_template_path(source: str) -> bool:
    """A path that ends in a name of the template's, and whose only Jinja is in names of
    the template's. An answer that is one of those names with Jinja in it, such as
    "{{cookiecutter.project_slug}}", cannot be told from it and renders like it: the one
    exception to answers being literal."""
    parts = source.split(os.sep)
    return parts[-1] in _TEMPLATE_NAMES and all(
        part in _TEMPLATE_NAMES for part in parts if _JINJA_MARK.search(part)
    )


def _is_template_text(source: str) -> bool:
    return source in _JSON_STRINGS or source in _HOOK_SOURCES or _is_template_path(source)


def _jinja_literal(text: str) -> str:
    """Jinja source that renders as text, whatever text contains."""
    # Jinja reads a string literal with Python's unicode-escape codec, so text encoded
    # with that codec comes back exactly: all ASCII, no line break for the lexer to
    # normalize, and no "{%", "%}" or "}}" that could end the expression early.
    escaped = text.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return '{{ "' + escaped + '" }}'


class TemplateExtension(Extension):
    def __init__(self, environment):
        super().__init__(environment)
        environment.globals["check_answers"] = check_answers
        environment.filters["toml_string"] = toml_string
        environment.filters["python_string"] = python_string
        environment.globals["uv_lock"] = uv_lock
        environment.globals["locked_packages"] = locked_packages

    def preprocess(self, source, name, filename=None):
        """Keep answers literal: cookiecutter renders every answer as Jinja, answers given
        on the command line or as extra_context included, so `{{ 7*7 }}` would become 49,
        and a CRLF would become LF. Only the template's own text is Jinja."""
        if name is not None or _is_template_text(source):
            return source  # a template file, read through the loader, or the template's text
        return _jinja_literal(source)
