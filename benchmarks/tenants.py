"""Searching one tenant of a skewed collection: each index strategy side by side in one run.

    python -m benchmarks.tenants                       # 200,000 rows x 64, 1,000 small tenants
    python -m benchmarks.tenants --quick               # seconds: the shape, not the numbers

One collection with tenancy: tenant ``big`` holds half the rows, ``--small`` tenants share the
other half equally (100 rows each by default). Vectors are the clustered synthetic corpus of
``benchmarks/corpus.py`` (a Gaussian mixture of 100 centres); queries are fresh points from
the same mixture. For a query of the big tenant and one of a small tenant, each strategy:

- **default**: ``SearchTuning()``, the store's own choice: a tenant the planner estimates at
  ``exact_below`` rows or fewer is searched exactly, a larger one through the shared HNSW
  index with iterative scan;
- **shared HNSW**: ``SearchTuning(exact=False)``, the ANN query with iterative scan for every
  tenant (the planner may still prefer the btree for a tiny tenant: the plan is reported);
- **exact**: ``SearchTuning(exact=True)``, the tenant's rows through the btree, sorted;
- **partial HNSW for big**: a second collection of the same rows with the shared index and
  ``store.create_index(tenant="big")``, searched with the default;
- **LIST partitions**: the same rows in a table ``PARTITION BY LIST (tenant_id)`` (one
  partition for ``big``, a ``DEFAULT`` one for the rest), an HNSW index on each, searched in
  raw SQL with the settings our search sends;
- **raw SQL**: ``WHERE tenant_id = $1 ORDER BY embedding <=> $2 LIMIT 10`` on our table with
  its shared HNSW index and the settings our search sends, ids only (the reference).

Reported: recall@10 against exact neighbours within the tenant (numpy), p50/p95 latency,
the index each plan used, and each index's build time and size. Results:
``docs/results/tenants.md`` and ``docs/benchmarks/tenants.png``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import sqlalchemy as sa
from pgvector.psycopg import register_vector
from psycopg import sql

from benchmarks.corpus import Corpus, queries
from benchmarks.ingest import dsn
from benchmarks.page import out_dir
from benchmarks.timing import Latency, latencies, recall
from rag_pgstore import Chunk, ChunkStore, HnswIndex, SearchTuning
from rag_pgstore.ops.reads import scan_settings
from rag_pgstore.schema import tenant_index_name

COLLECTION = "bench_tenants"  # the shared HNSW index only
PARTIAL = "bench_tenants_partial"  # the same rows, the shared index and big's own
LIST_TABLE = "bench_tenants_list"
LIST_ANN = "bench_tenants_list_ann"  # on the parent: one index per partition beneath it
BIG = "big"
BATCH = 5_000
K = 10
CLASSES = ("big", "small")
# What our filtered ANN search sets (ef_search 150 for k=10, strict-order iterative scan,
# custom plans), so that raw SQL and LIST partitions are measured with the same settings.
SETTINGS = scan_settings(SearchTuning(), filtered=True, wanted=K)
RAW = "raw SQL, shared HNSW"


@dataclass(frozen=True)
class Layout:
    """Which rows belong to which tenant: rows ``0..big`` are the big tenant's, then blocks."""

    rows: int
    small: int

    @property
    def big(self) -> int:
        return self.rows // 2

    @property
    def per_small(self) -> int:
        return (self.rows - self.big) // self.small

    def small_name(self, number: int) -> str:
        return f"t{number:04d}"

    def span(self, tenant: str) -> tuple[int, int]:
        if tenant == BIG:
            return 0, self.big
        start = self.big + int(tenant[1:]) * self.per_small
        return start, start + self.per_small

    def tenants(self) -> Iterator[str]:
        yield BIG
        yield from (self.small_name(n) for n in range(self.small))


# A search of one tenant for query number i, returning chunk ids nearest first.
Search = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class Measured:
    recall: float
    latency: Latency
    plan: str  # the index (or scan) the plan of the first query used


