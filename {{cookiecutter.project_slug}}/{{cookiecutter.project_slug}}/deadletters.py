"""The dead-letter queue: messages that failed for good, kept with the reason.

A task message is dead-lettered when its task fails after its retries (or with an
error it does not retry), runs past its time limit, or rejects itself; so is a
message no worker can run: content other than JSON, or a task name no worker knows.
The worker copies the message, unchanged, to the `dead_letter` queue with the reason
in its headers, and only then acknowledges the original: a crash in between leaves a
duplicate dead letter, never a lost one. It works the same on Redis and RabbitMQ
(RabbitMQ's own dead-letter exchanges keep no reason, and Redis has none).

One line per dead letter; then send some or all back to their queue:

    python -m {{ cookiecutter.project_slug }}.deadletters list
    python -m {{ cookiecutter.project_slug }}.deadletters replay [ID...]
"""

import argparse
import sys
import time
from collections.abc import Callable
from textwrap import shorten
from typing import Any

# Missing from the billiard stubs, but where the pool wraps a task's exception.
from billiard.einfo import ExceptionWithTraceback  # type: ignore[attr-defined]
from celery.exceptions import Ignore, Reject, Retry, Terminated
from celery.worker.consumer import Consumer as BaseConsumer
from celery.worker.request import Request as BaseRequest
from kombu import Connection, Queue
from kombu.message import Message

from .celery import app

PERSISTENT = 2  # AMQP delivery mode: the broker keeps the message on disk
DEAD_LETTER_QUEUE = Queue("dead_letter", routing_key="dead_letter", durable=True)
REASON = "x-dead-letter-reason"
ORIGIN = "x-dead-letter-origin"  # [exchange, routing key] the message came from
DEAD_AT = "x-dead-letter-time"
REPLAYS = "x-dead-letter-replays"


def dead_letter(message: Message, reason: str) -> None:
    """Copy a message, body untouched, to the dead-letter queue with the reason."""
    headers: dict[str, Any] = dict(message.headers or {})
    headers[REASON] = reason
    headers[DEAD_AT] = time.time()
    delivery = message.delivery_info or {}
    headers.setdefault(ORIGIN, [delivery.get("exchange", ""), delivery.get("routing_key", "")])
    with app.producer_pool.acquire(block=True) as producer:
        producer.publish(
            message.body,
            exchange="",
            routing_key=DEAD_LETTER_QUEUE.routing_key,
            declare=[DEAD_LETTER_QUEUE],
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            headers=headers,
            delivery_mode=PERSISTENT,
            # Keep trying while the broker restarts: the original is acknowledged
            # only after this returns.
            retry=True,
            retry_policy={"max_retries": None, "interval_max": 5},
        )


class DeadLetteringRequest(BaseRequest):
    """A task request that dead-letters its message when the task failed for good."""

    dead_letter_reason: str | None = None

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):  # how the pool sends it back
            exc = exc.exc
        # Retry has sent a new message, Ignore and revocation were asked for; any
        # other failure that ends with the message acknowledged or dropped is final.
        if not isinstance(exc, (Retry, Ignore, Terminated)) and not (
            isinstance(exc, Reject) and getattr(exc, "requeue", False)
        ):
            self.dead_letter_reason = f"{type(exc).__name__}: {exc}"
        return super().on_failure(exc_info, send_failed_event, return_ok)

    def _dead_letter(self) -> None:
        if self.dead_letter_reason and not self.acknowledged:
            dead_letter(self.message, self.dead_letter_reason)

    def acknowledge(self):
        self._dead_letter()
        super().acknowledge()

    def reject(self, requeue=False):
        if not requeue:
            self._dead_letter()
        super().reject(requeue)


class Consumer(BaseConsumer):
    """The worker's consumer (config.worker_consumer): dead-letters what it cannot run."""

    def on_decode_error(self, message, exc):
        reason = f"cannot decode {message.content_type!r} content: {exc}"
        dead_letter(message, reason)
        super().on_decode_error(message, exc)

    def on_unknown_task(self, body, message, exc):
        dead_letter(message, f"unknown task: {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body, message, exc):
        dead_letter(message, f"invalid task message: {exc}")
        super().on_invalid_task(body, message, exc)


def describe(message: Message) -> str:
    """One line: task id, the call, when and why it was dead-lettered."""
    headers: dict[str, Any] = message.headers or {}
    call = f"{headers.get('task', '?')}{headers.get('argsrepr') or '()'}"
    if headers.get("kwargsrepr") not in (None, "{}"):
        call += f" {headers['kwargsrepr']}"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(headers.get(DEAD_AT, 0)))
    return (
        f"{headers.get('id', '-')}  {shorten(call, 100)}  {when}"
        f"  replays={headers.get(REPLAYS, 0)}  {headers.get(REASON, '?')}"
    )


def replay(connection: Connection, message: Message) -> None:
    """Send a dead letter back to where it came from, with its retries reset."""
    headers: dict[str, Any] = dict(message.headers or {})
    exchange, routing_key = headers.pop(ORIGIN, ["", ""])
    headers[REPLAYS] = headers.get(REPLAYS, 0) + 1
    for name in (REASON, DEAD_AT):
        headers.pop(name, None)
    if "retries" in headers:
        headers["retries"] = 0  # a replayed task gets all its retries again
    with connection.Producer() as producer:
        producer.publish(
            message.body,
            exchange=exchange,
            routing_key=routing_key,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            headers=headers,
            delivery_mode=PERSISTENT,
            retry=True,
        )
    message.ack()


def visit(ids: list[str], action: Callable[[Connection, Message], None] | None) -> list[str]:
    """Print each dead letter (of the given task ids, or all) and apply `action` to it;
    return the task ids seen."""
    seen = []
    # Messages are taken without acknowledging them: those that `action` does not
    # acknowledge go back to the queue when the channel closes.
    with app.connection_for_write() as connection, connection.channel() as channel:
        queue = DEAD_LETTER_QUEUE(channel)
        queue.declare()
        while (message := queue.get(no_ack=False)) is not None:
            task_id = (message.headers or {}).get("id", "-")
            if ids and task_id not in ids:
                continue
            seen.append(task_id)
            print(describe(message), flush=True)
            if action:
                action(connection, message)
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m {{ cookiecutter.project_slug }}.deadletters",
        description="List the dead-letter queue, or send its messages back to their queue.",
    )
    parser.add_argument("command", choices=["list", "replay"])
    parser.add_argument("ids", nargs="*", metavar="ID", help="task ids (default: all)")
    args = parser.parse_args(argv)
    try:
        seen = visit(args.ids, replay if args.command == "replay" else None)
    except Exception as exc:
        # An unreachable broker or a missing setting: one line, not a traceback.
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if missing := [task_id for task_id in args.ids if task_id not in seen]:
        print(f"error: no dead letter has task id {', '.join(missing)}", file=sys.stderr)
        return 1
    done = "replayed" if args.command == "replay" else "dead letters"
    print(f"{len(seen)} {done}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
