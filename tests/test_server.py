"""The HTTP API as a client meets it: a real uvicorn on localhost, the real test database,
httpx. Every endpoint, every error code, the scopes, the limits, and results that equal what
the store returns in-process."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")
pytest.importorskip("tiktoken", reason="the server ingests documents with tiktoken")
pytestmark = pytest.mark.extras

import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore import Chunk, ChunkStore
from rag_pgstore.pipeline import hash_embedding
from rag_pgstore.server import Limits
from rag_pgstore.testing import TestDatabase
from tests.conftest import waiting_on_a_lock
from tests.serving import ACME_KEY, GLOBEX_KEY, READ_KEY, WRITE_KEY, serving, settings_for

DIM = 32
WRITE = {"Authorization": f"Bearer {WRITE_KEY}"}
READ = {"X-API-Key": READ_KEY}
LIMITS = Limits(max_body_bytes=256 * 1024, max_batch=50, max_k=100, max_offset=200)


class Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def logs() -> Iterator[Logs]:
    handler = Logs()
    logger = logging.getLogger("rag_pgstore")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def base(db: TestDatabase, logs: Logs) -> Iterator[str]:
    with serving(settings_for(db, limits=LIMITS)) as url:
        yield url


@pytest.fixture
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, headers=WRITE, timeout=60) as c:
        yield c


@pytest.fixture
def name(client: httpx.Client, collection_name: str) -> Iterator[str]:
    r = client.post("/v1/collections", json={"name": collection_name})
    assert r.status_code == 201, r.text
    yield collection_name
    client.delete(f"/v1/collections/{collection_name}")


def chunk(i: int, text: str, **fields: Any) -> dict[str, Any]:
    return {"chunk_id": f"c{i}", "content": text, "entity_id": f"doc{i % 3}", **fields}


TEXTS = [
    "PostgreSQL stores vectors with the pgvector extension",
    "Cats sleep for most of the day in warm places",
    "An HNSW index makes nearest neighbour search fast",
    "Bread rises because yeast makes carbon dioxide",
    "Hybrid search fuses keyword and vector rankings",
    "The ocean covers most of the surface of the earth",
]


def fill(client: httpx.Client, name: str) -> None:
    chunks = [chunk(i, t, metadata={"n": i, "even": i % 2 == 0}) for i, t in enumerate(TEXTS)]
    r = client.post(f"/v1/collections/{name}/chunks", json={"chunks": chunks})
    assert r.status_code == 200, r.text
    assert r.json() == {"written": len(TEXTS), "embedded": len(TEXTS)}


def error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code and body["status"] == status
    assert "Traceback" not in r.text
    return str(body["message"])


def oracle(engines: tuple[Engine, AsyncEngine], name: str) -> ChunkStore:
    return ChunkStore.open(engines[0], collection=name)


# -- health, docs ----------------------------------------------------------------------------


def test_health_ready_and_offline_docs(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/collections",
        "/v1/collections/{name}/chunks",
        "/v1/collections/{name}/documents",
        "/v1/collections/{name}/search/hybrid",
        "/v1/collections/{name}/chunks/{chunk_id}/similar",
        "/metrics",
    ):
        assert path in spec["paths"], path
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower()  # interactive docs work offline
    assert client.get("/_docs/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'data-collection="docs"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/page/search.js").status_code == 200
    assert "http" not in client.get("/page/search.js").text.replace("httpx", "")  # no CDN


def test_unknown_routes_and_methods_answer_in_the_error_shape(client: httpx.Client) -> None:
    error(client.get("/v1/nothing"), 404, "not_found")
    error(client.put("/v1/collections"), 405, "method_not_allowed")


# -- keys and scopes ---------------------------------------------------------------------------


def test_keys_and_scopes(base: str, client: httpx.Client, name: str, logs: Logs) -> None:
    fill(client, name)
    search = f"/v1/collections/{name}/search/text"
    write = f"/v1/collections/{name}/chunks"
    body = {"chunks": [chunk(9, "new")]}
    with httpx.Client(base_url=base) as anonymous:
        r = anonymous.post(search, json={"text": "vectors"})
        error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        error(anonymous.get("/metrics"), 401, "unauthorized")
        error(anonymous.get("/v1/collections"), 401, "unauthorized")
        wrong = {"Authorization": "Bearer " + "x" * 30}
        message = error(
            anonymous.post(search, json={"text": "v"}, headers=wrong), 401, "unauthorized"
        )
        assert "x" * 30 not in message
        assert anonymous.get("/healthz").status_code == 200  # probes need no key
        assert anonymous.get("/").status_code == 200
    with httpx.Client(base_url=base, headers=READ) as reader:
        assert reader.post(search, json={"text": "vectors"}).status_code == 200
        assert reader.get(f"/v1/collections/{name}").status_code == 200
        assert reader.get("/metrics").status_code == 200
        error(reader.post(write, json=body), 403, "forbidden")
        error(reader.delete(f"/v1/collections/{name}"), 403, "forbidden")
        error(
            reader.post(f"/v1/collections/{name}/chunks/delete", json={"ids": ["c1"]}),
            403,
            "forbidden",
        )
        error(
            reader.post(f"/v1/collections/{name}/documents", json={"documents": []}),
            403,
            "forbidden",
        )
        error(reader.post("/v1/collections", json={"name": "x_scope"}), 403, "forbidden")
    assert client.post(f"/v1/collections/{name}/count", json={}).json() == {"count": len(TEXTS)}
    assert client.post(write, json=body).status_code == 200
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in logs.records)
    assert READ_KEY not in logged and WRITE_KEY not in logged and "x" * 30 not in logged


def test_keys_bound_to_a_tenant_reach_that_tenant_only(
    base: str, client: httpx.Client, collection_name: str, db: TestDatabase
) -> None:
    name = f"{collection_name}_tn"
    r = client.post("/v1/collections", json={"name": name, "tenancy": True})
    assert r.status_code == 201, r.text
    acme = httpx.Client(base_url=base, headers={"X-API-Key": ACME_KEY}, timeout=60)
    globex = httpx.Client(base_url=base, headers={"X-API-Key": GLOBEX_KEY}, timeout=60)
    try:
        chunks = f"/v1/collections/{name}/chunks"
        r = acme.post(chunks, json={"chunks": [chunk(1, "acme's pgvector notes")]})
        assert r.status_code == 200, r.text
        # The same id in another tenant, written in-process (globex's key only reads).
        store = ChunkStore.from_url(db.url, collection=name, tenant="globex")
        try:
            text = "globex's own pgvector notes"
            store.upsert([Chunk(chunk_id="c1", content=text, embedding=hash_embedding(text, DIM))])
        finally:
            store.close()
        found = globex.post(f"/v1/collections/{name}/search/text", json={"text": "pgvector"})
        assert [h["content"] for h in found.json()["results"]] == ["globex's own pgvector notes"]
        assert acme.get(f"{chunks}/c1").json()["content"] == "acme's pgvector notes"
        assert acme.post(f"/v1/collections/{name}/count", json={}).json() == {"count": 1}
        # Keys without a tenant reach no rows of it; a tenant's key no whole collection.
        error(client.post(f"/v1/collections/{name}/count", json={}), 403, "forbidden")
        error(acme.delete(f"/v1/collections/{name}"), 403, "forbidden")
        error(acme.get("/v1/collections"), 403, "forbidden")
        error(acme.get(f"/v1/collections/{name}"), 403, "forbidden")
        error(globex.post(chunks, json={"chunks": [chunk(2, "x")]}), 403, "forbidden")
        assert acme.delete(f"{chunks}/c1").status_code == 200
        assert globex.get(f"{chunks}/c1").status_code == 200  # globex's c1 is still there
    finally:
        acme.close()
        globex.close()
        client.delete(f"/v1/collections/{name}")


# -- collections -------------------------------------------------------------------------------


def test_collection_lifecycle(client: httpx.Client, collection_name: str) -> None:
    name = collection_name
    created = client.post("/v1/collections", json={"name": name, "distance": "l2"})
    assert created.status_code == 201, created.text
    info = created.json()
    assert (info["dim"], info["distance"], info["embedder"]) == (DIM, "l2", "hash:32")
    assert info["keyword"] == "bm25" and info["schema_version"] >= 1
    again = client.post("/v1/collections", json={"name": name, "distance": "l2"})
    assert again.status_code == 200
    error(client.post("/v1/collections", json={"name": name, "dim": 7}), 409, "schema_conflict")
    listed = {c["name"]: c for c in client.get("/v1/collections").json()["collections"]}
    assert listed[name]["chunks"] == 0 and listed[name]["schema"] == "public"
    described = client.get(f"/v1/collections/{name}").json()
    assert f"{name}_pkey" in described["indexes"]
    assert client.delete(f"/v1/collections/{name}").status_code == 204
    error(client.get(f"/v1/collections/{name}"), 404, "collection_not_found")
    error(client.delete(f"/v1/collections/{name}"), 404, "collection_not_found")
    error(client.post("/v1/collections", json={"name": "Bad-Name"}), 422, "bad_collection_name")
    error(client.get("/v1/collections/Bad-Name"), 422, "bad_collection_name")
    error(
        client.post("/v1/collections", json={"name": "x", "distance": "dot"}),
        422,
        "invalid_request",
    )


# -- chunks ------------------------------------------------------------------------------------


def test_upsert_get_count_delete(client: httpx.Client, name: str) -> None:
    fill(client, name)
    given = [1.0] + [0.0] * (DIM - 1)
    odd = {"chunk_id": "doc.md#0/a b", "content": "an id with / # and a space", "embedding": given}
    r = client.post(f"/v1/collections/{name}/chunks", json={"chunks": [odd]})
    assert r.json() == {"written": 1, "embedded": 0}
    got = client.get(
        f"/v1/collections/{name}/chunks/doc.md%230%2Fa%20b", params={"with_embedding": True}
    )
    assert got.status_code == 200, got.text
    assert got.json()["embedding"] == pytest.approx(given)
    assert got.json()["entity_id"] == "doc.md#0/a b"
    many = client.post(f"/v1/collections/{name}/chunks/get", json={"ids": ["c0", "c2", "nope"]})
    assert [c["chunk_id"] for c in many.json()["chunks"]] == ["c0", "c2"]
    embedded = client.post(
        f"/v1/collections/{name}/chunks/get", json={"ids": ["c0"], "with_embeddings": True}
    )
    assert embedded.json()["chunks"][0]["embedding"] == pytest.approx(hash_embedding(TEXTS[0], DIM))
    error(client.get(f"/v1/collections/{name}/chunks/nope"), 404, "chunk_not_found")

    def count(f: dict[str, Any] | None = None) -> int:
        return int(client.post(f"/v1/collections/{name}/count", json={"filter": f}).json()["count"])

    assert count() == len(TEXTS) + 1
    assert count({"even": True}) == 3
    assert count({"n": {"$gte": 4}}) == 2
    delete = f"/v1/collections/{name}/chunks/delete"
    assert client.post(delete, json={"ids": ["c0", "nope"]}).json() == {"deleted": 1}
    assert client.post(delete, json={"entity_ids": ["doc1"]}).json() == {"deleted": 2}  # c1, c4
    assert client.post(delete, json={"filter": {"n": {"$in": [2, 3]}}}).json() == {"deleted": 2}
    assert client.delete(f"/v1/collections/{name}/chunks/c5").json() == {"deleted": 1}
    assert count() == 1
    error(client.post(delete, json={}), 422, "invalid_request")
    error(client.post(delete, json={"ids": ["a"], "filter": {"n": 1}}), 422, "invalid_request")
    message = error(client.post(delete, json={"filter": {}}), 422, "invalid_input")
    assert "non-empty filter" in message
    assert count() == 1  # nothing failed open


def test_upsert_replaces_and_records_the_model(
    client: httpx.Client, name: str, engines: tuple[Engine, AsyncEngine]
) -> None:
    fill(client, name)
    r = client.post(f"/v1/collections/{name}/chunks", json={"chunks": [chunk(0, "changed text")]})
    assert r.json()["written"] == 1
    stored = oracle(engines, name).get(["c0"], with_embeddings=True)[0]
    assert stored.content == "changed text"
    assert stored.embedding == pytest.approx(hash_embedding("changed text", DIM))
    assert client.get(f"/v1/collections/{name}").json()["embedder"] == "hash:32"


# -- bad input loses nothing -------------------------------------------------------------------


def test_bad_batches_write_nothing(client: httpx.Client, name: str) -> None:
    fill(client, name)
    url = f"/v1/collections/{name}/chunks"

    def count() -> int:
        return int(client.post(f"/v1/collections/{name}/count", json={}).json()["count"])

    good = [chunk(10 + i, f"text {i}") for i in range(5)]
    bad_dim = {**chunk(99, "x"), "embedding": [0.1, 0.2]}
    message = error(client.post(url, json={"chunks": [*good, bad_dim]}), 422, "dimension_mismatch")
    assert "expected 32 dimensions, got 2" in message
    nan = ", ".join(["NaN"] * DIM)  # JSON has no NaN, but Python's parser takes it
    body = f'{{"chunks": [{{"chunk_id": "n", "content": "x", "embedding": [{nan}]}}]}}'
    r = client.post(url, content=body, headers={"content-type": "application/json"})
    assert "finite" in error(r, 422, "invalid_input")
    error(
        client.post(url, json={"chunks": [*good, {"chunk_id": "", "content": "x"}]}),
        422,
        "invalid_request",
    )
    error(client.post(url, json={"chunks": [{**good[0], "colour": "red"}]}), 422, "invalid_request")
    error(
        client.post(url, content=b'{"chunks": [', headers={"content-type": "application/json"}),
        422,
        "invalid_request",
    )
    over = [chunk(100 + i, "x") for i in range(LIMITS.max_batch + 1)]
    assert "at most 50 chunks" in error(
        client.post(url, json={"chunks": over}), 413, "batch_too_large"
    )
    huge = [chunk(200, "y" * (LIMITS.max_body_bytes + 1))]
    error(client.post(url, json={"chunks": huge}), 413, "body_too_large")
    nul = [chunk(201, "a\x00b")]
    error(client.post(url, json={"chunks": nul}), 422, "invalid_input")
    assert count() == len(TEXTS)


def test_a_chunked_body_over_the_limit_is_refused(base: str, name: str) -> None:
    def parts() -> Iterator[bytes]:
        yield b'{"chunks": [{"chunk_id": "big", "content": "'
        for _ in range(64):
            yield b"z" * 8192
        yield b'"}]}'

    with httpx.Client(base_url=base, headers={**WRITE, "content-type": "application/json"}) as c:
        r = c.post(f"/v1/collections/{name}/chunks", content=parts())
        error(r, 413, "body_too_large")
        assert c.post(f"/v1/collections/{name}/count", json={}).json()["count"] == 0


def test_search_errors(client: httpx.Client, name: str) -> None:
    fill(client, name)
    url = f"/v1/collections/{name}/search"
    error(
        client.post("/v1/collections/nope_missing/search/text", json={"text": "x"}),
        404,
        "collection_not_found",
    )
    error(client.post(f"{url}/vector", json={"vector": [1.0, 2.0]}), 422, "dimension_mismatch")
    error(client.post(f"{url}/vector", json={}), 422, "invalid_request")
    error(
        client.post(f"{url}/vector", json={"text": "a", "vector": [0.0] * DIM}),
        422,
        "invalid_request",
    )
    msg = error(
        client.post(f"{url}/text", json={"text": "x", "filter": {"n": {"$near": 1}}}),
        400,
        "bad_filter",
    )
    assert "$near" in msg
    error(client.post(f"{url}/text", json={"text": "x", "fitler": {}}), 422, "invalid_request")
    error(client.post(f"{url}/text", json={"text": "x", "k": 101}), 422, "k_too_large")
    error(client.post(f"{url}/text", json={"text": "x", "k": 0}), 422, "invalid_request")
    error(client.post(f"{url}/vector", json={"text": "x", "offset": 201}), 422, "offset_too_large")
    error(client.post(f"{url}/mmr", json={"text": "x", "fetch_k": 500}), 422, "k_too_large")
    error(client.get(f"/v1/collections/{name}/chunks/nope/similar"), 404, "chunk_not_found")


# -- search equals the store in-process --------------------------------------------------------


def test_every_search_kind_equals_the_store(
    client: httpx.Client, name: str, engines: tuple[Engine, AsyncEngine]
) -> None:
    fill(client, name)
    store = oracle(engines, name)
    url = f"/v1/collections/{name}/search"
    query = "vector search in postgres"
    qv = hash_embedding(query, DIM)

    def ids(r: httpx.Response) -> list[str]:
        assert r.status_code == 200, r.text
        return [h["chunk_id"] for h in r.json()["results"]]

    def same(hits: list[Any]) -> list[str]:
        return [h.chunk.chunk_id for h in hits]

    by_text = client.post(f"{url}/vector", json={"text": query, "k": 4})
    assert by_text.json()["embedded_query"] is True
    assert ids(by_text) == same(store.search(qv, k=4))
    by_vector = client.post(f"{url}/vector", json={"vector": qv, "k": 4, "filter": {"even": True}})
    assert by_vector.json()["embedded_query"] is False
    assert ids(by_vector) == same(store.search(qv, k=4, filter={"even": True}))
    scores = [h["score"] for h in by_text.json()["results"]]
    assert scores == pytest.approx([h.score for h in store.search(qv, k=4)])
    page = client.post(f"{url}/vector", json={"text": query, "k": 2, "offset": 2})
    assert ids(page) == same(store.search(qv, k=4))[2:]
    cut = client.post(f"{url}/vector", json={"text": query, "k": 6, "min_score": scores[1]})
    assert ids(cut) == same(store.search(qv, k=6, min_score=scores[1]))

    assert ids(client.post(f"{url}/text", json={"text": "search index", "k": 3})) == same(
        store.text_search("search index", k=3)
    )
    assert (
        ids(client.post(f"{url}/text", json={"text": "search", "k": 1, "offset": 1}))
        == same(store.text_search("search", k=2))[1:]
    )
    assert ids(
        client.post(f"{url}/text", json={"text": "most", "filter": {"n": {"$lt": 3}}})
    ) == same(store.text_search("most", filter={"n": {"$lt": 3}}))

    hybrid = client.post(f"{url}/hybrid", json={"text": query, "k": 3, "filter": {"even": True}})
    assert ids(hybrid) == same(store.hybrid_search(qv, query, k=3, filter={"even": True}))
    assert hybrid.json()["sizes"] == {
        "vector_k": 40,
        "text_k": 40,
        "text_candidates": 800,
        "ef_search": 150,
        "iterative_scan": "strict_order",
    }
    rrf = client.post(
        f"{url}/hybrid",
        json={"text": query, "vector": qv, "k": 3, "fusion": "rrf", "vector_weight": 0.3},
    )
    from rag_pgstore import Fusion, HybridOptions

    assert ids(rrf) == same(
        store.hybrid_search(
            qv, query, k=3, options=HybridOptions(fusion=Fusion.RRF, vector_weight=0.3)
        )
    )
    mmr = client.post(f"{url}/mmr", json={"text": query, "k": 3, "fetch_k": 6, "lambda_mult": 0.2})
    assert ids(mmr) == same(store.mmr_search(qv, k=3, fetch_k=6, lambda_mult=0.2))
    similar = client.get(f"/v1/collections/{name}/chunks/c2/similar", params={"k": 3})
    assert ids(similar) == same(store.search_like("c2", k=3))
    assert "c2" not in ids(similar)


def test_text_queries_need_a_recorded_model(
    client: httpx.Client, collection_name: str, engines: tuple[Engine, AsyncEngine]
) -> None:
    # A collection written from Python without recording its model: the server cannot know
    # which model would make comparable query vectors.
    store = ChunkStore(engines[0], collection=collection_name, dim=DIM)
    store.setup()
    from rag_pgstore import Chunk

    store.upsert([Chunk(chunk_id="a", content="alpha", embedding=[0.5] * DIM)])
    try:
        url = f"/v1/collections/{collection_name}/search"
        error(client.post(f"{url}/vector", json={"text": "alpha"}), 409, "no_recorded_embedder")
        assert client.post(f"{url}/vector", json={"vector": [0.5] * DIM}).status_code == 200
        assert client.post(f"{url}/text", json={"text": "alpha"}).status_code == 200
    finally:
        store.drop()


# -- documents ---------------------------------------------------------------------------------


def test_documents_are_ingested_incrementally(
    client: httpx.Client, name: str, engines: tuple[Engine, AsyncEngine]
) -> None:
    url = f"/v1/collections/{name}/documents"
    long_text = " ".join(f"Sentence {i} talks about databases and indexes." for i in range(60))
    docs = [
        {"id": "guide.md", "text": long_text, "metadata": {"kind": "guide"}},
        {"id": "note.md", "text": "A short note about cats.", "metadata": {"kind": "note"}},
    ]
    first = client.post(url, json={"documents": docs, "max_tokens": 64})
    assert first.status_code == 200, first.text
    report = first.json()
    assert report["documents"] == 2 and report["chunks_written"] >= 3
    store = oracle(engines, name)
    stored = store.get_where({"kind": "guide"})
    assert len(stored) == report["chunks_written"] - 1
    assert all(c.entity_id == "guide.md" for c in stored)
    again = client.post(url, json={"documents": docs, "max_tokens": 64}).json()
    assert again["unchanged"] == 2 and again["embedded"] == 0 and again["chunks_written"] == 0
    docs[1]["text"] = "A short note about dogs."
    third = client.post(url, json={"documents": docs, "max_tokens": 64}).json()
    assert third["unchanged"] == 1 and third["chunks_written"] == 1
    assert store.get(["note.md#0"])[0].content == "A short note about dogs."
    shorter = client.post(
        url, json={"documents": [{"id": "guide.md", "text": "Now short."}], "max_tokens": 64}
    ).json()
    assert shorter["chunks_deleted"] == len(stored) - 1
    assert [c.chunk_id for c in store.get_where({"kind": {"$exists": True}})] == ["note.md#0"]
    error(client.post(url, json={"documents": [{"id": "", "text": "x"}]}), 422, "invalid_request")
    over = [{"id": f"d{i}", "text": "x"} for i in range(LIMITS.max_batch + 1)]
    error(client.post(url, json={"documents": over}), 413, "batch_too_large")


# -- metrics and logs --------------------------------------------------------------------------


def test_metrics_count_routes_searches_writes_and_the_pool(
    client: httpx.Client, name: str, logs: Logs
) -> None:
    fill(client, name)
    client.post(f"/v1/collections/{name}/search/hybrid", json={"text": "cats"})
    client.post(f"/v1/collections/{name}/search/text", json={"text": "x", "k": 1000})
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    body = text.text
    route = "/v1/collections/{name}/search/hybrid"
    assert f'rag_pgstore_http_requests_total{{method="POST",route="{route}",status="200"}}' in body
    assert 'route="/v1/collections/{name}/search/text",status="422"' in body
    assert (
        f'rag_pgstore_http_request_duration_seconds_bucket{{le="+Inf",method="POST",route="{route}",status="200"}}'
        in body
    )
    assert 'rag_pgstore_search_duration_seconds_count{kind="hybrid"}' in body
    assert 'rag_pgstore_rows_written_total{operation="upsert"}' in body
    assert 'rag_pgstore_embedding_duration_seconds_count{model="hash:32"}' in body
    assert 'rag_pgstore_embedded_texts_total{model="hash:32"}' in body
    for gauge in ("size", "checked_out", "overflow", "checked_in"):
        assert f"rag_pgstore_pool_{gauge} " in body
    assert name not in body  # routes by template, not by the collection asked for
    access = [r for r in logs.records if r.name == "rag_pgstore.access"]
    hybrid = [r for r in access if r.__dict__.get("route") == route]
    assert hybrid and hybrid[-1].__dict__["status"] == 200
    assert hybrid[-1].__dict__["duration_ms"] > 0
    assert hybrid[-1].__dict__["path"] == f"/v1/collections/{name}/search/hybrid"


# -- concurrency -------------------------------------------------------------------------------


async def test_concurrent_writers_and_readers_all_succeed(base: str, name: str) -> None:
    async with httpx.AsyncClient(base_url=base, headers=WRITE, timeout=120) as c:

        async def write(w: int) -> int:
            # Every writer overlaps every other on half its ids.
            chunks = [chunk(i, f"writer {w} text {i}") for i in range(w * 10, w * 10 + 20)]
            r = await c.post(f"/v1/collections/{name}/chunks", json={"chunks": chunks})
            assert r.status_code == 200, r.text
            return int(r.json()["written"])

        async def read(i: int) -> None:
            r = await c.post(f"/v1/collections/{name}/search/hybrid", json={"text": f"text {i}"})
            assert r.status_code == 200, r.text

        await asyncio.gather(*(write(w) for w in range(12)), *(read(i) for i in range(24)))
        count = (await c.post(f"/v1/collections/{name}/count", json={})).json()["count"]
        assert count == 11 * 10 + 20  # ids 0..129, each once


# -- a read-only database role -----------------------------------------------------------------


def test_a_read_only_role_serves_searches_and_refuses_writes(
    db: TestDatabase, client: httpx.Client, name: str, engines: tuple[Engine, AsyncEngine]
) -> None:
    fill(client, name)
    role = f"reader_{name}"
    with engines[0].begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD 'reader-password'")  # test's name
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    reader = TestDatabase(db.url.set(username=role, password="reader-password"), "read-only role")
    try:
        settings = settings_for(reader, create_extension=False)
        with serving(settings) as base, httpx.Client(base_url=base, headers=WRITE) as c:
            url = f"/v1/collections/{name}"
            for kind, body in (
                ("vector", {"text": "pgvector"}),
                ("text", {"text": "pgvector"}),
                ("hybrid", {"text": "pgvector"}),
                ("mmr", {"text": "pgvector"}),
            ):
                r = c.post(f"{url}/search/{kind}", json=body)
                assert r.status_code == 200, r.text
                assert r.json()["results"]
            assert c.get(url).status_code == 200
            error(
                c.post(f"{url}/chunks", json={"chunks": [chunk(50, "no")]}),
                403,
                "database_permission_denied",
            )
            docs = {"documents": [{"id": "d", "text": "no"}]}
            error(c.post(f"{url}/documents", json=docs), 403, "database_permission_denied")
            error(
                c.post(f"{url}/chunks/delete", json={"ids": ["c0"]}),
                403,
                "database_permission_denied",
            )
            error(
                c.post("/v1/collections", json={"name": f"{name}_new"}),
                403,
                "database_permission_denied",
            )
            assert c.get("/readyz").status_code == 200
        assert client.post(f"{url}/count", json={}).json()["count"] == len(TEXTS)
    finally:
        with engines[0].begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")


# -- gates, bounds and the pool ----------------------------------------------------------------


def test_no_key_is_refused_before_the_body_is_read(base: str) -> None:
    with httpx.Client(base_url=base) as anonymous:
        r = anonymous.post(
            "/v1/collections/x/chunks",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert error(r, 401, "unauthorized").startswith("expected an API key")


def test_without_keys_only_this_machine_by_a_local_name(db: TestDatabase) -> None:
    with serving(settings_for(db, keys=())) as base, httpx.Client(base_url=base) as c:
        assert c.get("/v1/collections").status_code == 200  # no key needed
        assert c.get("/v1/collections", headers={"Host": "localhost:8080"}).status_code == 200
        assert c.get("/v1/collections", headers={"Host": "[::1]:8080"}).status_code == 200
        rebound = c.get("/v1/collections", headers={"Host": "attacker.example:8080"})
        assert "only requests from this machine" in error(rebound, 403, "local_only")
        error(c.get("/", headers={"Host": "attacker.example"}), 403, "local_only")


def test_unknown_methods_share_one_metric_label(client: httpx.Client) -> None:
    for method in ("FOO1", "BAR2"):
        client.request(method, "/healthz")
    body = client.get("/metrics").text
    assert 'method="other"' in body
    assert "FOO1" not in body and "BAR2" not in body


def test_hybrid_legs_are_bounded_too(client: httpx.Client, name: str) -> None:
    url = f"/v1/collections/{name}/search/hybrid"
    error(client.post(url, json={"text": "x", "vector_k": 101}), 422, "k_too_large")
    error(client.post(url, json={"text": "x", "text_k": 10**12}), 422, "k_too_large")
    error(client.post(url, json={"text": "x" * 10_001}), 422, "invalid_request")


def test_models_are_recorded_only_where_they_fit(
    client: httpx.Client, collection_name: str
) -> None:
    other = f"{collection_name}_d7"
    try:
        made = client.post("/v1/collections", json={"name": other, "dim": 7})
        assert made.status_code == 201 and made.json()["embedder"] is None  # hash:32 does not fit
        docs = {"documents": [{"id": "a", "text": "some text"}]}
        r = client.post(f"/v1/collections/{other}/chunks", json={"chunks": [chunk(1, "text")]})
        assert "expected 7 dimensions" in error(r, 422, "dimension_mismatch")
        r = client.post(f"/v1/collections/{other}/documents", json=docs)
        assert "making 32" in error(r, 422, "dimension_mismatch")
        assert client.get(f"/v1/collections/{other}").json()["embedder"] is None  # nothing recorded
        bad = {"name": f"{collection_name}_x", "dim": 32, "embedder": "hash:16"}
        error(client.post("/v1/collections", json=bad), 422, "dimension_mismatch")
    finally:
        client.delete(f"/v1/collections/{other}")


def test_an_exhausted_pool_is_a_503_not_a_hang(
    db: TestDatabase, collection_name: str, engines: tuple[Engine, AsyncEngine]
) -> None:
    settings = settings_for(db, pool_size=1, max_overflow=0, pool_timeout=0.5)
    with serving(settings) as base, httpx.Client(base_url=base, headers=WRITE, timeout=60) as c:
        assert c.post("/v1/collections", json={"name": collection_name}).status_code == 201
        answers: list[httpx.Response] = []
        with engines[0].connect() as lock:
            lock.exec_driver_sql(f'LOCK TABLE "{collection_name}" IN ACCESS EXCLUSIVE MODE')
            body = {"chunks": [chunk(1, "held")]}
            writer = threading.Thread(
                target=lambda: answers.append(
                    c.post(f"/v1/collections/{collection_name}/chunks", json=body)
                )
            )
            writer.start()
            while not waiting_on_a_lock(lock):
                pass
            busy = c.post(f"/v1/collections/{collection_name}/count", json={})
            assert error(busy, 503, "database_unavailable").startswith(
                "the database is unavailable"
            )
            assert busy.headers["retry-after"]
            lock.rollback()
            writer.join(30)
        assert answers[0].status_code == 200
        assert c.post(f"/v1/collections/{collection_name}/count", json={}).json() == {"count": 1}
        c.delete(f"/v1/collections/{collection_name}")


# -- the model's failures, and an outdated schema ----------------------------------------------


def test_model_errors_have_their_codes(
    db: TestDatabase, collection_name: str, engines: tuple[Engine, AsyncEngine]
) -> None:
    def flaky(texts: list[str]) -> list[list[float]]:
        if any("boom" in t for t in texts):
            raise RuntimeError("the model server said no (token sk-secret)")
        return [hash_embedding(t, DIM) for t in texts]

    with (
        serving(settings_for(db, embedder=flaky)) as base,
        httpx.Client(base_url=base, headers=WRITE) as c,
    ):
        assert c.post("/v1/collections", json={"name": collection_name}).status_code == 201
        url = f"/v1/collections/{collection_name}"
        r = c.post(f"{url}/chunks", json={"chunks": [chunk(1, "fine"), chunk(2, "boom")]})
        message = error(r, 502, "embedding_failed")
        assert "sk-secret" not in r.text and "log" in message
        assert c.post(f"{url}/count", json={}).json() == {"count": 0}
        assert c.post(f"{url}/chunks", json={"chunks": [chunk(1, "fine")]}).status_code == 200
        # A collection whose model this server cannot load takes vectors only.
        store = ChunkStore.open(engines[0], collection=collection_name)
        c_ = store.collection
        from rag_pgstore.ops import registry

        store.run_plan(lambda: registry.claim_embedder(c_, "langchain:SomeModel", replace=True))
    with (
        serving(settings_for(db, embedder=flaky)) as base,
        httpx.Client(base_url=base, headers=WRITE) as c,
    ):
        url = f"/v1/collections/{collection_name}"
        r = c.post(f"{url}/search/vector", json={"text": "fine"})
        assert "langchain:SomeModel" in error(r, 422, "embedder_unavailable")
        assert c.post(f"{url}/search/vector", json={"vector": [0.1] * DIM}).status_code == 200
    with (
        serving(settings_for(db, embedder=None)) as base,
        httpx.Client(base_url=base, headers=WRITE) as c,
    ):
        other = f"{collection_name}_novec"
        assert c.post("/v1/collections", json={"name": other, "dim": DIM}).status_code == 201
        r = c.post(f"/v1/collections/{other}/chunks", json={"chunks": [chunk(1, "text")]})
        assert "send each chunk's embedding" in error(r, 422, "no_embedder")
        assert c.delete(f"/v1/collections/{other}").status_code == 204
        assert c.delete(f"/v1/collections/{collection_name}").status_code == 204


def test_readyz_reports_an_outdated_schema(
    db: TestDatabase, collection_name: str, engines: tuple[Engine, AsyncEngine]
) -> None:
    from sqlalchemy import update

    from rag_pgstore.schema import SCHEMA_VERSION, registry_table

    store = ChunkStore(engines[0], collection=collection_name, dim=DIM)
    store.setup()
    registry = registry_table("public")
    try:
        with engines[0].begin() as conn:
            conn.execute(
                update(registry)
                .where(registry.c.name == collection_name)
                .values(schema_version=SCHEMA_VERSION - 1)
            )
        with (
            serving(settings_for(db, collection=collection_name)) as base,
            httpx.Client(base_url=base) as c,
        ):
            r = c.get("/readyz")
            assert "setup()" in error(r, 503, "schema_outdated")
            assert r.headers["retry-after"]
            store.setup()  # the upgrade
            assert c.get("/readyz").json() == {
                "status": "ready",
                "collection": collection_name,
                "schema_version": SCHEMA_VERSION,
            }
    finally:
        store.drop()
