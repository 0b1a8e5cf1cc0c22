"""Write a source into a collection page by page, resumably, then verify it.

Each page is one transaction: its chunks upserted (checked whole first) and the source's
place recorded in ``rag_pgstore_imports`` (collection, source, last key, rows). An
interrupted import (Ctrl-C, a bad row, the database gone) keeps its committed pages; the next
run starts after the last one. A finished import run again reads only rows added since.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from rag_pgstore.driver.steps import Execute, Fetch, Plan, PlanSource
from rag_pgstore.errors import InvalidInputError
from rag_pgstore.importers.source import Page, Source, fingerprint
from rag_pgstore.ops import writes
from rag_pgstore.schema import Collection, imports_table
from rag_pgstore.store import ChunkStore

__all__ = ["ImportReport", "import_chunks"]

_CHECKSUM_MOD = 2**64


@dataclass(frozen=True)
class ImportReport:
    """What an import did and found.

    ``rows`` were read and written by this run (``written`` of them changed the collection;
    an unchanged row is not rewritten); ``resumed_after`` rows were imported by earlier
    runs. The verification (``checked``; skipped with ``verify=False``) reads the whole
    source again: ``source_rows`` rows, of which ``found`` are in the collection, with a
    checksum of each side over every row's id, document, text and vector (as the collection
    stores it: float32, or float16 above 2,000 dimensions); ``verified`` when they agree.
    ``collection_rows`` is everything the collection holds, imported or not.
    """

    source: str
    collection: str
    rows: int
    written: int
    resumed_after: int
    source_rows: int
    found: int
    source_checksum: str
    collection_checksum: str
    collection_rows: int
    checked: bool

    @property
    def verified(self) -> bool:
        return (
            self.checked
            and self.found == self.source_rows
            and self.source_checksum == self.collection_checksum
        )


def import_chunks(
    store: ChunkStore,
    source: Source,
    *,
    batch_size: int = 1_000,
    restart: bool = False,
    verify: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import ``source`` into ``store``'s collection, continuing an interrupted import.

    ``restart=True`` forgets where an earlier import of this source stopped and reads it
    from the start (rows already imported are found unchanged and not rewritten).
    ``progress`` is called with the rows imported so far after each page.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"expected batch_size to be an int >= 1, got {batch_size!r}")
    c = store.collection
    table = imports_table(c.schema)
    store.run_plan(lambda: _setup(table))
    if restart:
        store.run_plan(lambda: _forget(table, c.name, source.name))
    place = store.run_plan(lambda: _place(table, c.name, source.name))
    after, before = place if place is not None else (None, 0)
    rows = written = 0
    for page in source.pages(after, batch_size):
        written += store.run_plan(_page(c, table, source.name, page, before + rows))
        rows += len(page.chunks)
        if progress is not None:
            progress(before + rows)
    count, found, theirs, ours = _verify(store, source, batch_size) if verify else (0, 0, 0, 0)
    return ImportReport(
        source=source.name,
        collection=c.name,
        rows=rows,
        written=written,
        resumed_after=before,
        source_rows=count,
        found=found,
        source_checksum=f"{theirs:016x}",
        collection_checksum=f"{ours:016x}",
        collection_rows=store.count(),
        checked=verify,
    )


def _setup(table: sa.Table) -> Plan[None]:
    yield Execute(sa.schema.CreateTable(table, if_not_exists=True))


def _forget(table: sa.Table, collection: str, source: str) -> Plan[None]:
    yield Execute(
        sa.delete(table).where(table.c.collection == collection, table.c.source == source)
    )


def _place(table: sa.Table, collection: str, source: str) -> Plan[tuple[str, int] | None]:
    rows = yield Fetch(
        sa.select(table.c.last_key, table.c.rows).where(
            table.c.collection == collection, table.c.source == source
        )
    )
    return (rows[0][0], int(rows[0][1])) if rows else None


def _page(c: Collection, table: sa.Table, source: str, page: Page, before: int) -> PlanSource[int]:
    """The page's chunks and the source's new place, in one transaction."""
    upsert = writes.upsert(c, page.chunks)  # checked now: a bad row fails before a connection
    rows = before + len(page.chunks)
    record = pg.insert(table).values(
        collection=c.name, source=source, last_key=page.last, rows=rows
    )
    record = record.on_conflict_do_update(
        index_elements=[table.c.collection, table.c.source],
        set_={"last_key": page.last, "rows": rows, "updated_at": sa.func.now()},
    )

    def plan() -> Plan[int]:
        written = yield from writes.plan_of(upsert)
        yield Execute(record)
        return written

    return plan


def _verify(store: ChunkStore, source: Source, size: int) -> tuple[int, int, int, int]:
    """Read the source again, and each page's ids from the collection: how many rows, how
    many found, and the checksum of each side."""
    element = "<f2" if store.collection.vector_type == "halfvec" else "<f4"
    count = found = theirs = ours = 0
    for page in source.pages(None, size):
        count += len(page.chunks)
        for chunk in page.chunks:
            entity = chunk.entity_id or chunk.chunk_id  # what the store makes of no entity
            one = fingerprint(chunk.chunk_id, entity, chunk.content, chunk.embedding, element)
            theirs = (theirs + one) % _CHECKSUM_MOD
        stored = store.get([ch.chunk_id for ch in page.chunks], with_embeddings=True)
        found += len(stored)
        for row in stored:
            assert row.embedding is not None
            one = fingerprint(row.chunk_id, row.entity_id, row.content, row.embedding, element)
            ours = (ours + one) % _CHECKSUM_MOD
    return count, found, theirs, ours
