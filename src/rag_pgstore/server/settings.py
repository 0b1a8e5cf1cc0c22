"""What a server is started with: where the database is, who may call it, and its limits.

Options are frozen dataclasses, checked when they are made, so a bad ``--max-k`` or a short
key fails at start, not at the first request.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL

from rag_pgstore.codec import check_name, check_tenant
from rag_pgstore.errors import InvalidInputError

__all__ = ["ApiKey", "Keys", "Limits", "Scope", "ServerSettings"]

MIN_KEY_LENGTH = 16


class Scope(str, enum.Enum):
    """What a key may do: ``read`` searches and gets; ``write`` also writes and drops."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class ApiKey:
    """One API key, its scope, and the tenant it is bound to (``None``: none; a bound key
    reaches that tenant's rows only, and no collection-wide route); its ``repr`` never shows
    the key."""

    secret: str = field(repr=False)
    scope: Scope = Scope.READ
    tenant: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.secret, str) or len(self.secret) < MIN_KEY_LENGTH:
            raise InvalidInputError(
                f"expected an API key of at least {MIN_KEY_LENGTH} characters, got one of "
                f"{len(self.secret) if isinstance(self.secret, str) else 0}; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if any(c.isspace() or c == "," for c in self.secret):
            raise InvalidInputError("expected an API key without spaces or commas")
        object.__setattr__(self, "scope", Scope(self.scope))
        if self.tenant is not None:
            check_tenant(self.tenant)

    @classmethod
    def parse(cls, text: str) -> ApiKey:
        """``read:SECRET`` or ``write:SECRET``, the form of ``--api-key`` and
        ``RAG_PGSTORE_API_KEYS``; ``read@TENANT:SECRET`` binds the key to a tenant."""
        scope, sep, secret = text.strip().partition(":")
        scope, at, tenant = scope.partition("@")
        if not sep or scope not in {s.value for s in Scope}:
            raise InvalidInputError(
                "expected an API key as read:SECRET or write:SECRET (read@TENANT:SECRET for "
                "a tenant's key), got one without a scope in front"
            )
        return cls(secret, Scope(scope), tenant if at else None)


class Keys:
    """The keys a server accepts, looked up in constant time.

    Each presented key is hashed and compared with every configured key's hash by
    :func:`hmac.compare_digest`, all of them every time: how long a check takes says
    nothing about how close a guess came, or which key matched.
    """

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._digests = [(_digest(k.secret), k) for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def scope_of(self, presented: str) -> Scope | None:
        found = self.key_of(presented)
        return None if found is None else found.scope

    def key_of(self, presented: str) -> ApiKey | None:
        wanted = _digest(presented)
        found: ApiKey | None = None
        for digest, key in self._digests:
            if hmac.compare_digest(digest, wanted):
                found = key
        return found


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; beyond them it gets a 413 or a 422, and nothing runs.

    ``max_body_bytes``: a request body; ``max_batch``: chunks or documents in one write;
    ``max_k``: results (and MMR candidates) of one search; ``max_offset``: results skipped.
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_batch: int = 1_000
    max_k: int = 1_000
    max_offset: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_batch", "max_k", "max_offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"expected {name} to be an int >= 1, got {value!r}")


@dataclass(frozen=True)
class ServerSettings:
    """How :func:`~rag_pgstore.server.create_app` connects and what it allows.

    ``database_url``: any PostgreSQL URL (``None``: the embedded server, in ``data_dir``).
    ``collection``: the one the search page opens first. ``embedder``: the model that embeds
    texts for collections that have not recorded one (a name such as ``"hash:256"`` or
    ``"local:all-MiniLM-L6-v2"``, any model :func:`~rag_pgstore.pipeline.as_embedder`
    accepts, or ``None``: such collections take vectors only); a collection that recorded
    a model is always embedded with that one. ``keys``: empty means no authentication,
    which :mod:`rag_pgstore.cli` allows on 127.0.0.1 only (and the app then answers only
    this machine). ``pool_size``/``max_overflow``: the async engine's connection pool;
    ``pool_timeout``: seconds a request waits for a free connection before a 503.
    """

    database_url: str | URL | None = None
    collection: str = "docs"
    schema: str = "public"
    embedder: Any = None
    keys: tuple[ApiKey, ...] = ()
    limits: Limits = field(default_factory=Limits)
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout: float = 10.0
    embed_threads: int = 2
    create_extension: bool = True
    data_dir: str | None = None

    def __post_init__(self) -> None:
        check_name(self.collection, "collection")
        check_name(self.schema, "schema")
        object.__setattr__(self, "keys", tuple(self.keys))
        for key in self.keys:
            if not isinstance(key, ApiKey):
                raise InvalidInputError(f"expected ApiKey values in keys, got {key!r}")
        for name in ("pool_size", "embed_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"expected {name} to be an int >= 1, got {value!r}")
        if isinstance(self.pool_timeout, bool) or not (
            isinstance(self.pool_timeout, (int, float)) and self.pool_timeout > 0
        ):
            raise InvalidInputError(f"expected pool_timeout > 0, got {self.pool_timeout!r}")
        if not isinstance(self.max_overflow, int) or self.max_overflow < 0:
            raise InvalidInputError(f"expected max_overflow >= 0, got {self.max_overflow!r}")
