"""The template's variants, read from cookiecutter.json so that a new choice there
is tested without a test edit."""

import itertools
import json
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
COOKIECUTTER_JSON = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text(encoding="utf-8"))


def _axes() -> dict[str, list]:
    """Every prompt with a fixed set of answers: choice lists and booleans, default first."""
    axes = {}
    for name, default in COOKIECUTTER_JSON.items():
        if name.startswith("_"):
            continue
        if isinstance(default, list):
            axes[name] = list(default)
        elif isinstance(default, bool):
            axes[name] = [default, not default]
    return axes


AXES = _axes()
DEFAULTS = {name: values[0] for name, values in AXES.items()}


def _all_variants() -> list[dict]:
    return [dict(zip(AXES, values, strict=True)) for values in itertools.product(*AXES.values())]


ALL_VARIANTS = _all_variants()


def variant_id(variant: dict) -> str:
    """A readable id such as py3.12-redis-postgresql-flower-nobeat."""
    parts = []
    for name, value in variant.items():
        if isinstance(value, bool):
            feature = name.removeprefix("use_")
            parts.append(feature if value else f"no{feature}")
        elif name == "python_version":
            parts.append(f"py{value}")
        elif name in AXES:
            parts.append(str(value))
        else:
            parts.append(f"{name}{value}")
    return "-".join(parts)


def with_defaults(**answers) -> dict:
    """A variant: the defaults of every axis, changed by the given answers."""
    return {**DEFAULTS, **answers}
