"""The one way a test waits: ask again until the answer is good, or fail saying what."""

import time
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Watched(Protocol):
    """A process a wait gives up on at once if it ends (harness.localstack.LocalProcess)."""

    name: str

    def alive(self) -> bool: ...

    def log_tail(self, lines: int = 40) -> str: ...


def eventually(
    check: Callable[[], T],
    timeout: float,
    what: str,
    *,
    ignoring: tuple[type[BaseException], ...] = (),
    watching: Iterable[Watched] = (),
    interval: float = 0.2,
) -> T:
    """Call `check` until it returns something true, and return that. Fails with an
    AssertionError naming `what` after `timeout` seconds (with the last answer or error),
    or as soon as a process in `watching` has ended (with its log). Exceptions of the
    `ignoring` types count as "not yet" (a server still starting refuses connections)."""
    watching = list(watching)
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            answer = check()
        except ignoring as error:
            answer, last = None, error
        else:
            last = answer
        if answer:
            return answer
        for process in watching:
            assert process.alive(), f"{what}: {process.name} exited\n{process.log_tail()}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")
        time.sleep(interval)
