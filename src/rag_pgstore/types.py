"""Every value that crosses the public API: chunks, search hits, distances, index, search and
hybrid options, and the filter type. Frozen dataclasses and enums, no I/O; each option checks
itself when built and raises the library's own errors."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from rag_pgstore.errors import InvalidInputError

__all__ = [
    "DEFAULT_EF_SEARCH",
    "MAX_EF_SEARCH",
    "Chunk",
    "CollectionInfo",
    "CollectionSummary",
    "Distance",
    "Filter",
    "Fusion",
    "HnswIndex",
    "HybridOptions",
    "HybridSizes",
    "IvfflatIndex",
    "KeywordSearch",
    "ScoredChunk",
    "SearchTuning",
    "StoredChunk",
    "TextMode",
    "choice",
    "ef_search_for",
    "iterative_for",
]

Filter = Mapping[str, Any]
"""A metadata filter: ``{"topic": "db", "year": {"$gte": 2020}}`` (see ``sql/filters.py``)."""


class KeywordSearch(str, enum.Enum):
    """How a collection ranks keyword (full-text) matches; chosen when it is created.

    ``BM25`` (the default for new collections) ranks by Okapi BM25 from a bounded set of
    candidates the GIN index finds (see docs/guide.md, "Keyword search"). ``TS_RANK`` is
    PostgreSQL's ``ts_rank`` over every match, what collections made before 0.2 use.
    ``OFF`` keeps no text index at all: writes pay nothing for it, keyword and hybrid search
    raise :class:`~rag_pgstore.errors.UnsupportedError`.
    """

    OFF = "off"
    TS_RANK = "ts_rank"
    BM25 = "bm25"


# BM25's term-frequency saturation and length normalisation: Lucene's and Elasticsearch's
# defaults, so rankings compare with theirs.
BM25_K1 = 1.2
BM25_B = 0.75


class Distance(str, enum.Enum):
    """How two embeddings are compared.

    One value decides the SQL operator, the index operator class and how a distance becomes a
    relevance score, so an index always serves the queries it was built for.
    """

    COSINE = "cosine"
    L2 = "l2"
    INNER_PRODUCT = "inner_product"
    L1 = "l1"

    @classmethod
    def parse(cls, value: Distance | str) -> Distance:
        """``value`` as a Distance, or an error that lists the choices."""
        return choice(cls, value, "distance")

    @property
    def operator(self) -> str:
        """The pgvector operator, e.g. ``<=>`` for cosine distance."""
        return _OPERATORS[self]

    def opclass(self, vector_type: str) -> str:
        """The index operator class for a column of ``vector_type`` (``vector`` or ``halfvec``)."""
        return f"{vector_type}_{_OPCLASS_SUFFIX[self]}_ops"

    def score(self, distance: float) -> float:
        """Turn what the operator returned into a relevance score, higher is closer.

        Cosine: ``1 - d/2``, always in [0, 1]. Inner product: ``(1 + <a,b>) / 2``, in [0, 1]
        for unit-length vectors (pgvector's ``<#>`` returns the *negative* inner product, so the
        sign is undone here). L2 and L1: ``1 / (1 + d)``, in (0, 1].
        """
        if self is Distance.COSINE:
            return 1.0 - distance / 2.0
        if self is Distance.INNER_PRODUCT:
            return (1.0 - distance) / 2.0
        return 1.0 / (1.0 + distance)

    def max_distance(self, score: float) -> float:
        """The largest operator result whose :meth:`score` is still at least ``score``."""
        if self is Distance.COSINE:
            return 2.0 * (1.0 - score)
        if self is Distance.INNER_PRODUCT:
            return 1.0 - 2.0 * score
        if score <= 0.0:
            return float("inf")
        return 1.0 / score - 1.0


_OPERATORS = {
    Distance.COSINE: "<=>",
    Distance.L2: "<->",
    Distance.INNER_PRODUCT: "<#>",
    Distance.L1: "<+>",
}
_OPCLASS_SUFFIX = {
    Distance.COSINE: "cosine",
    Distance.L2: "l2",
    Distance.INNER_PRODUCT: "ip",
    Distance.L1: "l1",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Chunk:
    """One piece of a document, ready to be written.

    ``entity_id`` names the document or record the chunk came from; it defaults to ``chunk_id``.
    ``adapter_data`` is for framework adapters (JSON they need to rebuild their own objects);
    it is stored apart from ``metadata`` and never filtered on.
    """

    chunk_id: str
    content: str
    embedding: Sequence[float]
    entity_id: str | None = None
    chunk_index: int = 0
    total_chunks: int = 1
    metadata: Mapping[str, Any] = field(default_factory=dict)
    adapter_data: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredChunk:
    """A chunk as the database holds it.

    ``embedding`` is ``None`` unless it was asked for (``with_embeddings=True``): sending
    vectors back is the most expensive part of a read.
    """

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
    adapter_data: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ScoredChunk:
    """A search hit: the chunk, what the distance operator returned, and a relevance score.

    For vector search ``score`` is :meth:`Distance.score` of ``distance``; for hybrid search it
    is the fused score and ``distance`` is the vector distance (``None`` when only the text
    search found the chunk).
    """

    chunk: StoredChunk
    score: float
    distance: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class HnswIndex:
    """An HNSW index: better speed/recall than IVFFlat, slower to build. pgvector's defaults."""

    m: int = 16
    ef_construction: int = 64

    def __post_init__(self) -> None:
        if not 2 <= self.m <= 100:
            raise InvalidInputError(f"expected 2 <= m <= 100, got m={self.m}")
        if not 4 <= self.ef_construction <= 1000 or self.ef_construction < 2 * self.m:
            raise InvalidInputError(
                f"expected 2*m <= ef_construction <= 1000, got ef_construction="
                f"{self.ef_construction} with m={self.m}"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class IvfflatIndex:
    """An IVFFlat index: quick to build; build it after loading data. ``lists`` ~ rows / 1000."""

    lists: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.lists <= 32768:
            raise InvalidInputError(f"expected 1 <= lists <= 32768, got lists={self.lists}")


IterativeScan = Literal["off", "relaxed_order", "strict_order"]


# pgvector's default (40) finds about 0.83 of the true top 10 on a clustered 100k x 384 corpus;
# 150 finds 0.97 for about the same latency (docs/benchmarks.md). ef_search also caps how many
# rows an HNSW scan returns, so a search never uses less than k + offset.
DEFAULT_EF_SEARCH = 150
MAX_EF_SEARCH = 1_000  # pgvector's limit


def ef_search_for(tuning_ef: int | None, wanted: int) -> int:
    """The ``hnsw.ef_search`` a search of ``wanted`` rows runs with."""
    if tuning_ef is not None:
        return tuning_ef
    return min(max(DEFAULT_EF_SEARCH, wanted), MAX_EF_SEARCH)


def iterative_for(tuning: SearchTuning, *, filtered: bool) -> str | None:
    """The HNSW iterative scan a query runs with: filtered ANN queries scan iteratively (in
    strict order) unless ``tuning`` says otherwise, so that they still return ``k`` rows."""
    return tuning.iterative_scan or ("strict_order" if filtered else None)


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchTuning:
    """Per-query index settings, applied with ``SET LOCAL`` so they never outlive the query.

    (The plain search, no filter, sets ``ef_search`` for the connection's session instead, to
    stay one round trip; every search sets the value it needs.)

    ``ef_search`` ``None`` means the store's default, ``max(150, k + offset)`` (pgvector's own
    default, 40, gives up too much recall); the other ``None`` values leave the server's
    setting alone. ``exact``: ``True`` always scans exactly,
    ``False`` always uses the ANN index, ``None`` (default) decides per query: a filter the
    planner expects to match at most ``exact_below`` rows is searched exactly (its rows found
    through the btree/GIN indexes), anything broader through the ANN index with an iterative
    scan so that it still returns ``k`` rows.
    """

    ef_search: int | None = None
    probes: int | None = None
    iterative_scan: IterativeScan | None = None
    max_scan_tuples: int | None = None
    exact: bool | None = None
    exact_below: int = 10_000

    def __post_init__(self) -> None:
        for name in ("ef_search", "probes", "max_scan_tuples"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise InvalidInputError(f"expected {name} to be a positive integer, got {value!r}")
        if self.ef_search is not None and self.ef_search > MAX_EF_SEARCH:
            raise InvalidInputError(f"expected ef_search <= {MAX_EF_SEARCH}, got {self.ef_search}")
        if self.iterative_scan not in (None, "off", "relaxed_order", "strict_order"):
            raise InvalidInputError(
                "expected iterative_scan to be 'off', 'relaxed_order' or 'strict_order', "
                f"got {self.iterative_scan!r}"
            )


class Fusion(str, enum.Enum):
    """How the two rankings are combined.

    ``RELATIVE_SCORE`` (default) rescales each side's scores to [0, 1] over its own candidates
    (min-max) and adds them, weighted: on our evaluation it beat reciprocal-rank fusion, which
    ignores how far apart the scores are. ``RRF`` sums ``weight / (rrf_k + rank)``.
    """

    RELATIVE_SCORE = "relative_score"
    RRF = "rrf"


class TextMode(str, enum.Enum):
    """How the query text becomes a ``tsquery``."""

    ANY = "any"  # any of the words, ranked by how well they match: the right default for questions
    WEBSEARCH = (
        "websearch"  # websearch_to_tsquery as written: all words, "phrases", or, -exclusions
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class HybridOptions:
    """Knobs of :meth:`ChunkStore.hybrid_search`; the defaults are the ones we measured best.

    ``vector_weight`` is the share of the vector side (``alpha``): 1.0 is vector-only, 0.0 is
    text-only. ``vector_k`` and ``text_k`` are how many candidates each side contributes
    (default: ``max(4 * k, 40)``; :meth:`legs`). The vector leg's HNSW ``ef_search`` follows
    ``vector_k`` (``max(150, vector_k)``, or ``SearchTuning.ef_search``) and scans iteratively
    under a filter. ``text_candidates`` is how many rows a BM25 keyword leg ranks (default:
    ``max(800, 10 * text_k)``).
    """

    fusion: Fusion = Fusion.RELATIVE_SCORE
    vector_weight: float = 0.5
    rrf_k: int = 60
    vector_k: int | None = None
    text_k: int | None = None
    text_mode: TextMode = TextMode.ANY
    text_candidates: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.vector_weight <= 1.0:
            raise InvalidInputError(f"expected 0 <= vector_weight <= 1, got {self.vector_weight}")
        if self.rrf_k < 1:
            raise InvalidInputError(f"expected rrf_k >= 1, got {self.rrf_k}")
        for name in ("vector_k", "text_k", "text_candidates"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInputError(f"expected {name} >= 1, got {value}")
        object.__setattr__(self, "fusion", choice(Fusion, self.fusion, "fusion"))
        object.__setattr__(self, "text_mode", choice(TextMode, self.text_mode, "text_mode"))

    def legs(self, k: int) -> tuple[int, int]:
        """How many candidates the vector and the keyword leg bring for ``k`` results."""
        return self.vector_k or max(4 * k, 40), self.text_k or max(4 * k, 40)

    def candidates(self, k: int) -> int:
        """How many rows a BM25 keyword leg ranks for ``k`` results."""
        return self.text_candidates or max(800, 10 * self.legs(k)[1])

    def sizes(
        self, k: int, *, tuning: SearchTuning | None = None, filtered: bool = False
    ) -> HybridSizes:
        """Every size ``hybrid_search(k=k, ...)`` runs with, without running it.

        >>> HybridOptions().sizes(10, filtered=True).iterative_scan
        'strict_order'
        """
        tuning = tuning or SearchTuning()
        vector_k, text_k = self.legs(k)
        return HybridSizes(
            vector_k=vector_k,
            text_k=text_k,
            text_candidates=self.candidates(k),
            ef_search=ef_search_for(tuning.ef_search, vector_k),
            iterative_scan=iterative_for(tuning, filtered=filtered),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class HybridSizes:
    """What :meth:`HybridOptions.sizes` reports: candidates per leg, the rows a BM25 leg
    ranks, and the vector leg's HNSW ``ef_search`` and iterative scan (``None``: off)."""

    vector_k: int
    text_k: int
    text_candidates: int
    ef_search: int
    iterative_scan: str | None


E = TypeVar("E", bound=enum.Enum)


def choice(kind: type[E], value: object, name: str) -> E:
    """``value`` as a member of ``kind``, or an error that lists the choices."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(member.value) for member in kind)
        raise InvalidInputError(f"expected {name} to be one of {choices}, got {value!r}") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class CollectionSummary:
    """One line of :meth:`ChunkStore.list_collections`: a collection, its counts and settings.

    ``embedder`` names the model that wrote its vectors (recorded by the pipeline and the CLI
    at the first ingest), ``None`` when none was recorded.
    """

    name: str
    schema: str
    chunks: int
    entities: int
    dim: int
    distance: str
    keyword: str
    embedder: str | None
    ann_index: Mapping[str, Any] | None


@dataclass(frozen=True, kw_only=True, slots=True)
class CollectionInfo:
    """What :meth:`ChunkStore.describe` reports: counts, settings, indexes, versions.

    ``search_plan`` lists the plan nodes of a plain vector search (``EXPLAIN``), so
    ``uses_ann_index`` tells whether searches are served by the ANN index or scan exactly.
    """

    name: str
    schema: str
    chunks: int
    entities: int
    dim: int
    distance: str
    text_config: str
    keyword: str
    schema_version: int
    ann_index: Mapping[str, Any] | None
    embedder: str | None
    indexes: tuple[str, ...]
    server_version: str
    pgvector_version: str | None
    search_plan: tuple[str, ...]
    uses_ann_index: bool
