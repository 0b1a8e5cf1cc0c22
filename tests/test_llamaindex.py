"""The LlamaIndex adapter: the vector-store interface field by field, sync and async through one
body, filters as data, and the index / retriever / query engine / ingestion pipeline on top."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("llama_index.core", reason="the LlamaIndex adapter needs llama-index-core")
pytestmark = pytest.mark.frameworks

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from rag_pgstore import FilterError, InvalidInputError, UnsupportedError
from rag_pgstore.adapters.langchain import HashEmbeddings, LangChainVectorStore
from rag_pgstore.adapters.llamaindex import HashEmbedding, LlamaIndexVectorStore
from rag_pgstore.pipeline.hashing import hash_embedding
from tests.conftest import Api, StoreFactory

DIM = 64


def node(node_id: str, text: str, doc: str | None = None, **metadata: Any) -> TextNode:
    n = TextNode(id_=node_id, text=text, metadata=metadata, embedding=hash_embedding(text, DIM))
    if doc is not None:
        n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc)
    return n


NODES = [
    node(
        "a",
        "PostgreSQL stores rows in tables",
        doc="doc1",
        author="Ada",
        year=2020,
        tags=["db", "sql"],
    ),
    node(
        "b",
        "pgvector adds vector search",
        doc="doc1",
        author="O'Brien",
        year=2023,
        tags=["db", "ai"],
    ),
    node(
        "c",
        "Sourdough needs flour and water",
        doc="doc2",
        author='say "hi"',
        year="2021",
        code="42",
    ),
    node("d", "Nothing much here", author="50%_off", code=42, empty=[]),
]


@pytest.fixture
def vs(make_store: StoreFactory) -> LlamaIndexVectorStore:
    vs = LlamaIndexVectorStore(make_store(dim=DIM))
    vs.add(NODES)
    return vs


def query(text: str = "vector search", k: int = 10, **fields: Any) -> VectorStoreQuery:
    return VectorStoreQuery(
        query_embedding=hash_embedding(text, DIM), query_str=text, similarity_top_k=k, **fields
    )


async def test_nodes_round_trip_exactly(vs: LlamaIndexVectorStore, api: Api) -> None:
    got = {n.node_id: n for n in await api(vs, "get_nodes", ["a", "c", "missing"])}
    assert set(got) == {"a", "c"}
    assert got["a"].metadata == NODES[0].metadata  # no _node_content, doc_id, ... in metadata
    assert got["a"].ref_doc_id == "doc1"
    assert got["a"].get_content() == "PostgreSQL stores rows in tables"
    assert isinstance(got["c"], TextNode)
    stored = vs.client.get(["a", "d"])
    assert [(c.entity_id, sorted(c.metadata)) for c in stored] == [
        ("d", ["author", "code", "empty"]),
        ("doc1", ["author", "tags", "year"]),
    ]
    assert vs.class_name() == "RagPgStoreVectorStore"
    assert vs.stores_text and vs.is_embedding_query


async def test_adding_twice_updates(vs: LlamaIndexVectorStore, api: Api) -> None:
    await api(vs, "add", [node("a", "PostgreSQL rewritten", doc="doc1", author="Ada")])
    assert vs.client.count() == 4
    (a,) = await api(vs, "get_nodes", ["a"])
    assert (a.get_content(), a.metadata) == ("PostgreSQL rewritten", {"author": "Ada"})


async def test_delete_by_ref_doc_nodes_and_clear(vs: LlamaIndexVectorStore, api: Api) -> None:
    await api(vs, "delete", "doc1")
    assert sorted(n.node_id for n in await api(vs, "get_nodes")) == ["c", "d"]
    await api(vs, "delete_nodes", ["c"])
    await api(
        vs, "delete_nodes", filters=MetadataFilters(filters=[MetadataFilter(key="code", value=42)])
    )
    assert await api(vs, "get_nodes") == []
    with pytest.raises(InvalidInputError, match="node_ids or filters"):
        await api(vs, "delete_nodes")
    vs.add(NODES)
    await api(vs, "clear")
    assert vs.client.count() == 0


def f(key: str, value: Any, op: FilterOperator = FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


FILTERS: list[tuple[MetadataFilters, str]] = [
    (MetadataFilters(filters=[f("author", "O'Brien")]), "b"),
    (MetadataFilters(filters=[f("author", 'say "hi"')]), "c"),
    (MetadataFilters(filters=[f("code", "42")]), "c"),  # a numeric-looking string stays a string
    (MetadataFilters(filters=[f("code", 42)]), "d"),
    (MetadataFilters(filters=[f("year", 2020, FilterOperator.GT)]), "b"),
    (
        MetadataFilters(
            filters=[f("year", 2020, FilterOperator.GTE), f("year", 2023, FilterOperator.LT)]
        ),
        "a",
    ),
    (MetadataFilters(filters=[f("year", 2023, FilterOperator.LTE)]), "ab"),
    (MetadataFilters(filters=[f("author", "Ada", FilterOperator.NE)]), "bcd"),
    (MetadataFilters(filters=[f("author", ["Ada", "O'Brien"], FilterOperator.IN)]), "ab"),
    (MetadataFilters(filters=[f("author", [], FilterOperator.IN)]), ""),
    (MetadataFilters(filters=[f("author", ["Ada"], FilterOperator.NIN)]), "bcd"),
    (MetadataFilters(filters=[f("tags", ["ai", "sql"], FilterOperator.ANY)]), "ab"),
    (MetadataFilters(filters=[f("tags", [], FilterOperator.ANY)]), ""),
    (MetadataFilters(filters=[f("tags", ["db", "ai"], FilterOperator.ALL)]), "b"),
    (MetadataFilters(filters=[f("tags", "sql", FilterOperator.CONTAINS)]), "a"),
    (MetadataFilters(filters=[f("author", "Brien", FilterOperator.TEXT_MATCH)]), "b"),
    (MetadataFilters(filters=[f("author", "brien", FilterOperator.TEXT_MATCH)]), ""),
    (MetadataFilters(filters=[f("author", "BRIEN", FilterOperator.TEXT_MATCH_INSENSITIVE)]), "b"),
    (
        MetadataFilters(filters=[f("author", "%_", FilterOperator.TEXT_MATCH)]),
        "d",
    ),  # wildcards are literal
    (MetadataFilters(filters=[f("tags", None, FilterOperator.IS_EMPTY)]), "cd"),
    (MetadataFilters(filters=[f("empty", None, FilterOperator.IS_EMPTY)]), "abcd"),
    (
        MetadataFilters(filters=[f("author", "Ada"), f("code", 42)], condition=FilterCondition.OR),
        "ad",
    ),
    (MetadataFilters(filters=[f("author", "Ada")], condition=FilterCondition.NOT), "bcd"),
    (
        MetadataFilters(
            filters=[
                f("ref_doc_id", "doc1"),
                MetadataFilters(
                    filters=[f("year", 2020), f("year", 2023)], condition=FilterCondition.OR
                ),
                MetadataFilters(filters=[f("author", "Ada")], condition=FilterCondition.NOT),
            ]
        ),
        "b",
    ),
    (MetadataFilters(filters=[f("doc_id", "doc2")]), "c"),
    (MetadataFilters(filters=[]), "abcd"),
]


@pytest.mark.parametrize(
    ("filters", "expected"), FILTERS, ids=[str(i) for i in range(len(FILTERS))]
)
async def test_filters(
    vs: LlamaIndexVectorStore, api: Api, filters: MetadataFilters, expected: str
) -> None:
    result = await api(vs, "query", query(filters=filters))
    assert "".join(sorted(result.ids)) == expected
    assert (
        "".join(sorted(n.node_id for n in await api(vs, "get_nodes", filters=filters))) == expected
    )


async def test_node_and_doc_id_restrictions(vs: LlamaIndexVectorStore, api: Api) -> None:
    assert sorted((await api(vs, "query", query(node_ids=["a", "c"]))).ids) == ["a", "c"]
    assert sorted((await api(vs, "query", query(node_ids=[]))).ids) == [
        "a",
        "b",
        "c",
        "d",
    ]  # [] = all
    assert sorted((await api(vs, "query", query(doc_ids=["doc1"]))).ids) == ["a", "b"]
    assert (await api(vs, "query", query(doc_ids=["doc1"], node_ids=["c"]))).ids == []


async def test_query_modes(vs: LlamaIndexVectorStore, api: Api) -> None:
    default = await api(vs, "query", query("pgvector adds vector search", k=2))
    assert default.ids[0] == "b" and len(default.ids) == 2
    assert default.similarities[0] == pytest.approx(1.0)
    assert [n.node_id for n in default.nodes] == default.ids
    for mode in (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.SPARSE):
        text = await api(
            vs, "query", VectorStoreQuery(query_str="flour water", mode=mode, similarity_top_k=3)
        )
        assert text.ids == ["c"]
    hybrid = await api(
        vs,
        "query",
        query("sourdough", k=2, mode=VectorStoreQueryMode.HYBRID, alpha=0.0, hybrid_top_k=1),
    )
    assert hybrid.ids == ["c"]
    mmr = await api(
        vs,
        "query",
        query("PostgreSQL vector", k=2, mode=VectorStoreQueryMode.MMR, mmr_threshold=0.0),
    )
    assert len(mmr.ids) == 2
    with pytest.raises(UnsupportedError, match="svm"):
        await api(vs, "query", query(mode=VectorStoreQueryMode.SVM))
    with pytest.raises(InvalidInputError, match="query_str"):
        await api(
            vs, "query", VectorStoreQuery(query_str=None, mode=VectorStoreQueryMode.TEXT_SEARCH)
        )


async def test_index_retriever_and_query_engine(make_store: StoreFactory) -> None:
    vs = LlamaIndexVectorStore(make_store(dim=DIM))
    embed = HashEmbedding(dim=DIM)
    docs = [
        Document(
            text="pgvector adds vector similarity search to PostgreSQL.",
            id_="pg",
            metadata={"topic": "db"},
        ),
        Document(
            text="Sourdough bread needs flour, water and time.",
            id_="bread",
            metadata={"topic": "food"},
        ),
    ]
    index = VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=vs), embed_model=embed
    )
    nodes = index.as_retriever(similarity_top_k=1).retrieve("vector search in PostgreSQL")
    assert nodes[0].node.ref_doc_id == "pg"
    engine = index.as_query_engine(
        llm=MockLLM(), similarity_top_k=1, vector_store_query_mode="hybrid"
    )
    response = engine.query("flour and water")
    assert response.source_nodes[0].node.ref_doc_id == "bread"
    aresponse = await engine.aquery("vector search")
    assert aresponse.source_nodes[0].node.ref_doc_id == "pg"
    index.delete_ref_doc("pg")
    assert vs.client.count({"entity_id": "pg"}) == 0


def test_ingestion_pipeline_upserts_and_refresh(make_store: StoreFactory) -> None:
    vs = LlamaIndexVectorStore(make_store(dim=DIM))
    embed = HashEmbedding(dim=DIM)
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0), embed],
        vector_store=vs,
        docstore=SimpleDocumentStore(),
        docstore_strategy=DocstoreStrategy.UPSERTS,
    )
    first = [
        Document(text="Alpha text. " * 80, id_="alpha"),
        Document(text="Beta text.", id_="beta"),
    ]
    pipeline.run(documents=first)
    count = vs.client.count()
    assert count >= 3
    pipeline.run(documents=first)  # unchanged: nothing new
    assert vs.client.count() == count
    pipeline.run(documents=[Document(text="Beta rewritten.", id_="beta"), first[0]])
    assert [c.content for c in vs.client.get_where({"entity_id": "beta"})] == ["Beta rewritten."]
    assert vs.client.count() == count

    index = VectorStoreIndex.from_vector_store(vs, embed_model=embed)
    refreshed = index.refresh_ref_docs([Document(text="Gamma.", id_="gamma")])
    assert refreshed == [True]
    assert vs.client.count({"entity_id": "gamma"}) == 1


def test_cross_framework(make_store: StoreFactory) -> None:
    store = make_store(dim=DIM)
    li = LlamaIndexVectorStore(store)
    lc = LangChainVectorStore(store, embedding=HashEmbeddings(DIM))
    li.add([node("li-1", "written by LlamaIndex about pgvector", doc="li-doc", topic="db")])
    lc.add_texts(
        ["written by LangChain about pgvector"], [{"source": "lc-doc", "topic": "db"}], ids=["lc-1"]
    )
    # LangChain sees LlamaIndex's node as a Document with the user metadata only.
    docs = {d.id: d for d in lc.similarity_search("pgvector", k=5, filter={"topic": "db"})}
    assert docs["li-1"].metadata == {"topic": "db"}
    assert docs["li-1"].page_content == "written by LlamaIndex about pgvector"
    # LlamaIndex sees LangChain's document as a TextNode whose source is the "source" entity.
    result = li.query(query("pgvector", k=5))
    by_id = {n.node_id: n for n in result.nodes or []}
    assert by_id["lc-1"].ref_doc_id == "lc-doc"
    assert by_id["lc-1"].metadata == {"source": "lc-doc", "topic": "db"}
    li.delete("lc-doc")
    assert lc.get_by_ids(["lc-1", "li-1"])[0].id == "li-1"


# -- llama-index-core's own filter function is the oracle ------------------------------------

ORACLE_METADATA: dict[str, dict[str, Any]] = {
    "n1": {"author": "Ada", "year": 2020, "tags": ["db", "sql"]},
    "n2": {"author": "Bob", "year": 2023, "tags": ["db", "ai"]},
    "n3": {"author": "Zed", "year": 2021, "tags": []},
    "n4": {"author": ""},
    "n5": {"author": None, "year": 2022, "tags": ["ai"]},
    "n6": {"year": 2020, "tags": ["sql"]},
    "n7": {"author": "O'Brien", "year": 2024},
}
ORACLE_FILTERS = [
    f("author", "Ada"),
    f("year", 2020),
    f("author", "Ada", FilterOperator.NE),
    f("year", 2020, FilterOperator.NE),
    f("year", 2021, FilterOperator.GT),
    f("year", 2021, FilterOperator.GTE),
    f("year", 2022, FilterOperator.LT),
    f("year", 2022, FilterOperator.LTE),
    f("author", "M", FilterOperator.GT),
    f("author", "M", FilterOperator.LT),
    f("author", ["Ada", "Zed"], FilterOperator.IN),
    f("year", [2020, 2022], FilterOperator.IN),
    f("author", ["Ada", "Zed"], FilterOperator.NIN),
    f("year", [2020, 2022], FilterOperator.NIN),
    f("tags", "db", FilterOperator.CONTAINS),
    f("author", "d", FilterOperator.TEXT_MATCH),
    f("author", "B", FilterOperator.TEXT_MATCH_INSENSITIVE),
    f("tags", ["ai", "sql"], FilterOperator.ANY),
    f("tags", ["db", "ai"], FilterOperator.ALL),
    f("tags", [], FilterOperator.ANY),
    f("author", None, FilterOperator.IS_EMPTY),
    f("tags", None, FilterOperator.IS_EMPTY),
    f("year", None, FilterOperator.IS_EMPTY),
]
ORACLE_CASES = [
    MetadataFilters(filters=[one], condition=condition)
    for one in ORACLE_FILTERS
    for condition in FilterCondition
] + [
    MetadataFilters(filters=[a, b], condition=condition)
    for a, b in zip(ORACLE_FILTERS, ORACLE_FILTERS[3:], strict=False)
    for condition in FilterCondition
]


@pytest.fixture
def oracle_vs(make_store: StoreFactory) -> LlamaIndexVectorStore:
    vs = LlamaIndexVectorStore(make_store(dim=DIM))
    vs.add([node(nid, f"text of {nid}", **metadata) for nid, metadata in ORACLE_METADATA.items()])
    return vs


async def test_every_operator_and_condition_matches_llama_index_core(
    oracle_vs: LlamaIndexVectorStore, api: Api
) -> None:
    from llama_index.core.vector_stores.utils import build_metadata_filter_fn

    mismatches = []
    for filters in ORACLE_CASES:
        keep = build_metadata_filter_fn(lambda nid: ORACLE_METADATA[nid], filters)
        expected = sorted(nid for nid in ORACLE_METADATA if keep(nid))
        got = sorted(n.node_id for n in await api(oracle_vs, "get_nodes", filters=filters))
        if got != expected:
            mismatches.append((filters, expected, got))
    assert mismatches == []
    assert len(ORACLE_CASES) > 100


async def test_an_empty_nested_group_never_widens(
    oracle_vs: LlamaIndexVectorStore, api: Api
) -> None:
    empty = MetadataFilters(filters=[])
    widened = MetadataFilters(filters=[f("author", "Ada"), empty], condition=FilterCondition.OR)
    assert [n.node_id for n in await api(oracle_vs, "get_nodes", filters=widened)] == ["n1"]
    assert (await api(oracle_vs, "query", query(filters=widened))).ids == ["n1"]
    narrowed = MetadataFilters(filters=[f("author", "Ada"), empty])
    assert await api(oracle_vs, "get_nodes", filters=narrowed) == []
    before = oracle_vs.client.count()
    for bad in (MetadataFilters(filters=[empty]), widened):
        with pytest.raises(FilterError, match="empty one"):
            await api(oracle_vs, "delete_nodes", filters=bad)
    assert oracle_vs.client.count() == before


async def test_empty_id_lists(oracle_vs: LlamaIndexVectorStore, api: Api) -> None:
    everything = sorted(ORACLE_METADATA)
    assert (await api(oracle_vs, "query", query(doc_ids=[]))).ids == []  # allows nothing
    assert sorted((await api(oracle_vs, "query", query(node_ids=[]))).ids) == everything
    await api(oracle_vs, "delete_nodes", node_ids=[])  # a no-op
    await api(oracle_vs, "delete_nodes", node_ids=[], filters=MetadataFilters(filters=[]))
    assert oracle_vs.client.count() == len(everything)
    with pytest.raises(FilterError):  # still checked, though nothing would be deleted
        await api(
            oracle_vs,
            "delete_nodes",
            node_ids=[],
            filters=MetadataFilters(filters=[f("year", [1], FilterOperator.GT)]),
        )


async def test_mmr_options_from_vector_store_kwargs(vs: LlamaIndexVectorStore, api: Api) -> None:
    vs.add([node("b2", "pgvector adds vector search too")])  # a near duplicate of b
    mmr = query("pgvector vector search", k=2, mode=VectorStoreQueryMode.MMR)
    relevance = await api(vs, "query", mmr, mmr_threshold=1.0)
    diverse = await api(vs, "query", mmr, mmr_threshold=0.0)
    plain = await api(vs, "query", query("pgvector vector search", k=2))
    assert relevance.ids == plain.ids == ["b", "b2"]  # 1.0: relevance only, from the keyword
    assert diverse.ids[0] == "b" and diverse.ids[1] != "b2"
    with pytest.raises(InvalidInputError, match="got both"):
        await api(vs, "query", mmr, mmr_prefetch_k=10, mmr_prefetch_factor=2)
    with pytest.raises(InvalidInputError, match="mmr_threshold"):
        await api(vs, "query", mmr, mmr_threshold=1.5)
    retriever = VectorStoreIndex.from_vector_store(
        vs, embed_model=HashEmbedding(dim=DIM)
    ).as_retriever(
        similarity_top_k=2,
        vector_store_query_mode="mmr",
        vector_store_kwargs={"mmr_threshold": 1.0},
    )
    assert [n.node.node_id for n in retriever.retrieve("pgvector vector search")] == plain.ids


async def test_a_node_without_embedding_is_named(vs: LlamaIndexVectorStore, api: Api) -> None:
    bare = TextNode(id_="bare", text="no vector yet")
    with pytest.raises(InvalidInputError, match="'bare' to carry an embedding"):
        await api(vs, "add", [NODES[0], bare])
    assert vs.client.count() == len(NODES)


async def test_every_node_field_round_trips(make_store: StoreFactory, api: Api) -> None:
    from llama_index.core.schema import ImageNode, IndexNode

    text = TextNode(
        id_="t",
        text="Full text node",
        metadata={"k": 1.5, "nested": {"a": [1, "x"]}},
        excluded_embed_metadata_keys=["k"],
        excluded_llm_metadata_keys=["nested"],
        start_char_idx=3,
        end_char_idx=17,
        metadata_template="{key}={value}",
        metadata_separator=" | ",
        text_template="{metadata_str}::{content}",
        mimetype="text/markdown",
        embedding=hash_embedding("t", DIM),
    )
    text.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(
        node_id="doc", metadata={"page": 2, "score": 0.25}, hash="abc"
    )
    text.relationships[NodeRelationship.NEXT] = RelatedNodeInfo(node_id="t2")
    index = IndexNode(id_="i", text="Points elsewhere", index_id="other-index")
    index.embedding = hash_embedding("i", DIM)
    image = ImageNode(id_="m", text="A caption", image_path="/tmp/cat.png")
    image.embedding = hash_embedding("m", DIM)
    originals = [text, index, image]
    vs = LlamaIndexVectorStore(make_store(dim=DIM))
    await api(vs, "add", originals)
    got = {n.node_id: n for n in await api(vs, "get_nodes", ["t", "i", "m"])}
    for original in originals:
        back = got[original.node_id]
        assert type(back) is type(original)
        assert back.model_dump(exclude={"embedding"}) == original.model_dump(exclude={"embedding"})


def test_bookkeeping_is_what_llamaindex_itself_serialises() -> None:
    # The oracle: node_to_metadata_dict(node, remove_text=True) of the node without its user
    # metadata and vector.
    from llama_index.core.schema import ImageNode, IndexNode, MetadataMode, Node
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

    from rag_pgstore.adapters.llamaindex.vectorstore import _bookkeeping

    related = RelatedNodeInfo(node_id="doc", metadata={"page": 2})
    nodes = [
        TextNode(id_="t", text="words", metadata={"a": 1}, start_char_idx=1, end_char_idx=6),
        IndexNode(id_="i", text="points", index_id="other"),
        IndexNode(id_="o", text="holds", index_id="x", obj={"k": [1, 2]}),
        ImageNode(id_="m", text="caption", image_path="/tmp/cat.png"),
        Document(id_="doc", text="a whole document"),
        Node(id_="n"),
    ]
    for n in nodes:
        n.relationships[NodeRelationship.SOURCE] = related
        n.embedding = hash_embedding(n.node_id, DIM)
        bare = n.model_copy(update={"metadata": {}, "embedding": None})
        theirs = node_to_metadata_dict(bare, remove_text=True)
        ours = _bookkeeping(n)
        assert ours["_node_type"] == theirs["_node_type"]
        mine, upstream = json.loads(ours["_node_content"]), json.loads(theirs["_node_content"])
        if "text" not in mine and upstream.get("text") == "":  # Document: a computed `text`
            del upstream["text"]
        assert mine == upstream
        # And it reads back as LlamaIndex's own does (an IndexNode's obj comes back with a
        # fresh random id each time, either way: compared as JSON above).
        text = n.get_content(MetadataMode.NONE)
        ours_back = metadata_dict_to_node(dict(ours), text=text)
        theirs_back = metadata_dict_to_node(theirs, text=text)
        assert type(ours_back) is type(theirs_back)
        mine_back, upstream_back = ours_back.model_dump(), theirs_back.model_dump()
        mine_back.pop("obj", None), upstream_back.pop("obj", None)
        assert mine_back == upstream_back
