"""Write and delete chunks, as plans (see ``driver/steps.py``).

Each function validates its arguments when called, so bad input fails before a connection is
taken. What it returns runs in one transaction: a function that builds the plan when the input
can be read again (so the driver can rerun a transaction PostgreSQL aborted to break a
deadlock), or the plan itself for a one-shot stream."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from rag_pgstore.codec import Batch, check_batch, check_ids
from rag_pgstore.driver.prefetch import aprefetched, prefetched
from rag_pgstore.driver.steps import Copy, Execute, Fetch, Forget, Plan, PlanSource, Pull
from rag_pgstore.errors import InvalidInputError
from rag_pgstore.schema import COPY_TYPES, ENCODERS, Collection, analyze_table, deferred_indexes
from rag_pgstore.sql import writes as st
from rag_pgstore.sql.catalog import index_names
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
    of its batches', so an id written again in a later batch counts again. A list of up to
    ``batch_size`` chunks is checked whole before a connection is taken; a longer one is
    written as a stream is, each batch checked while the one before is written (and, being
    a list, written again from the start if PostgreSQL aborts the transaction).
    """
    _check_size(batch_size)
    if isinstance(chunks, AsyncIterable):
        return _upsert(collection, aprefetched(_abatches(collection, chunks, batch_size)))
    if isinstance(chunks, (str, bytes, Chunk)) or not isinstance(chunks, Iterable):
        raise InvalidInputError(f"expected an iterable of Chunk, got {type(chunks).__name__}")
    if isinstance(chunks, Sequence):  # can be read again: a retry starts afresh
        if len(chunks) <= batch_size:
            batch = _check(collection, chunks)  # once: a retry writes the same checked batch
            return lambda: _upsert(collection, iter([batch]))
        return lambda: _upsert(collection, prefetched(_batches(collection, chunks, batch_size)))
    return _upsert(collection, prefetched(_batches(collection, chunks, batch_size)))


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
# What index builds after a bulk write get at least (HNSW builds fastest when its graph fits).
BULK_MAINTENANCE_MEMORY = "1GB"


def bulk_load(
    collection: Collection,
    chunks: Iterable[Chunk] | AsyncIterable[Chunk],
    *,
    batch_size: int = DEFAULT_BATCH,
    maintenance_work_mem: str = BULK_MAINTENANCE_MEMORY,
    parallel_workers: int | None = None,
    require_empty: bool = False,
) -> PlanSource[int]:
    """Upsert many chunks with the collection's indexes built once, at the end.

    Same input and result as :meth:`upsert`, in one transaction: it drops the secondary
    indexes (entity, metadata, keyword and the ANN index), writes every row, builds them
    again with ``maintenance_work_mem`` raised to at least the value given and
    ``parallel_workers`` build workers (``None``: the server's
    ``max_parallel_maintenance_workers``), then refreshes the statistics. Nothing is visible
    until it commits, and if anything fails, or the process dies, the collection is exactly
    as it was, indexes included. While it runs it holds the table's exclusive lock: searches
    and writes of the collection wait for it. ``require_empty=True`` refuses
    (:class:`InvalidInputError`, nothing written) a collection that holds chunks.
    """
    _check_size(batch_size)
    settings = {"maintenance_work_mem": _memory(maintenance_work_mem)}
    if parallel_workers is not None and (
        isinstance(parallel_workers, bool)
        or not isinstance(parallel_workers, int)
        or not 0 <= parallel_workers <= 1024
    ):
        raise InvalidInputError(
            f"expected parallel_workers to be an int from 0 to 1024 or None, "
            f"got {parallel_workers!r}"
        )
    workers = {} if parallel_workers is None else {PARALLEL: str(parallel_workers)}
    if isinstance(chunks, AsyncIterable):
        return _bulk(
            collection,
            aprefetched(_abatches(collection, chunks, batch_size)),
            settings,
            workers,
            require_empty,
        )
    if isinstance(chunks, (str, bytes, Chunk)) or not isinstance(chunks, Iterable):
        raise InvalidInputError(f"expected an iterable of Chunk, got {type(chunks).__name__}")
    if isinstance(chunks, Sequence):
        batches = [
            _check(collection, chunks[i : i + batch_size])
            for i in range(0, len(chunks), batch_size)
        ]
        return lambda: _bulk(collection, iter(batches), settings, workers, require_empty)
    return _bulk(
        collection,
        prefetched(_batches(collection, chunks, batch_size)),
        settings,
        workers,
        require_empty,
    )


PARALLEL = "max_parallel_maintenance_workers"
_UNITS = {"kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}
_MEMORY = re.compile(r"(\d+)\s*(kB|MB|GB|TB)")


def _memory(value: object) -> str:
    """A memory size PostgreSQL's settings accept, from 1MB to its 2TB - 1kB limit."""
    found = _MEMORY.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is None or not 1024 <= int(found[1]) * _UNITS[found[2]] <= 2**31 - 1:
        raise InvalidInputError(
            f"expected maintenance_work_mem as a size from 1MB to 2047GB such as '1GB' or "
            f"'512MB' (units kB, MB, GB, TB, case as shown), got {value!r}"
        )
    return f"{found[1]}{found[2]}"


def _check_size(batch_size: object) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"expected batch_size to be an int >= 1, got {batch_size!r}")