def load(store: ChunkStore, corpus: Corpus, layout: Layout) -> float:
    """Each tenant's rows through its own view, in lists of ``BATCH``; returns seconds."""
    vectors = corpus.vectors()
    texts = corpus.texts()
    started = time.perf_counter()
    for tenant in layout.tenants():
        view = store.for_tenant(tenant)
        first, last = layout.span(tenant)
        for start in range(first, last, BATCH):
            stop = min(last, start + BATCH)
            view.upsert(
                [
                    Chunk(
                        chunk_id=f"c{i}",
                        entity_id=f"e{i // 10}",
                        chunk_index=i % 10,
                        content=texts[i],
                        embedding=vectors[i],
                    )
                    for i in range(start, stop)
                ]
            )
    return time.perf_counter() - started


def truth(corpus: Corpus, layout: Layout, tenant: str, query: npt.NDArray[np.float32]) -> list[str]:
    """The exact top-k ids within ``tenant`` (unit vectors: cosine is the inner product)."""
    first, last = layout.span(tenant)
    sims = corpus.vectors(first, last) @ query
    best = np.argsort(-sims, kind="stable")[:K]
    return [f"c{first + int(i)}" for i in best]


def index_size(conn: psycopg.Connection[Any], name: str) -> float:
    """Megabytes of index ``name``, with every partition's index beneath it."""
    row = conn.execute(
        "SELECT coalesce(sum(pg_relation_size(relid)), pg_relation_size(to_regclass(%(i)s))) "
        "FROM pg_partition_tree(to_regclass(%(i)s))",
        {"i": name},
    ).fetchone()
    return float(row[0] or 0) / 1e6 if row else 0.0


def plan_of(conn: psycopg.Connection[Any], statement: sql.Composable, params: Sequence[Any]) -> str:
    """The index names (or ``Seq Scan``) in the plan, in plan order."""
    rows = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + statement, params).fetchone()
    assert rows is not None
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node:
            found.append(str(node["Index Name"]))
        elif node.get("Node Type") == "Seq Scan":
            found.append(f"Seq Scan on {node['Relation Name']}")
        for child in node.get("Plans", []):
            walk(child)

    walk(rows[0][0]["Plan"])
    return ", ".join(dict.fromkeys(found)) or "?"


def nearest(table: str) -> sql.Composed:
    return sql.SQL(
        "SELECT chunk_id FROM {} WHERE tenant_id = %s ORDER BY embedding <=> %s LIMIT %s"
    ).format(sql.Identifier(table))


def settle(conn: psycopg.Connection[Any]) -> None:
    """``SETTINGS`` for this transaction, in one statement as our search sends them."""
    calls = sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value))
        for name, value in SETTINGS.items()
    )
    conn.execute(sql.SQL("SELECT ") + calls)


def raw_search(conn: psycopg.Connection[Any], table: str, asked: npt.NDArray[np.float32]) -> Search:
    def run(tenant: str, i: int) -> list[str]:
        with conn.transaction():
            settle(conn)
            rows = conn.execute(nearest(table), [tenant, asked[i], K]).fetchall()
        return [r[0] for r in rows]

    return run


