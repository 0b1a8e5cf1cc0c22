"""Tenancy on the real server: a ``tenant_id`` in the primary key, ``for_tenant`` views that
see and touch one tenant's rows through every operation (and both adapters), row-level
security that holds for raw SQL on a non-owner role, bad tenant ids, and tenants writing the
same ids at once."""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore import (
    Chunk,
    ChunkStore,
    HnswIndex,
    InvalidInputError,
    SchemaError,
    SearchTuning,
    UnsupportedError,
)
from rag_pgstore.schema import tenant_index_name
from tests.conftest import Api, StoreFactory

DIM = 8
WORDS = ["postgres", "vector", "index", "replica", "tenant", "chunk", "query", "batch"]


def chunks(n: int, *, seed: int, tag: str) -> list[Chunk]:
    rnd = random.Random(seed)
    return [
        Chunk(
            chunk_id=f"c{i}",
            entity_id=f"doc{i // 4}",
            chunk_index=i % 4,
            content=" ".join(rnd.choice(WORDS) for _ in range(6)) + f" {tag} item{i}",
            metadata={"i": i, "tag": tag, "tenant_id": "b"},  # a tenant-looking key is data
            embedding=[rnd.random() + 0.01 for _ in range(DIM)],
        )
        for i in range(n)
    ]


def tags(hits: Any) -> set[str]:
    chunks_ = [h.chunk if hasattr(h, "chunk") else h for h in hits]
    return {c.metadata["tag"] for c in chunks_}


@pytest.fixture
def shared(make_store: StoreFactory) -> ChunkStore:
    """One tenancy collection holding tenants "a" and "b", each with the same 40 ids."""
    store = make_store(dim=DIM, tenancy=True)
    store.for_tenant("a").upsert(chunks(40, seed=1, tag="a"))
    store.for_tenant("b").upsert(chunks(40, seed=2, tag="b"))
    return store


async def test_every_read_of_a_tenant_view_sees_its_tenant_only(
    shared: ChunkStore, api: Api
) -> None:
    a, b = shared.for_tenant("a"), shared.for_tenant("b")
    query = [0.5] * DIM
    assert await api(a, "count") == 40 and await api(b, "count") == 40
    assert await api(shared.for_tenant("nobody"), "count") == 0
    got = await api(a, "get", ["c1", "c2"])
    assert [c.chunk_id for c in got] == ["c1", "c2"] and tags(got) == {"a"}
    assert tags(await api(b, "get_where", {"i": {"$lt": 5}})) == {"b"}
    # The metadata key "tenant_id" (every chunk has "b" there) is the caller's data.
    assert await api(a, "count", {"tenant_id": "b"}) == 40
    assert tags(await api(a, "search", query, k=10)) == {"a"}
    assert tags(await api(a, "search", query, k=10, filter={"i": {"$gte": 3}})) == {"a"}
    assert tags(await api(b, "search_like", "c3", k=5)) == {"b"}
    assert tags(await api(a, "mmr_search", query, k=4, fetch_k=12)) == {"a"}
    assert tags(await api(b, "text_search", "postgres vector", k=10)) == {"b"}
    hybrid = await api(a, "hybrid_search", query, "tenant item7", k=10)
    assert tags(hybrid) == {"a"} and len({h.chunk.chunk_id for h in hybrid}) == len(hybrid)
    # Same ids, same query: the two tenants' answers are their own rows.
    assert {h.chunk.content for h in await api(a, "search", query, k=40)} == {
        c.content for c in chunks(40, seed=1, tag="a")
    }


async def test_writes_and_deletes_of_a_tenant_view_leave_other_tenants_alone(
    shared: ChunkStore, api: Api
) -> None:
    a, b = shared.for_tenant("a"), shared.for_tenant("b")
    replaced = [Chunk(chunk_id="c0", content="a new text", embedding=[1.0] * DIM)]
    assert await api(a, "upsert", replaced) == 1
    assert (await api(b, "get", ["c0"]))[0].content.endswith("b item0")
    assert await api(a, "delete", ["c1", "c2"]) == 2
    assert await api(a, "delete_entities", ["doc2"]) == 4
    assert await api(a, "delete_where", {"i": {"$gte": 30}}) == 10
    assert await api(b, "count") == 40
    assert await api(a, "clear") == 40 - 2 - 4 - 10
    assert await api(a, "count") == 0 and await api(b, "count") == 40
    # An id another tenant holds is no way in: nothing deleted, nothing revealed.
    assert await api(a, "delete", ["c5"]) == 0 and await api(a, "get", ["c5"]) == []


