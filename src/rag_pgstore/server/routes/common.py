"""What every route needs: the app's collections and limits, and the limit checks."""

from __future__ import annotations

from fastapi import Request

from rag_pgstore.server.errors import ApiError
from rag_pgstore.server.metrics import Metrics
from rag_pgstore.server.settings import Limits, ServerSettings
from rag_pgstore.server.state import Collections


def collections(request: Request) -> Collections:
    found: Collections = request.app.state.collections
    return found


def tenant_of(request: Request) -> str | None:
    """The tenant of the request's API key (``None``: a key without one, or no keys)."""
    found: str | None = getattr(request.state, "tenant", None)
    return found


def settings(request: Request) -> ServerSettings:
    found: ServerSettings = request.app.state.settings
    return found


def metrics(request: Request) -> Metrics:
    found: Metrics = request.app.state.metrics
    return found


def check_batch(limits: Limits, n: int, what: str) -> None:
    if n > limits.max_batch:
        raise ApiError(
            413,
            "batch_too_large",
            f"expected at most {limits.max_batch} {what} in one request, got {n}; "
            "send them in several requests",
        )


def check_k(limits: Limits, k: int, offset: int = 0, *, name: str = "k") -> None:
    if k > limits.max_k:
        raise ApiError(
            422, "k_too_large", f"expected {name} <= {limits.max_k}, got {k}; page with offset"
        )
    if offset > limits.max_offset:
        raise ApiError(
            422,
            "offset_too_large",
            f"expected offset <= {limits.max_offset}, got {offset}; narrow the search with a "
            "filter instead of paging this deep",
        )
