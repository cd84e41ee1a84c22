"""Jinja helpers for the template, loaded through `_extensions` in cookiecutter.json."""

import json
import re
import sys
from pathlib import Path

import cookiecutter.prompt
from jinja2.ext import Extension

# The template's own strings per cookiecutter.json key: defaults such as project_slug's
# "{{ cookiecutter.project_name | slugify(...) }}" are Jinja and must render.
_TEMPLATE_CONTEXT = json.loads(
    Path(__file__).with_name("cookiecutter.json").read_text(encoding="utf-8")
)


class InvalidAnswer(ValueError):
    """An answer that cannot be used; the message names the field and what is allowed."""


def fail(message: str) -> str:
    # Some answers break the bake before the pre-generation hook can run (an empty
    # project_slug makes the output directory itself the project directory), so
    # cookiecutter.json refuses them while rendering.
    raise InvalidAnswer(message)


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


def _key_being_prompted() -> str | None:
    """The cookiecutter.json key whose value cookiecutter is rendering, or None when the
    source is not a prompt value (a file, a path, a hook)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is cookiecutter.prompt.prompt_for_config.__code__:
            return frame.f_locals.get("key")
        frame = frame.f_back
    return None


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
        environment.globals["fail"] = fail
        environment.filters["toml_string"] = toml_string
        environment.filters["python_string"] = python_string
        environment.globals["uv_lock"] = uv_lock
        environment.globals["locked_packages"] = locked_packages

    def preprocess(self, source, name, filename=None):
        """Keep answers literal: cookiecutter renders every prompt value as Jinja, answers
        given on the command line or as extra_context included, so `{{ 7*7 }}` would
        become 49. Only the template's own values in cookiecutter.json are Jinja."""
        if name is not None:
            return source  # a template file, read through the loader
        key = _key_being_prompted()
        if key is None or source in _strings(_TEMPLATE_CONTEXT.get(key)):
            return source
        return _jinja_literal(source)
