"""The whole benchmark suite in one run, on one server: ``docs/benchmarks.md`` and its plots.

    ./scripts/benchmarks.sh            # full run (makes the peers' virtualenv first)
    python -m benchmarks.suite --quick # seconds: what the test suite runs

Uses ``$DATABASE_URL`` when set, else the embedded server. The peers (langchain-postgres,
llama-index-vector-stores-postgres) run in the Python given by ``--peers`` or
``$BENCHMARK_PEERS_PYTHON``: they pin pgvector < 0.4, so they cannot share our virtualenv.
Results go to docs/ (or ``$BENCHMARK_RESULTS_DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import ingest, page, plots, queries
from benchmarks.corpus import Corpus
from benchmarks.timing import Latency, interleaved
from rag_pgstore import ChunkStore

ROOT = Path(__file__).parent.parent


@dataclass(frozen=True)
class Plan:
    sizes: list[tuple[int, int, int]]  # rows, dim, repeats
    query_corpus: tuple[int, int]
    queries: int
    recall_queries: int
    memory_rows: int
    chunker_mb: float
    real_model: bool


FULL = Plan(
    sizes=[(10_000, 384, 3), (10_000, 1536, 3), (100_000, 384, 1)],
    query_corpus=(100_000, 384),
    queries=200,
    recall_queries=100,
    memory_rows=1_000_000,
    chunker_mb=5,
    real_model=True,
)
QUICK = Plan(
    sizes=[(500, 384, 1), (300, 1536, 1)],
    query_corpus=(2_000, 384),
    queries=20,
    recall_queries=20,
    memory_rows=5_000,
    chunker_mb=0.05,
    real_model=False,
)


@dataclass
class Results:
    plan: Plan
    environment: dict[str, str] = field(default_factory=dict)
    ingest: dict[str, dict[str, float]] = field(default_factory=dict)  # size -> writer -> s
    latency: dict[str, dict[str, Latency]] = field(default_factory=dict)  # phase -> store
    recall: list[tuple[str, str, float, Latency]] = field(default_factory=list)
    hybrid: dict[str, Latency] = field(default_factory=dict)
    chunker: dict[str, float] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)  # peak_mb, before_mb, rss_mb_at_row
    real: dict[str, Any] = field(default_factory=dict)
    peers: dict[str, str] = field(default_factory=dict)  # versions, or why they did not run
    peer_failures: dict[str, str] = field(default_factory=dict)  # "store at size" -> error


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peers", default=os.environ.get("BENCHMARK_PEERS_PYTHON"))
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    url = os.environ.get("DATABASE_URL")
    probe = ChunkStore.from_url(url, collection="bench_probe", dim=3, setup=False)
    server_url = ingest.dsn(probe)
    results = Results(plan, environment=_environment(server_url))
    probe.close()

    for rows, dim, repeat in plan.sizes:
        runs = ingest.ingest_runs(url, Corpus(rows, dim))
        results.ingest[f"{rows}x{dim}"] = interleaved(runs, repeat)
        print(f"ingest {rows}x{dim}: {results.ingest[f'{rows}x{dim}']}", flush=True)

    corpus = Corpus(*plan.query_corpus)
    store = queries.load(url, corpus)
    results.latency["exact"] = queries.query_latency(store, corpus, plan.queries)
    queries.index(store)
    results.latency["hnsw"] = queries.query_latency(store, corpus, plan.queries)
    results.recall = queries.recalls(store, corpus, plan.recall_queries)
    results.hybrid = queries.hybrid_latency(store, corpus, plan.queries)
    store.drop()
    store.close()
    print("queries done", flush=True)

    results.chunker = _chunker(plan.chunker_mb)
    results.memory = _child(["benchmarks.memory", str(plan.memory_rows), "384"])
    print(f"memory: {results.memory}", flush=True)
    if plan.real_model:
        from benchmarks import real_text

        results.real = real_text.run(url, plan.queries)
    if args.peers and not args.quick:
        _peers(args.peers, server_url, plan, results)
    else:
        results.peers["skipped"] = "quick mode" if args.quick else "no --peers Python given"
    page.write(results, " ".join(["python -m benchmarks.suite", *sys.argv[1:]]))
    plots.draw(results)


def _environment(server_url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(server_url) as conn:
        server = conn.execute("SHOW server_version").fetchone()
        vector = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {
        p: metadata.version(p)
        for p in ("rag-pgstore", "sqlalchemy", "psycopg", "pgvector", "tiktoken", "numpy")
    }
    return {
        "machine": f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB; client and server on it",
        "PostgreSQL": str(server[0] if server else "?"),
        "pgvector extension": str(vector[0] if vector else "?"),
        "Python": platform.python_version(),
        **versions,
    }


def _chunker(megabytes: float) -> dict[str, float]:
    import time

    from benchmarks.retrieval import load_text
    from rag_pgstore.chunking import TokenChunker, load_encoding

    text = load_text(int(megabytes * 1_000_000))
    encoding = load_encoding("cl100k_base")
    chunker = TokenChunker(max_tokens=512, overlap=64)
    chunker.spans(text[:1000])  # builds the per-encoding length table once, as any process does

    def raw() -> float:
        started = time.perf_counter()
        encoding.encode_ordinary(text)
        return time.perf_counter() - started

    def ours() -> float:
        started = time.perf_counter()
        chunker.spans(text)
        return time.perf_counter() - started

    medians = interleaved({"tiktoken encode_ordinary": raw, "TokenChunker.spans": ours}, 5)
    return {name: len(text.encode()) / seconds / 1e6 for name, seconds in medians.items()}


def _child(module_args: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", *module_args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module_args[0]} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _peers(python: str, url: str, plan: Plan, results: Results) -> None:
    # One process per dimension (see peers.py); the query phase reuses the last corpus loaded
    # when it is the query corpus.
    calls = [{"sizes": [size], "queries": 0} for size in plan.sizes]
    if plan.sizes and tuple(plan.sizes[-1][:2]) == plan.query_corpus:
        calls[-1]["queries"] = plan.queries
    else:
        calls.append({"sizes": [], "queries": plan.queries})
    for call in calls:
        spec = {**call, "query_corpus": plan.query_corpus}
        done = subprocess.run(
            [
                python,
                "-m",
                "benchmarks.peers",
                url.replace("postgresql://", "postgresql+psycopg://"),
                json.dumps(spec),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the peers' run failed: {done.stderr[-3000:]}")
        found = json.loads(done.stdout.strip().splitlines()[-1])
        results.peers = found["versions"]
        results.peer_failures.update(found.get("failed", {}))
        for size, times in found["ingest"].items():
            results.ingest.setdefault(size, {}).update(times)
        for phase, stores in found["latency"].items():
            for name, (p50, p95) in stores.items():
                results.latency[phase][name] = Latency(p50, p95)
        print(f"peers: {spec}", flush=True)


if __name__ == "__main__":
    main()
