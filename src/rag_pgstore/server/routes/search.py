"""``/v1/collections/{name}/search/...``: vector, text, hybrid and MMR search.

Every kind takes the store's filter language, ``k`` and ``min_score``; vector, text and
hybrid also page with ``offset``. A query given as ``text`` where a vector is needed is
embedded with the collection's recorded model (the last 1,024 query texts are kept, so a
repeated question costs no model call).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

from fastapi import APIRouter, Request

from rag_pgstore.server import schemas as s
from rag_pgstore.server.auth import can_read
from rag_pgstore.server.routes.common import check_k, collections, metrics, settings, tenant_of
from rag_pgstore.server.state import Opened
from rag_pgstore.types import Fusion, HybridOptions, ScoredChunk, SearchTuning, TextMode

router = APIRouter(prefix="/v1/collections/{name}/search", tags=["search"])


@router.post("/vector", dependencies=[can_read])
async def vector_search(name: str, body: s.VectorSearch, request: Request) -> s.Results:
    """The ``k`` chunks nearest to ``vector`` (or to ``text``, embedded)."""
    check_k(settings(request).limits, body.k, body.offset)
    opened = await collections(request).get_for(name, tenant_of(request))
    vector, embedded = await _vector(request, opened, body.vector, body.text)
    tuning = SearchTuning(ef_search=body.ef_search) if body.ef_search else None
    hits = await _timed(
        request,
        "vector",
        opened.store.asearch(
            vector,
            k=body.k,
            filter=body.filter,
            offset=body.offset,
            min_score=body.min_score,
            tuning=tuning,
        ),
    )
    return _results("vector", hits, embedded)


@router.post("/text", dependencies=[can_read])
async def text_search(name: str, body: s.TextSearch, request: Request) -> s.Results:
    """Keyword search, ranked by the collection's keyword mode (BM25 by default)."""
    check_k(settings(request).limits, body.k, body.offset)
    opened = await collections(request).get_for(name, tenant_of(request))
    hits = await _timed(
        request,
        "text",
        opened.store.atext_search(
            body.text, k=body.k + body.offset, filter=body.filter, mode=TextMode(body.mode)
        ),
    )
    return _results("text", _page(hits, body.offset, body.min_score), False)


@router.post("/hybrid", dependencies=[can_read])
async def hybrid_search(name: str, body: s.HybridSearch, request: Request) -> s.Results:
    """Keywords and meaning, fused; ``sizes`` reports the candidates and index settings
    each leg ran with."""
    limits = settings(request).limits
    check_k(limits, body.k, body.offset)
    for leg, size in (("vector_k", body.vector_k), ("text_k", body.text_k)):
        if size is not None:
            check_k(limits, size, name=leg)
    opened = await collections(request).get_for(name, tenant_of(request))
    vector, embedded = await _vector(request, opened, body.vector, body.text)
    options = HybridOptions(
        fusion=Fusion(body.fusion),
        vector_weight=body.vector_weight,
        vector_k=body.vector_k,
        text_k=body.text_k,
        text_mode=TextMode(body.text_mode),
    )
    wanted = body.k + body.offset
    hits = await _timed(
        request,
        "hybrid",
        opened.store.ahybrid_search(
            vector, body.text, k=wanted, filter=body.filter, options=options
        ),
    )
    sizes = options.sizes(wanted, filtered=bool(body.filter))
    return s.Results(
        kind="hybrid",
        results=[s.Hit.of(h) for h in _page(hits, body.offset, body.min_score)],
        embedded_query=embedded,
        sizes=s.Sizes(
            vector_k=sizes.vector_k,
            text_k=sizes.text_k,
            text_candidates=sizes.text_candidates,
            ef_search=sizes.ef_search,
            iterative_scan=sizes.iterative_scan,
        ),
    )


@router.post("/mmr", dependencies=[can_read])
async def mmr_search(name: str, body: s.MmrSearch, request: Request) -> s.Results:
    """``k`` relevant and diverse chunks, picked from the ``fetch_k`` nearest."""
    limits = settings(request).limits
    check_k(limits, body.k)
    check_k(limits, body.fetch_k, name="fetch_k")
    opened = await collections(request).get_for(name, tenant_of(request))
    vector, embedded = await _vector(request, opened, body.vector, body.text)
    hits = await _timed(
        request,
        "mmr",
        opened.store.ammr_search(
            vector,
            k=body.k,
            fetch_k=body.fetch_k,
            lambda_mult=body.lambda_mult,
            filter=body.filter,
        ),
    )
    return _results("mmr", _page(hits, 0, body.min_score), embedded)


async def _vector(
    request: Request, opened: Opened, vector: list[float] | None, text: str | None
) -> tuple[list[float], bool]:
    if vector is not None:
        return vector, False
    assert text is not None
    return await collections(request).query_vector(opened, text), True


async def _timed(
    request: Request, kind: str, search: Awaitable[list[ScoredChunk]]
) -> list[ScoredChunk]:
    start = time.perf_counter()
    hits = await search
    metrics(request).search_seconds.labels(kind).observe(time.perf_counter() - start)
    return hits


def _page(hits: list[ScoredChunk], offset: int, min_score: float | None) -> list[ScoredChunk]:
    hits = hits[offset:]
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    return hits


def _results(kind: str, hits: list[ScoredChunk], embedded: bool) -> s.Results:
    return s.Results(kind=kind, results=[s.Hit.of(h) for h in hits], embedded_query=embedded)
