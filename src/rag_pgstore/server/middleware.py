"""The two layers every request passes before a route: the body limit, and the observer
that times it for ``/metrics`` and writes its access log line.

Both are plain ASGI (not Starlette's ``BaseHTTPMiddleware``, which runs each request in an
extra task and buffers streaming responses).
"""

from __future__ import annotations

import json
import logging
import time

from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_pgstore.server.metrics import Metrics

__all__ = ["BodyLimit", "Observe"]

access_log = logging.getLogger("rag_pgstore.access")

_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DRAIN_BYTES = 64 * 1024 * 1024  # beyond this a refused body is cut off, not read


class BodyLimit:
    """Refuse a body over ``limit`` bytes with a 413, before any of it is parsed.

    The declared ``Content-Length`` is checked first; a body sent in chunks is counted as it
    arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
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
        # Read (and drop) what the client is still sending, up to a bound: a server that
        # answers and closes while the body is in flight resets the connection, and the
        # client sees a broken pipe instead of this answer.
        drained = 0
        while more and drained < _DRAIN_BYTES:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = json.dumps(
            {
                "error": {
                    "code": "body_too_large",
                    "message": f"expected a request body of at most {self.limit} bytes; "
                    "send fewer chunks per request",
                    "status": 413,
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
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
        status = 500  # what the client gets if the app fails before it answers

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - start
            route = _route(scope)
            labels = (route, scope["method"], str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.request_seconds.labels(*labels).observe(seconds)
            client = scope.get("client")
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
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


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
