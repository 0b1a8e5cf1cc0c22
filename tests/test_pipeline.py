"""The ingestion pipeline: incremental, cached, retried, resumable after a real kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("tiktoken", reason="the pipeline chunks with tiktoken")
pytestmark = pytest.mark.extras

from rag_pgstore import ChunkStore, EmbeddingError, InvalidInputError, SchemaError
from rag_pgstore.chunking import TokenChunker
from rag_pgstore.pipeline import Document, Pipeline
from rag_pgstore.pipeline.embedders import Embedder, as_embedder, hash_embedder
from rag_pgstore.pipeline.hashing import hash_embedding
from rag_pgstore.testing import TestDatabase
from tests.conftest import StoreFactory

DIM = 32
CHUNKER = TokenChunker(max_tokens=16, overlap=0)


class Counting:
    """An embedder that records every text it is asked to embed."""

    def __init__(self, failures: int = 0) -> None:
        self.texts: list[str] = []
        self.failures = failures

    def __call__(self, texts: list[str]) -> list[list[float]]:
        if self.failures:
            self.failures -= 1
            raise TimeoutError("rate limited")
        self.texts.extend(texts)
        return [hash_embedding(t, DIM) for t in texts]

    def embedder(self) -> Embedder:
        # A name of its own: the cache is shared by every collection in the database, and an
        # id() can come back for a later test's object.
        if not hasattr(self, "name"):
            self.name = f"counting-{uuid.uuid4().hex}"
        return Embedder(self.name, self)


def paragraphs(prefix: str, n: int) -> str:
    return "\n\n".join(f"{prefix} paragraph number {i} has a few more words." for i in range(n))


@pytest.fixture
def store(make_store: StoreFactory) -> ChunkStore:
    return make_store(dim=DIM)


def test_unchanged_documents_cost_nothing(store: ChunkStore) -> None:
    counting = Counting()
    pipeline = Pipeline(store, counting.embedder(), CHUNKER, retries=0)
    docs = [
        Document("a", paragraphs("alpha", 10)),
        Document("b", paragraphs("beta", 3), {"lang": "en"}),
    ]
    first = pipeline.ingest(docs)
    assert first.chunks_written == store.count() == 13
    assert len(counting.texts) == 13
    again = pipeline.ingest(docs)
    assert (again.unchanged, again.chunks_written, again.embedded) == (2, 0, 0)
    assert len(counting.texts) == 13


def test_changed_and_shrunk_documents(store: ChunkStore) -> None:
    counting = Counting()
    pipeline = Pipeline(store, counting.embedder(), CHUNKER, retries=0)
    pipeline.ingest([Document("a", paragraphs("alpha", 10))])
    edited = paragraphs("alpha", 7).replace("number 3 has", "number 3 now has")
    report = pipeline.ingest([Document("a", edited)])
    assert store.count({"entity_id": "a"}) == 7  # 10 chunks shrank to exactly 7
    assert report.chunks_deleted == 3
    # Only changed text is embedded: the edited paragraph, and the new last one, which lost its
    # trailing blank line.
    assert counting.texts[10:] == [
        "alpha paragraph number 3 now has a few more words.\n\n",
        "alpha paragraph number 6 has a few more words.",
    ]
    assert [c.chunk_index for c in store.get_where({"entity_id": "a"})] == list(range(7))
    assert {c.total_chunks for c in store.get_where({"entity_id": "a"})} == {7}


def test_the_embedding_cache_is_shared_and_persistent(
    store: ChunkStore, make_store: StoreFactory
) -> None:
    counting = Counting()
    Pipeline(store, counting.embedder(), CHUNKER).ingest(
        [Document("x", "Same words here."), Document("y", "Same words here.")]
    )
    assert counting.texts == ["Same words here."]  # identical text, embedded once
    other = make_store(dim=DIM)
    later = Counting()
    report = Pipeline(other, Embedder(counting.embedder().name, later), CHUNKER).ingest(
        [Document("z", "Same words here.")]
    )
    assert later.texts == [] and report.from_cache == 1  # another collection, another run: cached
    renamed = Counting()
    third = make_store(dim=DIM)  # one model per collection (see the embedder tests)
    Pipeline(third, Embedder(f"another-{uuid.uuid4().hex}", renamed), CHUNKER).ingest(
        [Document("w", "Same words here.")]
    )
    assert renamed.texts == ["Same words here."]  # the cache is per model


def test_without_the_embedding_cache_nothing_is_cached_or_looked_up(
    store: ChunkStore, make_store: StoreFactory
) -> None:
    import sqlalchemy as sa

    from rag_pgstore.ops import cache

    counting = Counting()
    docs = [Document("x", "Same words here."), Document("y", "Other words.")]
    warm = make_store(dim=DIM)
    Pipeline(warm, counting.embedder(), CHUNKER).ingest(docs)  # the cache holds both texts
    report = Pipeline(store, counting.embedder(), CHUNKER, embedding_cache=False).ingest(docs)
    assert report.from_cache == 0 and report.embedded == 2 == store.count()
    assert counting.texts == ["Same words here.", "Other words."] * 2  # not served from it
    table = cache.cache_table(store.collection.schema)
    fresh = Counting()
    Pipeline(make_store(dim=DIM), fresh.embedder(), CHUNKER, embedding_cache=False).ingest(docs)
    assert store.engine is not None
    with store.engine.connect() as conn:
        kept = conn.execute(
            sa.select(sa.func.count()).where(table.c.model == fresh.embedder().name)
        ).scalar_one()
    assert kept == 0  # and nothing written to it


def test_transient_failures_are_retried(store: ChunkStore) -> None:
    flaky = Counting(failures=2)
    report = Pipeline(store, flaky.embedder(), CHUNKER, retries=3, backoff=0.0).ingest(
        [Document("a", "Hello.")]
    )
    assert report.chunks_written == 1


def test_persistent_failures_name_the_documents_left_out(store: ChunkStore) -> None:
    calls = Counting()

    def broken_after_first(texts: list[str]) -> list[list[float]]:
        if calls.texts:
            raise TimeoutError("model is down")
        return calls(texts)

    pipeline = Pipeline(
        store,
        Embedder(f"flaky-{id(calls)}", broken_after_first),
        CHUNKER,
        batch_documents=1,
        retries=2,
        backoff=0.0,
    )
    with pytest.raises(EmbeddingError) as info:
        pipeline.ingest(
            [Document("first", "One."), Document("second", "Two."), Document("third", "Three.")]
        )
    assert info.value.not_ingested == ["second"]
    assert "model is down" in str(info.value)
    assert [c.entity_id for c in store.get_where()] == ["first"]  # the finished batch stayed


async def test_async_ingest_with_bounded_concurrency(store: ChunkStore) -> None:
    running = 0
    peak = 0

    async def aembed(texts: list[str]) -> list[list[float]]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await __import__("asyncio").sleep(0.01)
        running -= 1
        return [hash_embedding(t, DIM) for t in texts]

    embedder = Embedder(
        f"async-hash-{id(store)}", lambda texts: [hash_embedding(t, DIM) for t in texts], aembed
    )
    pipeline = Pipeline(store, embedder, CHUNKER, embed_batch=2, concurrency=3)
    report = await pipeline.aingest([Document("a", paragraphs("alpha", 12))])
    assert report.chunks_written == 12 == await store.acount()
    assert 1 < peak <= 3


def test_framework_embedders_are_accepted(store: ChunkStore) -> None:
    from rag_pgstore.adapters.langchain import HashEmbeddings
    from rag_pgstore.adapters.llamaindex import HashEmbedding

    assert as_embedder(HashEmbeddings(DIM)).name.startswith("langchain:")
    assert as_embedder(HashEmbedding(dim=DIM)).name.startswith("llamaindex:")
    Pipeline(store, HashEmbedding(dim=DIM), CHUNKER).ingest(
        [Document("li", "LlamaIndex embeds this.")]
    )
    # The same hashing under another name: the override says so.
    Pipeline(store, hash_embedder(DIM), CHUNKER, replace_embedder=True).ingest(
        [Document("h", "Hashing embeds this.")]
    )
    assert store.count() == 2


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from rag_pgstore import ChunkStore
    from rag_pgstore.chunking import TokenChunker
    from rag_pgstore.pipeline.embedders import Embedder
    from rag_pgstore.pipeline.hashing import hash_embedding
    from rag_pgstore.pipeline import Document, Pipeline

    url, collection, log, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

    def embed(texts):
        time.sleep(pause)  # a slow model: the kill lands here
        with open(log, "a") as f:  # logged when the vectors are handed back
            for t in texts:
                f.write(t.replace("\\n", " ") + "\\n")
        return [hash_embedding(t, 32) for t in texts]

    store = ChunkStore.from_url(url, collection=collection, dim=32)
    docs = [Document(f"doc{i}", f"Document {i} says something. " * 3) for i in range(20)]
    report = Pipeline(store, Embedder("resumable-" + collection, embed), TokenChunker(max_tokens=16, overlap=0), batch_documents=2).ingest(docs)
    print(report.documents, report.unchanged)
    """
)