def list_partitions(conn: psycopg.Connection[Any], spec: HnswIndex, dim: int) -> float:
    """The same rows in a LIST-partitioned table, an HNSW index per partition; returns the
    seconds the index build took."""
    table = sql.Identifier(LIST_TABLE)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (tenant_id text NOT NULL, chunk_id text NOT NULL, "
            "embedding vector({}) NOT NULL, PRIMARY KEY (tenant_id, chunk_id)) "
            "PARTITION BY LIST (tenant_id)"
        ).format(table, sql.Literal(dim))
    )
    conn.execute(
        sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ({})").format(
            sql.Identifier(f"{LIST_TABLE}_big"), table, sql.Literal(BIG)
        )
    )
    conn.execute(
        sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(
            sql.Identifier(f"{LIST_TABLE}_rest"), table
        )
    )
    conn.execute(
        sql.SQL("INSERT INTO {} SELECT tenant_id, chunk_id, embedding FROM {}").format(
            table, sql.Identifier(COLLECTION)
        )
    )
    started = time.perf_counter()
    with conn.transaction():  # the server's maintenance_work_mem, as create_index() uses
        conn.execute(
            sql.SQL(
                "CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = {}, ef_construction = {})"
            ).format(
                sql.Identifier(LIST_ANN),
                table,
                sql.Literal(spec.m),
                sql.Literal(spec.ef_construction),
            )
        )
    built = time.perf_counter() - started
    conn.execute(sql.SQL("ANALYZE {}").format(table))
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--small", type=int, default=1_000, help="number of small tenants")
    parser.add_argument("--queries", type=int, default=100, help="per tenant class")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="4,000 rows, 20 small tenants")
    parser.add_argument("--output", default="tenants.md", help="file name under docs/results")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.small, args.queries = 4_000, 20, 10
    layout = Layout(args.rows, args.small)
    corpus = Corpus(rows=args.rows, dim=args.dim)
    spec = HnswIndex(m=args.m, ef_construction=args.ef_construction)
    shared, partial = (
        ChunkStore.from_url(
            os.environ.get("DATABASE_URL"),
            collection=name,
            dim=args.dim,
            setup=False,
            tenancy=True,
            keyword="off",
        )
        for name in (COLLECTION, PARTIAL)
    )
    try:
        for store in (shared, partial):
            store.drop()
            store.setup()
        results = run(shared, partial, corpus, layout, spec, args.queries)
    finally:
        for store in (shared, partial):
            store.drop()
        with psycopg.connect(dsn(shared), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(LIST_TABLE)))
        for store in (shared, partial):
            store.close()
    write(args, layout, results)


@dataclass(frozen=True)
class Results:
    load: float
    builds: dict[str, tuple[float, float]]  # index: (seconds, MB)
    measured: dict[str, dict[str, Measured]]  # class: strategy: measured
    memory: str  # the server's maintenance_work_mem


