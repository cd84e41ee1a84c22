"""A pass-through in front of podman's Docker-compatible API socket, for Compose v2.

Used by the container tier with podman only (never with Docker). Every request and
every response passes unchanged, byte for byte, except these, and only these:

- The API version podman 4.3 reports (1.41, in the `Api-Version` header of /_ping and
  in /version's "ApiVersion") is reported as 1.44. Compose 2.40 refuses to create a
  container whose healthcheck has `start_interval` on an engine below 1.44 ("can't set
  healthcheck.start_interval as feature require Docker Engine v25 or later"), and every
  rendered healthcheck has one. podman ignores the StartInterval field Compose then
  sends; what start_interval asks for (a check every 1-2 s during start_period) is what
  the harness's healthcheck loop does anyway (see containerstack.py).
- A container create request (POST /containers/create) whose environment has no
  HOSTNAME gets HOSTNAME set to the container's host name, generating that name (12 hex
  digits, as Docker's short container ids are) when Compose gives none. Docker puts
  HOSTNAME in the environment of every container and of every `exec` in it, so
  healthchecks may use it (the worker's checks `celery@$HOSTNAME`); podman 4.3 sets it
  for the container's main process but not for `exec`, through which
  `podman healthcheck run` runs the check, so the worker's check would ping
  `celery@` and never pass. The one visible difference from Docker: the host name is
  not the container id's prefix.
- In the same create request, a healthcheck in exec form (`["CMD", argv...]`) whose
  arguments hold a space is sent as `["CMD-SHELL", <argv quoted for sh>]`, which runs
  the same argv. podman 4.3's compat API joins the exec form with spaces and splits it
  again on spaces (seen: the worker's `sh -c "test -n ..."` check arrived as
  `["CMD","sh","-c","test","-n",...]` and could never pass; containers/podman#16794 is
  the same fault in `kube play`). Docker keeps the argv as given.
- In container listings and inspections (GET /containers/json, /containers/ID/json),
  each network's NetworkID, which podman 4.3 gives as the network's name, is replaced
  by the network's id, as Docker gives it. Compose compares it with the id of the
  project's network and, finding them different, re-creates every running container
  of the project at each `up` or `run` (the servers too), which Docker would not.
- Requests that are not an HTTP upgrade (attach, exec) are sent to podman with
  `Connection: close`, so that each client connection carries one request and the shim
  can pass the bytes through without parsing bodies or responses.

It fakes no result: what Compose is told about containers, images, health and exit
codes is podman's own answer.
"""

import asyncio
import contextlib
import json
import re
import secrets
import shlex
import threading
from pathlib import Path

REPORTED_API_VERSION = "1.44"
VERSION_PATHS = re.compile(rb"^(?:/v[\d.]+)?/(?:_ping|version)(?:\?.*)?$")
CONTAINERS_PATH = re.compile(rb"^(?:/v[\d.]+)?/containers/(?:[^/?]+/)?json(?:\?.*)?$")
CREATE_PATH = re.compile(rb"^(?:/v[\d.]+)?/containers/create(?:\?.*)?$")
HEADER_END = b"\r\n\r\n"