def test_an_interrupted_run_resumes_without_redoing_work(
    db: TestDatabase, collection_name: str, tmp_path: Path
) -> None:
    url = db.url.render_as_string(hide_password=False)
    log = tmp_path / "embedded.log"
    args = [sys.executable, "-c", SCRIPT, url, collection_name, str(log)]
    slow = subprocess.Popen([*args, "0.6"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        not log.exists() or len(log.read_text().splitlines()) < 4
    ):
        time.sleep(0.05)
    time.sleep(0.2)  # let that batch commit; the kill then lands in the next, slow, call
    os.kill(slow.pid, signal.SIGKILL)  # really interrupted, mid-run
    slow.wait()
    embedded_before = len(log.read_text().splitlines())
    assert embedded_before >= 4
    done = subprocess.run([*args, "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    store = ChunkStore.from_url(url, collection=collection_name, dim=32, setup=False)
    stored = store.get_where()
    assert sorted({c.entity_id for c in stored}) == sorted(f"doc{i}" for i in range(20))
    distinct = {c.content.replace("\n", " ") for c in stored}
    assert embedded_before < len(distinct)  # the first run really was cut short
    assert len(lines) == len(set(lines)) == len(distinct)  # every text embedded exactly once
    store.close()


def test_remember_splits_large_batches_below_the_parameter_ceiling(store: ChunkStore) -> None:
    from rag_pgstore.ops import cache

    schema = store.collection.schema
    store.run_plan(cache.setup(schema))
    vectors = {f"h{i}": [float(i), 1.0] for i in range(25_000)}  # 75,000 parameters in one VALUES
    store.run_plan(cache.remember(schema, f"bulk-{id(store)}", vectors))
    found = store.run_plan(cache.lookup(schema, f"bulk-{id(store)}", 2, ["h0", "h24999"]))
    assert found == {"h0": [0.0, 1.0], "h24999": [24999.0, 1.0]}


def sized(dim: int) -> Callable[[list[str]], list[list[float]]]:
    return lambda texts: [hash_embedding(t, dim) for t in texts]


def test_one_model_name_at_two_sizes_never_shares_vectors(make_store: StoreFactory) -> None:
    name = f"sized-{os.getpid()}-{time.monotonic_ns()}"  # one name, two sizes
    docs = [Document("a", paragraphs("alpha", 3))]
    for dim in (16, 32):
        store = make_store(dim=dim)
        model = Embedder(name, sized(dim))
        report = Pipeline(store, model, CHUNKER, retries=0).ingest(docs)
        assert report.embedded > 0 and report.from_cache == 0  # nothing of the other size
        assert all(len(c.embedding or []) == dim for c in store.get_where(with_embeddings=True))
    again = make_store(dim=16)
    model = Embedder(name, sized(16))
    report = Pipeline(again, model, CHUNKER, retries=0).ingest(docs)
    assert report.embedded == 0 and report.from_cache > 0  # its own size is cached


def test_a_cache_keyed_by_name_alone_is_upgraded_in_place(make_store: StoreFactory) -> None:
    import sqlalchemy as sa
    from pgvector.sqlalchemy import VECTOR

    from rag_pgstore.ops import cache

    schema = f"oldcache_{os.getpid()}"
    store = make_store(dim=DIM, schema=schema)
    assert store.engine is not None
    with store.engine.begin() as conn:  # the layout of the previous release
        table = sa.Table(
            cache.CACHE_NAME,
            sa.MetaData(),
            sa.Column("model", sa.Text, primary_key=True),
            sa.Column("content_hash", sa.Text, primary_key=True),
            sa.Column("embedding", VECTOR(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
            schema=schema,
        )
        conn.execute(sa.schema.DropTable(table, if_exists=True))
        conn.execute(sa.schema.CreateTable(table))
        conn.execute(table.insert().values(model="m", content_hash="h", embedding=[1.0, 2.0]))
    store.run_plan(cache.setup(schema))
    store.run_plan(cache.setup(schema))  # idempotent
    assert store.run_plan(cache.lookup(schema, "m", 2, ["h"])) == {"h": [1.0, 2.0]}
    assert store.run_plan(cache.lookup(schema, "m", 3, ["h"])) == {}
    store.run_plan(cache.remember(schema, "m", {"h": [1.0, 2.0, 3.0]}))  # same hash, new size
    assert store.run_plan(cache.lookup(schema, "m", 3, ["h"])) == {"h": [1.0, 2.0, 3.0]}
    with store.engine.begin() as conn:  # a process still on the old version keeps writing
        conn.execute(table.insert().values(model="old", content_hash="h", embedding=[1.0]))
    assert store.run_plan(cache.lookup(schema, "old", 1, ["h"])) == {"h": [1.0]}


def test_a_bad_vector_from_the_model_is_never_cached(make_store: StoreFactory) -> None:
    store = make_store(dim=DIM)  # cosine: a zero vector has no direction
    name = f"zeros-{os.getpid()}-{time.monotonic_ns()}"
    docs = [Document("a", paragraphs("alpha", 2))]
    broken = Embedder(name, lambda texts: [[0.0] * DIM for _ in texts])
    with pytest.raises(InvalidInputError, match="non-zero"):
        Pipeline(store, broken, CHUNKER, retries=0).ingest(docs)
    fixed = Embedder(name, sized(DIM))
    report = Pipeline(store, fixed, CHUNKER, retries=0).ingest(docs)
    assert report.from_cache == 0 and report.embedded > 0
    assert store.count() > 0


def test_prune_removes_documents_gone_from_a_prefix(store: ChunkStore) -> None:
    pipeline = Pipeline(store, hash_embedder(DIM), CHUNKER)
    pipeline.ingest(
        [
            Document("/kb/a.md", "Alpha text."),
            Document("/kb/sub/b.md", "Beta text."),
            Document("/kb_other/c.md", "Gamma text."),  # shares the prefix's letters only
            Document("/kb/100%_d.md", "Delta text."),
        ]
    )
    report = pipeline.ingest([Document("/kb/a.md", "Alpha text.")], prune=["/kb/"])
    assert report.documents_removed == 2 and report.unchanged == 1
    assert sorted({c.entity_id for c in store.get_where()}) == ["/kb/a.md", "/kb_other/c.md"]
    # A literal % or _ in the prefix is no wildcard.
    pipeline.ingest([Document("/kb/100%_d.md", "Delta text.")])
    none = pipeline.ingest([], prune=["/kb/100%_"])
    assert none.documents_removed == 1
    assert pipeline.ingest([], prune=["/kb/1"]).documents_removed == 0  # nothing under it left


def test_nothing_is_pruned_when_the_run_fails(store: ChunkStore) -> None:
    Pipeline(store, hash_embedder(DIM), CHUNKER).ingest([Document("/kb/a.md", "Alpha.")])

    def failing(texts: list[str]) -> list[list[float]]:
        raise TimeoutError("the model is down")

    broken = Pipeline(store, Embedder("hash:32", failing), CHUNKER, retries=0)
    with pytest.raises(EmbeddingError):
        broken.ingest([Document("/kb/new.md", "New text.")], prune=["/kb/"])
    assert {c.entity_id for c in store.get_where()} == {"/kb/a.md"}


def test_progress_counts_chunks_as_they_are_embedded_and_written(store: ChunkStore) -> None:
    seen: list[tuple[int, int, int, int]] = []
    docs = [Document(f"d{i}", paragraphs(f"doc{i}", 20)) for i in range(5)]
    report = Pipeline(store, hash_embedder(DIM), CHUNKER, batch_documents=2, embed_batch=8).ingest(
        docs,
        progress=lambda r: seen.append(
            (r.documents, r.chunks_to_write, r.embedded, r.chunks_written)
        ),
    )
    assert seen[-1] == (5, report.chunks_to_write, report.embedded, report.chunks_written)
    assert report.chunks_written == report.chunks_to_write == store.count()
    embedded = [e for _, _, e, _ in seen]
    assert embedded == sorted(embedded) and len(set(embedded)) > 5  # moves within a batch
    assert [d for d, *_ in seen if d] == sorted(d for d, *_ in seen if d)
    assert max(d for d, *_ in seen) == 5


def test_a_document_with_nul_is_refused_by_name_before_any_write(store: ChunkStore) -> None:
    with pytest.raises(InvalidInputError, match="NUL characters in document 'bad.bin'"):
        Pipeline(store, hash_embedder(DIM), CHUNKER).ingest(
            [Document("good.md", "Fine."), Document("bad.bin", "a\x00b")]
        )
    assert store.count() == 0


def test_the_embedder_is_recorded_and_another_refused(make_store: StoreFactory) -> None:
    store = make_store(dim=DIM)
    Pipeline(store, hash_embedder(DIM), CHUNKER).ingest([Document("a", "Alpha.")])
    assert store.describe().embedder == f"hash:{DIM}"
    other = Counting().embedder()
    with pytest.raises(SchemaError, match=f"was embedded with 'hash:{DIM}'"):
        Pipeline(store, other, CHUNKER).ingest([Document("b", "Beta.")])
    assert store.count() == 1
    Pipeline(store, other, CHUNKER, replace_embedder=True).ingest([Document("b", "Beta.")])
    assert store.describe().embedder == other.name and store.count() == 2


def test_two_first_ingests_with_different_models_cannot_both_win(
    db: TestDatabase, collection_name: str
) -> None:
    """Two processes start ingesting a new collection at once, each with its own model: one
    records its model and writes; the other is refused and writes nothing."""
    script = textwrap.dedent(
        """
        import sys
        from rag_pgstore import ChunkStore, SchemaError
        from rag_pgstore.chunking import TokenChunker
        from rag_pgstore.pipeline import Document, Pipeline
        from rag_pgstore.pipeline.embedders import Embedder
        from rag_pgstore.pipeline.hashing import hash_embedding

        url, collection, model = sys.argv[1:4]
        store = ChunkStore.from_url(url, collection=collection, dim=32)
        embed = Embedder(model, lambda texts: [hash_embedding(t, 32) for t in texts])
        docs = [Document(f"{model}-{i}", f"Text {i} of {model}.") for i in range(50)]
        try:
            Pipeline(store, embed, TokenChunker(max_tokens=16, overlap=0)).ingest(docs)
        except SchemaError as exc:
            print("refused", exc)
        else:
            print("written")
        """
    )
    url = db.url.render_as_string(hide_password=False)
    models = [f"model-{uuid.uuid4().hex[:8]}-{n}" for n in "ab"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, collection_name, m],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in models
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    results = [o.split()[0] for o, _ in outs]
    assert sorted(results) == ["refused", "written"]
    winner = models[results.index("written")]
    store = ChunkStore.from_url(db.url, collection=collection_name)
    try:
        assert store.describe().embedder == winner
        assert {c.entity_id.rsplit("-", 1)[0] for c in store.get_where()} == {winner}
    finally:
        store.close()


def corpus(n: int, prefix: str = "doc") -> list[Document]:
    return [Document(f"{prefix}{i:03d}", paragraphs(f"{prefix} {i}", 1 + i % 4)) for i in range(n)]


def stored(store: ChunkStore) -> list[tuple[str, str, str]]:
    return sorted((c.chunk_id, c.entity_id, c.content) for c in store.get_where())


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_parallel_writers_store_what_one_writer_stores(
    make_store: StoreFactory, mode: str
) -> None:
    one, four = make_store(dim=DIM), make_store(dim=DIM)
    docs = corpus(60)
    name = f"hash-{uuid.uuid4().hex}"
    embedder = Embedder(name, lambda texts: [hash_embedding(t, DIM) for t in texts])
    Pipeline(one, embedder, CHUNKER, batch_documents=5).ingest(docs)
    pipeline = Pipeline(four, embedder, CHUNKER, batch_documents=5, writers=4)
    seen: list[int] = []
    if mode == "sync":
        report = pipeline.ingest(docs, progress=lambda r: seen.append(r.documents))
    else:
        report = await pipeline.aingest(docs, progress=lambda r: seen.append(r.documents))
    assert stored(four) == stored(one)
    assert (report.documents, report.chunks_written) == (60, four.count())
    assert seen == sorted(seen) and seen[-1] == 60  # the count only grows
    again = pipeline.ingest(docs)  # everything is already there
    assert (again.unchanged, again.chunks_written) == (60, 0)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_failing_writer_stops_the_run_and_keeps_whole_batches(
    store: ChunkStore, mode: str
) -> None:
    def embed(texts: list[str]) -> list[list[float]]:
        if any("doc 13" in t for t in texts):
            raise TimeoutError("model is down")
        time.sleep(0.01)
        return [hash_embedding(t, DIM) for t in texts]

    docs = corpus(40)
    pipeline = Pipeline(
        store,
        Embedder(f"flaky-{uuid.uuid4().hex}", embed),
        CHUNKER,
        batch_documents=2,
        writers=3,
        retries=0,
    )
    with pytest.raises(EmbeddingError) as info:
        if mode == "sync":
            pipeline.ingest(docs)
        else:
            await pipeline.aingest(docs)
    assert info.value.not_ingested == ["doc012", "doc013"]
    by_document: dict[str, int] = {}
    for c in store.get_where():
        by_document[c.entity_id] = by_document.get(c.entity_id, 0) + 1
    assert "doc013" not in by_document and "doc012" not in by_document
    for i in range(0, 40, 2):  # each batch is there whole or not at all
        pair = [f"doc{i:03d}", f"doc{i + 1:03d}"]
        assert all(d in by_document for d in pair) or not any(d in by_document for d in pair)
    for doc in docs:
        if doc.id in by_document:
            assert by_document[doc.id] == 1 + int(doc.id[3:]) % 4


def test_writers_must_be_a_positive_int(store: ChunkStore) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="expected writers to be an int >= 1"):
            Pipeline(store, hash_embedder(DIM), writers=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_bulk_ingest_loads_an_empty_collection_in_one_transaction(
    make_store: StoreFactory, mode: str
) -> None:
    plain, bulk = make_store(dim=DIM), make_store(dim=DIM)
    bulk.create_index()
    docs = corpus(50)
    name = f"hash-{uuid.uuid4().hex}"
    embedder = Embedder(name, lambda texts: [hash_embedding(t, DIM) for t in texts])
    Pipeline(plain, embedder, CHUNKER).ingest(docs)
    pipeline = Pipeline(bulk, embedder, CHUNKER, batch_documents=4)
    if mode == "sync":
        report = pipeline.ingest(docs, bulk=True)
    else:
        report = await pipeline.aingest(docs, bulk=True)
    assert stored(bulk) == stored(plain)
    assert (report.documents, report.chunks_written) == (50, bulk.count())
    assert report.from_cache == bulk.count()  # the plain ingest embedded it all
    renamed = {
        n.replace(plain.collection.name, bulk.collection.name) for n in plain.describe().indexes
    }
    assert set(bulk.describe().indexes) == renamed | {bulk.collection.index_name}
    with pytest.raises(InvalidInputError, match="to be empty for a bulk ingest"):
        pipeline.ingest(docs, bulk=True)


def test_a_failed_bulk_ingest_writes_nothing_and_keeps_its_embeddings(store: ChunkStore) -> None:
    calls = Counting()

    def embed(texts: list[str]) -> list[list[float]]:
        if any("doc 30" in t for t in texts):
            raise TimeoutError("model is down")
        return calls(texts)

    name = f"flaky-{uuid.uuid4().hex}"
    docs = corpus(40)
    failing = Pipeline(store, Embedder(name, embed), CHUNKER, batch_documents=5, retries=0)
    with pytest.raises(EmbeddingError) as info:
        failing.ingest(docs, bulk=True)
    assert "nothing of this bulk ingest was written" in str(info.value)
    assert store.count() == 0
    embedded = len(calls.texts)
    assert embedded > 0
    again = Counting()
    report = Pipeline(store, Embedder(name, again), CHUNKER, batch_documents=5).ingest(
        docs, bulk=True
    )
    assert report.from_cache == embedded  # the failed run's embeddings were kept
    assert store.count() == report.chunks_written == embedded + len(again.texts)


def test_batches_close_at_batch_chunks_and_never_split_a_document(store: ChunkStore) -> None:
    # Each document makes 3 chunks; a batch closes once it holds 4 or more, so 2 documents go
    # together (6 chunks, the second document not split) and the last one alone.
    docs = [Document(f"d{i}", paragraphs(f"doc{i}", 3)) for i in range(5)]
    assert all(len(CHUNKER.chunk(d.text, entity_id=d.id)) == 3 for d in docs)
    stored: list[int] = []
    pipeline = Pipeline(store, hash_embedder(DIM), CHUNKER, batch_documents=100, batch_chunks=4)
    report = pipeline.ingest(docs, progress=lambda r: stored.append(r.documents))
    assert sorted(set(stored) - {0}) == [2, 4, 5]
    assert report.chunks_written == store.count() == 15
    with pytest.raises(InvalidInputError, match="batch_chunks to be an int >= 1, got 0"):
        Pipeline(store, hash_embedder(DIM), CHUNKER, batch_chunks=0)


def test_a_repeated_document_id_fails_before_its_batch_is_written(store: ChunkStore) -> None:
    docs = [Document("a", "First."), Document("b", "Second."), Document("a", "Again.")]
    with pytest.raises(InvalidInputError, match="distinct document ids in a batch, got 'a' twice"):
        Pipeline(store, hash_embedder(DIM), CHUNKER).ingest(docs)
    assert store.count() == 0


def test_a_batch_of_thousands_of_chunks_is_checked_before_the_cache_keeps_a_vector(
    store: ChunkStore,
) -> None:
    # More records than one write batch (5,000) in one pipeline batch: still checked whole
    # before the cache keeps anything, so an all-zero vector (cosine) is refused by name and
    # never served from the cache afterwards.
    import sqlalchemy as sa

    from rag_pgstore.ops import cache

    docs = [Document(f"d{i}", f"document number {i}") for i in range(5_200)]

    def zero_for_one(texts: list[str]) -> list[list[float]]:
        return [
            [0.0] * DIM if t == "document number 4321" else hash_embedding(t, DIM) for t in texts
        ]

    name = f"zero-{uuid.uuid4().hex}"
    pipeline = Pipeline(
        store, Embedder(name, zero_for_one), CHUNKER, batch_documents=6_000, batch_chunks=6_000
    )
    with pytest.raises(InvalidInputError, match="non-zero embedding under cosine"):
        pipeline.ingest(docs)
    assert store.count() == 0
    table = cache.cache_table(store.collection.schema)
    assert store.engine is not None
    with store.engine.connect() as conn:
        cached = conn.execute(sa.select(sa.func.count()).where(table.c.model == name))
        assert cached.scalar_one() == 0
