"""Write .env from .env.example, with a fresh random secret wherever it says so.

.env.example is the one list of settings; this hook only fills in the secrets,
so every bake gets credentials nobody else has.
"""

import secrets
from pathlib import Path

PLACEHOLDER = "generate-a-secret"


def main() -> None:
    example = Path(".env.example").read_text(encoding="utf-8")
    lines = ["# Written at bake time from .env.example, with random secrets. Keep it out of git."]
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue  # .env.example's comments explain placeholders that .env no longer has
        if value == PLACEHOLDER:
            # Hex digits need no quoting in URLs, shell or YAML, and never start
            # with "-", which command lines such as rabbitmqctl take for an option.
            line = f"{key}={secrets.token_hex(24)}"
        lines.append(line)
    env_file = Path(".env")
    env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env_file.chmod(0o600)


if __name__ == "__main__":
    main()
