"""Write .env from .env.example, with a fresh random secret wherever it says so.

.env.example is the one list of settings; this only fills in the secrets, so every
.env gets credentials nobody else has. The template ran it once when it made the
project; CI runs it for a throwaway .env. To start over with new secrets, delete .env
and the stored data (`docker compose down -v`: the servers keep their first
passwords), then run it again:

    python3 scripts/make_env.py

With an argument, it writes another settings file the same way: the example's name
without ".example" (the Kubernetes dev overlay's secrets, when the project has them):

    python3 scripts/make_env.py k8s/overlays/dev/secrets.env.example

A value may name settings above it as ${NAME}, as Compose does (a URL that carries a
password made a line earlier).
"""

import os
import re
import secrets
import sys
from pathlib import Path

PLACEHOLDER = "generate-a-secret"
PROJECT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"\$\{(\w+)\}")


def env_text(example: str) -> str:
    """.env's content: .env.example's settings, each placeholder a new secret."""
    lines = ["# Written by scripts/make_env.py with random secrets; not for git."]
    values: dict[str, str] = {}
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue  # .env.example's comments explain placeholders that .env no longer has
        if value == PLACEHOLDER:
            # Hex digits need no quoting in URLs, shell or YAML, and never start
            # with "-", which command lines such as rabbitmqctl take for an option.
            value = secrets.token_hex(24)
        else:
            value = REFERENCE.sub(lambda match: values[match.group(1)], value)
        values[key] = value
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def main(args: list[str]) -> int:
    """Write the settings file for the example named in args (.env.example if none)."""
    example = PROJECT / (args[0] if args else ".env.example")
    env_file = example.with_name(example.name.removesuffix(".example"))
    if env_file == example:
        print(f"error: {example} does not end in .example", file=sys.stderr)
        return 1
    if env_file.exists():
        # Its secrets may be the only copy of what the servers' volumes were made with.
        print(f"error: {env_file} exists; delete it first to write new secrets", file=sys.stderr)
        return 1
    text = env_text(example.read_text(encoding="utf-8"))
    # Readable by the owner only, from the first byte on.
    descriptor = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
