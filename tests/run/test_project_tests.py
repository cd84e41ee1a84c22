"""Run tier: the rendered project's own tests, on servers of their own."""

import subprocess

import pytest

pytestmark = pytest.mark.run


def test_project_own_tests_pass(stack, tmp_path):
    """`make test` (uv run --locked pytest) passes against the variant's broker and
    backend. The tests start their own in-process worker, so they get servers where no
    other worker consumes (the shared stack's workers would take their tasks)."""
    with stack.another(tmp_path) as servers_only:
        result = subprocess.run(
            ["make", "test"],
            cwd=stack.project,
            env=servers_only.make_environment(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
