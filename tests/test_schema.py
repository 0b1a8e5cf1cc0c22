"""Schema setup: idempotent, versioned, strict about mismatches, and usable by a read-only role."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from psycopg import sql

from rag_pgstore import (
    Chunk,
    ChunkStore,
    CollectionNameError,
    DatabaseError,
    Distance,
    SchemaError,
    UnsupportedError,
)
from rag_pgstore.schema import REGISTRY_NAME, SCHEMA_VERSION, Collection, registry_table
from rag_pgstore.testing import TestDatabase as Database
from tests.conftest import PG, Api, StoreFactory


def scalar(store: ChunkStore, statement: sa.Executable) -> object:
    assert store.engine is not None
    with store.engine.begin() as conn:
        return conn.execute(statement).scalar()


async def test_setup_is_idempotent_and_records_the_version(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store(setup=False, dim=5, distance="l2")
    for _ in range(3):
        await api(store, "setup")
    registry = registry_table("public")
    row = scalar(
        store,
        sa.select(sa.func.row_to_json(registry.table_valued())).where(
            registry.c.name == store.collection.name
        ),
    )
    assert isinstance(row, dict)
    assert (row["dim"], row["distance"], row["vector_type"]) == (5, "l2", "vector")
    assert (row["text_config"], row["schema_version"]) == ("english", SCHEMA_VERSION)
    indexes = scalar(
        store,
        sa.text(
            "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = :t"
        ).bindparams(t=store.collection.name),
    )
    name = store.collection.name
    assert indexes == f"{name}_entity_idx,{name}_metadata_gin,{name}_pkey,{name}_tsv_gin"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dim": 4}, "dim=3"),
        ({"distance": Distance.L2}, "distance='cosine'"),
        ({"text_config": "simple"}, "text_config='english'"),
    ],
)
def test_reopening_with_other_settings_fails_loudly(
    make_store: StoreFactory, change: dict[str, object], message: str
) -> None:
    store = make_store()
    other = make_store(setup=False, name=store.collection.name, **{"dim": 3, **change})
    with pytest.raises(SchemaError, match=message):
        other.setup()


def test_a_foreign_table_is_not_taken_over(make_store: StoreFactory) -> None:
    store = make_store(setup=False)
    assert store.engine is not None
    with store.engine.begin() as conn:
        conn.execute(
            sa.schema.CreateTable(
                sa.Table(store.collection.name, sa.MetaData(), sa.Column("x", sa.Integer))
            )
        )
    with pytest.raises(SchemaError, match="outside rag_pgstore"):
        store.setup()


def test_upgrades_run_from_the_recorded_version(make_store: StoreFactory) -> None:
    store = make_store()
    registry = registry_table("public")
    assert store.engine is not None
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(registry)
            .where(registry.c.name == store.collection.name)
            .values(schema_version=0)
        )
    store.setup()  # re-runs migration 1, which must be safe on an existing table
    assert (
        scalar(
            store,
            sa.select(registry.c.schema_version).where(registry.c.name == store.collection.name),
        )
        == SCHEMA_VERSION
    )
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(registry)
            .where(registry.c.name == store.collection.name)
            .values(schema_version=99)
        )
    with pytest.raises(SchemaError, match="newer rag_pgstore"):
        store.setup()


@pytest.mark.parametrize(
    "name", ["Docs", "my-docs", "1docs", "docs;drop", "a" * 49, "", REGISTRY_NAME, "ümlaut"]
)
def test_bad_collection_names(name: str) -> None:
    with pytest.raises((CollectionNameError, UnsupportedError)):
        Collection(name, 3)


def test_name_errors_suggest_a_fix() -> None:
    with pytest.raises(CollectionNameError, match="try 'my_docs'"):
        Collection("My-Docs", 3)
    with pytest.raises(UnsupportedError, match="dim"):
        Collection("docs", 0)
    with pytest.raises(UnsupportedError, match="dim"):
        Collection("docs", 16_001)


def test_unknown_text_config_names_the_choices(make_store: StoreFactory) -> None:
    with pytest.raises(UnsupportedError, match="english.*got 'klingon'"):
        make_store(text_config="klingon")


@pytest.mark.parametrize(
    ("dim", "vector_type", "storage"),
    [(384, "vector", "p"), (1536, "vector", "p"), (3000, "halfvec", "p"), (4000, "halfvec", "e")],
)
def test_vectors_stay_inline_when_they_fit_a_page(
    make_store: StoreFactory, dim: int, vector_type: str, storage: str
) -> None:
    store = make_store(dim=dim)
    assert store.collection.vector_type == vector_type
    attstorage = sa.text(
        "SELECT attstorage FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attname = 'embedding'"
    ).bindparams(t=f"public.{store.collection.name}")
    assert scalar(store, attstorage) == storage
    # A long text alongside an inline vector still fits: the text is TOASTed instead.
    big = "lorem ipsum " * 20_000
    store.upsert(
        [Chunk(chunk_id="big", content=big, embedding=[0.1] * dim, metadata={"pad": "x" * 5000})]
    )
    assert store.get(["big"])[0].content == big


def test_collections_in_their_own_schema(make_store: StoreFactory, collection_name: str) -> None:
    schema = f"s_{collection_name}"
    store = make_store(schema=schema)
    store.upsert([Chunk(chunk_id="a", content="x", embedding=[1.0, 0.0, 0.0])])
    assert (
        scalar(
            store,
            sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = :s").bindparams(s=schema),
        )
        == 2
    )
    assert store.count() == 1


def test_statements_compile_without_a_database() -> None:
    c = Collection("docs", 3, distance=Distance.INNER_PRODUCT)
    ddl = str(sa.schema.CreateTable(c.bare_table()).compile(dialect=PG))
    assert "embedding VECTOR(3) NOT NULL" in ddl
    assert "tsv" not in ddl  # added by the keyword mode
    from rag_pgstore.schema import keyword_add
    from rag_pgstore.types import KeywordSearch

    def compiled(mode: KeywordSearch) -> str:
        return "\n".join(str(s.compile(dialect=PG)) for s in keyword_add(c, mode))  # type: ignore[attr-defined]

    assert "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, content)) STORED" in compiled(
        KeywordSearch.TS_RANK
    )
    bm25_ddl = compiled(KeywordSearch.BM25)
    assert "EXECUTE FUNCTION public.rag_pgstore_keyword_row('english')" in bm25_ddl
    assert "SET STATISTICS 300" in bm25_ddl
    assert compiled(KeywordSearch.OFF) == ""
    from rag_pgstore.schema import ann_index

    index = str(sa.schema.CreateIndex(ann_index(c, "hnsw", {"m": 16})).compile(dialect=PG))
    assert (
        index
        == "CREATE INDEX docs_embedding_ann ON public.docs USING hnsw (embedding vector_ip_ops) WITH (m = 16)"
    )
    assert c.table.indexes and all(i.name != c.index_name for i in c.table.indexes)


def test_missing_table_says_to_run_setup(make_store: StoreFactory) -> None:
    store = make_store(setup=False)
    with pytest.raises(SchemaError, match=r"store.setup\(\)"):
        store.count()


def test_read_only_role_can_search_but_not_write(db: Database, make_store: StoreFactory) -> None:
    owner = make_store()
    owner.upsert([Chunk(chunk_id="a", content="x", embedding=[1.0, 0.0, 0.0])])
    role = f"reader_{os.getpid()}"
    table = owner.collection.table
    assert owner.engine is not None
    with owner.engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        cursor.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'reader'").format(sql.Identifier(role))
        )
        cursor.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(
                sql.Identifier(table.schema or "public", table.name), sql.Identifier(role)
            )
        )
    url = db.url.set(username=role, password="reader")
    reader = ChunkStore.from_url(url, collection=owner.collection.name, dim=3, setup=False)
    try:
        assert [h.chunk.chunk_id for h in reader.search([1.0, 0.0, 0.0], k=1)] == ["a"]
        with pytest.raises(DatabaseError) as info:
            reader.upsert([Chunk(chunk_id="b", content="y", embedding=[0.0, 1.0, 0.0])])
        assert info.value.sqlstate == "42501"
        with pytest.raises(DatabaseError) as info:
            reader.setup()
        assert info.value.sqlstate == "42501"
        assert "reader'" not in str(info.value)
    finally:
        reader.close()
    assert owner.count() == 1


async def test_drop_removes_table_and_registry_entry(make_store: StoreFactory, api: Api) -> None:
    store = make_store()
    store.upsert([Chunk(chunk_id="a", content="x", embedding=[1.0, 0.0, 0.0])])
    await api(store, "drop")
    await api(store, "drop")  # idempotent
    with pytest.raises(SchemaError):
        store.count()
    store.setup()  # and the name is free again, with other settings if wanted
    assert store.count() == 0
    other = make_store(setup=False, name=store.collection.name, dim=7)
    await api(store, "drop")
    other.setup()
    assert other.count() == 0


def test_a_version_1_table_is_upgraded_in_place(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert([Chunk(chunk_id="old", content="written by version 1", embedding=[1.0, 0.0, 0.0])])
    table, registry = store.collection.table, registry_table("public")
    assert store.engine is not None
    with store.engine.begin() as conn:  # make it look like version 1 left it
        conn.execute(sa.DDL("ALTER TABLE %(fullname)s DROP COLUMN adapter_data").against(table))  # type: ignore[no-untyped-call]
        conn.execute(
            sa.update(registry).where(registry.c.name == table.name).values(schema_version=1)
        )
    store.setup()
    assert (
        scalar(store, sa.select(registry.c.schema_version).where(registry.c.name == table.name))
        == SCHEMA_VERSION
        == 2
    )
    (old,) = store.get(["old"])
    assert (old.content, old.adapter_data) == ("written by version 1", None)
    store.upsert(
        [
            Chunk(
                chunk_id="new",
                content="x",
                embedding=[0.0, 1.0, 0.0],
                adapter_data={"kind": "node"},
            )
        ]
    )
    assert store.get(["new"])[0].adapter_data == {"kind": "node"}


def test_the_column_spec_names_the_tables_columns() -> None:
    from rag_pgstore.schema import COLUMNS, READ_COLUMNS, WRITTEN_COLUMNS

    table = Collection("docs", 3).table
    assert {spec.name for spec in COLUMNS} <= set(table.c.keys())
    assert set(table.c.keys()) - {spec.name for spec in COLUMNS} == {"tsv", "dl"}  # server-made
    assert "embedding" in WRITTEN_COLUMNS and "embedding" not in READ_COLUMNS
