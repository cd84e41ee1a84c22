"""The template's variants, read from cookiecutter.json so that a new choice there
is tested without a test edit."""

import itertools
import json
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parents[2]
COOKIECUTTER_JSON = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text(encoding="utf-8"))


# Booleans that add a deployment target beside Compose (files under their own folder,
# a CI job, a few lines of code that stay idle unless that target sets them up) and
# change nothing that the other variants' tests read. As axes they would double every
# tier's variants (the static tier's time, the run tier's stacks) to check the same
# Compose project again; instead they are off in ALL_VARIANTS, run_variants and the
# others here, and turned on in the few bakes of deployment_variants(), whose own
# tests (tests/test_kubernetes.py) check what they add.
DEPLOYMENT_TARGETS = ("use_kubernetes",)


def _axes() -> dict[str, list]:
    """Every prompt with a fixed set of answers: choice lists and booleans, default first
    (deployment targets excepted: see DEPLOYMENT_TARGETS)."""
    axes = {}
    for name, default in COOKIECUTTER_JSON.items():
        if name.startswith("_") or name in DEPLOYMENT_TARGETS:
            continue
        if isinstance(default, list):
            axes[name] = list(default)
        elif isinstance(default, bool):
            axes[name] = [default, not default]
    return axes


AXES = _axes()
DEFAULTS = {name: values[0] for name, values in AXES.items()}
SLUG_MAX_LENGTH = COOKIECUTTER_JSON["_slug_max_length"]


def edge_slugs() -> list[str]:
    """Package names the pre-generation hook accepts that the default does not try: the
    longest allowed, the shortest, a doubled underscore, digits, and names the project
    also uses for its modules and its Celery app."""
    longest = "customer_invoice_reconciliation_services_for_emea_and_apac"[:SLUG_MAX_LENGTH]
    assert len(longest) == SLUG_MAX_LENGTH, "make the longest name longer"
    return [longest, "x", "billing__v2_2024", "tasks", "config", "logs", "app"]


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
        elif name == "worker_count":
            parts.append(f"{value}workers")
        elif name == "project_slug":
            parts.append(value)
        elif name in AXES:
            parts.append(str(value))
        else:
            parts.append(f"{name}{value}")
    return "-".join(parts)


def with_defaults(**answers) -> dict:
    """A variant: the defaults of every axis, changed by the given answers."""
    return {**DEFAULTS, **answers}


def run_variants() -> list[dict]:
    """Every combination of the choices except python_version, which is spread over them
    (each version runs at least once) instead of multiplying their number; worker_count
    varies too, so that more than the default number of workers is proven, and so does
    the package name: the default, the longest allowed and the shortest (edge_slugs)."""
    versions = AXES["python_version"]
    others = {name: values for name, values in AXES.items() if name != "python_version"}
    default_workers = int(COOKIECUTTER_JSON["worker_count"])
    worker_counts = [default_workers, 1, default_workers + 1]
    slugs = [None, *edge_slugs()[:2]]  # None: the one made from the default project_name
    variants = []
    for index, values in enumerate(itertools.product(*others.values())):
        variant = {"python_version": versions[index % len(versions)]}
        variant.update(zip(others, values, strict=True))
        variant["worker_count"] = str(worker_counts[index // len(versions) % len(worker_counts)])
        slug = slugs[index // 2 % len(slugs)]
        if slug is not None:
            variant["project_slug"] = slug
        variants.append(variant)
    return variants


def covering_variants() -> list[dict]:
    """One variant per broker x result_backend pair, with every boolean choice on in half of
    them and off in the other half (checkerboard: each broker and each backend sees both),
    and python_version spread over them. The rendered Python code branches only on broker,
    result_backend, use_flower and use_beat, each block on one answer alone (config.py), so
    these few bakes render every block and every broker x backend pair, where checking all
    variants would repeat the same code many times."""
    versions = AXES["python_version"]
    booleans = [name for name, values in AXES.items() if isinstance(values[0], bool)]
    backends = len(AXES["result_backend"])
    pairs = itertools.product(AXES["broker"], AXES["result_backend"])
    variants = []
    for index, (broker, backend) in enumerate(pairs):
        switched_on = (index + index // backends) % 2 == 1
        variant = with_defaults(
            broker=broker, result_backend=backend, python_version=versions[index % len(versions)]
        )
        variant.update(dict.fromkeys(booleans, switched_on))
        variants.append(variant)
    return variants


def container_variants() -> list[dict]:
    """A few variants that between them have every answer of every choice and boolean
    (each python_version, broker and result_backend, Flower and Beat on and off), as
    many as the longest list of answers: variant i takes answer i of each axis, shifted
    by the axis's position from the second round on, so that answers meet in new pairs
    rather than repeating the first variant. The container tier builds and starts each."""
    count = max(len(values) for values in AXES.values())
    variants = []
    for index in range(count):
        variant = {}
        for position, (name, values) in enumerate(AXES.items()):
            shift = (index // len(values)) * position
            variant[name] = values[(index + shift) % len(values)]
        variants.append(variant)
    return variants


def deployment_variants(target: str) -> list[dict]:
    """covering_variants() with the deployment target `target` (a DEPLOYMENT_TARGETS
    boolean) turned on: every broker, every result backend, Flower and Beat each on and
    off, every python_version, in as many bakes as there are broker x backend pairs."""
    assert target in DEPLOYMENT_TARGETS, target
    return [{**variant, target: True} for variant in covering_variants()]


# The run tier's fault and poison tests run on one variant per broker x result_backend
# pair: Flower and Beat add processes that a fault does not reach.
FAULT_ANSWERS = {"use_flower": False, "use_beat": False}
