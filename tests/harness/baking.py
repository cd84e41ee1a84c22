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


def assert_refused(output_dir: Path, error: Exception | None, field: str, value: str) -> None:
    """A bake refused by answer_rules.py: its one-line message names the field, the value
    given and what is allowed (cookiecutter's command line prints it as "Error: ..."),
    and nothing is left on disk."""
    assert error is not None, f"{field}={value!r} was accepted"
    message = str(error)
    assert message.startswith(f"{field} {value!r} is not allowed; allowed: "), repr(error)
    assert "\n" not in message, repr(error)
    assert list(output_dir.iterdir()) == []
