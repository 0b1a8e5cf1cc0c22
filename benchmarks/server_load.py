"""The HTTP server under load: concurrent clients, mixed search and upsert, over localhost.

    python -m benchmarks.server_load [--entries 20000] [--clients 50] [--seconds 30]

Loads the first ``--entries`` GCIDE dictionary entries (one chunk each, a 256-d hash
embedding, an HNSW index) into a fresh collection, starts ``rag-pgstore serve`` in its own
process, and runs ``--clients`` concurrent clients (httpx, one connection each) for
``--seconds``: 60% hybrid searches, 20% vector, 10% text, 10% upserts of 10 chunks. Queries
are sent as vectors (the embedding is not what is measured) with their text. Then the same
hybrid searches are called in-process (``ChunkStore.ahybrid_search``) at the same
concurrency and for the same time, on a pool of the server's size, and alone (one at a
time), and alone (one at a time, over HTTP and in-process). Results:
``docs/results/server-load.md`` and ``docs/benchmarks/server-load.png``.

``--corpus docs`` uses this project's own docs instead of GCIDE (the tests' quick run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from benchmarks import gcide
from benchmarks.keyword import QUESTIONS
from benchmarks.page import out_dir
from rag_pgstore import Chunk, ChunkStore, HnswIndex
from rag_pgstore.connect import make_async_engine
from rag_pgstore.pipeline import hash_embedding

DIM = 256
COLLECTION = "bench_server"
POOL = 10  # the server's default --pool-size
MIX = (("hybrid", 0.6), ("vector", 0.2), ("text", 0.1), ("upsert", 0.1))
ROOT = Path(__file__).parent.parent


def corpus(kind: str, entries: int) -> list[tuple[str, str]]:
    if kind == "gcide":
        return list(gcide.entries(gcide.ensure(), limit=entries))
    paragraphs = [
        (f"{page.stem}-{i}", part.strip())
        for page in sorted((ROOT / "docs").glob("*.md"))
        for i, part in enumerate(page.read_text().split("\n\n"))
        if part.strip()
    ]
    return paragraphs[:entries]


def load(url: str | None, texts: list[tuple[str, str]]) -> ChunkStore:
    store = ChunkStore.from_url(url, collection=COLLECTION, dim=DIM, setup=False)
    store.drop()
    store.setup()
    chunks = (
        Chunk(
            chunk_id=f"e{i}",
            content=text[:4000],
            embedding=hash_embedding(text, DIM),
            entity_id=head,
            metadata={"letter": head[:1].lower(), "n": i},
        )
        for i, (head, text) in enumerate(texts)
    )
    store.upsert(chunks)
    store.create_index(HnswIndex())
    store.analyze()
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "RAG_PGSTORE_API_KEYS": f"write:{key}"}
    command = [
        sys.executable, "-m", "rag_pgstore.cli", "serve", "--database-url", url,
        "--collection", COLLECTION, "--embedder", "hash", "--dim", str(DIM),
        "--port", str(port), "--pool-size", str(POOL),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def queries() -> list[tuple[str, list[float]]]:
    return [(q, hash_embedding(q, DIM)) for q in QUESTIONS]


async def http_load(base: str, key: str, clients: int, seconds: float) -> dict[str, Any]:
    asked = queries()
    times: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def client(n: int) -> None:
        rng = random.Random(n)
        limits = httpx.Limits(max_connections=1)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            base_url=base, headers=headers, limits=limits, timeout=60
        ) as c:
            while time.monotonic() < deadline:
                kind = rng.choices(kinds, weights)[0]
                text, vector = asked[rng.randrange(len(asked))]
                url = f"/v1/collections/{COLLECTION}"
                if kind == "upsert":
                    first = next(counter) * 10
                    body: dict[str, Any] = {
                        "chunks": [
                            {
                                "chunk_id": f"load-{first + j}",
                                "content": f"{text} ({first + j})",
                                "embedding": vector,
                                "metadata": {"letter": "z"},
                            }
                            for j in range(10)
                        ]
                    }
                    request = c.post(f"{url}/chunks", json=body)
                elif kind == "hybrid":
                    request = c.post(
                        f"{url}/search/hybrid", json={"text": text, "vector": vector, "k": 10}
                    )
                elif kind == "vector":
                    request = c.post(f"{url}/search/vector", json={"vector": vector, "k": 10})
                else:
                    request = c.post(f"{url}/search/text", json={"text": text, "k": 10})
                started = time.perf_counter()
                try:
                    response = await request
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                if ok:
                    times[kind].append(elapsed)
                else:
                    errors[kind] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return {"times": dict(times), "errors": dict(errors), "wall": time.perf_counter() - started}


async def http_alone(base: str, key: str, seconds: float) -> list[float]:
    """Hybrid searches over HTTP one at a time: the server's own cost, without queueing."""
    asked = queries()
    out: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
        until = time.monotonic() + seconds
        n = 0
        while time.monotonic() < until:
            text, vector = asked[n % len(asked)]
            n += 1
            started = time.perf_counter()
            r = await c.post(
                f"/v1/collections/{COLLECTION}/search/hybrid",
                json={"text": text, "vector": vector, "k": 10},
            )
            r.raise_for_status()
            out.append(time.perf_counter() - started)
    return out


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def in_process(url: str, clients: int, seconds: float) -> dict[str, list[float]]:
    """The same hybrid searches on the store itself: ``clients`` at once, then one at a time."""
    asked = queries()
    engine = make_async_engine(url, {"pool_size": POOL, "max_overflow": POOL})
    store = await ChunkStore.aopen(None, engine, collection=COLLECTION)
    out: dict[str, list[float]] = {"concurrent": [], "alone": []}

    async def client(n: int, into: list[float], until: float) -> None:
        rng = random.Random(n)
        while time.monotonic() < until:
            text, vector = asked[rng.randrange(len(asked))]
            started = time.perf_counter()
            await store.ahybrid_search(vector, text, k=10)
            into.append(time.perf_counter() - started)

    until = time.monotonic() + seconds
    await asyncio.gather(*(client(n, out["concurrent"], until) for n in range(clients)))
    await client(0, out["alone"], time.monotonic() + min(seconds, 10))
    await engine.dispose()
    return out