async def test_a_tenancy_collection_without_a_tenant_refuses_row_operations(
    shared: ChunkStore, api: Api
) -> None:
    for method, args in [
        ("count", ()),
        ("get", (["c1"],)),
        ("search", ([0.5] * DIM,)),
        ("text_search", ("postgres",)),
        ("delete", (["c1"],)),
        ("clear", ()),
        ("upsert", (chunks(2, seed=3, tag="x"),)),
    ]:
        with pytest.raises(UnsupportedError, match="for_tenant"):
            await api(shared, method, *args)
    assert shared.for_tenant("a").count() == 40 and shared.for_tenant("b").count() == 40
    assert shared.describe().chunks == 80  # the whole collection's, for whoever owns it
    assert shared.for_tenant("a").describe().chunks == 40  # a tenant's, its own


def test_views_share_the_collection_table_objects(shared: ChunkStore) -> None:
    # A view per request builds no schema objects, and one compiled statement serves every
    # tenant (SQLAlchemy's statement cache is keyed by table objects).
    a, b = shared.for_tenant("a"), shared.for_tenant("b")
    assert a.collection.table is b.collection.table is shared.collection.table
    assert a.collection.staging is shared.collection.staging
    assert a.collection != b.collection  # so our lru_cache'd statements stay per tenant
    query = [0.5] * DIM
    assert tags(a.search(query, k=40)) == {"a"} and tags(b.search(query, k=40)) == {"b"}


@pytest.mark.parametrize("bad", ["", "   ", 5, None, "x" * 10_000, "a\x00b"])
def test_bad_tenant_ids_are_refused(shared: ChunkStore, bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="expected a tenant id"):
        shared.for_tenant(bad)


def test_tenancy_is_fixed_at_creation(make_store: StoreFactory, engines: Any) -> None:
    plain = make_store(dim=DIM)
    with pytest.raises(UnsupportedError, match="tenancy=True"):
        plain.for_tenant("a")
    with pytest.raises(SchemaError, match="tenancy=False"):
        ChunkStore(engines[0], collection=plain.collection.name, dim=DIM, tenancy=True).setup()
    tenanted = make_store(dim=DIM, tenancy=True)
    opened = ChunkStore.open(engines[0], collection=tenanted.collection.name)
    assert opened.collection.tenancy is True
    opened.for_tenant("a").upsert(chunks(3, seed=4, tag="a"))
    # Opened without tenancy=, set up: the table says it has tenancy.
    again = ChunkStore(engines[0], collection=tenanted.collection.name, dim=DIM)
    again.setup()
    assert again.for_tenant("a").count() == 3
    with pytest.raises(UnsupportedError, match="for_tenant"):
        again.count()


def test_the_primary_key_and_the_entity_index_lead_with_the_tenant(shared: ChunkStore) -> None:
    c = shared.collection
    assert shared.engine is not None
    with shared.engine.connect() as conn:
        defs: dict[str, str] = dict(
            conn.execute(
                sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t"),
                {"t": c.name},
            ).all()
        )
    assert "(tenant_id, chunk_id)" in defs[f"{c.name}_pkey"]
    assert "(tenant_id, entity_id, chunk_index)" in defs[f"{c.name}_entity_idx"]


