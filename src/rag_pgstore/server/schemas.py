"""The JSON the API takes and returns, as pydantic models (and so as the OpenAPI document).

Request models forbid unknown fields: a misspelt ``"fitler"`` is a 422 naming it, not a
search that silently ignores the filter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rag_pgstore.pipeline.ingest import IngestReport
from rag_pgstore.types import CollectionInfo, CollectionSummary, ScoredChunk, StoredChunk

JsonFilter = dict[str, Any]
MAX_QUERY = 10_000  # characters of a query text: a question, not a document


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- collections ---------------------------------------------------------------------------


class CreateCollection(Request):
    name: str = Field(description="lower-case letters, digits and underscores")
    dim: int | None = Field(
        None, ge=1, description="vector dimensions; default: the server's embedder's"
    )
    distance: Literal["cosine", "l2", "inner_product", "l1"] = "cosine"
    keyword: Literal["bm25", "ts_rank", "off"] = "bm25"
    text_config: str = "english"
    embedder: str | None = Field(
        None,
        description="the model that writes its vectors, recorded (e.g. 'hash:256'); "
        "default: the server's",
    )
    tenancy: bool = Field(
        False,
        description="a tenant_id in every row: its chunks are reached with keys bound to a "
        "tenant only (see docs/tenancy.md)",
    )


class CollectionOut(BaseModel):
    name: str
    schema_name: str = Field(serialization_alias="schema")
    chunks: int
    entities: int
    dim: int
    distance: str
    keyword: str
    embedder: str | None
    ann_index: dict[str, Any] | None

    @classmethod
    def of(cls, s: CollectionSummary) -> CollectionOut:
        return cls(
            name=s.name,
            schema_name=s.schema,
            chunks=s.chunks,
            entities=s.entities,
            dim=s.dim,
            distance=s.distance,
            keyword=s.keyword,
            embedder=s.embedder,
            ann_index=dict(s.ann_index) if s.ann_index is not None else None,
        )


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class CollectionDetail(CollectionOut):
    text_config: str
    schema_version: int
    indexes: list[str]
    server_version: str
    pgvector_version: str | None
    uses_ann_index: bool

    @classmethod
    def of_info(cls, i: CollectionInfo) -> CollectionDetail:
        return cls(
            name=i.name,
            schema_name=i.schema,
            chunks=i.chunks,
            entities=i.entities,
            dim=i.dim,
            distance=i.distance,
            keyword=i.keyword,
            embedder=i.embedder,
            ann_index=dict(i.ann_index) if i.ann_index is not None else None,
            text_config=i.text_config,
            schema_version=i.schema_version,
            indexes=list(i.indexes),
            server_version=i.server_version,
            pgvector_version=i.pgvector_version,
            uses_ann_index=i.uses_ann_index,
        )


# -- chunks --------------------------------------------------------------------------------


class ChunkIn(Request):
    chunk_id: str = Field(min_length=1)
    content: str
    embedding: list[float] | None = Field(
        None, description="omit to have the server embed content with the collection's model"
    )
    entity_id: str | None = Field(None, description="the document; default: the chunk id")
    chunk_index: int = Field(0, ge=0)
    total_chunks: int = Field(1, ge=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Upsert(Request):
    chunks: list[ChunkIn]


class Written(BaseModel):
    written: int
    embedded: int = Field(description="how many of them the server embedded")


class Ids(Request):
    ids: list[str]
    with_embeddings: bool = False


class ChunkOut(BaseModel):
    chunk_id: str
    entity_id: str
    chunk_index: int
    total_chunks: int
    content: str
    metadata: dict[str, Any]
    content_hash: str
    created_at: datetime
    updated_at: datetime
    embedding: list[float] | None = None

    @classmethod
    def of(cls, c: StoredChunk) -> ChunkOut:
        return cls(
            chunk_id=c.chunk_id,
            entity_id=c.entity_id,
            chunk_index=c.chunk_index,
            total_chunks=c.total_chunks,
            content=c.content,
            metadata=c.metadata,
            content_hash=c.content_hash,
            created_at=c.created_at,
            updated_at=c.updated_at,
            embedding=c.embedding,
        )


class ChunkList(BaseModel):
    chunks: list[ChunkOut]


class Delete(Request):
    """Exactly one of ``ids``, ``entity_ids`` or ``filter``."""

    ids: list[str] | None = None
    entity_ids: list[str] | None = None
    filter: JsonFilter | None = None

    @model_validator(mode="after")
    def _one(self) -> Delete:
        given = [n for n in ("ids", "entity_ids", "filter") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of ids, entity_ids or filter, got "
                + (", ".join(given) or "none")
            )
        return self


class Deleted(BaseModel):
    deleted: int


class Count(Request):
    filter: JsonFilter | None = None


class Counted(BaseModel):
    count: int


# -- documents -----------------------------------------------------------------------------


class DocumentIn(Request):
    id: str = Field(min_length=1, description="becomes every chunk's entity_id")
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class Ingest(Request):
    documents: list[DocumentIn]
    max_tokens: int = Field(512, ge=8, le=8192, description="chunk size in tokens")
    overlap: int | None = Field(None, ge=0, description="tokens neighbours share")


class Ingested(BaseModel):
    documents: int
    unchanged: int
    chunks_written: int
    chunks_deleted: int
    embedded: int
    from_cache: int

    @classmethod
    def of(cls, r: IngestReport) -> Ingested:
        return cls(
            documents=r.documents,
            unchanged=r.unchanged,
            chunks_written=r.chunks_written,
            chunks_deleted=r.chunks_deleted,
            embedded=r.embedded,
            from_cache=r.from_cache,
        )


# -- search --------------------------------------------------------------------------------


class _Search(Request):
    k: int = Field(4, ge=1, description="results")
    filter: JsonFilter | None = Field(None, description="the store's metadata filter language")
    min_score: float | None = Field(None, description="drop hits scoring lower")


class _ByVectorOrText(_Search):
    vector: list[float] | None = None
    text: str | None = Field(
        None, max_length=MAX_QUERY, description="embedded with the collection's model"
    )

    @model_validator(mode="after")
    def _one(self) -> _ByVectorOrText:
        if (self.vector is None) == (self.text is None):
            raise ValueError("expected exactly one of vector or text")
        return self


class VectorSearch(_ByVectorOrText):
    offset: int = Field(0, ge=0, description="results skipped first (paging)")
    ef_search: int | None = Field(None, ge=1, description="HNSW ef_search for this query")


class TextSearch(_Search):
    text: str = Field(max_length=MAX_QUERY)
    offset: int = Field(0, ge=0)
    mode: Literal["any", "websearch"] = "any"


class HybridSearch(_Search):
    text: str = Field(max_length=MAX_QUERY)
    vector: list[float] | None = Field(None, description="default: the text, embedded")
    offset: int = Field(0, ge=0)
    vector_weight: float = Field(0.5, ge=0.0, le=1.0)
    fusion: Literal["relative_score", "rrf"] = "relative_score"
    vector_k: int | None = Field(None, ge=1)
    text_k: int | None = Field(None, ge=1)
    text_mode: Literal["any", "websearch"] = "any"


class MmrSearch(_ByVectorOrText):
    fetch_k: int = Field(20, ge=1, description="candidates to pick from")
    lambda_mult: float = Field(0.5, ge=0.0, le=1.0, description="1: relevance only")


class Hit(BaseModel):
    chunk_id: str
    entity_id: str
    chunk_index: int
    content: str
    metadata: dict[str, Any]
    score: float
    distance: float | None

    @classmethod
    def of(cls, h: ScoredChunk) -> Hit:
        c = h.chunk
        return cls(
            chunk_id=c.chunk_id,
            entity_id=c.entity_id,
            chunk_index=c.chunk_index,
            content=c.content,
            metadata=c.metadata,
            score=h.score,
            distance=h.distance,
        )


class Sizes(BaseModel):
    """The knobs a hybrid search ran with."""

    vector_k: int
    text_k: int
    text_candidates: int
    ef_search: int
    iterative_scan: str | None


class Results(BaseModel):
    kind: str
    results: list[Hit]
    embedded_query: bool = Field(description="whether the server embedded the query text")
    sizes: Sizes | None = None


# -- health --------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    collection: str
    schema_version: int | None = Field(description="None: the collection does not exist yet")
