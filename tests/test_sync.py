"""Table sync against a real table with real triggers: the backfill, the changes a trigger
queues (only for watched columns), two workers on one queue, failures retried then parked,
and the layouts and privileges a sync refuses."""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import sql

pytest.importorskip("tiktoken", reason="a sync chunks rows with tiktoken")
pytestmark = pytest.mark.extras

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore import ChunkStore, DatabaseError, EmbeddingError, SchemaError
from rag_pgstore.cli import progress
from rag_pgstore.pipeline import Embedder, hash_embedding
from rag_pgstore.sync import (
    DrainReport,
    TableSync,
    add_sync,
    backfill,
    backfill_remaining,
    drain,
    objects,
    remove_sync,
    retry_parked,
    sync_status,
)

DIM = 16


class Counting:
    """A hash embedder that counts the texts it embeds, and fails on request."""

    def __init__(
        self,
        fail_on: str | None = None,
        fail_after: int | None = None,
        name: str | None = None,
        *,
        delay: float = 0.0,
        block: bool = False,
    ) -> None:
        self.texts: list[str] = []
        self.fail_on = fail_on
        self.fail_after = fail_after
        self.lock = threading.Lock()
        self.name = name or uuid.uuid4().hex
        self.delay = delay  # seconds each call takes
        self.block = block  # the first call waits for `resume`
        self.started = threading.Event()
        self.resume = threading.Event()

    def embedder(self) -> Embedder:
        # A name of its own: the embedding cache (shared by the schema) must not answer for it.
        return Embedder(f"counting:{self.name}", self.embed)

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.started.set()
        if self.block:
            self.resume.wait(30)
        time.sleep(self.delay)
        with self.lock:
            if self.fail_on and any(self.fail_on in t for t in texts):
                raise RuntimeError("the model refused")
            if self.fail_after is not None and len(self.texts) + len(texts) > self.fail_after:
                raise RuntimeError("the model is down")
            self.texts.extend(texts)
        return [hash_embedding(t, DIM) for t in texts]


@pytest.fixture
def source(engines: tuple[Engine, AsyncEngine], collection_name: str) -> Iterator[sa.Table]:
    schema = f"shop_{collection_name}"
    table = sa.Table(
        "products",
        sa.MetaData(schema=schema),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("title", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("stock", sa.Integer),
    )
    with engines[0].begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    table.metadata.create_all(engines[0])
    with engines[0].begin() as conn:
        conn.execute(
            sa.insert(table),
            [
                {"id": i, "title": f"Product {i}", "description": f"A thing number {i} for sale",
                 "category": "even" if i % 2 == 0 else "odd", "price": i + 0.5, "stock": 10}
                for i in range(1, 31)
            ],
        )  # fmt: skip
    yield table
    with engines[0].begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True))


def sync_of(table: sa.Table, store: ChunkStore) -> TableSync:
    return TableSync(
        f"s_{store.collection.name}",
        table=f"{table.schema}.products",
        id="id",
        text=("title", "description"),
        metadata=("category", "price"),
        collection=store.collection.name,
    )


def texts(store: ChunkStore) -> dict[str, str]:
    return {c.entity_id: c.content for c in store.get_where()}