def test_a_partitioned_tenancy_collection_partitions_by_tenant(make_store: StoreFactory) -> None:
    store = make_store(dim=DIM, tenancy=True, partitions=4)
    for tenant in ("a", "b", "c"):
        store.for_tenant(tenant).upsert(chunks(20, seed=5, tag=tenant))
    store.create_index(HnswIndex())
    c = store.collection
    assert store.engine is not None
    with store.engine.connect() as conn:
        key = conn.execute(
            sa.select(sa.func.pg_get_partkeydef(sa.func.to_regclass(c.name)))
        ).scalar_one()
        table = sa.table(c.name, sa.column("tableoid"), sa.column("tenant_id"))
        per_partition = conn.execute(
            sa.select(table.c.tableoid, sa.func.count(sa.distinct(table.c.tenant_id))).group_by(
                table.c.tableoid
            )
        ).all()
    assert key == "HASH (tenant_id)"
    assert sum(n for _, n in per_partition) == 3  # a tenant lives in one partition
    assert tags(store.for_tenant("b").search([0.5] * DIM, k=20)) == {"b"}


def test_tenants_writing_the_same_ids_at_once_all_land(shared: ChunkStore) -> None:
    """Eight writers, four tenants, each a stream of several batches of the same ids and
    replacements of them: no deadlock, no lost or duplicated row."""
    errors: list[BaseException] = []

    def write(tenant: str, seed: int) -> None:
        try:
            view = shared.for_tenant(tenant)
            view.upsert(chunks(600, seed=seed, tag=tenant), batch_size=100)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"w{i % 4}", i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(4):
        view = shared.for_tenant(f"w{i}")
        assert view.count() == 600 and tags(view.get_where(limit=1000)) == {f"w{i}"}
    assert shared.for_tenant("a").count() == 40


def _as_superuser(engine: Engine, *statements: sql.Composable) -> None:
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for statement in statements:
            cursor.execute(statement)


def test_row_security_holds_for_raw_sql_on_an_application_role(
    db: Any, engines: tuple[Engine, AsyncEngine], collection_name: str
) -> None:
    owner = ChunkStore(
        engines[0], collection=f"{collection_name}_rls", dim=DIM, tenancy=True, row_security=True
    )
    owner.setup()
    c = owner.collection
    owner.for_tenant("a").upsert(chunks(10, seed=1, tag="a"))
    owner.for_tenant("b").upsert(chunks(12, seed=2, tag="b"))
    role = f"app_{os.getpid()}_{collection_name}"
    I = sql.Identifier  # noqa: E741
    _as_superuser(
        engines[0],
        sql.SQL("CREATE ROLE {} LOGIN").format(I(role)),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
            I(c.schema, c.name), I(role)
        ),
        sql.SQL("GRANT SELECT ON {} TO {}").format(I(c.schema, c.registry.name), I(role)),
    )
    app = sa.create_engine(db.url.set(username=role))
    table = sa.table(
        c.name, sa.column("tenant_id"), sa.column("chunk_id"), sa.column("content"), schema=c.schema
    )
    try:
        with app.begin() as conn:  # no tenant set: no rows
            assert conn.scalar(sa.select(sa.func.count()).select_from(table)) == 0
        with app.begin() as conn:
            conn.execute(sa.select(sa.func.set_config("rag_pgstore.tenant", "b", True)))
            rows = conn.execute(sa.select(table.c.tenant_id)).all()
            assert len(rows) == 12 and {r[0] for r in rows} == {"b"}
            # Deleting everything deletes the tenant's rows only.
            assert conn.execute(sa.delete(table)).rowcount == 12
            conn.rollback()
        refused = pytest.raises(sa.exc.ProgrammingError, match="row-level security")
        with refused, app.begin() as conn:  # moving a row into another tenant
            conn.execute(sa.select(sa.func.set_config("rag_pgstore.tenant", "b", True)))
            conn.execute(sa.update(table).where(table.c.chunk_id == "c1").values(tenant_id="a"))
        # The library on the same role: its views set the tenant in each transaction.
        store = ChunkStore(app, collection=c.name, dim=DIM, tenancy=True)
        assert store.for_tenant("a").count() == 10
        assert tags(store.for_tenant("b").search([0.5] * DIM, k=20)) == {"b"}
        assert store.for_tenant("c").upsert(chunks(3, seed=3, tag="c")) == 3
        assert owner.for_tenant("c").count() == 3 and owner.for_tenant("a").count() == 10
    finally:
        app.dispose()


