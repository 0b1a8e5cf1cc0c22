"""Documents -> chunks -> embeddings -> store, incrementally and resumably.

For each batch of documents the pipeline chunks them, compares the chunks with what the store
holds (ids and content hashes), embeds only the text that changed and is not in the embedding
cache, and replaces the batch's chunks in one transaction: new and changed chunks upserted,
chunks a document no longer has deleted. An unchanged document costs one read and nothing
else. Each batch commits on its own, so an interrupted run keeps its finished batches (and
every embedding it computed) and a rerun picks up the rest.

The steps are written once, as a generator of effects (a database plan to run, texts to
embed); :meth:`Pipeline.ingest` and :meth:`Pipeline.aingest` only differ in how they carry
them out.
"""

from __future__ import annotations

import asyncio
import threading
import time
from asyncio import FIRST_COMPLETED, FIRST_EXCEPTION
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from rag_pgstore.chunking import TextChunk, TokenChunker
from rag_pgstore.codec import compact_vectors
from rag_pgstore.driver.prefetch import aprefetched, prefetched
from rag_pgstore.driver.steps import Fetch, Plan, PlanSource, Read
from rag_pgstore.errors import EmbeddingError, InvalidInputError
from rag_pgstore.ops import cache, registry, writes
from rag_pgstore.pipeline.batches import Batch, Document, abatches_of, batches_of
from rag_pgstore.pipeline.embedders import Embedder, as_embedder
from rag_pgstore.schema import Collection
from rag_pgstore.sql.search import any_of, compiled
from rag_pgstore.sql.writes import held
from rag_pgstore.store import ChunkStore
from rag_pgstore.types import Chunk

__all__ = ["Document", "IngestReport", "Pipeline", "documents_under"]


@dataclass
class IngestReport:
    """What one ingestion did, so far: ``progress`` callbacks receive it as it grows.

    ``documents`` counts the documents whose batch is stored (so an interrupted run has
    ``documents`` of them in the store); ``chunks_to_write`` the new or changed chunks found
    so far, of which ``embedded`` were embedded by the model and ``from_cache`` came from the
    embedding cache; ``documents_removed`` the documents pruned at the end.
    """

    documents: int = 0
    unchanged: int = 0
    chunks_to_write: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    embedded: int = 0
    from_cache: int = 0
    documents_removed: int = 0


Progress = Callable[[IngestReport], None]


@dataclass(frozen=True)
class _Db:
    plan: PlanSource[Any]


@dataclass(frozen=True)
class _Embed:
    texts: list[str]


@dataclass(frozen=True)
class _Existing:
    """What the store holds of these documents: chunk id -> fingerprint."""

    entity_ids: list[str]


@dataclass(frozen=True)
class _Store:
    """Write the batch: upsert ``records``, delete ``stale``; reply (written, deleted)."""

    records: list[Chunk]
    stale: list[str]
    write: PlanSource[int] | None  # the upsert of ``records``, checked


_Effect = _Db | _Embed | _Existing | _Store


class _Tally:
    """The report, added to from every writer at once (threads, with ``writers`` > 1)."""

    def __init__(self, report: IngestReport, notify: Progress) -> None:
        self.report = report
        self.notify = notify
        self._lock = threading.Lock()

    def add(self, *, notify: bool = False, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self.report, name, getattr(self.report, name) + n)
            if notify:
                self.notify(self.report)


