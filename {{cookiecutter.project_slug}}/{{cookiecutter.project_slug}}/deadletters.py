"""The dead-letter queue: messages that failed for good, kept with the reason.

A task message is dead-lettered when its task fails after its retries (or with an
error it does not retry), runs past its time limit, or rejects itself; so is a
message no worker can run: content other than JSON, or a task name no worker knows;
and a poison message, whose task killed the process running it on
config.dead_letter_after_lost_deliveries deliveries (see DeadLetteringRequest).
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

# ExceptionWithTraceback, where the pool wraps a task's exception, is missing from the
# billiard stubs.
from billiard.einfo import ExceptionInfo, ExceptionWithTraceback  # type: ignore[attr-defined]
from celery.exceptions import Ignore, Reject, Retry, Terminated, WorkerLostError
from celery.utils.log import get_logger
from celery.worker import state as worker_state
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
# How many deliveries of this message ended with the process running it dead.
LOST_DELIVERIES = "x-lost-deliveries"

logger = get_logger(__name__)


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


def requeue_counted(message: Message, lost_deliveries: int) -> bool:
    """Send a copy of a message back to its queue with its count of lost deliveries;
    False if the broker did not take it (the caller then requeues the original)."""
    headers: dict[str, Any] = dict(message.headers or {})
    headers[LOST_DELIVERIES] = lost_deliveries
    delivery = message.delivery_info or {}
    try:
        with app.producer_pool.acquire(block=True) as producer:
            producer.publish(
                message.body,
                exchange=delivery.get("exchange", ""),
                routing_key=delivery.get("routing_key", ""),
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                headers=headers,
                delivery_mode=PERSISTENT,
                # About a minute while the broker restarts, then give up on counting.
                retry=True,
                retry_policy={"max_retries": 15, "interval_max": 5},
            )
    except Exception:
        logger.exception("could not send back a copy with its count of lost deliveries")
        return False
    return True


class PoisonMessage(Exception):
    """The process running the task died on dead_letter_after_lost_deliveries of its
    deliveries."""


class DeadLetteringRequest(BaseRequest):
    """A task request that dead-letters its message when the task failed for good.

    It also caps poison messages. With late acks, Celery requeues a message whose pool
    process died while running it (task_reject_on_worker_lost), so that a killed worker
    loses nothing; a task that kills its process itself (a segfault, the OOM killer,
    os._exit) would come back for ever, on either broker. The worker's main process
    sees each such death (WorkerLostError), so it counts them here, in the message: it
    sends back a copy with the count in a header (LOST_DELIVERIES) and acknowledges the
    original, instead of requeueing it; at the cap it dead-letters it instead.

    Only deaths the main process lives through are counted: when a worker is killed
    whole (SIGKILL to the container, a lost host) or is shutting down, the broker
    redelivers the message with the count it had. A pool process killed from outside
    (the OOM killer picking it) adds one; reaching the cap takes the same message's
    process dying on that many deliveries: the task's own doing.
    """

    dead_letter_reason: str | None = None
    # Set when the process running this delivery died: the count including it.
    lost_deliveries: int | None = None

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):  # how the pool sends it back
            exc = exc.exc
        if self._process_died(exc):
            headers = self.message.headers or {}
            self.lost_deliveries = int(headers.get(LOST_DELIVERIES, 0)) + 1
            cap = app.conf.dead_letter_after_lost_deliveries
            if self.lost_deliveries >= cap:
                # Fail for good instead: Celery then acknowledges the message (which
                # dead-letters it: acknowledge, below), records FAILURE and calls the
                # errbacks, as for any task that failed.
                try:
                    raise PoisonMessage(
                        f"the process running it died on {self.lost_deliveries} "
                        f"deliveries, the last: {type(exc).__name__}: {exc}"
                    ) from exc
                except PoisonMessage as poison:
                    exc, exc_info = poison, ExceptionInfo()
        # Retry has sent a new message, Ignore and revocation were asked for; any
        # other failure that ends with the message acknowledged or dropped is final.
        if not isinstance(exc, (Retry, Ignore, Terminated)) and not (
            isinstance(exc, Reject) and getattr(exc, "requeue", False)
        ):
            self.dead_letter_reason = f"{type(exc).__name__}: {exc}"
        return super().on_failure(exc_info, send_failed_event, return_ok)

    @staticmethod
    def _process_died(exc: BaseException) -> bool:
        """Whether the pool process running the task died (or the task ended it), with
        this worker not shutting down (then the death was the shutdown's, not the task's)."""
        if worker_state.should_stop or worker_state.should_terminate:
            return False
        # SystemExit: the task called sys.exit(); billiard reports that before its
        # process ends, and Celery handles it as a lost worker.
        return isinstance(exc, (WorkerLostError, SystemExit, KeyboardInterrupt))

    def _dead_letter(self) -> None:
        if self.dead_letter_reason and not self.acknowledged:
            dead_letter(self.message, self.dead_letter_reason)

    def acknowledge(self):
        self._dead_letter()
        super().acknowledge()

    def reject(self, requeue=False):
        if requeue and self.lost_deliveries and not self.acknowledged:
            # Celery requeues a message whose process died: send it back with the
            # count instead. A crash between the copy and the acknowledgement leaves a
            # duplicate, never a lost one; a broker that does not take the copy gets
            # the original requeued, uncounted.
            cap = app.conf.dead_letter_after_lost_deliveries
            logger.warning(
                "Task %s[%s]: the process running it died on %d of at most %d deliveries;"
                " sent back to its queue",
                self.name,
                self.id,
                self.lost_deliveries,
                cap,
            )
            if requeue_counted(self.message, self.lost_deliveries):
                super().acknowledge()  # Celery's: the copy is no dead letter
                return
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
{%- if cookiecutter.broker == "rabbitmq" %}

    def connection_for_write(self, url=None, heartbeat=None):
        # Celery's worker calls this for one connection only: the one its events go out
        # on (heartbeats, and task events once Flower or `celery control enable_events`
        # asks for them). Events are monitoring, sent transient to an exchange whose
        # queues vanish with their reader; with publisher confirms (config.py) each
        # would hold this worker's event loop for a broker round trip, a few per task.
        # So they go without: what must survive a broker restart (task messages: the
        # app's sends, retries, dead letters) is sent through app.producer_pool, whose
        # connections keep the confirms.
        return self.ensure_connected(
            self.app.connection_for_write(
                url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}
            )
        )
{%- endif %}


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
    # A poison message starts its count again: replay it once its cause is fixed.
    for name in (REASON, DEAD_AT, LOST_DELIVERIES):
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
