"""The errors rag_pgstore raises: one base class, a few leaves.

Input errors subclass ``ValueError`` (or ``LookupError``) as well, so code that already catches
those keeps working. Database failures keep the driver's exception as ``__cause__``.
"""

from __future__ import annotations

import reprlib

__all__ = [
    "CollectionNameError",
    "CollectionNotFoundError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DimensionError",
    "EmbeddedServerError",
    "EmbeddingError",
    "FilterError",
    "InvalidChunkError",
    "InvalidInputError",
    "MissingDependencyError",
    "QueryTimeoutError",
    "RagPgStoreError",
    "SchemaError",
    "UnsupportedError",
]


_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother = 3, 80, 80
_SHOW.maxlist = _SHOW.maxdict = _SHOW.maxtuple = 6


def show(value: object) -> str:
    """``repr(value)``, cut short: an error message stays one readable line, and a value nested
    thousands deep cannot make ``repr`` itself fail."""
    return _SHOW.repr(value)


class RagPgStoreError(Exception):
    """Base class of every error rag_pgstore raises."""


class InvalidInputError(RagPgStoreError, ValueError):
    """A chunk, query, option or argument was rejected before anything was sent to the database."""


InvalidChunkError = InvalidInputError  # its name before 0.2; kept so existing code still works


class DimensionError(InvalidInputError):
    """An embedding has the wrong number of dimensions for its collection."""


class CollectionNameError(RagPgStoreError, ValueError):
    """A collection, schema or text-search configuration name is not allowed."""


class FilterError(RagPgStoreError, ValueError):
    """A metadata filter uses an unknown operator or has the wrong shape."""


class UnsupportedError(RagPgStoreError, ValueError):
    """The collection or server cannot do what was asked (an index over 4,000 dimensions, ...)."""


class SchemaError(RagPgStoreError):
    """The collection's table is missing, or was created with different settings."""


class CollectionNotFoundError(SchemaError, LookupError):
    """No collection of that name exists (in that schema); ``name`` is the one asked for,
    when known."""

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class DatabaseError(RagPgStoreError):
    """The database refused an operation; the driver's error is the ``__cause__``.

    The message is one line: the server's primary message and what we were doing. The rest
    of what the server said is kept in attributes: ``sqlstate``, PostgreSQL's five-character
    error code (``42501`` permission denied, ``40P01`` deadlock detected, ...), ``detail``
    and ``hint`` (``None`` when the server sent none).
    """

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint


class DatabaseUnavailableError(DatabaseError):
    """The server could not be reached, or the connection was lost mid-operation."""


class QueryTimeoutError(DatabaseError):
    """A statement ran past ``statement_timeout`` or was cancelled (SQLSTATE 57014).

    Nothing of it was kept, and the store stays usable: retry with a longer timeout, a
    narrower filter, or an ANN index.
    """


class MissingDependencyError(RagPgStoreError, ImportError):
    """An optional extra is not installed; the message names the ``pip install`` that fixes it."""


class EmbeddedServerError(RagPgStoreError):
    """The embedded PostgreSQL server could not be started."""


class EmbeddingError(RagPgStoreError):
    """The embedding model kept failing; ``not_ingested`` lists the documents left out.

    Documents ingested before the failure stay ingested; rerun to finish the rest.
    """

    def __init__(self, message: str, *, not_ingested: list[str]) -> None:
        super().__init__(message)
        self.not_ingested = not_ingested


for _cls in (
    RagPgStoreError,
    InvalidInputError,
    MissingDependencyError,
    DimensionError,
    CollectionNameError,
    FilterError,
    SchemaError,
    CollectionNotFoundError,
    UnsupportedError,
    DatabaseError,
    DatabaseUnavailableError,
    QueryTimeoutError,
    EmbeddedServerError,
    EmbeddingError,
):
    _cls.__module__ = "rag_pgstore"