def test_backfill_then_changes(
    engines: tuple[Engine, AsyncEngine], make_store: Any, source: sa.Table
) -> None:
    store = make_store(dim=DIM)
    spec = sync_of(source, store)
    add_sync(store, spec)
    model = Counting()
    assert backfill(store, spec.name, model.embedder(), batch_size=7) == 30
    stored = texts(store)
    assert len(stored) == 30 and stored["3"] == "Product 3\n\nA thing number 3 for sale"
    chunk = store.get(["4#0"])[0]
    assert chunk.metadata == {"category": "even", "price": 4.5}
    assert len(model.texts) == 30
    (status,) = sync_status(store, spec.name)
    assert status.backfill_done and status.pending == 0
    with engines[0].begin() as conn:
        conn.execute(sa.update(source).values(stock=0))  # not a watched column: nothing queued
        conn.execute(sa.update(source).where(source.c.id == 3).values(title="Renamed"))
        conn.execute(sa.delete(source).where(source.c.id == 5))
        conn.execute(
            sa.insert(source).values(
                id=99, title="New", description="Brand new", category="odd", price=1
            )
        )
        conn.execute(sa.update(source).where(source.c.id == 7).values(id=1007))
        conn.execute(
            sa.update(source).where(source.c.id == 8).values(price=9.99)
        )  # metadata: watched
    assert sync_status(store, spec.name)[0].pending == 6  # 3, 5, 99, 7 (gone), 1007, 8
    report = drain(store, spec.name, model.embedder())
    assert (report.applied, report.failed) == (6, 0)
    stored = texts(store)
    assert stored["3"].startswith("Renamed") and "5" not in stored and "7" not in stored
    assert stored["99"] == "New\n\nBrand new" and stored["1007"].startswith("Product 7")
    assert store.get(["8#0"])[0].metadata["price"] == 9.99
    assert len(model.texts) == 30 + 2  # Renamed, New; 1007's and 8's texts are cached
    with engines[0].begin() as conn:
        conn.execute(sa.update(source).where(source.c.id == 3).values(title="Product 3"))
    drain(store, spec.name, model.embedder())
    assert texts(store)["3"].startswith("Product 3") and len(model.texts) == 32  # the cache
    assert sync_status(store, spec.name)[0].pending == 0
    remove_sync(store, spec.name)
    with engines[0].begin() as conn:
        conn.execute(sa.update(source).where(source.c.id == 1).values(title="After removal"))
    assert sync_status(store) == [] or all(s.name != spec.name for s in sync_status(store))


def test_an_interrupted_backfill_continues_without_embedding_twice(
    make_store: Any, source: sa.Table
) -> None:
    store = make_store(dim=DIM)
    spec = sync_of(source, store)
    add_sync(store, spec)
    failing = Counting(fail_after=12, name="resume")
    with pytest.raises(EmbeddingError):  # the model goes down after 12 texts: page 4 fails whole
        backfill(store, spec.name, failing.embedder(), batch_size=5)
    status = sync_status(store, spec.name)[0]
    assert not status.backfill_done
    assert len(texts(store)) == 12  # pages 1-2, and rows 11-12 of page 3 written one by one
    assert status.pending == 3 and "down" in (status.last_error or "")  # rows 13-15, queued
    assert backfill_remaining(store, spec.name) == 15  # page 4 on: the progress bar's total
    model = Counting(name="resume")
    assert drain(store, spec.name, model.embedder()) == DrainReport(0, 0)  # waits for the backfill
    assert backfill(store, spec.name, model.embedder(), batch_size=5) == 15  # page 4 on
    assert len(texts(store)) == 27
    drain(store, spec.name, model.embedder(), backoff=0.0)
    assert len(texts(store)) == 30 and sync_status(store, spec.name)[0].pending == 0
    assert len(failing.texts) + len(model.texts) == 30  # every text embedded once
    assert backfill(store, spec.name, model.embedder()) == 0  # done
    assert backfill_remaining(store, spec.name) == 0


