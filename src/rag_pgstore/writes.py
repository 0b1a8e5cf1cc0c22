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
from rag_pgstore.steps import Copy, Execute, Fetch, Plan, PlanSource, Pull
from rag_pgstore.validate import Batch, check_batch, check_ids

DEFAULT_BATCH = 5_000


def upsert(
    collection: Collection,
    chunks: Iterable[Chunk] | AsyncIterable[Chunk],
    *,
    batch_size: int = DEFAULT_BATCH,
) -> Plan[int]:
    """Write chunks (insert or fully replace by ``chunk_id``); return how many rows changed.

    ``chunks`` may be a list, any iterator, or (for the async API) an async iterator: streams
    are checked and written ``batch_size`` at a time, in order, so they never sit in memory
    whole. Within a batch the last chunk of an id wins.
    """
    if batch_size < 1:
        raise InvalidChunkError(f"expected batch_size >= 1, got {batch_size}")
    if isinstance(chunks, AsyncIterable):
        return _upsert(collection, _abatches(collection, chunks, batch_size))
    if isinstance(chunks, (str, bytes, Chunk)) or not isinstance(chunks, Iterable):
        raise InvalidChunkError(f"expected an iterable of Chunk, got {type(chunks).__name__}")
    if isinstance(chunks, Sequence):
        # Check a whole in-memory batch before a connection is even taken.
        return _upsert(collection, iter([_check(collection, chunks)]))
    return _upsert(collection, _batches(collection, chunks, batch_size))


def upsert_source(
    collection: Collection,
    chunks: Iterable[Chunk] | AsyncIterable[Chunk],
    *,
    batch_size: int = DEFAULT_BATCH,
) -> PlanSource[int]:
    """:func:`upsert` as the driver should run it.

    Chunks held in a sequence can be written again: a transaction PostgreSQL aborts to break a
    deadlock is then retried from a fresh plan. A stream can be read only once, so it is one
    plan (and its write lock keeps it out of deadlocks, see :func:`_upsert`).
    """
    if batch_size < 1:
        raise InvalidChunkError(f"expected batch_size >= 1, got {batch_size}")
    if isinstance(chunks, Sequence) and not isinstance(chunks, (str, bytes)):
        batch = _check(collection, chunks)  # once: a retry writes the same checked batch
        return lambda: _upsert(collection, iter([batch]))
    return upsert(collection, chunks, batch_size=batch_size)


def _check(c: Collection, chunks: Sequence[Chunk]) -> Batch:
    return check_batch(chunks, dim=c.dim, vector_type=c.vector_type, nonzero=c.nonzero)


def _batches(c: Collection, chunks: Iterable[Chunk], batch_size: int) -> Iterator[Batch]:
    iterator = iter(chunks)
    while batch := list(itertools.islice(iterator, batch_size)):
        yield _check(c, batch)


async def _abatches(
    c: Collection, chunks: AsyncIterable[Chunk], batch_size: int
) -> AsyncIterator[Batch]:
    batch: list[Chunk] = []
    async for chunk in chunks:
        batch.append(chunk)
        if len(batch) == batch_size:
            yield _check(c, batch)
            batch = []
    if batch:
        yield _check(c, batch)


UPSERT_WORK_MEM = "64MB"  # sorting the staged rows by chunk_id in memory, not on disk


def _upsert(c: Collection, batches: Iterator[Batch] | AsyncIterator[Batch]) -> Plan[int]:
    """Write each batch in turn: by COPY when all its ids are new, else by a merge.

    A COPY into the table is the fastest write PostgreSQL has, and new rows need nothing more.
    A batch that replaces rows is copied into a staging table and merged with ``INSERT ... ON
    CONFLICT``, which skips unchanged rows. Either way a batch's rows are written, and so
    locked, in ``chunk_id`` order, so overlapping single-batch writers wait for each other
    instead of deadlocking. If another transaction writes one of the "new" ids first, the COPY
    rolls back to its savepoint and the batch takes the merge instead.

    Sorting cannot order locks *across* batches: a stream that holds the rows of its first
    batch while it waits for a row of its second can deadlock with any other writer, and it
    cannot be replayed. So a write of two or more batches takes the collection's write lock
    alone, and every other write takes it shared: a stream runs while no other writer of the
    collection holds rows. One lookahead batch tells which kind a stream is.
    """
    first = yield Pull(batches)
    second = (yield Pull(batches)) if first is not None else None
    if first is None:
        return 0
    # psycopg prepares a statement run five times on a connection, and PostgreSQL may then
    # keep one generic plan for it. The existence check's generic plan, made on an empty
    # table, is a sequential scan comparing every row with every id: quadratic while this
    # transaction fills the table. Plan each statement for its own values.
    settings = {"plan_cache_mode": "force_custom_plan"}
    yield Execute(st.write_lock(c, exclusive=second is not None, settings=settings))
    changed = 0
    staging = False
    queued = [first] if second is None else [first, second]
    while True:
        batch = queued.pop(0) if queued else (yield Pull(batches))
        if batch is None:
            break
        if not batch.order:
            continue
        [(existing,)] = yield Fetch(st.any_exist(c, batch.ids))
        if not existing:
            direct = Copy(st.table_copy(c), st.COPY_TYPES, batch.rows, savepoint=True)
            if (yield direct):
                changed += len(batch.order)
                continue
        if not staging:
            yield Execute(sa.schema.CreateTable(c.staging))
            yield Execute(st.set_local_many({"work_mem": UPSERT_WORK_MEM}))
            staging = True
        else:
            yield Execute(st.truncate(c.staging))
        yield Copy(st.stage_copy(), st.COPY_TYPES, batch.rows)
        changed += yield Execute(st.upsert_from_stage(c))
    return changed


def delete_where(c: Collection, where: Any) -> Plan[int]:
    yield Execute(st.write_lock(c, exclusive=False))  # wait for a stream writing these rows
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
