"""How many tasks wait in each queue: the figure to watch when tasks come in faster than
the workers take them.

    python -m {{ cookiecutter.project_slug }}.queues
    python -m {{ cookiecutter.project_slug }}.queues --json [QUEUE...]

One line per queue, the workers' queues and the dead-letter queue unless you name others.

It asks the broker itself, the same way on Redis and RabbitMQ (a passive declare
through Kombu: RabbitMQ's count of the queue's ready messages, the length of Redis's
lists for the queue), so it needs neither Flower nor RabbitMQ's management API. A task
a worker has taken (running, or reserved by its prefetch) is no longer waiting and is
not counted; a queue nobody has declared yet has none waiting.
"""

import argparse
import json
import sys
from typing import Any

from .celery import app
from .deadletters import DEAD_LETTER_QUEUE


def default_queues() -> list[str]:
    """The queues the workers consume, as configured (Celery's default one unless
    task_queues names others), then the dead-letter queue."""
    # Not app.amqp.queues: that grows with every queue this process sent a task to.
    configured = app.conf.task_queues
    names = [queue.name for queue in configured] if configured else [app.conf.task_default_queue]
    return [*names, DEAD_LETTER_QUEUE.name]


def waiting(names: list[str]) -> dict[str, int]:
    """How many messages wait in each named queue, read from the broker now."""
    counts = {}
    with app.connection_for_read() as connection:
        for name in names:
            # A channel per queue: RabbitMQ closes the channel that asked about a queue
            # it does not have. Typed Any: kombu's stubs leave queue_declare out of the
            # channel, which both transports' channels have.
            channel: Any = connection.channel()
            with channel:
                try:
                    counts[name] = channel.queue_declare(queue=name, passive=True).message_count
                except connection.channel_errors:
                    counts[name] = 0
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m {{ cookiecutter.project_slug }}.queues",
        description="Show how many tasks wait in each queue, as the broker counts them.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="QUEUE",
        help="queue names (default: the workers' queues and the dead-letter queue)",
    )
    parser.add_argument(
        "--json", action="store_true", help='print {"queue": count, ...} instead of lines'
    )
    args = parser.parse_args(argv)
    try:
        counts = waiting(args.names or default_queues())
    except Exception as exc:
        # An unreachable broker or a missing setting: one line, not a traceback.
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(counts))
    else:
        width = max(map(len, counts))
        for name, count in counts.items():
            print(f"{name:<{width}}  {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
