"""The LangChain adapter beyond the standard suite: filters, scores, MMR, hybrid, chains."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

pytest.importorskip("langchain_core", reason="the LangChain adapter needs langchain-core")
pytestmark = pytest.mark.frameworks

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableParallel, RunnablePassthrough

from rag_pgstore import ChunkStore, Distance, FilterError, InvalidInputError
from rag_pgstore.adapters.langchain import HashEmbeddings, LangChainVectorStore
from rag_pgstore.testing import TestDatabase
from tests.conftest import Api, StoreFactory

DIM = 64
DOCS = [
    Document(
        id="pg",
        page_content="PostgreSQL stores rows in tables.",
        metadata={"source": "db.md", "year": 2021, "tags": ["sql"]},
    ),
    Document(
        id="vec",
        page_content="pgvector adds vector similarity search to PostgreSQL.",
        metadata={"source": "db.md", "year": 2023, "tags": ["sql", "ai"]},
    ),
    Document(
        id="bread",
        page_content="Sourdough bread needs flour, water and salt.",
        metadata={"source": "food.md", "year": 2020},
    ),
    Document(
        id="odd",
        page_content="A page about nothing much.",
        metadata={"id": "user-id", "entity_id": "user-entity"},
    ),
]


@pytest.fixture
def vs(make_store: StoreFactory) -> LangChainVectorStore:
    store = make_store(dim=DIM)
    vs = LangChainVectorStore(store, embedding=HashEmbeddings(DIM))
    vs.add_documents(DOCS)
    return vs


def ids(docs: list[Document]) -> list[str | None]:
    return [d.id for d in docs]


async def test_documents_round_trip_without_extra_keys(vs: LangChainVectorStore, api: Api) -> None:
    got = await api(vs, "get_by_ids", ["odd", "bread", "missing", "pg"])
    assert got == [DOCS[3], DOCS[2], DOCS[0]]
    stored = vs.store.get(["pg", "odd"])
    assert {c.chunk_id: c.entity_id for c in stored} == {
        "pg": "db.md",
        "odd": "odd",
    }  # from "source"


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ({"source": "db.md"}, ["pg", "vec"]),
        ({"year": {"$between": [2021, 2023]}}, ["pg", "vec"]),
        ({"$or": [{"year": 2020}, {"tags": {"$contains": "ai"}}]}, ["bread", "vec"]),
        ({"$and": [{"source": "db.md"}, {"$not": {"year": 2021}}]}, ["vec"]),
        ({"tags": {"$exists": False}}, ["bread", "odd"]),
        ({"year": {"$in": [2020, 2023]}}, ["bread", "vec"]),
        ({"id": "user-id"}, ["odd"]),
        ({"entity_id": "db.md"}, ["pg", "vec"]),  # the column, set from "source"
    ],
)
async def test_filters_are_the_core_language(
    vs: LangChainVectorStore, api: Api, filter: dict[str, Any], expected: list[str]
) -> None:
    docs = await api(vs, "similarity_search", "PostgreSQL", k=10, filter=filter)
    assert sorted(ids(docs)) == expected  # type: ignore[type-var]


@pytest.mark.parametrize("distance", list(Distance), ids=[d.value for d in Distance])
async def test_relevance_scores_are_right_for_every_distance(
    make_store: StoreFactory, api: Api, distance: Distance
) -> None:
    vs = LangChainVectorStore(make_store(dim=DIM, distance=distance), embedding=HashEmbeddings(DIM))
    vs.add_documents(DOCS)
    scored = await api(vs, "similarity_search_with_relevance_scores", DOCS[1].page_content, k=4)
    assert scored[0][0].id == "vec"
    assert scored[0][1] == pytest.approx(1.0, abs=1e-5)  # identical text: the best possible score
    scores = [s for _, s in scored]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    raw = await api(vs, "similarity_search_with_score", DOCS[1].page_content, k=4)
    assert [d.id for d, _ in raw] == [d.id for d, _ in scored]
    assert [vs.store.collection.distance.score(d) for _, d in raw] == pytest.approx(scores)
    kept = await api(
        vs,
        "similarity_search_with_relevance_scores",
        DOCS[1].page_content,
        k=4,
        score_threshold=scores[1],
    )
    assert [d.id for d, _ in kept] == [d.id for d, s in scored if s >= scores[1]]
    assert len(kept) < len(scored)


async def test_retrievers_for_every_search_type(vs: LangChainVectorStore) -> None:
    similarity = vs.as_retriever(search_kwargs={"k": 2, "filter": {"source": "db.md"}})
    assert ids(similarity.invoke("vector search")) == ["vec", "pg"]
    threshold = vs.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.99, "k": 3}
    )
    assert ids(await threshold.ainvoke(DOCS[2].page_content)) == ["bread"]
    mmr = vs.as_retriever(
        search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4, "lambda_mult": 0.3}
    )
    assert len(mmr.invoke("PostgreSQL")) == 2
    hybrid = vs.as_retriever(search_type="hybrid", search_kwargs={"k": 2, "vector_weight": 0.3})
    assert ids(hybrid.invoke("sourdough flour"))[0] == "bread"
    assert ids(await hybrid.ainvoke("sourdough flour"))[0] == "bread"
    with pytest.raises(ValueError, match="not allowed"):
        vs.as_retriever(search_type="telepathy")


async def test_hybrid_search_reaches_the_core(vs: LangChainVectorStore, api: Api) -> None:
    scored = await api(vs, "hybrid_search_with_score", "pgvector similarity", k=2, fusion="rrf")
    assert scored[0][0].id == "vec"
    assert ids(await api(vs, "search", "flour", "hybrid", k=1)) == ["bread"]


async def test_mmr_defaults_and_diversity(vs: LangChainVectorStore, api: Api) -> None:
    plain = await api(vs, "similarity_search", "PostgreSQL pgvector", k=2)
    diverse = await api(
        vs, "max_marginal_relevance_search", "PostgreSQL pgvector", k=2, lambda_mult=0.0
    )
    assert ids(plain) != ids(diverse)
    assert ids(diverse)[0] == ids(plain)[0]


def stored(vs: LangChainVectorStore) -> list[str]:
    return sorted(c.chunk_id for c in vs.store.get([d.id or "" for d in DOCS]))


async def test_delete_by_ids_and_by_filter(vs: LangChainVectorStore, api: Api) -> None:
    assert await api(vs, "delete", ["pg"]) is True
    assert await api(vs, "delete", filter={"source": "food.md"}) is True
    assert stored(vs) == ["odd", "vec"]
    with pytest.raises(InvalidInputError, match="ids or a filter"):
        await api(vs, "delete")


async def test_delete_with_ids_and_filter_deletes_what_matches_both(
    vs: LangChainVectorStore, api: Api
) -> None:
    # "pg" and "bread" are named, but only "pg" is from db.md; "vec" is from db.md, not named.
    assert await api(vs, "delete", ["pg", "bread"], filter={"source": "db.md"}) is True
    assert stored(vs) == ["bread", "odd", "vec"]
    await api(vs, "delete", [], filter={"source": "db.md"})  # an empty allow-list: nothing
    await api(vs, "delete", [])
    assert stored(vs) == ["bread", "odd", "vec"]


async def test_a_bad_filter_deletes_nothing(vs: LangChainVectorStore, api: Api) -> None:
    with pytest.raises(FilterError):
        await api(vs, "delete", ["pg", "vec"], filter={"source": {"$regex": "db"}})
    with pytest.raises(InvalidInputError):
        await api(vs, "delete", "pg")  # a string is not a list of ids
    assert stored(vs) == ["bread", "odd", "pg", "vec"]


async def test_get_by_ids_accepts_the_keyword_form(vs: LangChainVectorStore, api: Api) -> None:
    assert ids(await api(vs, "get_by_ids", ids=["vec", "pg", "nope"])) == ["vec", "pg"]


# The langchain-postgres filter dialect, every form of it, on products of our own.
PRODUCTS = {
    "kettle": {
        "name": "Kettle",
        "price": 39.5,
        "stock": 12,
        "active": True,
        "tags": ["kitchen"],
        "released": "2023-04-01",
        "specs": {"watts": 2200},
    },
    "lamp": {
        "name": "Desk lamp",
        "price": 24.0,
        "stock": 0,
        "active": False,
        "tags": ["office", "light"],
        "released": "2022-11-15",
    },
    "chair": {
        "name": "Office chair",
        "price": 189.0,
        "stock": 3,
        "active": True,
        "tags": ["office"],
        "released": "2024-01-20",
        "rating": None,
    },
    "mug": {
        "name": "mug",
        "price": 6.25,
        "stock": 140,
        "active": True,
        "released": "2021-06-30",
        "specs": {"watts": None},
    },
}
DIALECT: list[tuple[dict[str, Any], list[str]]] = [
    ({"name": "Kettle"}, ["kettle"]),
    ({"active": True}, ["chair", "kettle", "mug"]),
    ({"active": False, "stock": 0}, ["lamp"]),
    ({"stock": {"$eq": 3}}, ["chair"]),
    ({"stock": {"$ne": 0}}, ["chair", "kettle", "mug"]),
    ({"price": {"$gt": 24.0}}, ["chair", "kettle"]),
    ({"price": {"$gte": 24.0}}, ["chair", "kettle", "lamp"]),
    ({"stock": {"$lt": 3}}, ["lamp"]),
    ({"stock": {"$lte": 3}}, ["chair", "lamp"]),
    ({"name": {"$gt": "Kettle"}}, ["chair", "mug"]),  # byte order: lower case sorts last
    ({"released": {"$lt": "2023-01-01"}}, ["lamp", "mug"]),
    ({"$or": [{"name": "Kettle"}, {"stock": 0}]}, ["kettle", "lamp"]),
    ({"$and": [{"active": True}, {"price": {"$lt": 50}}]}, ["kettle", "mug"]),
    ({"$and": [{"name": "Kettle"}, {"name": "mug"}]}, []),
    ({"$not": {"active": True}}, ["lamp"]),
    ({"$not": [{"active": True}]}, ["lamp"]),
    ({"$not": [{"stock": 0}, {"name": "mug"}]}, ["chair", "kettle"]),  # none of them
    ({"$not": {"price": {"$gt": 30}}}, ["lamp", "mug"]),
    ({"$not": [{"rating": {"$gt": 1}}]}, ["chair", "kettle", "lamp", "mug"]),  # missing: matches
    ({"stock": {"$between": (3, 12)}}, ["chair", "kettle"]),
    ({"stock": {"$between": [0, 0]}}, ["lamp"]),
    ({"name": {"$in": ["Kettle", "mug"]}}, ["kettle", "mug"]),
    ({"stock": {"$in": [0, 3]}}, ["chair", "lamp"]),
    ({"name": {"$nin": ["Kettle", "mug"]}}, ["chair", "lamp"]),
    ({"stock": {"$nin": [0, 3, 12]}}, ["mug"]),
    ({"name": {"$like": "%chair"}}, ["chair"]),
    ({"name": {"$like": "%e%"}}, ["chair", "kettle", "lamp"]),
    ({"name": {"$ilike": "K%"}}, ["kettle"]),
    ({"$or": [{"name": {"$like": "Desk%"}}, {"name": {"$like": "Off%"}}]}, ["chair", "lamp"]),
    ({"tags": {"$exists": False}}, ["mug"]),
    ({"rating": {"$exists": True}}, ["chair"]),  # a key holding null exists
    ({"specs.watts": 2200}, ["kettle"]),
    ({"specs.watts": {"$exists": True}}, ["kettle", "mug"]),  # null counts, as at the top
]
REJECTED = [
    {"$nor": [{"name": "Kettle"}]},
    {"$and": {"active": True}},
    {"active": {"$and": True}},
    {"$and": {}},
    {"$and": []},
    {"$not": True},
    {"$not": []},
    {"name": {"$regex": "K.*"}},
]


@pytest.fixture
def products(make_store: StoreFactory) -> LangChainVectorStore:
    vs = LangChainVectorStore(make_store(dim=DIM), embedding=HashEmbeddings(DIM))
    vs.add_texts(list(PRODUCTS), metadatas=list(PRODUCTS.values()), ids=list(PRODUCTS))
    return vs


async def test_the_langchain_postgres_filter_dialect(
    products: LangChainVectorStore, api: Api
) -> None:
    for where, expected in DIALECT:
        found = await api(products, "similarity_search", "anything", k=10, filter=where)
        assert (where, sorted(d.id or "" for d in found)) == (where, expected)
    for bad in REJECTED:
        with pytest.raises(FilterError):
            await api(products, "similarity_search", "anything", k=10, filter=bad)


class NoCalls(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError("add_embeddings must not embed")

    def embed_query(self, text: str) -> list[float]:
        return HashEmbeddings(DIM).embed_query(text)


async def test_add_embeddings_uses_the_given_vectors(make_store: StoreFactory, api: Api) -> None:
    vs = LangChainVectorStore(make_store(dim=DIM), embedding=NoCalls())
    vectors = HashEmbeddings(DIM).embed_documents(["alpha", "beta"])
    assert await api(
        vs, "add_embeddings", ["alpha", "beta"], vectors, [{"n": 1}, {"n": 2}], ids=["a", "b"]
    ) == ["a", "b"]
    assert ids(vs.similarity_search("beta", k=1)) == ["b"]


class CountingEmbeddings(HashEmbeddings):
    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.batches: list[int] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(len(texts))
        return super().embed_documents(texts)


def test_add_texts_streams_in_batches_with_bounded_memory(make_store: StoreFactory) -> None:
    embeddings = CountingEmbeddings(32)
    vs = LangChainVectorStore(make_store(dim=32), embedding=embeddings, embed_batch_size=500)

    def peak_of_adding(n: int, start: int) -> int:
        tracemalloc.start()
        try:
            written = vs.add_texts(f"text number {i}" for i in range(start, start + n))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(written) == n
        return peak

    small = peak_of_adding(12_000, 0)
    large = peak_of_adding(36_000, 12_000)  # three times as many texts
    assert vs.store.count() == 48_000
    assert max(embeddings.batches) == 500 and sum(embeddings.batches) == 48_000
    # A few write batches are in flight at most, however long the stream: 24,000 more texts
    # cost (their ids, returned, included) less than half what their vectors take as lists.
    more_vectors_as_lists = 24_000 * (32 * (8 + 24) + 56)
    assert large - small < more_vectors_as_lists / 2, (small, large)


async def test_from_texts_on_a_url(db: TestDatabase, collection_name: str) -> None:
    url = db.url.render_as_string(hide_password=False)
    vs = LangChainVectorStore.from_texts(
        ["one", "two"], HashEmbeddings(DIM), url=url, collection=collection_name
    )
    assert vs.store.collection.dim == DIM
    assert [d.page_content for d in vs.similarity_search("two", k=1)] == ["two"]
    again = await LangChainVectorStore.afrom_texts(
        ["three"], HashEmbeddings(DIM), url=url, collection=collection_name, ids=["3"]
    )
    assert again.store.count() == 3
    vs.store.close()
    await again.store.aclose()


def test_unknown_search_options_are_refused(vs: LangChainVectorStore) -> None:
    with pytest.raises(InvalidInputError, match="search options"):
        vs.similarity_search("x", k=1, fetch_k=3)
    assert vs.similarity_search("x", k=1, offset=1, min_score=0.0)


async def test_an_lcel_chain_answers_with_its_sources(vs: LangChainVectorStore) -> None:
    retriever = vs.as_retriever(search_type="hybrid", search_kwargs={"k": 2})
    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}")
    llm = FakeListChatModel(responses=["Use pgvector."])

    def format_docs(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs)

    chain = RunnableParallel(sources=retriever, question=RunnablePassthrough()).assign(
        answer=(lambda x: {"context": format_docs(x["sources"]), "question": x["question"]})
        | prompt
        | llm
        | StrOutputParser()
    )
    result = chain.invoke("How do I add vector search to PostgreSQL?")
    assert result["answer"] == "Use pgvector."
    assert "vec" in ids(result["sources"])
    assert {d.metadata.get("source") for d in result["sources"]} <= {"db.md", "food.md", None}
    result = await chain.ainvoke("sourdough flour")
    assert ids(result["sources"])[0] == "bread"


def test_store_property_and_embeddings(vs: LangChainVectorStore) -> None:
    assert isinstance(vs.store, ChunkStore)
    assert isinstance(vs.embeddings, HashEmbeddings)