@dataclass(frozen=True)
class Pipeline:
    """Keep a collection in step with a set of documents.

    ``embedder`` is a LangChain ``Embeddings``, a LlamaIndex ``BaseEmbedding``, a callable or an
    :class:`~rag_pgstore.embedders.Embedder`. Failed embedding calls are retried ``retries``
    times with exponential backoff from ``backoff`` seconds; async embedders run up to
    ``concurrency`` calls of ``embed_batch`` texts at once.

    The first ingest records the embedder's name in the collection's registry; a later one
    with another embedder raises :class:`~rag_pgstore.SchemaError` (vectors of two models
    do not compare) unless ``replace_embedder=True``.

    Documents are written in batches of up to ``batch_documents`` documents or
    ``batch_chunks`` chunks, whichever comes first; a document's chunks always commit together.

    ``embedding_cache=False`` neither reads nor writes the embedding cache: for a model that
    costs less than a database round trip (a hashing embedder, a local model with its own
    cache), where the cache would only double what is written.

    ``writers``: how many batches are chunked, embedded and written at once, each on its own
    connection and in its own transactions (threads for :meth:`ingest`, tasks for
    :meth:`aingest`). Each batch still commits whole; after a failure or an interruption the
    batches that committed stay, in whatever order they finished, and a rerun skips them.
    """

    store: ChunkStore
    embedder: Any
    chunker: TokenChunker = field(default_factory=TokenChunker)
    batch_documents: int = 1_000
    batch_chunks: int = 500
    embed_batch: int = 128
    retries: int = 4
    backoff: float = 0.5
    concurrency: int = 4
    replace_embedder: bool = False
    writers: int = 1
    embedding_cache: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_documents", "batch_chunks", "embed_batch", "concurrency", "writers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"expected {name} to be an int >= 1, got {value!r}")

    def ingest(
        self,
        documents: Iterable[Document],
        *,
        prune: Sequence[str] = (),
        keep: Callable[[str], bool] | None = None,
        progress: Progress | None = None,
        bulk: bool = False,
    ) -> IngestReport:
        """Ingest ``documents`` (any iterable, consumed in batches).

        ``prune``: id prefixes (``"/srv/docs/"``); once every document is in, stored documents
        whose id starts with one of them and that were not among ``documents`` are deleted,
        unless ``keep(id)`` is true (the CLI keeps those whose file still exists: a file
        skipped this time is not a file gone). Nothing is pruned when the run fails or is
        interrupted. ``progress`` is called with the report after every step that changes it.

        ``bulk=True`` loads an empty collection in one transaction, its indexes built once at
        the end (:meth:`ChunkStore.bulk_load`): nothing is visible until every document is in,
        and a failed run writes nothing, though the embeddings it computed are kept in the
        cache (unless ``embedding_cache=False``), so a rerun does not pay for them again. It
        needs a second pooled connection (for the cache) and refuses a collection that holds
        chunks.

        With one writer, ``documents`` is read (and chunked) one batch ahead on a worker
        thread, in the caller's context, while the batch before is embedded and written: an
        iterator that only works on the thread that made it (a ``sqlite3`` cursor) should be
        read into a list first, or use ``aingest``.
        """
        embedder = as_embedder(self.embedder)
        report = IngestReport()
        tally = _Tally(report, progress or _quiet)
        seen: set[str] = set()
        c = self.store.collection
        if self.embedding_cache:
            self.store.run_plan(cache.setup(c.schema))
        self.store.run_plan(self._claim(embedder))
        batches = batches_of(iter(documents), self.chunker, self.batch_documents, self.batch_chunks)
        if bulk:
            self.store.run_plan(lambda: _refuse_unless_empty(c))
            records = self._records(batches, embedder, tally)
            try:
                self.store.run_plan(writes.bulk_load(c, records, require_empty=True))
            except EmbeddingError as exc:
                raise _bulk_failure(exc, self.embedding_cache) from exc.__cause__
            return report
        if self.writers == 1:
            # The next batch is read and chunked while this one is embedded and written.
            for batch in prefetched(batches):
                _note(seen, batch, prune)
                self._run(batch, embedder, tally)
        else:
            self._run_parallel(batches, seen, prune, embedder, tally)
        if prune:
            removed, deleted = self.store.run_plan(lambda: _prune(c, prune, seen, keep))
            tally.add(notify=True, documents_removed=removed, chunks_deleted=deleted)
        return report

    async def aingest(
        self,
        documents: Iterable[Document] | AsyncIterable[Document],
        *,
        prune: Sequence[str] = (),
        keep: Callable[[str], bool] | None = None,
        progress: Progress | None = None,
        bulk: bool = False,
    ) -> IngestReport:
        """Async :meth:`ingest`; documents may come from an async iterator."""
        embedder = as_embedder(self.embedder)
        report = IngestReport()
        tally = _Tally(report, progress or _quiet)
        seen: set[str] = set()
        c = self.store.collection
        if self.embedding_cache:
            await self.store.arun_plan(cache.setup(c.schema))
        await self.store.arun_plan(self._claim(embedder))
        batches = abatches_of(documents, self.chunker, self.batch_documents, self.batch_chunks)
        if bulk:
            await self.store.arun_plan(lambda: _refuse_unless_empty(c))
            records = self._arecords(batches, embedder, tally)
            try:
                await self.store.arun_plan(writes.bulk_load(c, records, require_empty=True))
            except EmbeddingError as exc:
                raise _bulk_failure(exc, self.embedding_cache) from exc.__cause__
            return report
        running: set[asyncio.Task[None]] = set()
        try:
            async for batch in aprefetched(batches):
                _note(seen, batch, prune)
                running.add(asyncio.ensure_future(self._arun(batch, embedder, tally)))
                if len(running) >= self.writers:
                    done, running = await asyncio.wait(running, return_when=FIRST_COMPLETED)
                    for task in done:
                        task.result()
            while running:
                done, running = await asyncio.wait(running, return_when=FIRST_EXCEPTION)
                for task in done:
                    task.result()
        except BaseException:
            # The other batches in flight roll back; those that committed stay.
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        if prune:
            removed, deleted = await self.store.arun_plan(lambda: _prune(c, prune, seen, keep))
            tally.add(notify=True, documents_removed=removed, chunks_deleted=deleted)
        return report

    # -- carrying out the steps of a batch -----------------------------------------------------

    def _run(
        self,
        batch: Batch,
        embedder: Embedder,
        tally: _Tally,
        bulk: list[Chunk] | None = None,
    ) -> None:
        """Carry out one batch's steps. With ``bulk`` (the collection is empty, so nothing is
        stored of any document yet), its writes are collected there for the bulk load."""
        steps = self._batch(batch, embedder.name, tally)
        reply: Any = None
        while True:
            try:
                effect = steps.send(reply)
            except StopIteration:
                tally.add(notify=True)  # the batch is stored
                return
            if bulk is not None and isinstance(effect, (_Existing, _Store)):
                reply = _into_bulk(effect, bulk)
            elif isinstance(effect, _Embed):
                reply = self._embed_sync(embedder, effect.texts, batch.documents, tally)
            else:
                reply = self.store.run_plan(_plan(self.store.collection, effect))

    def _run_parallel(
        self,
        batches: Iterator[Batch],
        seen: set[str],
        prune: Sequence[str],
        embedder: Embedder,
        tally: _Tally,
    ) -> None:
        pool = ThreadPoolExecutor(self.writers, thread_name_prefix="rag-pgstore-writer")
        running: set[Future[None]] = set()
        try:
            for batch in batches:
                _note(seen, batch, prune)
                running.add(pool.submit(self._run, batch, embedder, tally))
                if len(running) >= self.writers:
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
            while running:
                done, running = wait(running, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()
        finally:
            # Threads cannot be stopped: a batch in flight finishes (and commits) first.
            pool.shutdown(wait=True, cancel_futures=True)

    async def _arun(
        self,
        batch: Batch,
        embedder: Embedder,
        tally: _Tally,
        bulk: list[Chunk] | None = None,
    ) -> None:
        """Async :meth:`_run`."""
        steps = self._batch(batch, embedder.name, tally)
        reply: Any = None
        while True:
            try:
                effect = steps.send(reply)
            except StopIteration:
                tally.add(notify=True)
                return
            if bulk is not None and isinstance(effect, (_Existing, _Store)):
                reply = _into_bulk(effect, bulk)
            elif isinstance(effect, _Embed):
                reply = await self._embed_async(embedder, effect.texts, batch.documents, tally)
            else:
                reply = await self.store.arun_plan(_plan(self.store.collection, effect))

    def _records(
        self, batches: Iterator[Batch], embedder: Embedder, tally: _Tally
    ) -> Iterator[Chunk]:
        """A bulk load's chunks, one batch of documents at a time."""
        for batch in batches:
            chunks: list[Chunk] = []
            self._run(batch, embedder, tally, bulk=chunks)
            yield from chunks

    async def _arecords(
        self, batches: AsyncIterator[Batch], embedder: Embedder, tally: _Tally
    ) -> AsyncIterator[Chunk]:
        """Async :meth:`_records`."""
        async for batch in batches:
            chunks: list[Chunk] = []
            await self._arun(batch, embedder, tally, bulk=chunks)
            for chunk in chunks:
                yield chunk

    def _claim(self, embedder: Embedder) -> PlanSource[str | None]:
        c = self.store.collection
        return lambda: registry.claim_embedder(c, embedder.name, replace=self.replace_embedder)

    # -- the steps, once ---------------------------------------------------------------------

    def _batch(self, batch: Batch, model: str, tally: _Tally) -> Generator[_Effect, Any, None]:
        c = self.store.collection
        docs, chunked = batch.documents, batch.chunks
        existing: dict[str, tuple[Any, ...]] = yield _Existing(list(chunked))
        new_ids = {ch.chunk_id for chunks in chunked.values() for ch in chunks}
        stale = [cid for cid in existing if cid not in new_ids]  # chunks a document no longer has
        shrunk = {existing[cid][0] for cid in stale}
        wanted: list[TextChunk] = []
        unchanged = 0
        for doc_id, chunks in chunked.items():
            changed = [ch for ch in chunks if existing.get(ch.chunk_id) != _fingerprint(ch)]
            if not changed and doc_id not in shrunk:
                unchanged += 1
            wanted.extend(changed)
        if not wanted and not stale:
            tally.add(unchanged=unchanged, documents=len(docs))
            return
        tally.add(unchanged=unchanged, chunks_to_write=len(wanted))
        vectors: dict[str, Sequence[float]] = {}
        if self.embedding_cache:
            hashes = sorted({ch.content_hash for ch in wanted})
            vectors = yield _Db(cache.lookup(c.schema, model, c.dim, hashes))
            tally.add(from_cache=len(vectors))
        todo = {ch.content_hash: ch.text for ch in wanted if ch.content_hash not in vectors}
        computed: dict[str, Sequence[float]] = {}
        if todo:
            fresh: list[Sequence[float]] = yield _Embed(list(todo.values()))  # counts `embedded`
            computed = dict(zip(todo, fresh, strict=True))
            vectors.update(computed)
        records = [ch.to_chunk(vectors[ch.content_hash]) for ch in wanted]
        # Checked here, once (size, finite, not all zeros under cosine), before the cache keeps
        # any new vector: a bad one must not be served from the cache forever after.
        # One batch however many records (a document of thousands of chunks): checked now.
        write = writes.upsert(c, records, batch_size=max(len(records), 1)) if records else None
        if computed and self.embedding_cache:
            # Its own commit, so it is kept if we die; retried if it loses a deadlock.
            yield _Db(lambda: cache.remember(c.schema, model, computed))
        written, deleted = yield _Store(records, stale, write)
        tally.add(chunks_written=written, chunks_deleted=deleted, documents=len(docs))

    # -- embedding, with retries ---------------------------------------------------------------

    def _delays(self) -> Iterator[float]:
        return (self.backoff * 2**attempt for attempt in range(self.retries))

    def _embed_sync(
        self,
        embedder: Embedder,
        texts: list[str],
        docs: list[Document],
        tally: _Tally,
    ) -> list[Sequence[float]]:
        vectors: list[Sequence[float]] = []
        for part in _slices(texts, self.embed_batch):
            delays = self._delays()
            while True:
                try:
                    got = _checked(embedder.embed(part), part)
                    break
                except Exception as exc:
                    delay = next(delays, None)
                    if delay is None:
                        raise _failure(exc, docs) from exc
                    time.sleep(delay)
            vectors.extend(got)
            # Outside the try: what a progress callback raises is not the model failing.
            tally.add(notify=True, embedded=len(part))
        return vectors

    async def _embed_async(
        self,
        embedder: Embedder,
        texts: list[str],
        docs: list[Document],
        tally: _Tally,
    ) -> list[Sequence[float]]:
        limit = asyncio.Semaphore(self.concurrency)

        async def one(part: list[str]) -> list[Sequence[float]]:
            delays = self._delays()
            while True:
                try:
                    async with limit:
                        if embedder.aembed is not None:
                            vectors = _checked(await embedder.aembed(part), part)
                        else:
                            # A sync-only model runs in a worker thread so the loop stays free.
                            vectors = _checked(await asyncio.to_thread(embedder.embed, part), part)
                    break
                except Exception as exc:
                    delay = next(delays, None)
                    if delay is None:
                        raise _failure(exc, docs) from exc
                    await asyncio.sleep(delay)
            tally.add(notify=True, embedded=len(part))
            return vectors

        parts = await asyncio.gather(*(one(p) for p in _slices(texts, self.embed_batch)))
        return [v for part in parts for v in part]


def _note(seen: set[str], batch: Batch, prune: Sequence[str]) -> None:
    """Remember the batch's document ids that pruning will ask about (those under ``prune``;
    none without it: a million ids would be a large set for nothing)."""
    prefixes = tuple(prune)
    if prefixes:
        seen.update(i for i in batch.chunks if i.startswith(prefixes))


def _prune(
    c: Collection, prefixes: Sequence[str], seen: set[str], keep: Callable[[str], bool] | None
) -> Plan[tuple[int, int]]:
    """Delete the stored documents under ``prefixes`` not in ``seen`` (nor kept), in one
    transaction; return (documents, chunks) deleted."""
    stored = yield from documents_under(c, prefixes)
    gone = sorted(i for i in set(stored) - seen if keep is None or not keep(i))
    if not gone:
        return 0, 0
    deleted = yield from writes.plan_of(writes.delete_entities(c, gone))
    return len(gone), deleted


def _plan(c: Collection, effect: _Db | _Existing | _Store) -> PlanSource[Any]:
    """The database plan that carries out ``effect``."""
    if isinstance(effect, _Existing):
        ids = effect.entity_ids
        return lambda: _existing(c, ids)
    if isinstance(effect, _Store):
        write, remove = effect.write, writes.delete(c, effect.stale) if effect.stale else None
        return lambda: _replace(write, remove)
    return effect.plan


def _into_bulk(effect: _Existing | _Store, bulk: list[Chunk]) -> Any:
    """A bulk load's answer to a step: nothing is stored yet; writes join the load."""
    if isinstance(effect, _Existing):
        return {}
    bulk.extend(effect.records)
    return len(effect.records), 0


def _refuse_unless_empty(c: Collection) -> Plan[None]:
    """Fail early, before any embedding, when a bulk load would be refused at its start."""
    [(rows,)] = yield Fetch(held(c, 1))
    if rows:
        raise InvalidInputError(
            f"expected collection {c.name!r} to be empty for a bulk ingest, found chunks in "
            "it; ingest without bulk (incremental), or into a new collection"
        )


def _quiet(report: IngestReport) -> None:
    del report


def _checked(vectors: Sequence[Sequence[float]], texts: list[str]) -> list[Sequence[float]]:
    if len(vectors) != len(texts):
        raise InvalidInputError(
            f"expected {len(texts)} embeddings from the model, got {len(vectors)}"
        )
    # One conversion here; the cache's COPY and the write's check then take array rows.
    return list(compact_vectors(vectors))


def _failure(exc: BaseException, docs: list[Document]) -> EmbeddingError:
    ids = [d.id for d in docs]
    return EmbeddingError(
        f"embedding failed after retries ({exc}); not ingested: {', '.join(ids)} and any documents "
        "after them. Documents before them are in the store: rerun to finish.",
        not_ingested=ids,
    )


def _bulk_failure(exc: EmbeddingError, cached: bool) -> EmbeddingError:
    kept = ", and the embeddings computed before the failure are cached" if cached else ""
    return EmbeddingError(
        f"embedding failed after retries ({exc.__cause__}); nothing of this bulk ingest was "
        f"written{kept}: rerun to finish",
        not_ingested=exc.not_ingested,
    )


def _fingerprint(ch: TextChunk) -> tuple[Any, ...]:
    return (ch.entity_id, ch.content_hash, ch.chunk_index, ch.total_chunks, dict(ch.metadata))


_FINGERPRINT = ("entity_id", "content_hash", "chunk_index", "total_chunks", "metadata")


def _existing(c: Collection, entity_ids: list[str]) -> Plan[dict[str, tuple[Any, ...]]]:
    """What the store holds of these documents, by chunk id: one round trip, no transaction."""
    t = c.table
    query = sa.select(t.c.chunk_id, *(t.c[name] for name in _FINGERPRINT)).where(
        c.scoped(t.c.entity_id == any_of(entity_ids))
    )
    sql_text, params = compiled(query, bound=())
    rows = yield Read(sql_text, dict(params))
    return {row["chunk_id"]: tuple(row[name] for name in _FINGERPRINT) for row in rows}


def documents_under(c: Collection, prefixes: Sequence[str]) -> Plan[list[str]]:
    """The stored document ids that start with one of ``prefixes`` (LIKE wildcards in them
    are matched literally)."""
    t = c.table
    where = c.scoped(sa.or_(*(t.c.entity_id.startswith(p, autoescape=True) for p in prefixes)))
    rows = yield Fetch(sa.select(t.c.entity_id).where(where).distinct())
    return [row[0] for row in rows]


def _replace(
    write: PlanSource[int] | None, remove: PlanSource[int] | None
) -> Plan[tuple[int, int]]:
    """The batch's upsert and deletion of stale chunks, in one transaction."""
    written = (yield from writes.plan_of(write)) if write is not None else 0
    deleted = (yield from writes.plan_of(remove)) if remove is not None else 0
    return written, deleted


def _slices(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
