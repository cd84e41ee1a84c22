"""Bakes the way a user makes them (the cookiecutter command line), and what makes the
tests' in-process bakes cheaper without changing what they render."""

import os
import subprocess
import sys
from pathlib import Path

import cookiecutter.generate
from cookiecutter.environment import StrictEnvironment

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


def reuse_compiled_templates() -> None:
    """Make this process's in-process bakes compile each Jinja source once and sniff each
    template file once, instead of once per bake, without changing what they render.

    cookiecutter makes a new Jinja environment for every bake, and renders every file's
    path, every file and every cookiecutter.json value from source: most of a bake's own
    time went to lexing, parsing and compiling the same sources again (hundreds of bakes
    in one test process), and a tenth to binaryornot reading each template file to tell
    text from binary. Jinja's compiled code is a function of the source, its name and
    file name, and the environment's settings and extensions, which cookiecutter makes
    alike for every bake of this template (local_extensions' preprocess reads only the
    source and the name); a file's binariness is a function of its bytes. Command-line
    bakes, as users make them, run in processes of their own and do all of it."""
    compiled: dict[tuple, object] = {}
    compile_source = StrictEnvironment.compile

    def compile_once(self, source, name=None, filename=None, raw=False, defer_init=False):
        key = (source, name, filename, raw, defer_init)
        if key not in compiled:
            compiled[key] = compile_source(self, source, name, filename, raw, defer_init)
        return compiled[key]

    StrictEnvironment.compile = compile_once

    sniffed: dict[tuple[str, int, int], bool] = {}
    sniff = cookiecutter.generate.is_binary

    def is_binary_once(path: str) -> bool:
        status = os.stat(path)
        key = (path, status.st_mtime_ns, status.st_size)
        if key not in sniffed:
            sniffed[key] = sniff(path)
        return sniffed[key]

    cookiecutter.generate.is_binary = is_binary_once
