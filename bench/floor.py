"""The raw broker floor: how fast plain Python moves a request and its reply through the
broker, with no Celery. bench/__main__.py runs it in a rendered project's virtual environment,
so the client library (redis-py, with hiredis where the project has it, or py-amqp) is
the one that project's Celery uses.

    python -m bench.floor URL --messages N --consumers W

Redis: the producer LPUSHes N requests, W consumer processes BRPOP each and LPUSH a
reply, the producer BRPOPs the N replies. RabbitMQ: the same with basic_publish and
basic_consume (no acknowledgements, as BRPOP has none). Prints one JSON object.
"""

import argparse
import collections
import json
import multiprocessing
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

STOP = b"stop"
# A loop that gets no message for this long has lost one: fail rather than hang.
TIMEOUT_SECONDS = 60


def start_consumers(
    consumer: Callable[..., None], count: int, *args: str
) -> list[multiprocessing.Process]:
    """Start `count` consumer processes and return once each says it is consuming."""
    ready = multiprocessing.Semaphore(0)
    processes = [
        multiprocessing.Process(target=consumer, args=(*args, ready)) for _ in range(count)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    return processes


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def redis_consumer(url: str, requests: str, replies: str, ready: Any) -> None:
    client = redis_client(url)
    ready.release()
    while True:
        _, body = client.brpop([requests], timeout=TIMEOUT_SECONDS)
        if body == STOP:
            return
        client.lpush(replies, body)


def redis_floor(url: str, messages: int, consumers: int) -> float:
    client = redis_client(url)
    requests, replies = f"floor-{uuid.uuid4().hex}", f"floor-reply-{uuid.uuid4().hex}"
    processes = start_consumers(redis_consumer, consumers, url, requests, replies)
    body = json.dumps({"task": "add", "args": [1, 2]}).encode()
    started = time.perf_counter()
    for _ in range(messages):
        client.lpush(requests, body)
    for _ in range(messages):
        if client.brpop([replies], timeout=TIMEOUT_SECONDS) is None:
            raise TimeoutError(f"no reply within {TIMEOUT_SECONDS} s")
    elapsed = time.perf_counter() - started
    for _ in processes:
        client.lpush(requests, STOP)
    for process in processes:
        process.join()
    client.delete(requests, replies)
    return messages / elapsed


def amqp_connection(url: str) -> Any:
    import amqp

    parts = urlsplit(url)
    connection = amqp.Connection(
        host=f"{parts.hostname}:{parts.port or 5672}",
        userid=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        virtual_host=unquote(parts.path[1:]) or "/",
    )
    connection.connect()
    return connection


def amqp_consumer(url: str, requests: str, replies: str, ready: Any) -> None:
    import amqp

    connection = amqp_connection(url)
    channel = connection.channel()
    # The callback only collects: basic_publish reads pending frames itself, so publishing
    # from the callback would nest one delivery inside another.
    pending: collections.deque[Any] = collections.deque()
    channel.basic_consume(requests, callback=pending.append, no_ack=True)
    ready.release()
    while True:
        connection.drain_events(timeout=TIMEOUT_SECONDS)
        while pending:
            body = pending.popleft().body
            if body == STOP:
                connection.close()
                return
            channel.basic_publish(amqp.Message(body), exchange="", routing_key=replies)


def amqp_floor(url: str, messages: int, consumers: int) -> float:
    import amqp

    connection = amqp_connection(url)
    channel = connection.channel()
    requests, replies = f"floor-{uuid.uuid4().hex}", f"floor-reply-{uuid.uuid4().hex}"
    for queue in (requests, replies):
        channel.queue_declare(queue, durable=False, auto_delete=False)
    processes = start_consumers(amqp_consumer, consumers, url, requests, replies)
    received: list[Any] = []
    tag = channel.basic_consume(replies, callback=received.append, no_ack=True)
    body = json.dumps({"task": "add", "args": [1, 2]}).encode()
    started = time.perf_counter()
    for _ in range(messages):
        channel.basic_publish(amqp.Message(body), exchange="", routing_key=requests)
    while len(received) < messages:
        connection.drain_events(timeout=TIMEOUT_SECONDS)
    elapsed = time.perf_counter() - started
    for _ in processes:
        channel.basic_publish(amqp.Message(STOP), exchange="", routing_key=requests)
    for process in processes:
        process.join()
    channel.basic_cancel(tag)
    for queue in (requests, replies):
        channel.queue_delete(queue)
    connection.close()
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="redis://... or amqp://...")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="the median is kept")
    args = parser.parse_args()
    floor = redis_floor if args.url.startswith("redis") else amqp_floor
    rates = [floor(args.url, args.messages, args.consumers) for _ in range(args.rounds)]
    rates.sort()
    print(json.dumps({"per_s": round(rates[len(rates) // 2], 1), "rounds": rates}))


if __name__ == "__main__":
    main()
