"""Bakes the way a user makes them: the cookiecutter command line."""

import subprocess
import sys
from pathlib import Path

from harness.variants import TEMPLATE_DIR

COOKIECUTTER = Path(sys.executable).with_name("cookiecutter")


def bake_cli(
    output_dir: Path, *options: str | Path, command: Path = COOKIECUTTER, **answers
) -> subprocess.CompletedProcess:
    """Bake as a user does in CI: the cookiecutter command (the locked one unless another
    is given), no prompts."""
    return subprocess.run(
        [command, "--no-input", "--output-dir", output_dir, *options, TEMPLATE_DIR]
        + [f"{field}={value}" for field, value in answers.items()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
