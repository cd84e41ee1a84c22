"""Run tier: the rendered project's own tests, on servers of their own."""

import subprocess

import pytest

pytestmark = pytest.mark.run


def test_project_own_tests_pass(stack, tmp_path):
    """The rendered project's test suite passes against the variant's broker and backend.
    It starts its own in-process worker, so it gets servers where no other worker
    consumes (the shared stack's workers would take its tasks)."""
    with stack.another(tmp_path) as servers_only:
        result = subprocess.run(
            [str(stack.venv / "bin" / "pytest"), "-q", "-p", "no:cacheprovider"],
            cwd=stack.project,
            env=servers_only.environment("worker"),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
