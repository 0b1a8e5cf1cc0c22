"""The layers every request passes before a route, outermost first: the observer that times
it for ``/metrics`` and writes its access log line; the key gate (or, without keys, the
this-machine-only gate); the body limit.

All plain ASGI (not Starlette's ``BaseHTTPMiddleware``, which runs each request in an extra
task and buffers streaming responses). The gates answer before any of the body is parsed,
so a client without a key cannot make the server read and parse 16 MiB of JSON.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time

from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_pgstore.server.metrics import Metrics
from rag_pgstore.server.settings import Keys

__all__ = ["BodyLimit", "KeyGate", "LocalOnly", "Observe", "presented_key"]

access_log = logging.getLogger("rag_pgstore.access")

_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_DRAIN_BYTES = 64 * 1024 * 1024  # beyond this a refused body is cut off, not read
_LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
CLIENT_GONE = 499  # the client went away before an answer (nginx's convention)


def needs_key(path: str) -> bool:
    """Routes that show or change data: the API and the metrics (not the page, the docs or
    the probes)."""
    return path == "/v1" or path.startswith("/v1/") or path == "/metrics"


def presented_key(scope: Scope) -> str | None:
    """The key a request carries: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    authorization = _header(scope, b"authorization")
    if authorization is not None:
        kind, _, credentials = authorization.partition(" ")
        if kind.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return _header(scope, b"x-api-key") or None


class KeyGate:
    """Answer ``401`` to a request for the API without a valid key, before reading its body.
    (Which scope a route needs is the route's own check.)"""

    def __init__(self, app: ASGIApp, keys: Keys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = presented_key(scope)
        if presented is None:
            message = "expected an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
        elif self.keys.scope_of(presented) is None:
            message = "the API key is not valid"
        else:
            await self.app(scope, receive, send)
            return
        scope["rag_pgstore.route"] = "key_check"
        challenge = (b"www-authenticate", b'Bearer realm="rag-pgstore"')
        await answer(
            scope,
            receive,
            send,
            status=401,
            code="unauthorized",
            message=message,
            headers=[challenge],
        )


class LocalOnly:
    """Without keys, answer only this machine: a loopback client that addresses the server
    by a local name. The second half stops DNS rebinding, where a web page the user has
    open names its own domain for 127.0.0.1 and calls the API from the user's browser."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (_local_client(scope) and _local_host(scope)):
            await self.app(scope, receive, send)
            return
        scope["rag_pgstore.route"] = "local_only"
        await answer(
            scope,
            receive,
            send,
            status=403,
            code="local_only",
            message="this server has no API keys, so it answers only requests from this machine to "
            "localhost or 127.0.0.1; start it with keys (RAG_PGSTORE_API_KEYS) to serve others",
        )


class BodyLimit:
    """Refuse a body over ``limit`` bytes with a 413, before any of it is parsed.

    The declared ``Content-Length`` is checked first; a body sent in chunks is counted as it
    arrives and refused as soon as it passes the limit. (Starlette's own body limit answers
    in plain text and without reading what is still in flight, which a client sees as a
    reset connection rather than a 413.)
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._refuse(scope, receive, send, more=message.get("more_body", False))
                return
            parts.append(body)
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(parts)}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, *, more: bool = True
    ) -> None:
        scope["rag_pgstore.route"] = "body_limit"
        message = (
            f"expected a request body of at most {self.limit} bytes; send fewer chunks per request"
        )
        await answer(
            scope, receive, send, status=413, code="body_too_large", message=message, more=more
        )


async def answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    more: bool = True,
) -> None:
    """Answer in the API's error shape without running the app, and close the connection.

    What the client is still sending is read and dropped first (up to a bound): a server
    that answers and closes while a body is in flight resets the connection, and the client
    sees a broken pipe instead of this answer. A client that asked ``Expect: 100-continue``
    has sent nothing yet, and is not invited to.
    """
    drained = 0
    waiting = _header(scope, b"expect") == "100-continue"
    while more and not waiting and scope["method"] in _WITH_BODY and drained < _DRAIN_BYTES:
        received = await receive()
        if received["type"] == "http.disconnect":
            return
        drained += len(received.get("body", b""))
        more = received.get("more_body", False)
    body = json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Observe:
    """Count and time every request by route template and status, and log one JSON line:
    method, route, path, status, duration, client. Never bodies, query strings or headers
    (where keys travel)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, sending)
            failed = False
        finally:
            seconds = time.perf_counter() - start
            if status is None:  # no answer: the app failed, or the client left first
                status = 500 if failed else CLIENT_GONE
            route = _route(scope)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            labels = (route, method, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.request_seconds.labels(*labels).observe(seconds)
            client = scope.get("client")
            access_log.info(
                "%s %s %s",
                method,
                scope["path"],
                status,
                extra={
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "client": client[0] if client else None,
                },
            )


def _route(scope: Scope) -> str:
    """The matched route's template; requests that matched none share one label."""
    found = scope.get("route")
    path = getattr(found, "path", None)
    if isinstance(path, str):
        return path
    if isinstance(scope.get("endpoint"), StaticFiles):  # a mount: its path, not each file's
        return f"{scope.get('root_path', '')}/{{file}}"
    marked = scope.get("rag_pgstore.route")
    return marked if isinstance(marked, str) else "unmatched"


def _local_client(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return True  # a unix socket, or an in-process transport
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def _local_host(scope: Scope) -> bool:
    host = _header(scope, b"host")
    if host is None:
        return True  # HTTP/1.0 without a Host: nothing a browser would send
    if host.startswith("["):  # [::1]:8080
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.lower() in _LOCAL_NAMES


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
