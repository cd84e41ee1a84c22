"""Run tier, RabbitMQ: publisher confirms are waited for once per send (confirms.py): a
group's messages go out without a wait between them, the send returns with every one
confirmed, and a message RabbitMQ keeps refusing fails the send once the retry policy's
tries are spent."""

import json
import subprocess

import pytest

from harness.variants import FAULT_ANSWERS

pytestmark = [pytest.mark.run, pytest.mark.only_variants(broker="rabbitmq", **FAULT_ANSWERS)]

# Runs in the project's environment with its app; records, in order, every message
# py-amqp writes and every time the client waits for RabbitMQ, and prints one JSON line.
# (py-amqp also polls without waiting, timeout=0, before each publish: not a wait.)
SENDS = """
import json, time, uuid
import amqp
from celery import group
from {slug}.celery import app
from {slug}.tasks import add

events = []
write, read = amqp.Channel._basic_publish, amqp.Connection.drain_events
def publish(self, *args, **kwargs):
    events.append("publish")
    return write(self, *args, **kwargs)
def drain(self, timeout=None):
    if timeout != 0:
        events.append("wait")
    return read(self, timeout=timeout)
amqp.Channel._basic_publish, amqp.Connection.drain_events = publish, drain

# Two tries, not the project's 30: the refused send below fails in seconds.
app.conf.task_publish_retry_policy = {{"max_retries": 1, "interval_start": 0}}
report = {{}}
queue = f"confirms-{{uuid.uuid4().hex[:8]}}"
add.delay(1, 1).forget()  # the connection, its channel and confirm mode are set up once
events.clear()
group(add.s(i, i) for i in range(50)).apply_async(queue=queue)
first, last = events.index("publish"), len(events) - 1 - events[::-1].index("publish")
report["publishes"] = events.count("publish")
report["waits_between_publishes"] = events[first:last].count("wait")
report["waits_after"] = events[last:].count("wait")
with app.connection_for_write() as connection:
    channel = connection.channel()
    report["queued_on_return"] = channel.queue_declare(queue, passive=True).message_count
    channel.queue_delete(queue)
    full = f"confirms-full-{{uuid.uuid4().hex[:8]}}"
    # RabbitMQ refuses (nacks) what does not fit in this one-message queue.
    channel.queue_declare(
        full, auto_delete=False, arguments={{"x-max-length": 1, "x-overflow": "reject-publish"}}
    )
    try:
        with app.producer_or_acquire() as producer:
            for number in range(3):
                producer.publish({{"number": number}}, exchange="", routing_key=full)
        report["refused"] = None
    except Exception as refusal:  # kombu wraps the nack once its tries are spent
        report["refused"] = f"{{type(refusal).__name__}}: {{refusal}}"
    # The next send on the same pooled connection is confirmed as before.
    started = time.monotonic()
    add.apply_async((2, 2), queue=queue).forget()
    report["next_send_s"] = time.monotonic() - started
    channel.queue_delete(queue)
    channel.queue_delete(full)
    channel.close()
print(json.dumps(report))
"""


def test_a_group_is_confirmed_once_and_a_refusal_fails_the_send(stack):
    """A group of 50 adds is written without waiting for RabbitMQ in between, and
    apply_async returns once RabbitMQ holds all 50; a send that RabbitMQ refuses in part
    (a full queue that rejects publishes), tried again, raises MessageNacked."""
    result = subprocess.run(
        stack.command("app", ("python", "-c", SENDS.format(slug=stack.project.name))),
        env=stack.environment("app"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["publishes"] == 50, report
    assert report["waits_between_publishes"] == 0, report
    assert report["waits_after"] >= 1, report
    assert report["queued_on_return"] == 50, report
    assert report["refused"] in (
        "MessageNacked: ",
        "OperationalError: ",
    ), report
    # Not the 60 s of a wait for a confirm that never comes (seconds: a busy machine).
    assert report["next_send_s"] < 30, report
