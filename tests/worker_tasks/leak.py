"""A task that leaks memory, only the run tier's workers have it (loaded as poison.py is,
with `--include=leak`): the sample tasks stay free of it."""

import os

from celery import shared_task

# What every call adds to and nothing frees: a leak, as a cache that is never trimmed.
_kept: list[bytes] = []


@shared_task(name="leak.hold")
def hold(mebibytes: int) -> int:
    """Keep `mebibytes` MiB more of written (so resident) memory for the life of the
    process; return the process's pid."""
    _kept.append(b"x" * (mebibytes * 1024 * 1024))
    return os.getpid()
