"""``ChunkStore``: the sync and async entry points. Each method is a line or two over a plan."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import Any, TypeVar

from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore import embedded, lifecycle, writes
from rag_pgstore.connect import make_engines
from rag_pgstore.embedded import EmbeddedPostgres
from rag_pgstore.errors import UnsupportedError
from rag_pgstore.records import (
    Chunk,
    Distance,
    HnswIndex,
    IvfflatIndex,
)
from rag_pgstore.schema import Collection
from rag_pgstore.searching import SearchMethods
from rag_pgstore.steps import Hints, PlanSource, run, run_async
from rag_pgstore.validate import check_ids

__all__ = ["ChunkStore"]

T = TypeVar("T")
Filter = Mapping[str, Any]


class ChunkStore(SearchMethods):
    """A collection of chunks in one PostgreSQL table, searchable by vector, text or both.

    The constructor does no I/O: pass engines you built (``postgresql+psycopg``), then call
    :meth:`setup` (or :meth:`asetup`) once to create the table. :meth:`from_url` does both.

    >>> store = ChunkStore.from_url(None, collection="docs", dim=384)   # embedded Postgres
    >>> store.upsert([Chunk(chunk_id="a#0", content="...", embedding=vec)])
    >>> hits = store.search(query_vec, k=5, filter={"topic": "db"})
    """

    def __init__(
        self,
        engine: Engine | None,
        async_engine: AsyncEngine | None = None,
        *,
        collection: str,
        dim: int,
        distance: Distance | str = Distance.COSINE,
        schema: str = "public",
        text_config: str = "english",
        create_extension: bool = True,
    ) -> None:
        if engine is None and async_engine is None:
            raise UnsupportedError("expected an engine, an async_engine or both, got neither")
        for which in (engine, async_engine):
            if which is not None and which.dialect.driver != "psycopg":
                raise UnsupportedError(
                    f"expected an engine on the psycopg driver, got {which.dialect.driver!r}; "
                    "create it from a postgresql+psycopg:// URL"
                )
        self.collection = Collection(
            name=collection,
            dim=dim,
            schema=schema,
            distance=Distance(distance),
            text_config=text_config,
        )
        self.engine = engine
        self.async_engine = async_engine
        self.create_extension = create_extension
        self._owned: tuple[Engine | None, AsyncEngine | None] = (None, None)
        self._server: EmbeddedPostgres | None = None
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._hints: Hints = {}  # whether the collection has an ANN index (readstep.Read)

    @classmethod
    def from_url(
        cls,
        url: str | URL | None,
        *,
        collection: str,
        dim: int,
        setup: bool = True,
        engine_options: Mapping[str, Any] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> ChunkStore:
        """Connect to ``url`` (``None``: the embedded local server) and make sure the table exists.

        ``url`` may be a SQLAlchemy URL or the plain ``postgresql://``/``postgres://`` form of
        ``DATABASE_URL``; query parameters such as ``sslmode`` pass through to libpq.
        ``engine_options`` go to ``create_engine`` (pool sizes, ``connect_args``). ``data_dir``
        places the embedded server's data. Other keyword arguments are the constructor's.
        ``setup=False`` skips schema creation, e.g. for a read-only role.
        """
        server = embedded.start(data_dir) if url is None else None
        store = cls._connect(
            server.url if server else url, collection, dim, engine_options, options
        )
        store._server = server
        if setup:
            store.setup()
        return store

    @classmethod
    async def afrom_url(
        cls,
        url: str | URL | None,
        *,
        collection: str,
        dim: int,
        setup: bool = True,
        engine_options: Mapping[str, Any] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> ChunkStore:
        """Async :meth:`from_url`: the schema is set up on the async engine.

        Starting the embedded server runs its ``pg_ctl`` subprocess in a worker thread, once,
        so the event loop is not blocked while it waits.
        """
        server = await asyncio.to_thread(embedded.start, data_dir) if url is None else None
        store = cls._connect(
            server.url if server else url, collection, dim, engine_options, options
        )
        store._server = server
        if setup:
            await store.asetup()
        return store

    @classmethod
    def _connect(
        cls,
        url: str | URL | None,
        collection: str,
        dim: int,
        engine_options: Mapping[str, Any] | None,
        options: dict[str, Any],
    ) -> ChunkStore:
        assert url is not None
        engine, async_engine = make_engines(url, engine_options)
        store = cls(engine, async_engine, collection=collection, dim=dim, **options)
        store._owned = (engine, async_engine)
        return store

    def __repr__(self) -> str:
        bound = self.engine or self.async_engine
        assert bound is not None
        url = bound.url.render_as_string(hide_password=True)
        c = self.collection
        return (
            f"ChunkStore(collection={c.name!r}, dim={c.dim}, "
            f"distance={c.distance.value!r}, url={url!r})"
        )

    # -- running plans -------------------------------------------------------------------------

    def run_plan(self, plan: PlanSource[T]) -> T:
        """Run one plan from ``rag_pgstore.reads``/``writes``/``lifecycle`` in a transaction.

        Every method here is one such call. Adapters use it to turn a request into whichever
        operation fits, once, for both the sync and the async path. Pass a function that builds
        the plan (``lambda: writes.delete(...)``) to have a transaction that PostgreSQL aborted
        to break a deadlock run again from a fresh plan.
        """
        if self.engine is None:
            _discard(plan)
            raise UnsupportedError(
                "this store has no sync engine; use the a* methods or pass engine="
            )
        return run(self.engine, plan, self._hints)

    async def arun_plan(self, plan: PlanSource[T]) -> T:
        """Async :meth:`run_plan`."""
        if self.async_engine is None:
            _discard(plan)
            raise UnsupportedError(
                "this store has no async engine; pass async_engine= to use a* methods"
            )
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop() is not loop:
            # Pooled async connections belong to the loop that opened them. A new loop (a second
            # asyncio.run, a framework's own loop) gets a fresh pool; closing the idle ones is
            # safe here because psycopg closes a connection without awaiting its old loop.
            await self.async_engine.dispose()
        self._loop = weakref.ref(loop)
        return await run_async(self.async_engine, plan, self._hints)

    # -- schema --------------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the table and its indexes, or upgrade them; safe to call any number of times."""
        self.run_plan(
            lambda: lifecycle.setup(self.collection, create_extension=self.create_extension)
        )

    async def asetup(self) -> None:
        """Async :meth:`setup`."""
        await self.arun_plan(
            lambda: lifecycle.setup(self.collection, create_extension=self.create_extension)
        )

    def drop(self) -> None:
        """Drop the collection: its table, indexes and registry entry. There is no undo."""
        self.run_plan(lambda: lifecycle.drop(self.collection))

    async def adrop(self) -> None:
        """Async :meth:`drop`."""
        await self.arun_plan(lambda: lifecycle.drop(self.collection))

    def create_index(self, spec: HnswIndex | IvfflatIndex | None = None) -> bool:
        """Build the ANN index for the collection's distance; ``False`` if it already exists.

        A different index (other kind or parameters) is replaced. Building HNSW over many rows
        takes a while: build it after bulk loading when you can.
        """
        try:
            return self.run_plan(lifecycle.create_index(self.collection, spec or HnswIndex()))
        finally:
            self._hints.clear()  # searches pick their form again

    async def acreate_index(self, spec: HnswIndex | IvfflatIndex | None = None) -> bool:
        """Async :meth:`create_index`."""
        try:
            return await self.arun_plan(
                lifecycle.create_index(self.collection, spec or HnswIndex())
            )
        finally:
            self._hints.clear()

    def drop_index(self) -> None:
        """Drop the ANN index, if any; searches become exact scans."""
        try:
            self.run_plan(lifecycle.drop_index(self.collection))
        finally:
            self._hints.clear()

    async def adrop_index(self) -> None:
        """Async :meth:`drop_index`."""
        try:
            await self.arun_plan(lifecycle.drop_index(self.collection))
        finally:
            self._hints.clear()

    # -- writes --------------------------------------------------------------------------------

    def upsert(self, chunks: Iterable[Chunk], *, batch_size: int = writes.DEFAULT_BATCH) -> int:
        """Insert or fully replace chunks by ``chunk_id`` in one transaction; return rows changed.

        Any number of chunks (streamed through binary COPY ``batch_size`` at a time, batch
        after batch). If an id appears twice, the last one wins. If anything fails, nothing is
        written. Unchanged chunks are not rewritten (and not counted); a stream's count is the
        sum of its batches', so an id written again in a later batch counts again.
        """
        return self.run_plan(writes.upsert_source(self.collection, chunks, batch_size=batch_size))

    async def aupsert(
        self,
        chunks: Iterable[Chunk] | AsyncIterable[Chunk],
        *,
        batch_size: int = writes.DEFAULT_BATCH,
    ) -> int:
        """Async :meth:`upsert`; ``chunks`` may also be an async iterator, consumed as it goes."""
        return await self.arun_plan(
            writes.upsert_source(self.collection, chunks, batch_size=batch_size)
        )

    def delete(self, ids: Iterable[str]) -> int:
        """Delete chunks by id; missing ids are ignored. Return how many were deleted."""
        wanted = check_ids(ids, "chunk ids")
        return self.run_plan(lambda: writes.delete(self.collection, wanted))

    async def adelete(self, ids: Iterable[str]) -> int:
        """Async :meth:`delete`."""
        wanted = check_ids(ids, "chunk ids")
        return await self.arun_plan(lambda: writes.delete(self.collection, wanted))

    def delete_entities(self, entity_ids: Iterable[str]) -> int:
        """Delete every chunk of the given entities (source documents)."""
        wanted = check_ids(entity_ids, "entity ids")
        return self.run_plan(lambda: writes.delete_entities(self.collection, wanted))

    async def adelete_entities(self, entity_ids: Iterable[str]) -> int:
        """Async :meth:`delete_entities`."""
        wanted = check_ids(entity_ids, "entity ids")
        return await self.arun_plan(lambda: writes.delete_entities(self.collection, wanted))

    def delete_where(self, filter: Filter) -> int:
        """Delete the chunks matching a (non-empty) metadata filter."""
        return self.run_plan(lambda: writes.delete_filtered(self.collection, filter))

    async def adelete_where(self, filter: Filter) -> int:
        """Async :meth:`delete_where`."""
        return await self.arun_plan(lambda: writes.delete_filtered(self.collection, filter))

    def clear(self) -> int:
        """Delete every chunk of the collection (the table stays)."""
        return self.run_plan(lambda: writes.clear(self.collection))

    async def aclear(self) -> int:
        """Async :meth:`clear`."""
        return await self.arun_plan(lambda: writes.clear(self.collection))

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Dispose of the engines :meth:`from_url` created (engines you passed are yours)."""
        engine, _ = self._owned
        if engine is not None:
            engine.dispose()

    async def aclose(self) -> None:
        """Dispose of both engines :meth:`from_url` created."""
        engine, async_engine = self._owned
        if engine is not None:
            engine.dispose()
        if async_engine is not None:
            await async_engine.dispose()


def _discard(plan: PlanSource[Any]) -> None:
    if not callable(plan):
        plan.close()
