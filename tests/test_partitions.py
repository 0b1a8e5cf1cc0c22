"""Partitioned collections (``partitions=N``, HASH on chunk_id) on the real server: the
partitions and their indexes, a search plan that merges the partitions' HNSW scans in one
ordered plan (EXPLAIN), and reads, writes and keyword search that answer as one table does."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
import sqlalchemy as sa

from rag_pgstore import Chunk, ChunkStore, HnswIndex, SchemaError, SearchTuning, UnsupportedError

DIM = 8
WORDS = ["postgres", "vector", "index", "replica", "tenant", "chunk", "query", "batch"]


def chunks(n: int, seed: int = 7) -> list[Chunk]:
    rnd = random.Random(seed)
    return [
        Chunk(
            chunk_id=f"c{i}",
            entity_id=f"doc{i // 4}",
            chunk_index=i % 4,
            content=" ".join(rnd.choice(WORDS) for _ in range(6)) + f" item{i}",
            metadata={"i": i, "even": i % 2 == 0},
            embedding=[rnd.random() for _ in range(DIM)],
        )
        for i in range(n)
    ]


def partitions_of(store: ChunkStore) -> list[str]:
    c = store.collection
    assert store.engine is not None
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT i.inhrelid::regclass::text FROM pg_inherits i "
                "WHERE i.inhparent = to_regclass(:t) ORDER BY 1"
            ),
            {"t": f"{c.schema}.{c.name}"},
        )
        return [r[0] for r in rows]


def scores(hits: Any) -> list[float]:
    return [round(h.score, 6) for h in hits]


def ids(hits: Any) -> list[str]:
    return [h.chunk.chunk_id for h in hits]


def test_a_partitioned_collection_answers_as_one_table_does(make_store: Any) -> None:
    parted, plain = make_store(dim=DIM, partitions=4), make_store(dim=DIM)
    assert partitions_of(parted) == [f"{parted.collection.name}_p{i}" for i in range(4)]
    data = chunks(2_000)
    for store in (parted, plain):
        assert store.upsert(data) == 2_000
        assert store.upsert(data[:50]) == 0  # unchanged: nothing written
        changed = [dataclasses.replace(c, content=c.content + " again") for c in data[:50]]
        assert store.upsert(changed) == 50  # replaced, not added: chunk_id stays unique
        store.analyze()
    assert parted.count() == plain.count() == 2_000
    assert parted.count({"even": True}) == 1_000
    assert {c.chunk_id for c in parted.get(["c1", "c2", "nope"])} == {"c1", "c2"}
    q = [0.5] * DIM
    exact = SearchTuning(exact=True)
    assert ids(parted.search(q, k=10, tuning=exact)) == ids(plain.search(q, k=10, tuning=exact))
    assert ids(parted.search(q, k=5, filter={"even": True}, tuning=exact)) == ids(
        plain.search(q, k=5, filter={"even": True}, tuning=exact)
    )
    # The same rows, the same statistics (ANALYZE samples all of them): the same BM25
    # scores, rank for rank (rows that tie may come in another order).
    for text in ("postgres replica", "tenant batch item17"):
        assert scores(parted.text_search(text, k=8)) == scores(plain.text_search(text, k=8))
    rare = "item17 item42 item1999"  # no ties in either leg: the same fused ranking
    assert ids(parted.hybrid_search(q, rare, k=8)) == ids(plain.hybrid_search(q, rare, k=8))
    assert ids(parted.text_search("item17", k=1)) == ["c17"]
    assert ids(parted.mmr_search(q, k=4, tuning=exact)) == ids(
        plain.mmr_search(q, k=4, tuning=exact)
    )
    assert parted.delete_entities(["doc0", "doc1"]) == 8
    assert parted.count() == 1_992


def test_each_partition_has_its_hnsw_index_and_a_search_merges_them(make_store: Any) -> None:
    store = make_store(dim=DIM, partitions=3)
    store.upsert(chunks(6_000, seed=3))
    assert store.create_index(HnswIndex(m=8, ef_construction=32))
    store.analyze()
    info = store.describe()
    assert info.uses_ann_index
    assert "Merge Append" in info.search_plan  # one ordered plan over the partitions
    per_partition = [n for n in info.search_plan if "_embedding_idx" in n]
    assert len({n.split(" using ")[1] for n in per_partition}) == 3
    q = [0.2] * DIM
    approx = ids(store.search(q, k=10))
    truth = ids(store.search(q, k=10, tuning=SearchTuning(exact=True)))
    assert len(set(approx) & set(truth)) >= 9  # recall@10 of the merged HNSW scans


def test_bulk_load_and_keyword_switch_on_partitions(make_store: Any) -> None:
    store = make_store(dim=DIM, partitions=2)
    store.create_index(HnswIndex(m=8, ef_construction=32))
    assert store.bulk_load(chunks(1_000)) == 1_000  # indexes dropped and built once, on all
    assert store.count() == 1_000 and store.describe().ann_index is not None
    assert store.set_keyword_search("ts_rank")
    assert ids(store.text_search("item42", k=1)) == ["c42"]
    assert store.set_keyword_search("bm25")
    assert ids(store.text_search("item42", k=1)) == ["c42"]


def test_partitions_are_fixed_at_creation_and_checked(
    make_store: Any, engines: Any, collection_name: str
) -> None:
    for bad in (0, 1, -3, 1_025, True, "4", 2.5):
        with pytest.raises(UnsupportedError, match="expected partitions to be an int from 2"):
            make_store(dim=DIM, partitions=bad, name=f"{collection_name}_bad")
    with engines[0].connect() as conn:  # nothing was created
        assert conn.scalar(sa.select(sa.func.to_regclass(f"{collection_name}_bad"))) is None
    store = make_store(dim=DIM, partitions=4)
    name = store.collection.name
    with pytest.raises(SchemaError, match="created with partitions=4, got partitions=8"):
        ChunkStore(engines[0], collection=name, dim=DIM, partitions=8).setup()
    plain = make_store(dim=DIM)
    with pytest.raises(SchemaError, match="created with partitions=None, got partitions=2"):
        ChunkStore(engines[0], collection=plain.collection.name, dim=DIM, partitions=2).setup()
    assert ChunkStore.open(engines[0], collection=name).collection.partitions == 4
