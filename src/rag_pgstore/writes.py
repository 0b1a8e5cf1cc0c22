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
from rag_pgstore.steps import Copy, Execute, Fetch, Plan, Pull
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


def _check(c: Collection, chunks: Sequence[Chunk]) -> Batch:
    return check_batch(chunks, dim=c.dim, vector_type=c.vector_type)


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
    locked, in ``chunk_id`` order, so overlapping concurrent batches wait for each other
    instead of deadlocking. If another transaction writes one of the "new" ids first, the COPY
    rolls back to its savepoint and the batch takes the merge instead.
    """
    changed = 0
    staging = planned = False
    while (batch := (yield Pull(batches))) is not None:
        if not batch.order:
            continue
        if not planned:
            # psycopg prepares a statement run five times on a connection, and PostgreSQL may
            # then keep one generic plan for it. The existence check's generic plan, made on an
            # empty table, is a sequential scan comparing every row with every id: quadratic
            # while this transaction fills the table. Plan each statement for its own values.
            yield Execute(st.set_local_many({"plan_cache_mode": "force_custom_plan"}))
            planned = True
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
