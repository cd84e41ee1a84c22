"""The run tier's stacks: each run variant's services as local processes, one stack per
variant for all the tier's modules (harness.localstack says what runs)."""

import pytest

from harness.localstack import LocalStack, make_venv
from harness.variants import run_variants, variant_id

# One xdist group per variant: its tests share one stack, on one xdist worker.
STACK_PARAMS = [
    pytest.param(
        variant, id=variant_id(variant), marks=pytest.mark.xdist_group(variant_id(variant))
    )
    for variant in run_variants()
]


def pytest_generate_tests(metafunc):
    """Every test that uses `stack` runs on each run variant, or on those that match its
    only_variants marker (e.g. only_variants(use_beat=True))."""
    if "stack" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("only_variants")
    wanted = marker.kwargs if marker else {}
    params = [
        param
        for param in STACK_PARAMS
        if all(param.values[0][name] == value for name, value in wanted.items())
    ]
    metafunc.parametrize("stack", params, indirect=True, scope="session")


@pytest.fixture(scope="session")
def stack(request, bake, tmp_path_factory):
    """The variant's servers and its worker_count workers, answering; removed when the
    run moves on to the next variant. A test that stops or kills a worker starts it again
    before it ends; a test that needs a stack in another state makes its own
    (stack.another)."""
    variant = request.param
    project = bake(variant)
    workdir = tmp_path_factory.mktemp(variant_id(variant))
    venv = make_venv(project, variant["python_version"], workdir / "venv")
    with LocalStack(project, venv, workdir, variant) as running:
        running.start_workers()
        running.wait_for_workers()
        yield running


@pytest.fixture(autouse=True)
def stack_runs_tasks_after(request):
    """After each test of the shared stack, its workers still run a task. A test that
    left them ended or stuck fails here, naming itself and what the workers held, and
    they are started again: the next tests get the stack they expect, so one fault is
    one failure, not a cascade through the variant's later tests."""
    if "stack" not in request.fixturenames:
        yield
        return
    stack = request.getfixturevalue("stack")
    yield
    problem = stack.why_no_task_runs()
    if problem:
        stack.restart_workers()
        # The report shows the stack's last logs (pytest_runtest_makereport).
        pytest.fail(f"the stack's workers ran no task after this test: {problem}")