def test_both_adapters_on_a_tenant_view(shared: ChunkStore) -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import TextNode

    from rag_pgstore.adapters.langchain import HashEmbeddings, LangChainVectorStore
    from rag_pgstore.adapters.llamaindex import LlamaIndexVectorStore
    from rag_pgstore.pipeline.hashing import hash_embedding

    lc_a = LangChainVectorStore(shared.for_tenant("a"), embedding=HashEmbeddings(DIM))
    lc_b = LangChainVectorStore(shared.for_tenant("b"), embedding=HashEmbeddings(DIM))
    lc_a.add_texts(["a private note on replicas"], metadatas=[{"tag": "a"}], ids=["note"])
    lc_b.add_texts(["b private note on replicas"], metadatas=[{"tag": "b"}], ids=["note"])
    found = lc_a.similarity_search("private note on replicas", k=50)
    assert {d.metadata["tag"] for d in found} == {"a"}
    assert [d.page_content for d in lc_b.get_by_ids(["note"])] == ["b private note on replicas"]
    li_b = LlamaIndexVectorStore(shared.for_tenant("b"))
    li_b.add(
        [
            TextNode(
                id_="n1",
                text="b node",
                embedding=hash_embedding("b node", DIM),
                metadata={"tag": "b"},
            )
        ]
    )
    assert shared.for_tenant("a").get(["n1"]) == []
    assert [n.get_content() for n in li_b.get_nodes(node_ids=["n1"])] == ["b node"]
    lc_a.delete(["note"])
    assert len(lc_b.get_by_ids(["note"])) == 1