def run(
    shared: ChunkStore,
    partial: ChunkStore,
    corpus: Corpus,
    layout: Layout,
    spec: HnswIndex,
    count: int,
) -> Results:
    """Every layout built first, then every strategy measured in one interleaved run, so
    that drift on the machine reaches all of them alike."""
    loaded = load(shared, corpus, layout)
    load(partial, corpus, layout)
    print(f"loaded {layout.rows:,} rows in {loaded:.0f} s (twice)", flush=True)
    asked = queries(corpus, count)
    step = max(1, layout.small // count)
    tenants = {
        "big": [BIG] * count,
        "small": [layout.small_name((i * step) % layout.small) for i in range(count)],
    }
    truths = {
        cls: [truth(corpus, layout, t, q) for t, q in zip(tenants[cls], asked, strict=True)]
        for cls in CLASSES
    }
    builds: dict[str, tuple[float, float]] = {}
    lists = asked.tolist()  # as a user hands them over, built outside every clock
    owners: dict[Search, ChunkStore] = {}  # our searches, and the store each goes through

    def ours(store: ChunkStore, tuning: SearchTuning) -> Search:
        def search(tenant: str, i: int) -> list[str]:
            hits = store.for_tenant(tenant).search(lists[i], k=K, tuning=tuning)
            return [h.chunk.chunk_id for h in hits]

        owners[search] = store
        return search

    with psycopg.connect(dsn(shared), autocommit=True) as conn:
        register_vector(conn)
        by_hand: dict[Search, str] = {}  # the raw SQL searches, and the table each reads

        def raw(table: str) -> Search:
            search = raw_search(conn, table, asked)
            by_hand[search] = table
            return search

        def planned(search: Search, tenant: str) -> str:
            if search in by_hand:
                with conn.transaction():
                    settle(conn)
                    return plan_of(conn, nearest(by_hand[search]), [tenant, asked[0], K])
            return our_plan(owners[search], search, tenant)

        started = time.perf_counter()
        shared.create_index(spec)
        builds["shared HNSW (all rows)"] = (
            time.perf_counter() - started,
            index_size(conn, shared.collection.index_name),
        )
        partial.create_index(spec)
        started = time.perf_counter()
        partial.create_index(spec, tenant=BIG)
        builds["partial HNSW (big)"] = (
            time.perf_counter() - started,
            index_size(conn, tenant_index_name(partial.collection, BIG)),
        )
        seconds = list_partitions(conn, spec, corpus.dim)
        builds["LIST partitions: HNSW per partition"] = (seconds, index_size(conn, LIST_ANN))
        shared.analyze()
        partial.analyze()
        searches = {
            "default": ours(shared, SearchTuning()),
            "shared HNSW": ours(shared, SearchTuning(exact=False)),
            "exact": ours(shared, SearchTuning(exact=True)),
            RAW: raw(COLLECTION),
            "partial HNSW for big": ours(partial, SearchTuning()),
            "raw SQL, partial HNSW for big": raw(PARTIAL),
            "LIST partitions (raw SQL)": raw(LIST_TABLE),
        }
        measured: dict[str, dict[str, Measured]] = {}
        for cls in CLASSES:
            found = measure(searches, tenants[cls], truths[cls])
            measured[cls] = {
                name: Measured(share, latency, planned(searches[name], tenants[cls][0]))
                for name, (share, latency) in found.items()
            }
            for name, m in measured[cls].items():
                print(cls, name, m, flush=True)
        row = conn.execute("SELECT current_setting('maintenance_work_mem')").fetchone()
    assert row is not None
    return Results(loaded, builds, measured, str(row[0]))


def measure(
    searches: dict[str, Search],
    tenants: list[str],
    truths: list[list[str]],
) -> dict[str, tuple[float, Latency]]:
    """Each search's recall@10 and latency over the queries, the searches taking turns."""
    found = {
        name: [search(t, i) for i, t in enumerate(tenants)] for name, search in searches.items()
    }

    def turn(search: Search) -> Callable[[int], object]:
        return lambda i: search(tenants[i], i)

    timed = latencies({name: turn(search) for name, search in searches.items()}, len(tenants))
    return {name: (recall(found[name], truths), timed[name]) for name in searches}


def our_plan(
    store: ChunkStore,
    search: Search,
    tenant: str,
) -> str:
    """The indexes the plan of one of our searches used.

    The statements the search sends are recorded, then replayed in one transaction of a
    connection of our own, with ``EXPLAIN`` before the last (the search itself).
    """
    sent: list[tuple[str, Any]] = []

    def record(*event: Any) -> None:
        sent.append((event[2], event[3]))

    assert store.engine is not None
    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        search(tenant, 0)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    *before, (statement, params) = sent
    with psycopg.connect(dsn(store)) as conn, conn.transaction():
        for earlier, values in before:
            conn.execute(sql.SQL(earlier), values)
        return plan_of(conn, sql.SQL(statement), params)


def write(args: argparse.Namespace, layout: Layout, results: Results) -> None:
    command = "python -m benchmarks.tenants" + (
        " --quick"
        if args.quick
        else f" --rows {args.rows} --dim {args.dim} --small {args.small} "
        f"--queries {args.queries} --m {args.m} --ef-construction {args.ef_construction}"
    )
    if args.output != "tenants.md":
        command += f" --output {args.output}"
    lines = [
        "# Searching one tenant of a skewed collection",
        "",
        f"Produced by `{command}` on this machine (2 cores, embedded PostgreSQL 18, pgvector "
        f"0.8.5). {layout.rows:,} chunks x {args.dim} dimensions (a Gaussian mixture of 100 "
        f"centres) in one collection with tenancy: tenant `big` holds {layout.big:,} rows, "
        f"{layout.small:,} small tenants {layout.per_small:,} rows each. Loaded through "
        f"tenant views in {results.load:.0f} s. HNSW m={args.m}, "
        f"ef_construction={args.ef_construction}; every filtered HNSW search, ours and the "
        f"raw SQL alike, with {', '.join(f'{k}={v}' for k, v in SETTINGS.items())}. "
        f"{args.queries} "
        "queries per tenant class (fresh points from the mixture; one small tenant per query), "
        "recall@10 against the exact top 10 within the tenant.",
        "",
    ]
    for cls in CLASSES:
        rows = results.measured[cls]
        raw = rows[RAW].latency.p50
        lines += [
            f"## A {'big' if cls == 'big' else 'small'} tenant's query",
            "",
            "| strategy | recall@10 | p50 | p95 | p50 x raw SQL | plan used |",
            "|---|---|---|---|---|---|",
        ]
        for name, m in rows.items():
            lines.append(
                f"| {name} | {m.recall:.3f} | {m.latency.p50:.2f} ms | {m.latency.p95:.2f} ms | "
                f"{m.latency.p50 / raw:.2f}x | {m.plan} |"
            )
        lines.append("")
    lines += ["## Index builds", "", "| index | build | size |", "|---|---|---|"]
    for name, (seconds, mb) in results.builds.items():
        lines.append(f"| {name} | {seconds:.1f} s | {mb:,.1f} MB |")
    lines += [
        "",
        "Strategies: *default* is `SearchTuning()` (exact below `exact_below` estimated rows, "
        "else the shared HNSW index); *shared HNSW* is `SearchTuning(exact=False)`; *exact* is "
        "`SearchTuning(exact=True)`; *partial HNSW for big* is a second collection of the "
        "same rows with the shared index and `store.create_index(tenant='big')`, searched "
        "with the default; *LIST partitions (raw SQL)* is the same data "
        "in a table partitioned by `LIST (tenant_id)` (big alone, a default partition for the "
        "rest), an HNSW index per partition; *raw SQL, shared HNSW* is the hand-written "
        "filtered query on our table (the reference of the ratios), and *raw SQL, partial "
        "HNSW for big* the same query once the partial index exists. The raw SQL returns ids "
        "only. Ours returns whole chunks through a tenant view: it sets the tenant "
        "(`SET LOCAL`), asks the planner how many rows the tenant has (one `EXPLAIN`, unless "
        "`exact` is given) and joins the winners back for their columns.",
        "",
        f"Index builds ran with the server's maintenance_work_mem ({results.memory}), as "
        "`create_index()` does; build times leave out `ANALYZE`. Every layout is built "
        "before any search runs (the partial index in a second collection of the same rows), "
        "and the searches take turns query by query. Their indexes together (about 400 MB) "
        "are larger than the server's shared buffers (PostgreSQL's default, 128 MB), so each "
        "search also reads pages another one evicted, as on a server whose indexes outgrow "
        "its memory.",
        "",
        "![p50 per strategy](../benchmarks/tenants.png)",
        "",
    ]
    out = out_dir() / "results" / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    plot(results, out_dir() / "benchmarks" / "tenants.png")
    print(out.read_text())


def plot(results: Results, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(CLASSES), figsize=(11, 3.8))
    for ax, cls in zip(axes, CLASSES, strict=True):
        rows = results.measured[cls]
        names = list(rows)
        p50 = [rows[n].latency.p50 for n in names]
        ax.barh(names, p50, color=["tab:gray" if "raw SQL" in n else "tab:blue" for n in names])
        for y, n in enumerate(names):
            ax.text(
                p50[y], y, f" {p50[y]:.2f} ms, recall {rows[n].recall:.2f}", va="center", fontsize=8
            )
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(f"{cls} tenant: p50, log scale (gray: raw SQL)")
        ax.set_xlim(right=max(p50) * 30)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
