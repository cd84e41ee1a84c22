"""Flower's command of a local stack, and its HTTP API as a user reaches it."""

import base64
import urllib.error
import urllib.request

from harness.localstack import RESULT_TIMEOUT, LocalStack, free_port
from harness.waiting import eventually


def start_flower(stack: LocalStack):
    """Flower's command on a free port, once it listens; returns get(path, authorized)
    -> (status, body), authorized with the generated user and password."""
    port = free_port()
    flower = stack.start("flower", "flower", FLOWER_PORT=str(port))
    user, password = stack.environment("flower")["FLOWER_BASIC_AUTH"].split(":", 1)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()

    def get(path: str, authorized: bool) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if authorized:
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    eventually(
        lambda: get("/healthcheck", authorized=False),
        RESULT_TIMEOUT,
        "Flower listening",
        ignoring=(urllib.error.URLError,),
        watching=[flower],
    )
    return get