def test_backfill_progress_lines_have_a_total_and_an_eta(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal, `sync run` prints plain lines: rows of the total, the rate, the ETA."""
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)

    def work(show: Any) -> int:
        for rows in (0, 40, 100):
            time.sleep(0.05)
            show(rows)
        return 100

    assert progress.counting("backfill", work, quiet=False, total=100) == 100
    lines = capsys.readouterr().err.splitlines()
    assert re.search(r"backfill: 40/100 rows, [\d,]+ rows/s, eta \d+ s", lines[1]), lines
    assert progress.counting("backfill", work, quiet=False) == 100
    assert re.search(
        r"backfill: 100 rows, [\d,]+ rows/s$", capsys.readouterr().err.splitlines()[-1]
    )


def test_two_workers_share_one_queue(
    engines: tuple[Engine, AsyncEngine], make_store: Any, source: sa.Table
) -> None:
    store = make_store(dim=DIM)
    spec = sync_of(source, store)
    add_sync(store, spec)
    model = Counting()
    backfill(store, spec.name, model.embedder())
    with engines[0].begin() as conn:
        for round_ in range(4):  # four changes to each row: each worker must see only the last
            conn.execute(
                sa.update(source).values(
                    description=sa.literal(f"round {round_} of ") + source.c.title
                )
            )
    assert sync_status(store, spec.name)[0].pending == 120
    before = len(model.texts)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        other = ChunkStore(engines[0], collection=store.collection.name, dim=DIM)
        try:
            reports.append(drain(other, spec.name, model.embedder(), batch_size=4))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sync_status(store, spec.name)[0].pending == 0
    stored = texts(store)
    assert all(stored[str(i)].endswith(f"round 3 of Product {i}") for i in range(1, 31))
    embedded = model.texts[before:]
    assert len(embedded) == len(set(embedded)) == 30  # no row was done twice at once
    assert sum(r.applied for r in reports) == 30


def test_a_batch_longer_than_its_lease_keeps_it(
    engines: tuple[Engine, AsyncEngine], make_store: Any, source: sa.Table
) -> None:
    """A batch of many embedding calls, each a fifth of the lease, runs for twice the lease:
    the heartbeat keeps its rows, and a second worker polling all along takes none."""
    store = make_store(dim=DIM)
    spec = dataclasses.replace(sync_of(source, store), max_tokens=8)
    add_sync(store, spec)
    backfill(store, spec.name, Counting(name="long").embedder())
    with engines[0].begin() as conn:  # 10+ chunks a row: 300+ texts, three embedding calls
        for i in range(1, 31):
            words = " ".join(f"row{i}word{j}" for j in range(40))
            conn.execute(sa.update(source).where(source.c.id == i).values(description=words))
    slow = Counting(name="long", delay=0.7)
    result: list[DrainReport] = []
    thread = threading.Thread(
        target=lambda: result.append(
            drain(store, spec.name, slow.embedder(), batch_size=30, lease_seconds=1.0)
        )
    )
    thread.start()
    slow.started.wait(10)
    other = Counting(name="long")
    while thread.is_alive():  # a second worker, claiming all along: nothing is free to take
        assert drain(store, spec.name, other.embedder(), lease_seconds=1.0).applied == 0
        time.sleep(0.1)
    thread.join()
    assert result == [DrainReport(30, 0)] and other.texts == []
    assert len(slow.texts) == len(set(slow.texts)) >= 300
    first = store.get([f"{i}#0" for i in range(1, 31)])
    assert all(c.content.startswith(f"Product {c.entity_id}\n\nrow{c.entity_id}w") for c in first)


def test_a_stalled_worker_that_lost_its_lease_writes_nothing(
    engines: tuple[Engine, AsyncEngine], make_store: Any, source: sa.Table
) -> None:
    """Worker A reads a row, then stalls past its lease; B takes the row over and writes its
    newer state. When A wakes up it finds the lease gone and drops its batch: the older
    text it read never overwrites B's."""
    store = make_store(dim=DIM)
    spec = sync_of(source, store)
    add_sync(store, spec)
    backfill(store, spec.name, Counting(name="stall").embedder())
    with engines[0].begin() as conn:
        conn.execute(sa.update(source).where(source.c.id == 1).values(title="First change"))
    stalled = Counting(name="stall", block=True)
    result: list[DrainReport] = []
    thread = threading.Thread(
        target=lambda: result.append(drain(store, spec.name, stalled.embedder(), lease_seconds=1.0))
    )
    thread.start()
    assert stalled.started.wait(10)  # A has read "First change" and is embedding it
    with engines[0].begin() as conn:
        conn.execute(sa.update(source).where(source.c.id == 1).values(title="Second change"))
    time.sleep(1.3)  # A's lease runs out
    assert drain(store, spec.name, Counting(name="stall").embedder()) == DrainReport(1, 0)
    assert texts(store)["1"].startswith("Second change")
    stalled.resume.set()
    thread.join(30)
    assert result == [DrainReport(0, 0)]
    assert texts(store)["1"].startswith("Second change")
    assert sync_status(store, spec.name)[0].pending == 0


def test_failures_are_retried_then_parked(
    engines: tuple[Engine, AsyncEngine], make_store: Any, source: sa.Table
) -> None:
    store = make_store(dim=DIM)
    spec = sync_of(source, store)
    add_sync(store, spec)
    backfill(store, spec.name, Counting(name="same model").embedder())
    with engines[0].begin() as conn:
        conn.execute(sa.update(source).where(source.c.id == 2).values(title="poison pill"))
        conn.execute(sa.update(source).where(source.c.id == 4).values(title="fine"))
    model = Counting(fail_on="poison", name="same model")
    report = drain(store, spec.name, model.embedder(), backoff=0.0, max_attempts=2)
    assert report.failed >= 1 and texts(store)["4"].startswith("fine")  # the good row landed
    status = sync_status(store, spec.name)[0]
    assert status.parked + status.pending == 1 and "model" in (status.last_error or "")
    drain(store, spec.name, model.embedder(), backoff=0.0, max_attempts=2)
    status = sync_status(store, spec.name)[0]
    assert (status.parked, status.pending) == (1, 0)
    assert "the model refused" in (status.last_error or "")
    assert texts(store)["2"].startswith("Product 2")  # the old text stays until it can change
    # Once the model is fixed, a retry queues the parked change again and a drain applies it.
    assert retry_parked(store, spec.name) == 1
    status = sync_status(store, spec.name)[0]
    assert (status.parked, status.pending) == (0, 1)
    fixed = drain(store, spec.name, Counting(name="same model").embedder(), backoff=0.0)
    assert (fixed.applied, fixed.failed) == (1, 0)
    assert texts(store)["2"].startswith("poison pill")
    assert sync_status(store, spec.name)[0].parked == 0
    assert retry_parked(store, spec.name) == 0  # nothing parked: nothing to do
    with pytest.raises(SchemaError, match="expected a sync named 'nope'"):
        retry_parked(store, "nope")


def test_what_a_sync_refuses(
    engines: tuple[Engine, AsyncEngine], make_store: Any, source: sa.Table
) -> None:
    store = make_store(dim=DIM)
    spec = sync_of(source, store)
    bad = TableSync(
        "s_bad",
        table=f"{source.schema}.products",
        id="id",
        text=("title", "nope"),
        collection=store.collection.name,
    )
    with pytest.raises(SchemaError, match=r"expected columns \['nope'\]"):
        add_sync(store, bad)
    no_key = TableSync(
        "s_bad",
        table=f"{source.schema}.products",
        id="category",
        text=("title",),
        collection=store.collection.name,
    )
    with pytest.raises(SchemaError, match="unique, non-null key"):
        add_sync(store, no_key)
    add_sync(store, spec)
    with pytest.raises(SchemaError, match="exists"):
        add_sync(store, spec)
    second = TableSync(
        "s_second",
        table=f"{source.schema}.products",
        id="id",
        text=("title",),
        collection=store.collection.name,
    )
    with pytest.raises(SchemaError, match="which sync 's_"):
        add_sync(store, second)
    with pytest.raises(SchemaError, match="expected a sync named 'nope'"):
        drain(store, "nope", Counting().embedder())
    from rag_pgstore import InvalidInputError

    with pytest.raises(InvalidInputError):
        TableSync("x", table="a.b.c d", id="id", text=("t",), collection="c")
    with pytest.raises(InvalidInputError):
        TableSync("x", table="t", id="id", text=(), collection="c")
    with pytest.raises(InvalidInputError, match="without"):
        TableSync("x", table="t", id="id", text=("100%",), collection="c")
    with pytest.raises(InvalidInputError, match="at most 46"):
        TableSync("x" * 47, table="t", id="id", text=("a",), collection="c")


def test_the_sync_commands(
    db: Any, engines: tuple[Engine, AsyncEngine], source: sa.Table, collection_name: str
) -> None:
    import json
    import subprocess
    import sys

    url = db.url.render_as_string(hide_password=False)

    def rag(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "rag_pgstore.cli", *args, "--database-url", url],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr
        return done

    name, into = f"cli_{collection_name}", f"{collection_name}_cli"
    added = rag(
        "sync", "add", name, "--table", f"{source.schema}.products", "--id", "id",
        "--text", "title, description", "--metadata", "category, price",
        "--collection", into, "--embedder", "hash", "--dim", "32",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    ran = rag("sync", "run", name, "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {
        "sync": name,
        "backfilled": 30,
        "changes_applied": 0,
        "failed": 0,
        "pending": 0,
        "parked": 0,
    }
    with engines[0].begin() as conn:
        conn.execute(sa.update(source).where(source.c.id == 1).values(title="Changed"))
    status = json.loads(rag("sync", "status", name, "--json").stdout)
    assert status[0]["pending"] == 1 and status[0]["backfill"] == "done"
    again = json.loads(rag("sync", "run", name, "--json").stdout)
    assert (again["backfilled"], again["changes_applied"]) == (0, 1)
    store = ChunkStore.from_url(db.url, collection=into)
    try:
        assert store.get(["1#0"])[0].content.startswith("Changed")
        assert store.count() == 30
    finally:
        store.close()
    retried = rag("sync", "retry", name)
    assert retried.returncode == 0 and "0 parked changes" in retried.stderr, retried.stderr
    assert rag("sync", "remove", name).returncode == 0
    refused = rag(
        "sync",
        "add",
        f"{name}_x",
        "--table",
        f"{source.schema}.products",
        "--id",
        "category",
        "--text",
        "title",
        "--collection",
        f"{into}_x",
        "--embedder",
        "hash",
    )
    assert refused.returncode == 1 and "unique, non-null key" in refused.stderr
    assert f"{into}_x" not in rag("collections").stdout  # nothing left behind
    missing = rag("sync", "run", name)
    assert missing.returncode == 1 and "expected a sync named" in missing.stderr
    rag("drop", into, "--yes")


def _as_superuser(engine: Engine, *statements: sql.Composable) -> None:
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for statement in statements:
            cursor.execute(statement)


def test_the_documented_privileges_are_enough(
    db: Any, engines: tuple[Engine, AsyncEngine], source: sa.Table, collection_name: str
) -> None:
    """Three roles with only what docs/sync.md lists: one adds the sync, the application
    writes the source table (its trigger queues the changes), a worker backfills and drains
    them. A role that may not create the trigger is refused and leaves nothing behind; a
    worker that may not upgrade outdated sync objects is told who can."""
    schema = f"lp_{collection_name}"  # the collection's own schema, not public
    suffix = f"{os.getpid()}_{collection_name}"
    adder, app, worker, outsider = (f"{r}_{suffix}" for r in ("adder", "app", "worker", "nobody"))
    I = sql.Identifier  # noqa: E741
    src = I(source.schema or "", source.name)
    owner = ChunkStore(engines[0], collection=f"{collection_name}_lp", dim=DIM, schema=schema)
    owner.setup()
    c = owner.collection
    for role in (adder, app, worker, outsider):
        _as_superuser(engines[0], sql.SQL("CREATE ROLE {} LOGIN").format(I(role)))
    _as_superuser(
        engines[0],
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}, {}, {}").format(
            I(source.schema or ""), I(adder), I(app), I(worker)
        ),
        # sync add: SELECT and TRIGGER on the source table, CREATE on the collection's schema.
        sql.SQL("GRANT SELECT, TRIGGER ON {} TO {}").format(src, I(adder)),
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(I(schema), I(adder)),
        # The application: its own table, and USAGE on the collection's schema.
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(src, I(app)),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(I(schema), I(app)),
        # The worker: reads the source; writes the collection, its registry and the cache.
        sql.SQL("GRANT SELECT ON {} TO {}").format(src, I(worker)),
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(I(schema), I(worker)),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
            I(schema, c.name), I(worker)
        ),
        sql.SQL("GRANT SELECT, UPDATE ON {} TO {}").format(I(schema, c.registry.name), I(worker)),
        # Everything sync add needs but TRIGGER on the table.
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(I(source.schema or ""), I(outsider)),
        sql.SQL("GRANT SELECT ON {} TO {}").format(src, I(outsider)),
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(I(schema), I(outsider)),
    )

    def store_as(role: str) -> ChunkStore:
        return ChunkStore.from_url(
            db.url.set(username=role), collection=c.name, dim=DIM, schema=schema, setup=False
        )

    spec = TableSync(
        "lp", table=f"{source.schema}.products", id="id", text=("title",), collection=c.name
    )
    stores = {role: store_as(role) for role in (adder, worker, outsider)}
    try:
        with pytest.raises(DatabaseError) as refused:
            add_sync(stores[outsider], spec)  # it may read the table, not put a trigger on it
        assert refused.value.sqlstate == "42501"
        with engines[0].connect() as conn:  # nothing of it was left behind
            assert (
                conn.scalar(sa.select(sa.func.to_regclass(f"{schema}.rag_pgstore_syncs"))) is None
            )
        add_sync(stores[adder], spec)
        queue, syncs = I(schema, "rag_pgstore_sync_queue"), I(schema, "rag_pgstore_syncs")
        _as_superuser(
            engines[0],
            sql.SQL("GRANT INSERT ON {} TO {}").format(queue, I(app)),
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(queue, I(worker)),
            sql.SQL("GRANT SELECT, UPDATE ON {} TO {}").format(syncs, I(worker)),
        )
        model = Counting(name="lp")
        assert backfill(stores[worker], "lp", model.embedder()) == 30
        application = sa.create_engine(db.url.set(username=app))
        try:
            with application.begin() as conn:  # the trigger runs with the application's rights
                conn.execute(sa.update(source).where(source.c.id == 2).values(title="Renamed"))
                conn.execute(sa.delete(source).where(source.c.id == 3))
                conn.execute(sa.insert(source).values(id=77, title="Added"))
        finally:
            application.dispose()
        assert drain(stores[worker], "lp", model.embedder()) == DrainReport(3, 0)
        stored = texts(stores[worker])
        assert stored["2"] == "Renamed" and "3" not in stored and stored["77"] == "Added"
        # Objects made by an older release: the worker may not upgrade them, and says who can.
        _as_superuser(
            engines[0],
            sql.SQL("DROP INDEX {}").format(I(schema, "rag_pgstore_sync_queue_lease")),
            sql.SQL("COMMENT ON TABLE {} IS NULL").format(syncs),
        )
        with pytest.raises(SchemaError, match="may not upgrade them.*as the role that made them"):
            drain(stores[worker], "lp", model.embedder())
        assert drain(stores[adder], "lp", model.embedder()) == DrainReport(0, 0)  # its owner
        assert drain(stores[worker], "lp", model.embedder()) == DrainReport(0, 0)
        with engines[0].connect() as conn:
            lease = f"{schema}.rag_pgstore_sync_queue_lease"
            assert conn.scalar(sa.select(sa.func.to_regclass(lease))) is not None
    finally:
        for store in stores.values():
            store.close()
        owner.close()
        _as_superuser(
            engines[0],
            sql.SQL("DROP SCHEMA {} CASCADE").format(I(schema)),
            *(
                sql.SQL("DROP OWNED BY {}; DROP ROLE {}").format(I(r), I(r))
                for r in (adder, app, worker, outsider)
            ),
        )


