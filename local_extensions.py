"""Jinja helpers for the template, loaded through `_extensions` in cookiecutter.json."""

import json

from jinja2.ext import Extension


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


class TemplateExtension(Extension):
    def __init__(self, environment):
        super().__init__(environment)
        environment.globals["fail"] = fail
        environment.filters["toml_string"] = toml_string
