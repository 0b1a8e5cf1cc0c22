"""Write and delete chunks, as plans (see ``driver/steps.py``).

Each function validates its arguments when called, so bad input fails before a connection is
taken. What it returns runs in one transaction: a function that builds the plan when the input
can be read again (so the driver can rerun a transaction PostgreSQL aborted to break a
deadlock), or the plan itself for a one-shot stream."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from rag_pgstore.codec import Batch, check_batch, check_ids
from rag_pgstore.driver.steps import Copy, Execute, Fetch, Plan, PlanSource, Pull
from rag_pgstore.errors import InvalidInputError
from rag_pgstore.schema import COPY_TYPES, ENCODERS, Collection
from rag_pgstore.sql import writes as st
from rag_pgstore.sql.filters import compile_filter
from rag_pgstore.sql.search import any_of
from rag_pgstore.types import Chunk, Filter

DEFAULT_BATCH = 5_000


def upsert(
    collection: Collection,
    chunks: Iterable[Chunk] | AsyncIterable[Chunk],
    *,
    batch_size: int = DEFAULT_BATCH,
) -> PlanSource[int]:
    """Insert or fully replace chunks by ``chunk_id`` in one transaction; return rows changed.

    Any number of chunks: a list, any iterator, or (async API) an async iterator, streamed
    through binary COPY ``batch_size`` at a time, batch after batch, so a stream never sits in
    memory whole. If an id appears twice, the last one wins. If anything fails, nothing is
    written. Unchanged chunks are not rewritten (and not counted); a stream's count is the sum
    of its batches', so an id written again in a later batch counts again. A list is checked
    whole before a connection is taken.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"expected batch_size to be an int >= 1, got {batch_size!r}")
    if isinstance(chunks, AsyncIterable):
        return _upsert(collection, _abatches(collection, chunks, batch_size))
    if isinstance(chunks, (str, bytes, Chunk)) or not isinstance(chunks, Iterable):
        raise InvalidInputError(f"expected an iterable of Chunk, got {type(chunks).__name__}")
    if isinstance(chunks, Sequence):
        batch = _check(collection, chunks)  # once: a retry writes the same checked batch
        return lambda: _upsert(collection, iter([batch]))
    return _upsert(collection, _batches(collection, chunks, batch_size))


def plan_of(source: PlanSource[int]) -> Plan[int]:
    """The plan of ``source``, to ``yield from`` inside a larger plan."""
    return source() if callable(source) else source


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
PLANNING = "plan_cache_mode"


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
    [(_, mode)] = yield Fetch(st.write_lock(c, exclusive=second is not None, report=PLANNING))
    changed = 0
    staging = False
    queued = [first] if second is None else [first, second]
    while True:
        batch = queued.pop(0) if queued else (yield Pull(batches))
        if batch is None:
            break
        if not batch.order:
            continue
        # psycopg prepares a statement run five times on a connection, and PostgreSQL may then
        # keep one generic plan for it. The existence check's generic plan, made on an empty
        # table, is a sequential scan comparing every row with every id: quadratic while
        # this transaction fills the table. So the check is planned for its own ids. Only
        # the check: the keyword trigger's statements, planned again for every row under
        # force_custom_plan, made a COPY 40% slower.
        yield Execute(st.set_local_many({PLANNING: "force_custom_plan"}))
        [(existing,)] = yield Fetch(st.any_exist(c, batch.ids))
        yield Execute(st.set_local_many({PLANNING: mode}))
        if not existing:
            direct = Copy(st.table_copy(c), COPY_TYPES, _rows(batch), savepoint=True)
            if (yield direct):
                changed += len(batch.order)
                continue
        if not staging:
            yield Execute(sa.schema.CreateTable(c.staging))
            yield Execute(st.set_local_many({"work_mem": UPSERT_WORK_MEM}))
            staging = True
        else:
            yield Execute(st.truncate(c.staging))
        yield Copy(st.stage_copy(), COPY_TYPES, _rows(batch))
        changed += yield Execute(st.upsert_from_stage(c))
    return changed


def _rows(batch: Batch) -> Callable[[], Iterator[list[Any]]]:
    return lambda: batch.rows(ENCODERS)


def _delete(c: Collection, where: Any, *, ordered: bool = True) -> Plan[int]:
    yield Execute(st.write_lock(c, exclusive=False))  # wait for a stream writing these rows
    deleted: int = yield Execute(st.delete(c, where, ordered=ordered))
    return deleted


def delete(c: Collection, ids: Iterable[str]) -> PlanSource[int]:
    """Delete chunks by id; missing ids are ignored. Return how many were deleted."""
    where = c.table.c.chunk_id == any_of(check_ids(ids, "chunk ids"))
    return lambda: _delete(c, where)


def delete_entities(c: Collection, entity_ids: Iterable[str]) -> PlanSource[int]:
    """Delete every chunk of the given entities (source documents)."""
    where = c.table.c.entity_id == any_of(check_ids(entity_ids, "entity ids"))
    return lambda: _delete(c, where)


def delete_where(c: Collection, filter: Filter) -> PlanSource[int]:
    """Delete the chunks matching a (non-empty) metadata filter, checked whole first."""
    if not filter:
        raise InvalidInputError("expected a non-empty filter; use clear() to delete every chunk")
    where = compile_filter(filter, c.table)
    return lambda: _delete(c, where)


def clear(c: Collection) -> PlanSource[int]:
    """Delete every chunk of the collection (the table stays)."""
    return lambda: _delete(c, sa.true(), ordered=False)
