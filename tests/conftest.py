"""Shared fixtures: bakes of the template, one per variant and test session."""

from pathlib import Path

import pytest
from variants import TEMPLATE_DIR, variant_id


def pytest_configure(config):
    # pytest-cookies bakes the template named here, wherever pytest was started.
    config.option.template = str(TEMPLATE_DIR)


@pytest.fixture(scope="session")
def bake(cookies_session):
    """bake(variant) -> the rendered project's directory; each variant is baked once."""
    projects: dict[str, Path] = {}

    def bake_variant(variant: dict) -> Path:
        key = variant_id(variant)
        if key not in projects:
            result = cookies_session.bake(extra_context=variant)
            assert result.exit_code == 0, f"{key}: bake failed: {result.exception!r}"
            projects[key] = Path(result.project_path)
        return projects[key]

    return bake_variant


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed run-tier test shows the tail of every process log of its stack."""
    report = yield
    stack = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
    if report.failed and stack is not None:
        report.sections.append(("process logs", stack.logs()))
    return report