def test_sync_objects_of_an_older_release_are_migrated_and_a_newer_one_refused(
    engines: tuple[Engine, AsyncEngine], source: sa.Table, collection_name: str
) -> None:
    schema = f"mig_{collection_name}"
    store = ChunkStore(engines[0], collection=f"{collection_name}_m", dim=DIM, schema=schema)
    store.setup()
    try:
        spec = TableSync(
            "mig", table=f"{source.schema}.products", id="id", text=("title",), collection="x"
        )
        add_sync(store, dataclasses.replace(spec, collection=store.collection.name))
        syncs = sql.Identifier(schema, "rag_pgstore_syncs")
        assert store.run_plan(lambda: objects.version_of(schema)) == objects.VERSION
        _as_superuser(  # as version 1 left them
            engines[0],
            sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, "rag_pgstore_sync_queue_lease")),
            sql.SQL("COMMENT ON TABLE {} IS NULL").format(syncs),
        )
        assert store.run_plan(lambda: objects.version_of(schema)) == 1
        backfill(store, "mig", Counting().embedder())
        assert store.run_plan(lambda: objects.version_of(schema)) == objects.VERSION
        assert store.count() == 30
        _as_superuser(
            engines[0],
            sql.SQL("COMMENT ON TABLE {} IS 'rag_pgstore sync objects, version 99'").format(syncs),
        )
        with pytest.raises(SchemaError, match="version <= 2, got 99: a newer rag_pgstore"):
            drain(store, "mig", Counting().embedder())
        other = ChunkStore(engines[0], collection=f"{collection_name}_m2", dim=DIM, schema=schema)
        other.setup()
        with pytest.raises(SchemaError, match="a newer rag_pgstore"):
            add_sync(
                other, dataclasses.replace(spec, name="mig2", collection=other.collection.name)
            )
        assert [s.name for s in sync_status(store)] == ["mig"]  # nothing added
        other.close()
    finally:
        store.close()
        _as_superuser(engines[0], sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
