"""queues.py, the queue depth command: it counts the tasks waiting in a queue, read from
the real broker."""

import json
import uuid
from collections.abc import Iterator

import pytest
from kombu import Queue

from {{ cookiecutter.project_slug }}.celery import app
from {{ cookiecutter.project_slug }}.deadletters import DEAD_LETTER_QUEUE
from {{ cookiecutter.project_slug }}.queues import main
from {{ cookiecutter.project_slug }}.tasks import add


@pytest.fixture
def unread_queue() -> Iterator[str]:
    """The name of a queue of the test's own, which no worker reads; deleted afterwards."""
    name = f"test-queues-{uuid.uuid4().hex}"
    yield name
    with app.connection_for_write() as connection:
        Queue(name, channel=connection.default_channel).delete()


def test_counts_the_tasks_sent_to_a_queue(unread_queue, capsys):
    """A queue nobody has declared counts 0; after three sends to it, 3, in both outputs."""
    assert main(["--json", unread_queue]) == 0
    assert json.loads(capsys.readouterr().out) == {unread_queue: 0}
    for number in range(3):
        add.apply_async((number, 1), queue=unread_queue)
    assert main(["--json", unread_queue]) == 0
    assert json.loads(capsys.readouterr().out) == {unread_queue: 3}
    assert main([unread_queue]) == 0
    assert capsys.readouterr().out == f"{unread_queue}  3\n"


def test_lists_the_workers_queue_and_the_dead_letter_queue_by_default(capsys):
    """Without names, one line per queue: the workers' queue, then the dead-letter queue."""
    assert main([]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [app.conf.task_default_queue, DEAD_LETTER_QUEUE.name]
