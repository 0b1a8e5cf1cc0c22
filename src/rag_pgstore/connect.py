"""Turn a database URL into SQLAlchemy engines on psycopg 3, sync and async."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from rag_pgstore.errors import UnsupportedError

__all__ = ["make_engines", "normalize_url"]

_PLAIN = ("postgres", "postgresql")


def normalize_url(url: str | URL) -> URL:
    """Accept ``postgresql+psycopg://``, and the plain ``postgres(ql)://`` of ``DATABASE_URL``."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise UnsupportedError(
            f"expected a PostgreSQL URL, got something unparsable: {exc}"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in _PLAIN:
        raise UnsupportedError(f"expected a postgresql:// URL, got {backend}://")
    if driver not in ("", "psycopg"):
        raise UnsupportedError(
            f"expected the psycopg (3) driver, got {driver!r}; use postgresql+psycopg:// "
            "(COPY and async need it)"
        )
    return parsed.set(drivername="postgresql+psycopg")


def make_engine(url: str | URL, options: Mapping[str, Any] | None = None) -> Engine:
    """The sync engine alone (see :func:`make_engines`)."""
    return sa.create_engine(normalize_url(url), **dict(options or {}))


def make_async_engine(url: str | URL, options: Mapping[str, Any] | None = None) -> AsyncEngine:
    """The async engine alone (see :func:`make_engines`)."""
    return create_async_engine(normalize_url(url), **dict(options or {}))


def make_engines(
    url: str | URL, options: Mapping[str, Any] | None = None
) -> tuple[Engine, AsyncEngine]:
    """Create both engines; no connection is opened until the first query.

    There is no ``pool_pre_ping``: it would cost a round trip on every query. A plan whose
    first step finds its pooled connection dead is retried on a fresh one instead (see
    ``driver/policy.py``). ``options`` go to both ``create_engine`` calls (pool sizes,
    ``connect_args={"sslmode": ...}``, ...).
    """
    normalized = normalize_url(url)
    kwargs: dict[str, Any] = dict(options or {})
    return sa.create_engine(normalized, **kwargs), create_async_engine(normalized, **kwargs)
