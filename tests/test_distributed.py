"""The pipeline on a real Dask cluster (a LocalCluster of two worker processes started here):
the collection it leaves is the one a local run leaves, reruns embed nothing, a changed
document re-embeds only its changed chunks, and failures reach the caller typed."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("distributed", reason="needs rag-pgstore[dask]")
pytest.importorskip("tiktoken", reason="the pipeline chunks with tiktoken")
pytestmark = pytest.mark.extras

from distributed import Client, LocalCluster

from rag_pgstore import ChunkStore, EmbeddingError, InvalidInputError
from rag_pgstore.chunking import TokenChunker
from rag_pgstore.distributed import ingest_on_dask
from rag_pgstore.pipeline import Document, Embedder, Pipeline, hash_embedder, hash_embedding

DIM = 16
WORDS = [
    "postgres",
    "vector",
    "index",
    "chunk",
    "query",
    "table",
    "replica",
    "worker",
    "batch",
    "embedding",
]


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with Client(cluster) as c:  # type: ignore[no-untyped-call]
        yield c
    cluster.close()


def corpus(n: int = 40) -> list[Document]:
    """Documents of a few chunks each, every one different."""
    return [
        Document(
            f"doc-{i}",
            " ".join(f"{WORDS[(i * j) % len(WORDS)]}{i}-{j}" for j in range(60)),
            {"n": i, "kind": "even" if i % 2 == 0 else "odd"},
        )
        for i in range(n)
    ]


def snapshot(store: ChunkStore) -> set[tuple[Any, ...]]:
    return {
        (c.chunk_id, c.entity_id, c.chunk_index, c.content, tuple(sorted(c.metadata.items())),
         tuple(round(x, 6) for x in c.embedding or ()))
        for c in store.get_where(with_embeddings=True)
    }  # fmt: skip


CHUNKER = TokenChunker(max_tokens=40, overlap=0)


def poisoned() -> Embedder:
    """A model that refuses one text, built on the worker."""

    def embed(texts: list[str]) -> list[list[float]]:
        if any("poison" in t for t in texts):
            raise RuntimeError("the model refused")
        return [hash_embedding(t, DIM) for t in texts]

    return Embedder(f"hash:{DIM}", embed)


def _pipelines_here() -> int:
    from rag_pgstore import distributed

    return len(distributed._PIPELINES)


def test_a_cluster_run_leaves_what_a_local_run_leaves(client: Client, make_store: Any) -> None:
    local, remote = make_store(dim=DIM), make_store(dim=DIM)
    docs = corpus()
    Pipeline(local, hash_embedder(DIM), chunker=CHUNKER).ingest(docs)
    seen: list[int] = []
    report = ingest_on_dask(
        client,
        remote,
        docs,
        functools.partial(hash_embedder, DIM),
        batch_documents=6,
        chunker=CHUNKER,
        progress=lambda r: seen.append(r.documents),
    )
    assert report.documents == 40 and report.chunks_written == local.count() > 40
    assert seen == sorted(seen) and seen[-1] == 40  # one call per batch, growing
    assert snapshot(remote) == snapshot(local)
    # Both workers took part: their pipelines are cached per worker process.
    assert all(n >= 1 for n in client.run(_pipelines_here).values())

    again = ingest_on_dask(client, remote, docs, functools.partial(hash_embedder, DIM),
                           batch_documents=6, chunker=CHUNKER)  # fmt: skip
    assert (again.unchanged, again.embedded, again.chunks_written) == (40, 0, 0)

    changed = [*docs]
    changed[3] = Document("doc-3", docs[3].text + " and a new closing sentence", docs[3].metadata)
    by_hand = Pipeline(local, hash_embedder(DIM), chunker=CHUNKER).ingest(changed)
    third = ingest_on_dask(client, remote, changed, functools.partial(hash_embedder, DIM),
                           batch_documents=6, chunker=CHUNKER)  # fmt: skip
    # Only doc-3's changed chunks are written, as locally; their vectors come from the
    # embedding cache the local run filled (the same model, the same schema).
    assert third.unchanged == 39 and third.chunks_written == by_hand.chunks_written >= 1
    assert (third.embedded, third.from_cache) == (0, by_hand.chunks_written)
    assert snapshot(remote) == snapshot(local)


def test_a_repeated_id_ends_as_locally_and_failures_are_typed(
    client: Client, make_store: Any
) -> None:
    store = make_store(dim=DIM)
    first, second = Document("same", "the first text"), Document("same", "the second text")
    ingest_on_dask(client, store, [first, Document("other", "x"), second],
                   functools.partial(hash_embedder, DIM), batch_documents=1)  # fmt: skip
    assert {c.entity_id: c.content for c in store.get_where()} == {
        "same": "the second text",  # the second waited for the first: the last one wins
        "other": "x",
    }

    bad = make_store(dim=DIM)
    docs = [Document(f"d{i}", f"fine text {i}") for i in range(8)] + [Document("p", "poison")]
    with pytest.raises(EmbeddingError, match="the model refused"):
        ingest_on_dask(client, bad, docs, poisoned, batch_documents=2, retries=0,
                       in_flight=1)  # fmt: skip
    assert bad.count() == 8  # the batches before it committed; a rerun skips them

    with pytest.raises(InvalidInputError, match="a function that builds the model"):
        ingest_on_dask(client, store, [first], hash_embedder(DIM))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="Pipeline options"):
        ingest_on_dask(client, store, [first], poisoned, writers=2)
    with pytest.raises(InvalidInputError, match="batch_documents"):
        ingest_on_dask(client, store, [first], poisoned, batch_documents=0)
    with pytest.raises(InvalidInputError, match="rag_pgstore.Document"):
        ingest_on_dask(client, store, ["not a document"], poisoned)  # type: ignore[list-item]
