"""Imports from the other stores' real layouts: the source tables are created here in each
peer's released schema (langchain-postgres 0.0.x ``PGVector`` and ``PGVectorStore``,
llama-index-vector-stores-postgres ``data_*``, plain and hybrid) and filled the way each peer
writes them; the file sources are written by the frameworks themselves. After an import,
the frameworks read the rows back through our adapters as the peer would read its own:
same documents, same metadata, same top-k order."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_core", reason="the imports are read back through LangChain")
pytest.importorskip("llama_index.core", reason="and through LlamaIndex")
pytestmark = pytest.mark.frameworks

import sqlalchemy as sa
from langchain_core.embeddings import Embeddings
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore import InvalidInputError, SchemaError
from rag_pgstore.importers import (
    import_chunks,
    langchain_pgvector,
    langchain_pgvectorstore,
    llamaindex_pgvector,
)

DIM = 16
TEXTS = [
    "PostgreSQL keeps each chunk in a row",
    "A connection pool keeps sessions open",
    "HNSW builds a graph of neighbours",
    "Bread rises because of yeast",
    "Cats sleep most of the day",
    "Hybrid search fuses two rankings",
    "Vectors compare by cosine distance",
    "The ocean is salty",
]
QUERIES = ["where are chunks kept", "graph index", "yeast and bread"]


def vec(text: str, dim: int = DIM) -> list[float]:
    """A vector a text always gets, in general position: no two distances tie, so a top-k
    order is one order (hash embeddings of short texts are often orthogonal: ties)."""
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    return [float(x) for x in rng.normal(size=dim)]


class VecEmbeddings(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [vec(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return vec(text)


@pytest.fixture
def schema(engines: tuple[Engine, AsyncEngine], collection_name: str) -> Iterator[str]:
    """A schema of this test's own, for the peer's fixed table names."""
    name = f"src_{collection_name}"
    with engines[0].begin() as conn:
        conn.execute(sa.schema.CreateSchema(name))
    yield name
    with engines[0].begin() as conn:
        conn.execute(sa.schema.DropSchema(name, cascade=True))


def nearest(
    engine: Engine,
    table: sa.Table,
    column: str,
    key: str,
    query: list[float],
    k: int,
    where: Any = None,
) -> list[str]:
    """The peer's own top-k: its table ordered by cosine distance, as its query does."""
    order = table.c[column].cosine_distance(query)
    # Ties (orthogonal hash vectors) broken by id, as our searches break them.
    statement = sa.select(table.c[key]).order_by(order, table.c[key]).limit(k)
    if where is not None:
        statement = statement.where(where)
    with engine.connect() as conn:
        return [str(r[0]) for r in conn.execute(statement)]


# -- langchain-postgres PGVector -----------------------------------------------------------------


def pgvector_tables(schema: str) -> tuple[sa.Table, sa.Table]:
    metadata = sa.MetaData(schema=schema)
    collections = sa.Table(
        "langchain_pg_collection",
        metadata,
        sa.Column("uuid", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String, nullable=False, unique=True),
        sa.Column("cmetadata", sa.JSON),
    )
    embeddings = sa.Table(
        "langchain_pg_embedding",
        metadata,
        sa.Column("id", sa.String, primary_key=True),
        sa.Column(
            "collection_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey(collections.c.uuid, ondelete="CASCADE"),
        ),
        sa.Column("embedding", VECTOR(None)),
        sa.Column("document", sa.String, nullable=True),
        sa.Column("cmetadata", pg.JSONB, nullable=True),
    )
    return collections, embeddings


def fill_pgvector(
    engine: Engine, schema: str, name: str = "my_docs", texts: list[str] = TEXTS
) -> sa.Table:
    collections, embeddings = pgvector_tables(schema)
    collections.metadata.create_all(engine)
    mine, other = uuid.uuid4(), uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(collections), [{"uuid": mine, "name": name}, {"uuid": other, "name": "other"}]
        )
        conn.execute(
            sa.insert(embeddings),
            [
                {
                    "id": f"doc-{i:02d}",
                    "collection_id": mine,
                    "embedding": vec(t, DIM),
                    "document": t,
                    "cmetadata": {"source": f"file{i % 3}.md", "n": i, "tags": ["a", "b"]},
                }
                for i, t in enumerate(texts)
            ]
            + [
                {
                    "id": "elsewhere",
                    "collection_id": other,
                    "embedding": [1.0] * DIM,
                    "document": "x",
                    "cmetadata": {},
                }
            ],
        )
    return embeddings


