"""Write .env from .env.example, with a fresh random secret wherever it says so.

.env.example is the one list of settings; this only fills in the secrets, so every
.env gets credentials nobody else has. The template ran it once when it made the
project; CI runs it for a throwaway .env. To start over with new secrets, delete .env
and the stored data (`docker compose down -v`: the servers keep their first
passwords), then run it again:

    python3 scripts/make_env.py
"""

import os
import secrets
import sys
from pathlib import Path

PLACEHOLDER = "generate-a-secret"
PROJECT = Path(__file__).resolve().parent.parent


def env_text(example: str) -> str:
    """.env's content: .env.example's settings, each placeholder a new secret."""
    lines = ["# Written by scripts/make_env.py from .env.example with random secrets; not for git."]
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue  # .env.example's comments explain placeholders that .env no longer has
        if value == PLACEHOLDER:
            # Hex digits need no quoting in URLs, shell or YAML, and never start
            # with "-", which command lines such as rabbitmqctl take for an option.
            line = f"{key}={secrets.token_hex(24)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> int:
    env_file = PROJECT / ".env"
    if env_file.exists():
        # Its secrets may be the only copy of what the servers' volumes were made with.
        print(f"error: {env_file} exists; delete it first to write new secrets", file=sys.stderr)
        return 1
    text = env_text((PROJECT / ".env.example").read_text(encoding="utf-8"))
    # Readable by the owner only, from the first byte on.
    descriptor = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