class ApiShim:
    """Serves on `listen` (a unix socket path) and forwards to `upstream`; a daemon
    thread runs its event loop. Use as a context manager."""

    def __init__(self, upstream: Path, listen: Path):
        self.upstream, self.listen = upstream, listen
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        # Python 3.11's asyncio holds no reference to the task of a connection handler,
        # so the garbage collector could end one mid-stream (output of `compose run` lost).
        self._connections: set[asyncio.Task] = set()

    def __enter__(self) -> "ApiShim":
        self.listen.unlink(missing_ok=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_unix_server(self._accept, path=str(self.listen)), self._loop
        ).result(10)
        return self

    def __exit__(self, *exc_info) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.listen.unlink(missing_ok=True)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.listen}"

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._loop.create_task(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(HEADER_END)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line, *header_lines = head[: -len(HEADER_END)].split(b"\r\n")
        method, target, _version = request_line.split(b" ", 2)
        headers = [line for line in header_lines if line]
        upgrade = any(line.lower().startswith(b"upgrade:") for line in headers)
        body = b""
        if method == b"POST" and CREATE_PATH.match(target):
            headers, body = await _with_hostname(reader, headers)
        if not upgrade:
            headers = [line for line in headers if not line.lower().startswith(b"connection:")]
            headers.append(b"Connection: close")
        head = b"\r\n".join([request_line, *headers]) + HEADER_END
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream))
        except OSError:
            writer.close()
            return
        up_writer.write(head + body)
        rewrite = None
        if method in (b"GET", b"HEAD") and VERSION_PATHS.match(target):
            rewrite = _report_api_version
        elif method == b"GET" and CONTAINERS_PATH.match(target):
            rewrite = self._network_ids
        if rewrite is not None:
            await _rewrite(up_reader, writer, rewrite)
            for stream in (up_writer, writer):
                stream.close()
            return
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )
        for stream in (up_writer, writer):
            stream.close()

    async def _network_ids(self, body: bytes) -> bytes:
        """Each container's networks with Docker's NetworkID (the id, not the name)."""
        containers = json.loads(body)
        ids: dict[str, str] = {}
        for container in containers if isinstance(containers, list) else [containers]:
            networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
            for name, network in networks.items():
                if network.get("NetworkID") != name:
                    continue
                if name not in ids:
                    ids[name] = await self._network_id(name)
                network["NetworkID"] = ids[name] or name
        return json.dumps(containers).encode()

    async def _network_id(self, name: str) -> str:
        up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream))
        up_writer.write(
            f"GET /networks/{name} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".encode()
        )
        status, _headers, body = _parse_response(await up_reader.read())
        up_writer.close()
        return json.loads(body).get("Id", "") if b" 200 " in status + b" " else ""


async def _report_api_version(body: bytes) -> bytes:
    return re.sub(
        rb'"ApiVersion":\s*"[^"]*"', f'"ApiVersion":"{REPORTED_API_VERSION}"'.encode(), body
    )


def _parse_response(response: bytes) -> tuple[bytes, list[bytes], bytes]:
    """Status line, header lines and (de-chunked) body of a whole HTTP response."""
    head, _, body = response.partition(HEADER_END)
    status, *header_lines = head.split(b"\r\n")
    if any(line.lower() == b"transfer-encoding: chunked" for line in header_lines):
        body = _dechunk(body)
    return status, header_lines, body


async def _rewrite(up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, change) -> None:
    """podman's whole response, its body changed by `change` if it succeeded (and, for
    the version responses, its Api-Version header too)."""
    status, header_lines, body = _parse_response(await up_reader.read())
    if status.split(b" ")[1:2] == [b"200"] and body:
        body = await change(body)
    kept = []
    for line in header_lines:
        name = line.split(b":", 1)[0].lower()
        if name in (b"content-length", b"transfer-encoding", b"connection"):
            continue
        if name == b"api-version" and change is _report_api_version:
            line = b"Api-Version: " + REPORTED_API_VERSION.encode()
        kept.append(line)
    kept += [b"Content-Length: %d" % len(body), b"Connection: close"]
    writer.write(b"\r\n".join([status, *kept]) + HEADER_END + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _with_hostname(
    reader: asyncio.StreamReader, headers: list[bytes]
) -> tuple[list[bytes], bytes]:
    """A create request's headers and whole body, HOSTNAME added to its Env and an
    exec-form healthcheck with spaces in shell form (see the module's docstring)."""
    fields = {}
    for line in headers:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:size]
        await reader.readuntil(b"\r\n")  # the empty trailer
    else:
        body = await reader.readexactly(int(fields.get(b"content-length", b"0")))
    config = json.loads(body)
    check = (config.get("Healthcheck") or {}).get("Test") or []
    if check[:1] == ["CMD"] and any(" " in argument for argument in check[1:]):
        config["Healthcheck"]["Test"] = ["CMD-SHELL", shlex.join(check[1:])]
        body = json.dumps(config).encode()
    env = config.get("Env") or []
    if not any(item.startswith("HOSTNAME=") for item in env):
        config["Hostname"] = config.get("Hostname") or secrets.token_hex(6)
        config["Env"] = [*env, f"HOSTNAME={config['Hostname']}"]
        body = json.dumps(config).encode()
    kept = [
        line
        for line in headers
        if line.split(b":", 1)[0].strip().lower() not in (b"content-length", b"transfer-encoding")
    ]
    return [*kept, b"Content-Length: %d" % len(body)], body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then end the other side's writing half too."""
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
    except (ConnectionError, OSError):
        writer.close()


def _dechunk(body: bytes) -> bytes:
    decoded = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        decoded, body = decoded + body[:size], body[size + 2 :]
    return decoded
