"""The pipeline on a Dask cluster: chunking, embedding and writing fan out to its workers.

Embedding is what outgrows one machine first. ``ingest_on_dask`` reads the documents on the
caller's side and sends them, a batch at a time, to the cluster's workers; each worker runs
an ordinary :class:`~rag_pgstore.pipeline.Pipeline` on its own connection to the same
collection (chunk, skip what is stored unchanged, embed the rest through the shared embedding
cache, write with the store's COPY path). So the content-hash incrementality, the cache and
resumability are the pipeline's own, and the collection ends up as a local run leaves it.

The model is built on each worker by ``embedder`` (a function, called once per worker
process and kept there): models are large and many do not pickle.

>>> from dask.distributed import Client, LocalCluster
>>> with Client(LocalCluster(n_workers=2)) as client:
...     ingest_on_dask(client, store, documents, lambda: local_embedder())
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields
from typing import Any

from rag_pgstore.errors import InvalidInputError, MissingDependencyError
from rag_pgstore.pipeline import Document, IngestReport, Pipeline
from rag_pgstore.store import ChunkStore

__all__ = ["ingest_on_dask"]

_OPTIONS = {"chunker", "batch_chunks", "embed_batch", "retries", "backoff", "concurrency"}
_OPTIONS |= {"replace_embedder", "embedding_cache"}


def ingest_on_dask(
    client: Any,
    store: ChunkStore,
    documents: Iterable[Document],
    embedder: Callable[[], Any],
    *,
    batch_documents: int = 256,
    in_flight: int | None = None,
    progress: Callable[[IngestReport], None] | None = None,
    **options: Any,
) -> IngestReport:
    """Ingest ``documents`` into ``store``'s collection on the workers of the Dask
    ``client``; return the sum of the workers' reports.

    ``batch_documents`` documents go to a worker at a time, at most ``in_flight`` batches at
    once (two per worker by default), so the caller's memory stays flat for any stream.
    ``options`` are the :class:`~rag_pgstore.pipeline.Pipeline`'s (``chunker``,
    ``embed_batch``, ``embedding_cache``, ...). A document id in a batch still being
    written waits for that batch, so a repeated id ends as a local run leaves it (the last
    one wins). The first batch that fails cancels those not started and raises its error;
    the batches that committed stay, and a rerun skips them.

    The workers connect with the store's URL (its password included) and need the
    collection to exist (``store.setup()`` has run).
    """
    try:
        from dask.base import tokenize
        from distributed import Future, wait
    except ImportError as exc:
        raise MissingDependencyError(
            "expected dask's distributed scheduler, found none; pip install 'rag-pgstore[dask]'"
        ) from exc
    unknown = set(options) - _OPTIONS
    if unknown:
        raise InvalidInputError(
            f"expected Pipeline options among {sorted(_OPTIONS)}, got {sorted(unknown)}"
        )
    for name, value in (("batch_documents", batch_documents), ("in_flight", in_flight)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidInputError(f"expected {name} to be an int >= 1, got {value!r}")
    if not callable(embedder):
        raise InvalidInputError(
            f"expected embedder to be a function that builds the model on a worker, got "
            f"{type(embedder).__name__}; pass lambda: local_embedder() (or your model's maker)"
        )
    if store.engine is None:
        raise InvalidInputError("expected a store with a sync engine (its URL reaches the workers)")
    c = store.collection
    target = {
        "url": store.engine.url.render_as_string(hide_password=False),
        "collection": c.name,
        "schema": c.schema,
    }
    options = {**options, "batch_documents": batch_documents}
    # The same store, model maker and options: the workers' pipelines (and models) are reused.
    key = tokenize(target, embedder, sorted(options.items(), key=lambda kv: kv[0]))
    limit = in_flight or 2 * max(1, len(client.scheduler_info().get("workers", {})))
    total = IngestReport()
    running: dict[Future[IngestReport], set[str]] = {}

    def settle(done: Iterable[Future[IngestReport]]) -> None:
        for future in done:
            running.pop(future)
            _add(total, future.result())  # raises the worker's error, as it was raised
            if progress is not None:
                progress(total)

    try:
        for batch in _batches(documents, batch_documents):
            ids = {d.id for d in batch}
            while len(running) >= limit or any(ids & held for held in running.values()):
                waiting = [f for f, held in running.items() if ids & held] or list(running)
                settle(_first_done(wait, waiting))
            future = client.submit(_ingest, key, target, embedder, options, batch, pure=False)
            running[future] = ids
        while running:
            settle(_first_done(wait, list(running)))
    except BaseException:
        for future in running:
            future.cancel()  # type: ignore[no-untyped-call]
        raise
    return total


def _first_done(wait: Any, futures: list[Any]) -> Any:
    """The futures of ``futures`` that are done, once at least one is."""
    return wait(futures, return_when="FIRST_COMPLETED").done


def _batches(documents: Iterable[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in documents:
        if not isinstance(doc, Document):
            raise InvalidInputError(f"expected rag_pgstore.Document, got {type(doc).__name__}")
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _add(total: IngestReport, part: IngestReport) -> None:
    for f in fields(IngestReport):
        setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))


# -- on a worker -------------------------------------------------------------------------------

# One pipeline (a store, its pool and the model) per worker process and run: built by the
# first batch that reaches the worker, reused by the others.
_PIPELINES: dict[str, Pipeline] = {}
_LOCK = threading.Lock()


def _ingest(
    key: str,
    target: Mapping[str, str],
    embedder: Callable[[], Any],
    options: Mapping[str, Any],
    batch: list[Document],
) -> IngestReport:
    with _LOCK:
        pipeline = _PIPELINES.get(key)
        if pipeline is None:
            store = ChunkStore.from_url(
                target["url"], collection=target["collection"], schema=target["schema"]
            )
            pipeline = Pipeline(store, embedder(), **options)
            _PIPELINES[key] = pipeline
    return pipeline.ingest(batch)