def test_langchain_pgvector_reads_back_as_it_did(
    engines: tuple[Engine, AsyncEngine], make_store: Any, schema: str
) -> None:
    from rag_pgstore.adapters.langchain import LangChainVectorStore

    source_table = fill_pgvector(engines[0], schema)
    store = make_store(dim=DIM)
    report = import_chunks(
        store, langchain_pgvector(engines[0], "my_docs", schema=schema), batch_size=3
    )
    assert (report.rows, report.written, report.source_rows, report.found) == (8, 8, 8, 8)
    assert report.verified and report.source_checksum == report.collection_checksum
    assert store.count() == 8  # not the other collection's row
    vs = LangChainVectorStore(store, embedding=VecEmbeddings())
    for query in QUERIES:
        q = vec(query, DIM)
        mine = source_table.c.id != "elsewhere"  # the other collection's row
        theirs = nearest(engines[0], source_table, "embedding", "id", q, 4, mine)
        ours = vs.similarity_search_by_vector(q, k=4)
        assert [d.id for d in ours] == theirs
        for doc in ours:
            i = int(str(doc.id).split("-")[1])
            assert doc.page_content == TEXTS[i]
            assert doc.metadata == {"source": f"file{i % 3}.md", "n": i, "tags": ["a", "b"]}
    assert {c.entity_id for c in store.get_where()} == {"file0.md", "file1.md", "file2.md"}


def test_an_interrupted_import_resumes_and_a_rerun_adds_only_new_rows(
    engines: tuple[Engine, AsyncEngine], make_store: Any, schema: str
) -> None:
    _, embeddings = pgvector_tables(schema)
    fill_pgvector(engines[0], schema)
    with engines[0].begin() as conn:  # no vector in row doc-05: the import stops there
        conn.execute(
            sa.update(embeddings).where(embeddings.c.id == "doc-05").values(embedding=None)
        )
    store = make_store(dim=DIM)
    source = langchain_pgvector(engines[0], "my_docs", schema=schema)
    with pytest.raises(InvalidInputError, match="doc-05"):
        import_chunks(store, source, batch_size=2)
    assert store.count() == 4  # two whole pages; the failed one wrote nothing
    with engines[0].begin() as conn:
        conn.execute(
            sa.update(embeddings)
            .where(embeddings.c.id == "doc-05")
            .values(embedding=vec(TEXTS[5], DIM))
        )
    again = import_chunks(store, source, batch_size=2)
    assert (again.resumed_after, again.rows, again.verified) == (4, 4, True)
    with engines[0].begin() as conn:
        coll = conn.execute(
            sa.text(f"SELECT uuid FROM \"{schema}\".langchain_pg_collection WHERE name = 'my_docs'")
        ).scalar_one()
        conn.execute(
            sa.insert(embeddings).values(
                id="doc-99",
                collection_id=coll,
                embedding=vec("new", DIM),
                document="new",
                cmetadata={},
            )
        )
    third = import_chunks(store, source, batch_size=2)
    assert (third.resumed_after, third.rows, third.source_rows, third.verified) == (8, 1, 9, True)
    fresh = import_chunks(store, source, batch_size=4, restart=True)
    assert (fresh.resumed_after, fresh.rows, fresh.written, fresh.verified) == (0, 9, 0, True)


def test_bad_sources_are_typed_errors_and_write_nothing(
    engines: tuple[Engine, AsyncEngine], make_store: Any, schema: str
) -> None:
    store = make_store(dim=DIM)
    with pytest.raises(SchemaError, match="expected a table"):
        langchain_pgvector(engines[0], "my_docs", schema=schema)
    fill_pgvector(engines[0], schema)
    with pytest.raises(SchemaError, match="named 'nope'"):
        langchain_pgvector(engines[0], "nope", schema=schema)
    with engines[0].begin() as conn:
        conn.execute(
            sa.text(f'ALTER TABLE "{schema}".langchain_pg_embedding DROP COLUMN cmetadata')
        )
    with pytest.raises(SchemaError, match=r"expected columns \['cmetadata'\]"):
        langchain_pgvector(engines[0], "my_docs", schema=schema)
    wrong = make_store(dim=DIM + 1)
    with engines[0].begin() as conn:
        conn.execute(
            sa.text(f'ALTER TABLE "{schema}".langchain_pg_embedding ADD COLUMN cmetadata jsonb')
        )
    from rag_pgstore import DimensionError

    with pytest.raises(DimensionError, match=f"expected {DIM + 1} dimensions, got {DIM}"):
        import_chunks(wrong, langchain_pgvector(engines[0], "my_docs", schema=schema))
    assert wrong.count() == 0 and store.count() == 0
    with engines[0].begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE \"{schema}\".langchain_pg_embedding SET embedding = NULL WHERE id = 'doc-00'"
            )
        )
    with pytest.raises(InvalidInputError, match="doc-00"):
        import_chunks(store, langchain_pgvector(engines[0], "my_docs", schema=schema))
    assert store.count() == 0


