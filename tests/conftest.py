"""Shared fixtures: bakes of the template, one per variant and test session."""

from pathlib import Path

import pytest
import yaml
from cookiecutter.main import cookiecutter

from harness.baking import reuse_compiled_templates
from harness.localstack import run_prefix, shared_server_inventory
from harness.variants import TEMPLATE_DIR, variant_id


def pytest_addoption(parser):
    parser.addoption(
        "--containers",
        action="store_true",
        help="also run the container tier (marker `container`), which -m does not name",
    )


def pytest_configure(config):
    # pytest-cookies bakes the template named here, wherever pytest was started.
    config.option.template = str(TEMPLATE_DIR)
    # Before xdist starts its workers, which inherit it: one prefix for the whole run.
    run_prefix()
    reuse_compiled_templates()


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


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory) -> Path:
    """A mypy cache for every project this test process checks (tools.mypy)."""
    return tmp_path_factory.mktemp("mypy-cache")


@pytest.fixture(scope="session")
def bake_answers(tmp_path_factory):
    """bake_answers(**answers) -> (output_dir, exception): a bake in this process, no prompts."""
    home = tmp_path_factory.mktemp("cookiecutter_home")
    # Keeps cookiecutter's replay files and clones out of the user's home.
    config = home / "config.yaml"
    config.write_text(
        yaml.safe_dump({"replay_dir": str(home / "replay"), "cookiecutters_dir": str(home / "c")})
    )

    def bake(**answers) -> tuple[Path, Exception | None]:
        output_dir = tmp_path_factory.mktemp("bake")
        try:
            cookiecutter(
                str(TEMPLATE_DIR),
                no_input=True,
                extra_context=answers,
                output_dir=str(output_dir),
                config_file=str(config),
            )
        except Exception as error:  # a refusal; the caller checks it
            return output_dir, error
        return output_dir, None

    return bake


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test of a running stack (the run and container tiers' `stack`, the kube
    play tests' `played`) shows what its processes or containers last logged."""
    report = yield
    if report.failed and hasattr(item, "funcargs"):
        for name in ("stack", "played"):
            running = item.funcargs.get(name)
            if running is not None:
                report.sections.append((f"{name}: last logs", running.logs()))
    return report


def deselect_container_tier(config, items) -> None:
    """The container tier (images built, stacks started: minutes, and a container engine)
    runs only when asked: with --containers, or with a -m expression that names it (e.g.
    `-m container`); `-m "not run"`, `-m run` and no -m leave it out."""
    if config.getoption("containers") or "container" in (config.option.markexpr or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("container")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("container")]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Keep each variant's tests together (run and container tiers), so that its stack
    starts once, and otherwise in the order pytest gave them: no test depends on another
    running first. Leave out the container tier unless asked for."""
    deselect_container_tier(config, items)
    first_position: dict[str, int] = {}

    def position(numbered_item) -> tuple[int, int]:
        number, item = numbered_item
        callspec = getattr(item, "callspec", None)
        variant = callspec.params.get("stack") if callspec else None
        if variant is None:
            return (number, 0)
        return (first_position.setdefault(variant_id(variant), number), number)

    items[:] = [item for _, item in sorted(enumerate(items), key=position)]


# The run-tier tests that reported in this process: in the xdist controller, every
# worker's, with their markers.
RUN_TIER_REPORTS: set[str] = set()


def pytest_runtest_logreport(report):
    if "run" in report.keywords:
        RUN_TIER_REPORTS.add(report.nodeid)


def pytest_sessionfinish(session):
    """After a run that started stacks, the shared servers keep nothing this run made:
    every vhost, user, role and database a stack makes starts with the run's own prefix,
    which no earlier run had, so whatever carries it now is a leftover."""
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the other workers' stacks may still be up
    if not RUN_TIER_REPORTS:
        return  # the static tier alone makes nothing there, and may run with no servers
    inventory = shared_server_inventory()
    if inventory is None:
        session.config.get_terminal_writer().line(
            "ERROR: RabbitMQ or PostgreSQL stopped answering during the run", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    prefix = run_prefix()
    leftovers = {
        kind: sorted(name for name in names if name.startswith(prefix))
        for kind, names in inventory.items()
    }
    leftovers = {kind: names for kind, names in leftovers.items() if names}
    if leftovers:
        session.config.get_terminal_writer().line(
            f"ERROR: the run left these behind on the shared servers: {leftovers}", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    """Figures that tests measured (record_property("figure", ...)), for the record; the
    tests assert behaviour, never these numbers."""
    figures = [
        value
        for report in terminalreporter.stats.get("passed", [])
        for name, value in report.user_properties
        if name == "figure"
    ]
    if figures:
        terminalreporter.section("measured")
        for figure in figures:
            terminalreporter.line(figure)
