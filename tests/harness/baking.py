"""Bakes the way a user makes them (the cookiecutter command line), and what makes the
tests' in-process bakes cheaper without changing what they render."""

import subprocess
import sys
from pathlib import Path

from cookiecutter.environment import StrictEnvironment
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket

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


class CompiledTemplates(BytecodeCache):
    """Jinja's compiled code of each template file, kept for the whole test process.

    cookiecutter makes a new Jinja environment for every bake, so each in-process bake
    (hundreds in one test process) would lex, parse and compile every file of the
    template again, about a third of its time. A bytecode cache is Jinja's own way to
    skip that: it keys the code by the file's name and path, and checks it against a
    checksum of the source, so an edited file compiles again. Every in-process bake makes
    its environment alike (cookiecutter's create_env_with_context, the same extensions),
    so the code is the code it would compile. Command-line bakes, as users make them, run
    in processes of their own and compile everything."""

    def __init__(self) -> None:
        self.code: dict[str, tuple[str | None, object]] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        checksum, code = self.code.get(bucket.key, (None, None))
        if checksum is not None and checksum == bucket.checksum:
            bucket.code = code

    def dump_bytecode(self, bucket: Bucket) -> None:
        self.code[bucket.key] = (bucket.checksum, bucket.code)


def reuse_compiled_templates() -> None:
    """Give every cookiecutter environment made in this process one CompiledTemplates."""
    cache = CompiledTemplates()
    make_environment = StrictEnvironment.__init__

    def make_environment_with_cache(self, **options) -> None:
        make_environment(self, **options)
        self.bytecode_cache = cache

    StrictEnvironment.__init__ = make_environment_with_cache
