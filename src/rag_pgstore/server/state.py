"""The server's side of the database: one async engine shared by every collection, the
collections opened so far, and the models that embed their texts.

A collection is opened (its registry row read) at its first request and kept; dropping it
through the server forgets it. Texts are embedded with the model the collection recorded,
so the server can never mix two models' vectors in one collection; a collection with none
recorded takes the server's default model, recorded in the same transaction as the first
chunks it writes.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore.codec import check_name
from rag_pgstore.driver.steps import Plan, PlanSource
from rag_pgstore.errors import (
    DimensionError,
    EmbeddingError,
    MissingDependencyError,
    RagPgStoreError,
    SchemaError,
)
from rag_pgstore.ops import registry, writes
from rag_pgstore.pipeline.embedders import (
    Embedder,
    as_embedder,
    bundled_embedder,
    embedder_dim,
)
from rag_pgstore.schema import Collection
from rag_pgstore.server.errors import ApiError
from rag_pgstore.server.metrics import Metrics
from rag_pgstore.store import ChunkStore
from rag_pgstore.types import Chunk

__all__ = ["Collections", "Opened"]

QUERY_CACHE_SIZE = 1024  # query texts whose vectors are kept, per server
QUERY_CACHE_TEXT = 1000  # characters: a longer query is embedded every time, not kept
REOPEN_SECONDS = 30.0


@dataclass
class Opened:
    """A collection the server has open, and the model its registry names (``None``: none)."""

    store: ChunkStore
    embedder: str | None
    opened_at: float = 0.0


class Collections:
    """The collections of one schema, opened on demand over one async engine."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        schema: str,
        default_embedder: Any,
        metrics: Metrics,
        embed_threads: int,
        create_extension: bool,
    ) -> None:
        self.engine = engine
        self.schema = schema
        self.default = None if default_embedder is None else _embedder(default_embedder)
        self.metrics = metrics
        self.create_extension = create_extension
        self._open: dict[str, Opened] = {}
        self._models: dict[str, Embedder] = {}
        self._dims: dict[str, int] = {}
        self._queries: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        # The model is CPU-bound: more threads than cores only queue inside it.
        self._embedding = anyio.CapacityLimiter(embed_threads)

    async def get(self, name: str) -> Opened:
        """The collection ``name``; :class:`CollectionNotFoundError` if it does not exist.

        Its registry row is read again after ``REOPEN_SECONDS``: another process may have
        recorded a model, or dropped and made the collection again with other settings.
        """
        found = self._open.get(name)
        if found is not None and time.monotonic() - found.opened_at < REOPEN_SECONDS:
            return found
        check_name(name, "collection")
        store = await ChunkStore.aopen(
            None,
            self.engine,
            collection=name,
            schema=self.schema,
            create_extension=self.create_extension,
        )
        c = store.collection
        row = await store.arun_plan(lambda: registry.registered(c.schema, c.name), read_only=True)
        opened = Opened(store, None if row is None else row.get("embedder"), time.monotonic())
        self._open[name] = opened
        return opened

    async def get_for(self, name: str, tenant: str | None) -> Opened:
        """The collection ``name`` as ``tenant`` (the request's key's) sees it: a tenancy
        collection is only reached through a tenant, and never beyond that tenant's rows."""
        opened = await self.get(name)
        if tenant is None:
            if opened.store.collection.tenancy:
                raise ApiError(
                    403,
                    "forbidden",
                    f"collection {name!r} has tenancy: its chunks are reached with an API key "
                    "bound to a tenant (read@TENANT:SECRET or write@TENANT:SECRET)",
                )
            return opened
        if not opened.store.collection.tenancy:
            raise ApiError(
                403,
                "forbidden",
                f"this key belongs to tenant {tenant!r}, and collection {name!r} has no "
                "tenancy; use a key without a tenant",
            )
        return dataclasses.replace(opened, store=opened.store.for_tenant(tenant))

    def forget(self, name: str) -> None:
        self._open.pop(name, None)

    async def create(
        self, name: str, *, dim: int, embedder: str | None, **options: Any
    ) -> tuple[Opened, bool]:
        """Create collection ``name``, or find it made with the same settings
        (:class:`SchemaError` if not); ``True`` if it was created now.

        ``embedder`` is recorded as its model; without one, a new collection records the
        server's default model when their dimensions agree (an existing one is left as it
        is: its vectors may come from any model).
        """
        store = ChunkStore(
            None,
            self.engine,
            collection=name,
            dim=dim,
            schema=self.schema,
            create_extension=self.create_extension,
            **options,
        )
        c = store.collection
        before = await store.arun_plan(
            lambda: registry.registered(c.schema, c.name), read_only=True
        )
        await store.asetup()  # checks an existing collection's settings against these
        default = self.default
        if embedder is None and before is None and default is not None:
            embedder = default.name if await self.dim_of(default) == dim else None
        if embedder is not None:
            await store.arun_plan(lambda: registry.claim_embedder(c, embedder))
        self.forget(name)
        return await self.get(name), before is None

    # -- embedding -------------------------------------------------------------------------

    def model_for(self, opened: Opened, *, writing: bool) -> Embedder:
        """The model that embeds texts for ``opened``: the one it recorded, or (to write, into
        a collection that recorded none) the server's default."""
        name = opened.embedder
        c = opened.store.collection
        if name is None:
            if not writing:
                raise ApiError(
                    409,
                    "no_recorded_embedder",
                    f"collection {c.name!r} has no recorded embedding model, so its vectors "
                    "may come from any: search it with a vector, or by text search",
                )
            if self.default is None:
                raise ApiError(
                    422,
                    "no_embedder",
                    "this server has no embedding model: send each chunk's embedding, or "
                    "start it with --embedder",
                )
            return self.default
        if self.default is not None and self.default.name == name:
            return self.default
        try:
            model = self._models.get(name) or bundled_embedder(name)
        except MissingDependencyError:  # a local model, without the extra installed here
            model = None
        if model is None:
            raise ApiError(
                422,
                "embedder_unavailable",
                f"collection {c.name!r} was embedded with {name!r}, which this server cannot "
                "load: send embeddings (or vectors to search with)",
            )
        self._models[name] = model
        return model

    async def embed(self, model: Embedder, texts: Sequence[str], dim: int) -> list[list[float]]:
        """``texts`` embedded by ``model``, on a worker thread unless it is async; each
        vector checked against ``dim``."""
        out = await self._embed(model, texts)
        for v in out:
            if len(v) != dim:
                raise DimensionError(
                    f"expected {dim} dimensions from {model.name!r}, got {len(v)}: the "
                    "collection was made for another model"
                )
        return out

    async def dim_of(self, model: Embedder) -> int:
        """How many dimensions ``model`` makes (embedding one word, once, unless it is ours)."""
        known = embedder_dim(model.name) or self._dims.get(model.name)
        if known is not None:
            return known
        (vector,) = await self._embed(model, ["dimension"])
        self._dims[model.name] = len(vector)
        return len(vector)

    async def _embed(self, model: Embedder, texts: Sequence[str]) -> list[list[float]]:
        start = time.perf_counter()
        try:
            if model.aembed is not None:
                vectors = await model.aembed(list(texts))
            else:
                vectors = await anyio.to_thread.run_sync(
                    model.embed, list(texts), limiter=self._embedding
                )
        except RagPgStoreError:
            raise
        except Exception as exc:
            raise EmbeddingError(
                f"the embedding model {model.name!r} failed: {type(exc).__name__}: {exc}",
                not_ingested=[],
            ) from exc
        self.metrics.embedding_seconds.labels(model.name).observe(time.perf_counter() - start)
        self.metrics.embedded_texts.labels(model.name).inc(len(texts))
        out = [list(map(float, v)) for v in vectors]
        if len(out) != len(texts):
            raise EmbeddingError(
                f"the embedding model {model.name!r} returned {len(out)} vectors for "
                f"{len(texts)} texts",
                not_ingested=[],
            )
        return out

    async def query_vector(self, opened: Opened, text: str) -> list[float]:
        """The query ``text`` embedded for ``opened``, from the last queries when asked before."""
        model = self.model_for(opened, writing=False)
        key = (model.name, text)
        cached = self._queries.get(key)
        if cached is not None:
            self._queries.move_to_end(key)
            return cached
        (vector,) = await self.embed(model, [text], opened.store.collection.dim)
        if len(text) <= QUERY_CACHE_TEXT:
            self._queries[key] = vector
            if len(self._queries) > QUERY_CACHE_SIZE:
                self._queries.popitem(last=False)
        return vector


def claimed_upsert(c: Collection, embedder: str | None, chunks: list[Chunk]) -> PlanSource[int]:
    """Upsert ``chunks``, first recording ``embedder`` as the collection's model (when the
    server embedded some of them), in one transaction: a refused claim writes nothing."""

    def plan() -> Plan[int]:
        if embedder is not None:
            yield from registry.claim_embedder(c, embedder)
        return (yield from writes.plan_of(writes.upsert(c, chunks)))

    return plan


def _embedder(model: Any) -> Embedder:
    if isinstance(model, str):
        found = bundled_embedder(model)
        if found is None:
            raise SchemaError(
                f"expected an embedder name such as 'hash:256' or 'local:all-MiniLM-L6-v2', "
                f"got {model!r}"
            )
        return found
    return as_embedder(model)
