"""The drivers: the sync one is generated from the async one, and both behave alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rag_pgstore import (
    Chunk,
    HnswIndex,
    HybridOptions,
    IvfflatIndex,
    RagPgStoreError,
    SearchTuning,
)
from rag_pgstore.codec import check_batch
from rag_pgstore.driver.steps import Copy, Execute, Fetch, Forget, Plan, Pull, Read
from rag_pgstore.schema import COPY_TYPES, ENCODERS
from rag_pgstore.sql.search import PSYCOPG
from rag_pgstore.sql.writes import table_copy
from tests.conftest import Api, StoreFactory

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.extras
def test_the_sync_driver_is_generated_from_the_async_one() -> None:
    pytest.importorskip("ruff", reason="the generator formats with ruff (a dev dependency)")
    check = subprocess.run(
        [sys.executable, "scripts/gen_sync.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_options_raise_the_librarys_own_errors() -> None:
    for make in (
        lambda: HnswIndex(m=1),
        lambda: IvfflatIndex(lists=0),
        lambda: SearchTuning(ef_search=0),
        lambda: HybridOptions(vector_weight=2.0),
        lambda: HybridOptions(fusion="average"),  # type: ignore[arg-type]
    ):
        with pytest.raises(RagPgStoreError):
            make()


async def test_every_step_kind_behaves_the_same_through_both_drivers(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store()
    table = store.collection.table

    def plan() -> Plan[tuple[object, ...]]:
        inserted = yield Execute(
            table.insert()
            .values(chunk_id="x", entity_id="x", content="c", content_hash="h", embedding=[1, 0, 0])
            .execution_options(preserve_rowcount=True)
        )
        rows = yield Fetch(table.select().with_only_columns(table.c.chunk_id))
        forgotten = yield Forget(store.collection.schema, store.collection.name)
        return inserted, [tuple(r) for r in rows], forgotten

    assert await api(store, "run_plan", plan()) == (1, [("x",)], None)

    def read() -> Plan[object]:
        compiled = table.select().with_only_columns(table.c.content).compile(dialect=PSYCOPG)
        rows = yield Read(str(compiled), dict(compiled.params), (("work_mem", "8MB"),))
        return rows

    assert await api(store, "run_plan", read()) == [{"content": "c"}]


async def test_pull_and_copy_behave_the_same_through_both_drivers(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store()
    c = store.collection
    batch = check_batch(
        [Chunk(chunk_id=f"k{i}", content="x", embedding=[1.0, float(i), 0.0]) for i in range(3)],
        dim=3,
        vector_type=c.vector_type,
    )

    def plan() -> Plan[list[object]]:
        source = iter(["first", "second"])
        pulled = []
        for _ in range(3):  # the third is the end: None
            pulled.append((yield Pull(source)))
        landed = yield Copy(table_copy(c), COPY_TYPES, lambda: batch.rows(ENCODERS))
        again = yield Copy(table_copy(c), COPY_TYPES, lambda: batch.rows(ENCODERS), savepoint=True)
        return [*pulled, landed, again]

    # The second COPY of the same ids hits the unique index: rolled back to its savepoint.
    assert await api(store, "run_plan", plan()) == ["first", "second", None, True, False]
    assert await api(store, "count") == 3