def ms(values: list[float], q: float) -> float:
    return 1000 * float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--corpus", choices=["gcide", "docs"], default="gcide")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    texts = corpus(args.corpus, args.entries)
    store = load(url, texts)
    assert store.engine is not None
    target = store.engine.url.render_as_string(hide_password=False)
    key = secrets.token_urlsafe(24)
    process, base = start_server(target, key)
    try:
        server = psutil.Process(process.pid)
        before = _cpu(server), _cpu(psutil.Process())
        http = asyncio.run(http_load(base, key, args.clients, args.seconds))
        http["cpu"] = _cpu(server) - before[0], _cpu(psutil.Process()) - before[1]
        http["alone"] = asyncio.run(http_alone(base, key, min(args.seconds, 10)))
    finally:
        process.terminate()
        process.wait(60)
    local = asyncio.run(in_process(target, args.clients, args.seconds))
    store.drop()
    store.close()
    write(args, len(texts), http, local)


def write(
    args: argparse.Namespace, rows: int, http: dict[str, Any], local: dict[str, list[float]]
) -> None:
    command = (
        f"python -m benchmarks.server_load --entries {args.entries} --clients {args.clients} "
        f"--seconds {args.seconds:g}" + (" --corpus docs" if args.corpus == "docs" else "")
    )
    times: dict[str, list[float]] = http["times"]
    errors: dict[str, int] = http["errors"]
    total = sum(len(t) for t in times.values())
    lines = [
        "# The server under load",
        "",
        f"Produced by `{command}` on this machine ({os.cpu_count()} cores; the server, "
        "PostgreSQL and the clients share them). "
        f"{rows:,} {'GCIDE dictionary entries' if args.corpus == 'gcide' else 'paragraphs of docs/'}, "
        f"one chunk each, {DIM}-d hash embeddings, an HNSW index; `rag-pgstore serve` "
        f"(pool {POOL}) in its own process; {args.clients} concurrent clients (httpx, one "
        f"connection each) for {args.seconds:g} s, queries sent as vectors with their text, k=10.",
        "",
        f"{total:,} requests answered in {http['wall']:.1f} s ({total / http['wall']:,.0f}/s), "
        f"**{sum(errors.values())} errors**.",
        "",
        "| request | share | answered | errors | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, share in MIX:
        t = times.get(kind, [])
        lines.append(
            f"| {kind} | {share:.0%} | {len(t):,} | {errors.get(kind, 0)} | {ms(t, 50):.1f} | "
            f"{ms(t, 95):.1f} | {ms(t, 99):.1f} |"
        )
    hybrid = times.get("hybrid", [])
    ratio = ms(hybrid, 95) / ms(local["concurrent"], 95)
    lines += [
        "",
        "## Hybrid search: over HTTP and in-process",
        "",
        "| hybrid search | calls | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
        f"| HTTP, {args.clients} clients with the mix above | {len(hybrid):,} | {ms(hybrid, 50):.1f} | "
        f"{ms(hybrid, 95):.1f} | {ms(hybrid, 99):.1f} |",
        f"| in-process `ahybrid_search`, {args.clients} tasks, hybrid only | {len(local['concurrent']):,} | "
        f"{ms(local['concurrent'], 50):.1f} | {ms(local['concurrent'], 95):.1f} | "
        f"{ms(local['concurrent'], 99):.1f} |",
        f"| HTTP, one at a time | {len(http['alone']):,} | {ms(http['alone'], 50):.1f} | "
        f"{ms(http['alone'], 95):.1f} | {ms(http['alone'], 99):.1f} |",
        f"| in-process, one at a time | {len(local['alone']):,} | {ms(local['alone'], 50):.1f} | "
        f"{ms(local['alone'], 95):.1f} | {ms(local['alone'], 99):.1f} |",
        "",
        f"CPU seconds during the {args.seconds:g} s of load: the server process "
        f"{http['cpu'][0]:.1f}, the clients {http['cpu'][1]:.1f} (PostgreSQL the rest of "
        f"{(os.cpu_count() or 1) * args.seconds:g} core-seconds, about). At this concurrency every request waits "
        "for a core: latency is queueing, and the one-at-a-time rows show what a request "
        "itself costs.",
        "",
        f"HTTP p95 / in-process p95 at the same concurrency: **{ratio:.2f}x** (target: at most "
        f"1.5x, {'met' if ratio <= 1.5 else 'not met'}); errors: "
        f"{'none' if not sum(errors.values()) else sum(errors.values())} (target: 0).",
        "",
    ]
    out = out_dir() / "results" / "server-load.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    _plot(out_dir() / "benchmarks" / "server-load.png", times, local)
    print(out.read_text())


def _plot(path: Path, times: dict[str, list[float]], local: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {f"HTTP {k}": v for k, v in times.items()}
    series["in-process hybrid"] = local["concurrent"]
    labels = list(series)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, (q, name) in enumerate(((50, "p50"), (95, "p95"), (99, "p99"))):
        ax.bar(x + (i - 1) * 0.27, [ms(series[k], q) for k in labels], 0.27, label=name)
    ax.set_xticks(x, labels, rotation=15)
    ax.set_ylabel("ms")
    ax.set_title("rag-pgstore serve under concurrent load")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
