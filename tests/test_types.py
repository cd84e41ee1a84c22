"""Static tier: mypy with celery-types is clean on the rendered code, as the rendered CI's
lint job runs it.

The Python code differs between variants only where config.py branches on broker,
result_backend, use_flower and use_beat (every other file varies by project_slug alone), and
python_version changes only mypy's target. So a few variants that render every block and
spread the Python versions (variants.covering_variants) check what all variants would, in a
fraction of the time (mypy takes seconds per project). They are baked with use_kubernetes on
(variants.deployment_variants): that only adds code (liveness.py and the blocks that use it),
so these bakes type-check it too, and ruff (test_static.py) checks the code without it.
"""

import pytest

from harness.tools import mypy
from harness.variants import deployment_variants, variant_id


@pytest.mark.parametrize("variant", deployment_variants("use_kubernetes"), ids=variant_id)
def test_mypy_is_clean(bake, variant, mypy_cache):
    """mypy, configured by the rendered pyproject.toml, finds no error in any Python file."""
    project = bake(variant)
    # The cache goes elsewhere: the baked project is shared with tests that read every file.
    result = mypy(project, mypy_cache)
    assert result.returncode == 0, result.stdout + result.stderr
    # The configured paths reach every Python file of the project, none is left out.
    python_files = list(project.rglob("*.py"))
    assert f"no issues found in {len(python_files)} source files" in result.stdout, result.stdout
