"""API keys: who may read, who may write.

A key comes as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. No key is ``401``, a key
that is not one of ours ``401``, a read key on a write route ``403``. Keys are never logged
or echoed back: errors only say which kind of failure it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from rag_pgstore.server.errors import ApiError
from rag_pgstore.server.settings import Keys, Scope

__all__ = ["require"]

# auto_error=False: the check below answers with our error shape, and with no keys configured
# nothing is required. Declared here so the OpenAPI page offers both ways to send a key.
_bearer = HTTPBearer(auto_error=False, description="an API key as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rag-pgstore"'}


def require(scope: Scope, *, whole: bool = False) -> Callable[..., Awaitable[None]]:
    """A dependency that lets a request through only with a key of ``scope`` (write keys
    may also read); with no keys configured, everyone passes. The key's tenant goes to
    ``request.state.tenant``; ``whole`` (a route over whole collections: list, create,
    describe, drop) refuses a key bound to a tenant."""

    async def check(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
    ) -> None:
        keys: Keys = request.app.state.keys
        request.state.tenant = None
        if not keys:
            return
        presented = bearer.credentials if bearer is not None else header
        if not presented:
            raise ApiError(
                401,
                "unauthorized",
                "expected an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                headers=_CHALLENGE,
            )
        key = keys.key_of(presented)
        if key is None:
            raise ApiError(401, "unauthorized", "the API key is not valid", headers=_CHALLENGE)
        if scope is Scope.WRITE and key.scope is not Scope.WRITE:
            raise ApiError(
                403, "forbidden", "this key may read and search, not write; use a write key"
            )
        if whole and key.tenant is not None:
            raise ApiError(
                403,
                "forbidden",
                "this key belongs to a tenant: it reaches that tenant's chunks, not whole "
                "collections; use a key without a tenant",
            )
        request.state.tenant = key.tenant

    return check


can_read = Depends(require(Scope.READ))
can_write = Depends(require(Scope.WRITE))
can_see_all = Depends(require(Scope.READ, whole=True))
can_manage = Depends(require(Scope.WRITE, whole=True))