# -- langchain-postgres PGVectorStore ------------------------------------------------------------


def test_langchain_pgvectorstore_with_metadata_columns(
    engines: tuple[Engine, AsyncEngine], make_store: Any, schema: str
) -> None:
    from rag_pgstore.adapters.langchain import LangChainVectorStore

    table = sa.Table(  # as PGEngine.init_vectorstore_table(..., metadata_columns=[Column("topic", "TEXT")])
        "docs_v2",
        sa.MetaData(schema=schema),
        sa.Column("langchain_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("embedding", VECTOR(DIM), nullable=False),
        sa.Column("topic", sa.Text),
        sa.Column("langchain_metadata", sa.JSON),
    )
    table.metadata.create_all(engines[0])
    ids = [str(uuid.uuid4()) for _ in TEXTS]
    with engines[0].begin() as conn:
        conn.execute(
            sa.insert(table),
            [
                {
                    "langchain_id": i,
                    "content": t,
                    "embedding": vec(t, DIM),
                    "topic": f"t{n % 2}",
                    "langchain_metadata": {"n": n},
                }
                for n, (i, t) in enumerate(zip(ids, TEXTS, strict=True))
            ],
        )
    store = make_store(dim=DIM)
    source = langchain_pgvectorstore(
        engines[0], "docs_v2", schema=schema, metadata_columns=["topic"]
    )
    report = import_chunks(store, source, batch_size=5)
    assert report.verified and report.rows == len(TEXTS)
    vs = LangChainVectorStore(store, embedding=VecEmbeddings())
    q = vec(QUERIES[0], DIM)
    ours = vs.similarity_search_by_vector(q, k=3)
    assert [d.id for d in ours] == nearest(engines[0], table, "embedding", "langchain_id", q, 3)
    for doc in ours:
        n = ids.index(str(doc.id))
        assert doc.metadata == {"n": n, "topic": f"t{n % 2}"} and doc.page_content == TEXTS[n]


# -- llama-index PGVectorStore -------------------------------------------------------------------


@pytest.mark.parametrize("hybrid", [False, True], ids=["plain", "hybrid"])
def test_llamaindex_data_table_reads_back_as_it_did(
    hybrid: bool, engines: tuple[Engine, AsyncEngine], make_store: Any, schema: str
) -> None:
    from llama_index.core.schema import BaseNode, NodeRelationship, RelatedNodeInfo, TextNode
    from llama_index.core.vector_stores.types import VectorStoreQuery
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

    from rag_pgstore.adapters.llamaindex import LlamaIndexVectorStore

    columns: list[sa.Column[Any]] = [
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("text", sa.String, nullable=False),
        sa.Column("metadata_", sa.JSON),
        sa.Column("node_id", sa.String),
        sa.Column("embedding", VECTOR(DIM)),
    ]
    if hybrid:
        columns.append(
            sa.Column(
                "text_search_tsv",
                pg.TSVECTOR,
                sa.Computed("to_tsvector('english', text)", persisted=True),
            )
        )
    table = sa.Table("data_my_index", sa.MetaData(schema=schema), *columns)
    table.metadata.create_all(engines[0])
    nodes = []
    for n, text in enumerate(TEXTS):
        node = TextNode(
            id_=f"node-{n}",
            text=text,
            metadata={"page": n, "kind": "note"},
            embedding=vec(text, DIM),
        )
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc-{n % 2}")
        nodes.append(node)
    with engines[0].begin() as conn:  # as PGVectorStore._node_to_table_row
        conn.execute(
            sa.insert(table),
            [
                {
                    "node_id": node.node_id,
                    "embedding": node.get_embedding(),
                    "text": node.get_content(),
                    "metadata_": node_to_metadata_dict(node, remove_text=True, flat_metadata=False),
                }
                for node in nodes
            ],
        )
    store = make_store(dim=DIM)
    report = import_chunks(
        store, llamaindex_pgvector(engines[0], "data_my_index", schema=schema), batch_size=3
    )
    assert report.verified and report.rows == len(TEXTS)
    vs = LlamaIndexVectorStore(store)
    with engines[0].connect() as conn:
        stored = {r.node_id: r for r in conn.execute(sa.select(table))}
    for query in QUERIES:
        q = vec(query, DIM)
        result = vs.query(VectorStoreQuery(query_embedding=q, similarity_top_k=4))
        assert result.ids == nearest(engines[0], table, "embedding", "node_id", q, 4)
        for got in result.nodes or []:
            row = stored[got.node_id]
            theirs: BaseNode = metadata_dict_to_node(row.metadata_)  # as the peer reads it
            theirs.set_content(row.text)
            assert got.get_content() == theirs.get_content()
            assert got.metadata == theirs.metadata
            assert got.ref_doc_id == theirs.ref_doc_id
            assert got.relationships == theirs.relationships
    assert {c.entity_id for c in store.get_where()} == {"doc-0", "doc-1"}
    with engines[0].begin() as conn:
        conn.execute(
            sa.insert(table).values(
                node_id="node-1", text="again", metadata_={}, embedding=[0.1] * DIM
            )
        )
    with pytest.raises(InvalidInputError, match=r"each node_id once.*node-1"):
        llamaindex_pgvector(engines[0], "data_my_index", schema=schema)


# -- files ---------------------------------------------------------------------------------------


def test_langchain_dump_file(tmp_path: Path, make_store: Any) -> None:
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    from rag_pgstore.adapters.langchain import LangChainVectorStore
    from rag_pgstore.importers import langchain_dump

    theirs = InMemoryVectorStore(embedding=VecEmbeddings())
    theirs.add_documents(
        [
            Document(page_content=t, metadata={"source": f"f{i % 2}.md", "i": i})
            for i, t in enumerate(TEXTS)
        ],
        ids=[f"d{i}" for i in range(len(TEXTS))],
    )
    path = tmp_path / "store.json"
    theirs.dump(str(path))
    store = make_store(dim=DIM)
    report = import_chunks(store, langchain_dump(path), batch_size=3)
    assert report.verified and report.rows == len(TEXTS)
    ours = LangChainVectorStore(store, embedding=VecEmbeddings())
    for query in QUERIES:
        want = theirs.similarity_search(query, k=3)
        got = ours.similarity_search(query, k=3)
        assert [(d.id, d.page_content, d.metadata) for d in got] == [
            (d.id, d.page_content, d.metadata) for d in want
        ]
    with pytest.raises(InvalidInputError, match="dump file"):
        langchain_dump(tmp_path / "missing.json")


def test_llamaindex_persist_dir(tmp_path: Path, make_store: Any) -> None:
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.embeddings import BaseEmbedding

    from rag_pgstore.adapters.llamaindex import LlamaIndexVectorStore
    from rag_pgstore.importers import llamaindex_persist_dir

    class VecEmbedding(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return vec(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return vec(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return vec(text)

    embed = VecEmbedding()
    documents = [
        Document(text=t, doc_id=f"doc-{i}", metadata={"i": i}) for i, t in enumerate(TEXTS)
    ]
    index = VectorStoreIndex.from_documents(documents, embed_model=embed)
    index.storage_context.persist(persist_dir=str(tmp_path / "index"))
    store = make_store(dim=DIM)
    report = import_chunks(store, llamaindex_persist_dir(tmp_path / "index"))
    assert report.verified and report.rows == len(TEXTS)
    ours = VectorStoreIndex.from_vector_store(LlamaIndexVectorStore(store), embed_model=embed)
    for query in QUERIES:
        want = index.as_retriever(similarity_top_k=3).retrieve(query)
        got = ours.as_retriever(similarity_top_k=3).retrieve(query)
        assert [n.node.node_id for n in got] == [n.node.node_id for n in want]
        for a, b in zip(got, want, strict=True):
            assert (a.node.get_content(), a.node.metadata, a.node.ref_doc_id) == (
                b.node.get_content(),
                b.node.metadata,
                b.node.ref_doc_id,
            )
        # Scores differ on purpose: ours are relevance in [0, 1] (docs/migrating.md).
    reloaded = StorageContext.from_defaults(persist_dir=str(tmp_path / "index"))
    assert len(reloaded.vector_store.data.embedding_dict) == len(TEXTS)  # type: ignore[attr-defined]


# -- the command line ----------------------------------------------------------------------------


def test_the_import_command(
    db: Any, engines: tuple[Engine, AsyncEngine], schema: str, collection_name: str, tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    fill_pgvector(engines[0], schema)
    url = db.url.render_as_string(hide_password=False)

    def rag(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "rag_pgstore.cli", *args, "--database-url", url],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr
        return done

    into = f"{collection_name}_cli"
    first = rag(
        "import",
        "langchain-postgres",
        "--collection-name",
        "my_docs",
        "--schema",
        schema,
        "--into",
        into,
        "--json",
        "--batch",
        "3",
    )
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["rows"], report["verified"], report["collection"]) == (8, True, into)
    again = rag(
        "import",
        "langchain-postgres",
        "--collection-name",
        "my_docs",
        "--schema",
        schema,
        "--into",
        into,
    )
    assert again.returncode == 0 and "after 8 from an earlier run" in again.stdout
    assert "verified  yes: 8 of 8 source rows found" in again.stdout
    missing = rag(
        "import", "llama-index", "--table", "data_nothing", "--schema", schema, "--into", into
    )
    assert missing.returncode == 1 and "expected a table" in missing.stderr
    stats = json.loads(rag("stats", "--collection", into, "--json").stdout)
    assert stats["chunks"] == 8 and stats["dim"] == DIM
    assert rag("drop", into, "--yes").returncode == 0
    # Made again, the collection imports everything again: the drop forgot the old place.
    remade = rag(
        "import",
        "langchain-postgres",
        "--collection-name",
        "my_docs",
        "--schema",
        schema,
        "--into",
        into,
        "--json",
    )
    assert json.loads(remade.stdout)["rows"] == 8
    rag("drop", into, "--yes")

    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    dump = InMemoryVectorStore(embedding=VecEmbeddings())
    dump.add_documents([Document(page_content=t) for t in TEXTS[:3]], ids=["a", "b", "c"])
    dump.dump(str(tmp_path / "dump.json"))
    from_file = rag("import", "file", str(tmp_path / "dump.json"), "--into", f"{into}_f", "--json")
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout)["verified"] is True
    broken = rag("import", "file", str(tmp_path), "--into", f"{into}_f")
    assert broken.returncode == 1 and "rag-pgstore:" in broken.stderr
    rag("drop", f"{into}_f", "--yes")


def test_keys_must_be_unique_and_halfvec_verifies(
    engines: tuple[Engine, AsyncEngine], make_store: Any, schema: str, tmp_path: Path
) -> None:
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    from rag_pgstore.importers import langchain_dump

    table = sa.Table(
        "no_key",
        sa.MetaData(schema=schema),
        sa.Column("my_id", sa.Text),  # neither unique nor NOT NULL
        sa.Column("content", sa.Text),
        sa.Column("embedding", VECTOR(DIM)),
        sa.Column("langchain_metadata", sa.JSON),
    )
    table.metadata.create_all(engines[0])
    with pytest.raises(SchemaError, match="unique, non-null key"):
        langchain_pgvectorstore(engines[0], "no_key", schema=schema, id_column="my_id")

    wide = 2048  # above 2,000 dimensions the collection keeps halfvec: float16

    class Wide(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [vec(t, wide) for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return vec(text, wide)

    dump = InMemoryVectorStore(embedding=Wide())
    dump.add_documents([Document(page_content=t) for t in TEXTS[:4]], ids=["w1", "w2", "w3", "w4"])
    dump.dump(str(tmp_path / "wide.json"))
    store = make_store(dim=wide)
    assert store.collection.vector_type == "halfvec"
    report = import_chunks(store, langchain_dump(tmp_path / "wide.json"))
    assert report.verified and report.collection_rows == 4
    unchecked = import_chunks(
        store, langchain_dump(tmp_path / "wide.json"), verify=False, restart=True
    )
    assert not unchecked.checked and not unchecked.verified
