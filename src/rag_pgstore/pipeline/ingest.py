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
import itertools
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from rag_pgstore.chunking import TextChunk, TokenChunker
from rag_pgstore.driver.steps import Fetch, Plan, PlanSource
from rag_pgstore.errors import EmbeddingError, InvalidInputError
from rag_pgstore.ops import cache, registry, writes
from rag_pgstore.pipeline.embedders import Embedder, as_embedder
from rag_pgstore.schema import Collection
from rag_pgstore.sql.search import any_of
from rag_pgstore.store import ChunkStore

__all__ = ["Document", "IngestReport", "Pipeline", "documents_under"]


@dataclass(frozen=True)
class Document:
    """A source document: ``id`` becomes every chunk's ``entity_id``."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


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


_Effect = _Db | _Embed


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
    """

    store: ChunkStore
    embedder: Any
    chunker: TokenChunker = field(default_factory=TokenChunker)
    batch_documents: int = 32
    embed_batch: int = 128
    retries: int = 4
    backoff: float = 0.5
    concurrency: int = 4
    replace_embedder: bool = False

    def ingest(
        self,
        documents: Iterable[Document],
        *,
        prune: Sequence[str] = (),
        keep: Callable[[str], bool] | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Ingest ``documents`` (any iterable, consumed in batches).

        ``prune``: id prefixes (``"/srv/docs/"``); once every document is in, stored documents
        whose id starts with one of them and that were not among ``documents`` are deleted,
        unless ``keep(id)`` is true (the CLI keeps those whose file still exists: a file
        skipped this time is not a file gone). Nothing is pruned when the run fails or is
        interrupted. ``progress`` is called with the report after every step that changes it.
        """
        embedder = as_embedder(self.embedder)
        report = IngestReport()
        notify = progress or _quiet
        seen: set[str] = set()
        self.store.run_plan(cache.setup(self.store.collection.schema))
        self.store.run_plan(self._claim(embedder))
        for batch in _batches(iter(documents), self.batch_documents):
            seen.update(d.id for d in batch)
            steps = self._batch(batch, embedder.name, report)
            reply: Any = None
            while True:
                try:
                    effect = steps.send(reply)
                except StopIteration:
                    notify(report)  # the batch is stored
                    break
                if isinstance(effect, _Db):
                    reply = self.store.run_plan(effect.plan)
                else:
                    reply = self._embed_sync(embedder, effect.texts, batch, report, notify)
        if prune:
            c = self.store.collection
            removed, deleted = self.store.run_plan(lambda: _prune(c, prune, seen, keep))
            report.documents_removed = removed
            report.chunks_deleted += deleted
            notify(report)
        return report

    async def aingest(
        self,
        documents: Iterable[Document] | AsyncIterable[Document],
        *,
        prune: Sequence[str] = (),
        keep: Callable[[str], bool] | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Async :meth:`ingest`; documents may come from an async iterator."""
        embedder = as_embedder(self.embedder)
        report = IngestReport()
        notify = progress or _quiet
        seen: set[str] = set()
        await self.store.arun_plan(cache.setup(self.store.collection.schema))
        await self.store.arun_plan(self._claim(embedder))
        async for batch in _abatches(documents, self.batch_documents):
            seen.update(d.id for d in batch)
            steps = self._batch(batch, embedder.name, report)
            reply: Any = None
            while True:
                try:
                    effect = steps.send(reply)
                except StopIteration:
                    notify(report)  # the batch is stored
                    break
                if isinstance(effect, _Db):
                    reply = await self.store.arun_plan(effect.plan)
                else:
                    reply = await self._embed_async(embedder, effect.texts, batch, report, notify)
        if prune:
            c = self.store.collection
            removed, deleted = await self.store.arun_plan(lambda: _prune(c, prune, seen, keep))
            report.documents_removed = removed
            report.chunks_deleted += deleted
            notify(report)
        return report

    def _claim(self, embedder: Embedder) -> PlanSource[str | None]:
        c = self.store.collection
        return lambda: registry.claim_embedder(c, embedder.name, replace=self.replace_embedder)

    # -- the steps, once ---------------------------------------------------------------------

    def _batch(
        self, docs: list[Document], model: str, report: IngestReport
    ) -> Generator[_Effect, Any, None]:
        c = self.store.collection
        _check(docs)
        chunked = {
            d.id: self.chunker.chunk(d.text, entity_id=d.id, metadata=d.metadata) for d in docs
        }
        existing: dict[str, tuple[Any, ...]] = yield _Db(_existing(c, list(chunked)))
        new_ids = {ch.chunk_id for chunks in chunked.values() for ch in chunks}
        stale = [cid for cid in existing if cid not in new_ids]  # chunks a document no longer has
        shrunk = {existing[cid][0] for cid in stale}
        wanted: list[TextChunk] = []
        for doc_id, chunks in chunked.items():
            changed = [ch for ch in chunks if existing.get(ch.chunk_id) != _fingerprint(ch)]
            if not changed and doc_id not in shrunk:
                report.unchanged += 1
            wanted.extend(changed)
        if not wanted and not stale:
            report.documents += len(docs)
            return
        report.chunks_to_write += len(wanted)
        hashes = sorted({ch.content_hash for ch in wanted})
        vectors: dict[str, list[float]] = yield _Db(cache.lookup(c.schema, model, c.dim, hashes))
        report.from_cache += len(vectors)
        todo = {ch.content_hash: ch.text for ch in wanted if ch.content_hash not in vectors}
        computed: dict[str, list[float]] = {}
        if todo:
            fresh: list[list[float]] = yield _Embed(list(todo.values()))  # counts `embedded`
            computed = dict(zip(todo, fresh, strict=True))
            vectors.update(computed)
        # Checked here, once (size, finite, not all zeros under cosine), before the cache keeps
        # any new vector: a bad one must not be served from the cache forever after.
        records = [ch.to_chunk(vectors[ch.content_hash]) for ch in wanted]
        write = writes.upsert(c, records) if records else None
        remove = writes.delete(c, stale) if stale else None
        if computed:
            # Its own commit, so it is kept if we die; retried if it loses a deadlock.
            yield _Db(lambda: cache.remember(c.schema, model, computed))
        written, deleted = yield _Db(lambda: _replace(write, remove))
        report.chunks_written += written
        report.chunks_deleted += deleted
        report.documents += len(docs)

    # -- embedding, with retries ---------------------------------------------------------------

    def _delays(self) -> Iterator[float]:
        return (self.backoff * 2**attempt for attempt in range(self.retries))

    def _embed_sync(
        self,
        embedder: Embedder,
        texts: list[str],
        docs: list[Document],
        report: IngestReport,
        notify: Progress,
    ) -> list[list[float]]:
        vectors: list[list[float]] = []
        for part in _slices(texts, self.embed_batch):
            delays = self._delays()
            while True:
                try:
                    vectors.extend(_checked(embedder.embed(part), part))
                    report.embedded += len(part)
                    notify(report)
                    break
                except Exception as exc:
                    delay = next(delays, None)
                    if delay is None:
                        raise _failure(exc, docs) from exc
                    time.sleep(delay)
        return vectors

    async def _embed_async(
        self,
        embedder: Embedder,
        texts: list[str],
        docs: list[Document],
        report: IngestReport,
        notify: Progress,
    ) -> list[list[float]]:
        limit = asyncio.Semaphore(self.concurrency)

        async def one(part: list[str]) -> list[list[float]]:
            delays = self._delays()
            while True:
                try:
                    async with limit:
                        if embedder.aembed is not None:
                            vectors = _checked(await embedder.aembed(part), part)
                        else:
                            # A sync-only model runs in a worker thread so the loop stays free.
                            vectors = _checked(await asyncio.to_thread(embedder.embed, part), part)
                    report.embedded += len(part)
                    notify(report)
                    return vectors
                except Exception as exc:
                    delay = next(delays, None)
                    if delay is None:
                        raise _failure(exc, docs) from exc
                    await asyncio.sleep(delay)

        parts = await asyncio.gather(*(one(p) for p in _slices(texts, self.embed_batch)))
        return [v for part in parts for v in part]


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


def _quiet(report: IngestReport) -> None:
    del report


def _check(docs: list[Document]) -> None:
    for d in docs:
        if not isinstance(d, Document):
            raise InvalidInputError(f"expected rag_pgstore.Document, got {type(d).__name__}")
        if not isinstance(d.id, str) or not d.id:
            raise InvalidInputError(f"expected a non-empty str document id, got {d.id!r}")
        if not isinstance(d.text, str):
            raise InvalidInputError(
                f"expected str text in document {d.id!r}, got {type(d.text).__name__}"
            )
        if "\x00" in d.text:
            # PostgreSQL text cannot hold NUL; failing here, before anything of the batch is
            # written, names the document rather than one of its chunks.
            raise InvalidInputError(
                f"expected text without NUL characters in document {d.id!r}: is it a binary "
                "file? Decode it first, or drop the NULs"
            )
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"expected distinct document ids in a batch, got repeats in {ids}")