def test_the_command_line_works_within_a_tenant(
    db: Any, collection_name: str, tmp_path: Any
) -> None:
    pytest.importorskip("tiktoken", reason="the CLI chunks with tiktoken")
    from tests.test_cli import HASH, run

    name = f"{collection_name}_cli"
    for tenant in ("acme", "globex"):
        folder = tmp_path / tenant
        folder.mkdir()
        (folder / "notes.md").write_text(f"{tenant} keeps its replica notes here.\n")
        done = run(db, name, "ingest", str(folder), *HASH, "--tenant", tenant, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    found = run(db, name, "search", "replica notes", "--json", "--tenant", "acme", *HASH)
    assert found.returncode == 0, found.stderr
    assert "acme keeps" in found.stdout and "globex" not in found.stdout
    refused = run(db, name, "search", "replica notes", *HASH)
    assert refused.returncode != 0 and "for_tenant" in refused.stderr
    gone = run(db, name, "delete", "--path", "acme/notes.md", "--tenant", "globex", cwd=tmp_path)
    assert gone.returncode == 1 and "nothing to delete" in gone.stderr  # not globex's
    gone = run(db, name, "delete", "--path", "acme/notes.md", "--tenant", "acme", cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    store = ChunkStore.from_url(db.url, collection=name)
    try:
        assert store.for_tenant("acme").count() == 0
        assert store.for_tenant("globex").count() == 1
        assert store.collection.tenancy is True
    finally:
        store.close()


def test_a_large_tenant_gets_an_index_of_its_own(make_store: StoreFactory) -> None:
    """``create_index(tenant=...)``: a partial HNSW index that the tenant's searches use in
    place of the shared one (EXPLAIN of the very statement a search sends), with the same
    answers; other tenants keep the shared index; dropping it puts the tenant back on it."""
    from rag_pgstore.sql import search as st

    store = make_store(dim=DIM, tenancy=True)
    big, small = store.for_tenant("big'; --"), store.for_tenant("small")
    big.upsert(chunks(3_000, seed=8, tag="big"))
    small.upsert(chunks(50, seed=9, tag="small"))
    store.create_index(HnswIndex())
    assert store.create_index(HnswIndex(), tenant="big'; --") is True
    store.analyze()
    query = [0.5] * DIM

    def plan_of(view: ChunkStore) -> str:
        c = view.collection
        statement = st.vector_search(c, st.query_param(c, query), k=10, where=c.scoped(None))
        assert view.engine is not None
        with view.engine.connect() as conn:
            return str(conn.execute(st.Explain(statement)).scalar_one())

    own = f"{store.collection.name}_t"
    assert own in plan_of(big)
    assert own not in plan_of(small)
    exact = big.search(query, k=10, tuning=SearchTuning(exact=True))
    hits = big.search(query, k=10)
    overlap = {h.chunk.chunk_id for h in hits} & {h.chunk.chunk_id for h in exact}
    assert tags(hits) == {"big"} and len(overlap) >= 9
    store.drop_index(tenant="big'; --")
    assert own not in plan_of(big)
    with pytest.raises(UnsupportedError, match="tenancy"):
        make_store(dim=DIM).create_index(HnswIndex(), tenant="big")


def test_a_large_tenant_keeps_its_index_once_searches_are_prepared(
    make_store: StoreFactory, engines: tuple[Engine, AsyncEngine]
) -> None:
    """psycopg prepares a statement run five times, and PostgreSQL's generic plan for
    ``tenant_id = $1`` can use no tenant's partial index (and sorts a large tenant exactly):
    every search is planned for its own tenant. Counted by the server on one connection:
    the partial index's scans after 20 searches."""
    store = make_store(dim=DIM, tenancy=True)
    store.for_tenant("big").upsert(chunks(3_000, seed=8, tag="big"))
    store.for_tenant("small").upsert(chunks(50, seed=9, tag="small"))
    store.create_index(HnswIndex())
    store.create_index(HnswIndex(), tenant="big")
    store.analyze()
    one = sa.create_engine(engines[0].url, pool_size=1, max_overflow=0)
    try:
        view = ChunkStore(one, collection=store.collection.name, dim=DIM, tenancy=True)
        rnd = random.Random(3)
        for _ in range(20):
            query = [rnd.random() for _ in range(DIM)]
            # exact=False: 3,000 rows would be searched exactly (SearchTuning.exact_below)
            hits = view.for_tenant("big").search(query, k=5, tuning=SearchTuning(exact=False))
            assert tags(hits) == {"big"}
        with one.connect() as conn:  # the same backend: its counts reach the server now
            conn.execute(sa.select(sa.func.pg_stat_force_next_flush()))
            conn.commit()
    finally:
        one.dispose()
    stats = sa.table("pg_stat_user_indexes", sa.column("indexrelname"), sa.column("idx_scan"))
    name = tenant_index_name(store.collection, "big")
    scans = 0
    for _ in range(50):
        with engines[0].connect() as conn:
            scans = conn.execute(
                sa.select(stats.c.idx_scan).where(stats.c.indexrelname == name)
            ).scalar_one()
        if scans >= 20:
            break
        time.sleep(0.1)
    assert scans == 20


async def test_an_existing_collection_gets_tenancy_in_place(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store(dim=DIM)
    store.upsert(chunks(30, seed=10, tag="legacy"))
    store.create_index(HnswIndex())
    assert await api(store, "enable_tenancy", "legacy") is True
    assert await api(store, "enable_tenancy", "other") is False  # it has it already
    legacy, newcomer = store.for_tenant("legacy"), store.for_tenant("new")
    assert legacy.count() == 30 and newcomer.count() == 0
    newcomer.upsert(chunks(5, seed=11, tag="new"))  # the same ids, another tenant
    assert tags(legacy.search([0.5] * DIM, k=30)) == {"legacy"}
    assert tags(newcomer.get(["c0", "c1"])) == {"new"}
    with pytest.raises(UnsupportedError, match="for_tenant"):
        store.count()
    reopened = ChunkStore.open(store.engine, collection=store.collection.name)
    assert reopened.collection.tenancy is True
    assert store.engine is not None
    with store.engine.connect() as conn:
        key = conn.execute(
            sa.select(sa.func.pg_get_indexdef(sa.func.to_regclass(f"{store.collection.name}_pkey")))
        ).scalar_one()
    assert "(tenant_id, chunk_id)" in key
    with pytest.raises(UnsupportedError, match="partition key"):
        make_store(dim=DIM, partitions=2).enable_tenancy("x")
    with pytest.raises(InvalidInputError, match="tenant id"):
        make_store(dim=DIM).enable_tenancy("")
