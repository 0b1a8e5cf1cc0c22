"""Write and delete chunks, as plans (see ``steps.py``).

Each function validates its arguments when called, so bad input fails before a connection is
taken, and returns a generator of steps that runs in one transaction."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from rag_pgstore import statements as st
from rag_pgstore.errors import InvalidChunkError
from rag_pgstore.filters import compile_filter
from rag_pgstore.records import Chunk
from rag_pgstore.schema import Collection
from rag_pgstore.steps import Copy, Execute, Plan, Pull
from rag_pgstore.validate import check_ids, encode_batch

DEFAULT_BATCH = 5_000


def upsert(
    collection: Collection,
    chunks: Iterable[Chunk] | AsyncIterable[Chunk],
    *,
    batch_size: int = DEFAULT_BATCH,
) -> Plan[int]:
    """Write chunks (insert or fully replace by ``chunk_id``); return how many rows changed.

    ``chunks`` may be a list, any iterator, or (for the async API) an async iterator: streams
    are encoded and copied ``batch_size`` at a time, so they never sit in memory whole.
    """
    if batch_size < 1:
        raise InvalidChunkError(f"expected batch_size >= 1, got {batch_size}")
    if isinstance(chunks, AsyncIterable):
        return _upsert(collection, _aencode_stream(collection, chunks, batch_size), unique=False)
    if isinstance(chunks, (str, bytes, Chunk)) or not isinstance(chunks, Iterable):
        raise InvalidChunkError(f"expected an iterable of Chunk, got {type(chunks).__name__}")
    if isinstance(chunks, Sequence) and chunks:
        # Validate a whole in-memory batch before a connection is even taken, and let the last
        # duplicate win here, so the database need not deduplicate.
        rows = encode_batch(chunks, dim=collection.dim, vector_type=collection.vector_type)
        latest = list({row[1]: row for row in rows}.values())
        return _upsert(collection, iter([latest]), unique=True)
    return _upsert(collection, _encode_stream(collection, chunks, batch_size), unique=False)


def _encode_stream(c: Collection, chunks: Iterable[Chunk], batch_size: int) -> Iterator[list[Any]]:
    seq = 0
    iterator = iter(chunks)
    while batch := list(itertools.islice(iterator, batch_size)):
        rows = encode_batch(batch, dim=c.dim, vector_type=c.vector_type, first_seq=seq)
        seq += len(rows)
        yield rows


async def _aencode_stream(
    c: Collection, chunks: AsyncIterable[Chunk], batch_size: int
) -> AsyncIterator[list[Any]]:
    seq = 0
    batch: list[Chunk] = []
    async for chunk in chunks:
        batch.append(chunk)
        if len(batch) == batch_size:
            yield encode_batch(batch, dim=c.dim, vector_type=c.vector_type, first_seq=seq)
            seq += len(batch)
            batch = []
    if batch:
        yield encode_batch(batch, dim=c.dim, vector_type=c.vector_type, first_seq=seq)


UPSERT_WORK_MEM = "64MB"  # sorting the staged rows by chunk_id in memory, not on disk


def _upsert(
    c: Collection, batches: Iterator[list[Any]] | AsyncIterator[list[Any]], *, unique: bool
) -> Plan[int]:
    staged = False
    while (rows := (yield Pull(batches))) is not None:
        if not staged:
            yield Execute(sa.schema.CreateTable(c.staging))
            staged = True
        yield Copy(st.stage_copy(), st.COPY_TYPES, rows)
    if not staged:
        return 0
    yield Execute(st.set_local_many({"work_mem": UPSERT_WORK_MEM}))
    changed: int = yield Execute(st.upsert_from_stage(c, deduplicate=not unique))
    return changed


def delete_where(c: Collection, where: Any) -> Plan[int]:
    deleted: int = yield Execute(st.delete(c, where))
    return deleted


def delete(c: Collection, ids: Iterable[str]) -> Plan[int]:
    return delete_where(c, c.table.c.chunk_id == st.any_of(check_ids(ids, "chunk ids")))


def delete_entities(c: Collection, entity_ids: Iterable[str]) -> Plan[int]:
    return delete_where(c, c.table.c.entity_id == st.any_of(check_ids(entity_ids, "entity ids")))


def delete_filtered(c: Collection, filter: Mapping[str, Any]) -> Plan[int]:
    if not filter:
        raise InvalidChunkError("expected a non-empty filter; use clear() to delete every chunk")
    return delete_where(c, compile_filter(filter, c.table))


def clear(c: Collection) -> Plan[int]:
    return delete_where(c, sa.true())