def _checked(vectors: Sequence[Sequence[float]], texts: list[str]) -> list[list[float]]:
    if len(vectors) != len(texts):
        raise InvalidInputError(
            f"expected {len(texts)} embeddings from the model, got {len(vectors)}"
        )
    return [list(v) for v in vectors]


def _failure(exc: BaseException, docs: list[Document]) -> EmbeddingError:
    ids = [d.id for d in docs]
    return EmbeddingError(
        f"embedding failed after retries ({exc}); not ingested: {', '.join(ids)} and any documents "
        "after them. Documents before them are in the store: rerun to finish.",
        not_ingested=ids,
    )


def _fingerprint(ch: TextChunk) -> tuple[Any, ...]:
    return (ch.entity_id, ch.content_hash, ch.chunk_index, ch.total_chunks, dict(ch.metadata))


def _existing(c: Collection, entity_ids: list[str]) -> Plan[dict[str, tuple[Any, ...]]]:
    t = c.table
    rows = yield Fetch(
        sa.select(
            t.c.chunk_id,
            t.c.entity_id,
            t.c.content_hash,
            t.c.chunk_index,
            t.c.total_chunks,
            t.c["metadata"],
        ).where(t.c.entity_id == any_of(entity_ids))
    )
    return {row[0]: tuple(row[1:]) for row in rows}


def documents_under(c: Collection, prefixes: Sequence[str]) -> Plan[list[str]]:
    """The stored document ids that start with one of ``prefixes`` (LIKE wildcards in them
    are matched literally)."""
    t = c.table
    where = sa.or_(*(t.c.entity_id.startswith(p, autoescape=True) for p in prefixes))
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


def _batches(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    while batch := list(itertools.islice(docs, size)):
        yield batch


async def _abatches(
    docs: Iterable[Document] | AsyncIterable[Document], size: int
) -> AsyncIterator[list[Document]]:
    if not isinstance(docs, AsyncIterable):
        for ready in _batches(iter(docs), size):
            yield ready
        return
    batch: list[Document] = []
    async for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