def _upsert(c: Collection, batches: Iterator[Batch] | AsyncIterator[Batch]) -> Plan[int]:
    """Write each batch in turn (see :func:`_write`), under the collection's write lock.

    Sorting cannot order locks *across* batches: a stream that holds the rows of its first
    batch while it waits for a row of its second can deadlock with any other writer, and it
    cannot be replayed. So a write of two or more batches takes the collection's write lock
    alone, and every other write takes it shared: a stream runs while no other writer of the
    collection holds rows. One lookahead batch tells which kind a stream is.

    A stream into a table holding fewer rows than its first batch is a bulk load: the
    secondary indexes are built once at the end, as :func:`bulk_load` does. A stream into
    an empty table skips the per-batch probe for existing ids (see :func:`_write`).
    """
    first = yield Pull(batches)
    second = (yield Pull(batches)) if first is not None else None
    if first is None:
        return 0
    stream = second is not None
    yield Fetch(st.write_lock(c, exclusive=stream))
    queued = [first] if second is None else [first, second]
    deferred: list[sa.Index] = []
    fresh = False
    if stream and c.tenant is None:
        # (A tenant's own rows say nothing of the shared table's size: no bulk mode.)
        [(rows,)] = yield Fetch(st.held(c, len(first.order)))
        fresh = rows == 0
        if rows < len(first.order):
            deferred = yield from _drop_indexes(c)
    changed = yield from _write(c, queued, batches, alone=stream, fresh=fresh)
    if deferred:
        # Statistics are left to autovacuum, as after any other upsert: ANALYZE of a
        # small table costs more than the index builds (0.15 s at 20k rows).
        memory = {"maintenance_work_mem": BULK_MAINTENANCE_MEMORY}
        yield from _build_indexes(c, deferred, memory, {}, analyze=False)
    return changed


def _bulk(
    c: Collection,
    batches: Iterator[Batch] | AsyncIterator[Batch],
    memory: dict[str, str],
    workers: dict[str, str],
    require_empty: bool,
) -> Plan[int]:
    first = yield Pull(batches)
    if first is None:
        return 0
    yield Fetch(st.write_lock(c, exclusive=True))
    fresh = False
    if c.tenant is None or require_empty:
        [(rows,)] = yield Fetch(st.held(c, 1))
        fresh = rows == 0 and c.tenant is None
        if rows and require_empty:
            raise InvalidInputError(
                f"expected collection {c.name!r} to be empty for this bulk load, found chunks "
                "in it; load into a new collection, or without require_empty"
            )
    deferred = yield from _drop_indexes(c)
    changed = yield from _write(c, [first], batches, alone=True, fresh=fresh)
    yield from _build_indexes(c, deferred, memory, workers, analyze=True)
    return changed


def _drop_indexes(c: Collection) -> Plan[list[sa.Index]]:
    """Lock the table and drop its secondary indexes; return them, to build again."""
    yield Execute(st.lock_table(c))  # first: nothing changes what we read next
    present = {name for (name,) in (yield Fetch(index_names(c)))}
    registry = c.registry
    found = yield Fetch(sa.select(registry.c.ann_index).where(registry.c.name == c.name))
    deferred = deferred_indexes(c, present, found[0][0] if found else None)
    for index in deferred:
        yield Execute(sa.schema.DropIndex(index))
    return deferred


def _build_indexes(
    c: Collection,
    indexes: list[sa.Index],
    memory: dict[str, str],
    workers: dict[str, str],
    *,
    analyze: bool,
) -> Plan[None]:
    yield Fetch(st.raise_settings(memory))
    if workers:
        yield Execute(st.set_local_many(workers))
    for index in indexes:
        yield Execute(sa.schema.CreateIndex(index))
    if analyze:
        yield Execute(analyze_table(c))  # BM25 reads its term statistics from them
    yield Forget(c.schema, c.name)


def _write(
    c: Collection,
    queued: list[Batch],
    batches: Iterator[Batch] | AsyncIterator[Batch],
    *,
    alone: bool,
    fresh: bool = False,
) -> Plan[int]:
    """Write ``queued``, then the rest of ``batches``: each by COPY when all its ids are new,
    else by a merge; return the rows changed.

    A COPY into the table is the fastest write PostgreSQL has, and new rows need nothing more.
    A batch that replaces rows is copied into a staging table and merged with ``INSERT ... ON
    CONFLICT``, which skips unchanged rows. Either way a batch's rows are written, and so
    locked, in ``chunk_id`` order, so overlapping single-batch writers wait for each other
    instead of deadlocking. A role under row-level security (which COPY refuses) always merges.
    If another transaction writes one of the "new" ids first, the COPY
    rolls back to its savepoint and the batch takes the merge instead; a writer holding the
    write lock ``alone`` has no such rival, and no savepoint.

    ``fresh``: the table held no rows when this writer took the write lock alone, so a
    batch's ids can only exist if an earlier batch of this same write held them. Its batches
    are copied without first asking the table (a round trip and an index probe per id, 8% of
    a load's time), each behind a savepoint; a batch that repeats an earlier id rolls back to
    it and merges, and every batch after it asks first.
    """
    changed = 0
    staging = False
    probe = not fresh
    while True:
        batch = queued.pop(0) if queued else (yield Pull(batches))
        if batch is None:
            break
        if not batch.order:
            continue
        new = True
        if probe:
            # Planned for its own ids each time: a generic plan made while the table was
            # empty would compare every row with every id, quadratic as this transaction
            # fills it.
            [(existing, policed)] = yield Fetch(st.any_exist(c, batch.ids), unprepared=True)
            new = not existing and not policed
        if new:
            savepoint = not alone or not probe
            direct = Copy(st.table_copy(c), COPY_TYPES, _rows(batch), savepoint=savepoint)
            if (yield direct):
                changed += len(batch.order)
                continue
            probe = True
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
    return lambda: _delete(c, sa.true(), ordered=c.tenant is not None)
