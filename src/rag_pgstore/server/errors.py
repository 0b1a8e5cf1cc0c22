"""Every failure as one JSON shape: ``{"error": {"code", "message", "status"}}``.

Each typed ``rag_pgstore`` error has a status and a stable ``code`` clients can branch on;
the message is the library's own ("expected 384 dimensions, got 383 ..."). Nothing else of
an exception reaches a client: an unexpected one is logged with its traceback and answered
with a plain 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag_pgstore.errors import (
    CollectionNameError,
    CollectionNotFoundError,
    DatabaseError,
    DatabaseUnavailableError,
    DimensionError,
    EmbeddingError,
    FilterError,
    InvalidInputError,
    MissingDependencyError,
    QueryTimeoutError,
    RagPgStoreError,
    SchemaError,
    UnsupportedError,
)

__all__ = ["RETRY_AFTER_SECONDS", "ApiError", "error_response", "install"]

log = logging.getLogger("rag_pgstore.server")

RETRY_AFTER_SECONDS = 5

# Most specific first: the first class an error is an instance of decides.
_STATUS: tuple[tuple[type[RagPgStoreError], int, str], ...] = (
    (DimensionError, 422, "dimension_mismatch"),
    (FilterError, 400, "bad_filter"),
    (CollectionNameError, 422, "bad_collection_name"),
    (InvalidInputError, 422, "invalid_input"),
    (CollectionNotFoundError, 404, "collection_not_found"),
    (SchemaError, 409, "schema_conflict"),
    (UnsupportedError, 422, "unsupported"),
    (MissingDependencyError, 501, "missing_dependency"),
    (EmbeddingError, 502, "embedding_failed"),
    (QueryTimeoutError, 504, "query_timeout"),
    (DatabaseUnavailableError, 503, "database_unavailable"),
)

# Database refusals by SQLSTATE class: a read-only role's write is the caller's problem (403),
# a constraint a conflict (409); anything else is ours (500).
_SQLSTATE: dict[str, tuple[int, str]] = {
    "42501": (403, "database_permission_denied"),
    "25006": (403, "database_read_only"),  # a hot standby, or default_transaction_read_only
    "23": (409, "database_conflict"),
    "53": (503, "database_overloaded"),  # too many connections, out of memory or disk
    "57P": (503, "database_unavailable"),  # shutting down, cannot connect now
}


class ApiError(Exception):
    """A failure the server itself decides (auth, limits, a missing chunk)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "status": status, **extra}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def classify(exc: RagPgStoreError) -> tuple[int, str]:
    """The status and code of a library error."""
    if isinstance(exc, DatabaseError) and not isinstance(exc, DatabaseUnavailableError):
        state = exc.sqlstate or ""
        for prefix, found in _SQLSTATE.items():
            if state.startswith(prefix):
                return found
        if isinstance(exc, QueryTimeoutError):
            return 504, "query_timeout"
        return 500, "database_error"
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


# What a client is told of a failure on our side: the library's message names hosts, roles
# and the driver's words, which are for the operator (they go to the log).
_PUBLIC = {
    "database_unavailable": "the database is unavailable or every connection is busy; "
    "retry shortly",
    "database_overloaded": "the database is overloaded; retry shortly",
    "database_error": "the database refused the operation; the server's log has the details",
    "embedding_failed": "the embedding model failed; the server's log has the details",
    "internal_error": "the server failed; its log has the details",
}


async def _library(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RagPgStoreError)
    status, code = classify(exc)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    if status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, code, exc)
    name = request.path_params.get("name")
    if name and isinstance(exc, (SchemaError, DimensionError)):
        # The collection may have been dropped or made again elsewhere: read it afresh.
        collections = getattr(request.app.state, "collections", None)
        if collections is not None:
            collections.forget(name)
    return error_response(status, code, _PUBLIC.get(code, str(exc)), headers)


async def _api(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "where": ".".join(str(part) for part in error.get("loc", ())),
            "problem": str(error.get("msg", "")),
        }
        for error in exc.errors()[:20]
    ]
    first = problems[0] if problems else {"where": "body", "problem": "invalid"}
    message = f"{first['where']}: {first['problem']}"
    if len(problems) > 1:
        message += f" (and {len(exc.errors()) - 1} more)"
    return error_response(422, "invalid_request", message, problems=problems)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    message = str(exc.detail) if exc.detail else code.replace("_", " ")
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", _PUBLIC["internal_error"])


def install(app: FastAPI) -> None:
    """Answer every error ``app`` raises with the JSON shape above."""
    app.add_exception_handler(RagPgStoreError, _library)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
