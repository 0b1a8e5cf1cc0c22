"""PNG plots for docs/benchmarks.md, where a picture reads faster than a table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from benchmarks.ingest import FLOOR
from benchmarks.page import out_dir
from benchmarks.rawsql import RAW

if TYPE_CHECKING:
    from benchmarks.suite import Results


def draw(results: Results) -> None:
    folder = out_dir() / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    _bars(
        {
            size: {w: times[FLOOR] / s for w, s in times.items()}
            for size, times in results.ingest.items()
        },
        "ingest throughput, ratio to raw binary COPY (higher is better)",
        folder / "ingest.png",
        line=0.8,
    )
    _bars(
        {
            phase: {n: lat.p50 / stores[RAW].p50 for n, lat in stores.items()}
            for phase, stores in results.latency.items()
        },
        "query p50, ratio to raw SQL (lower is better)",
        folder / "latency.png",
        line=1.2,
    )


def _bars(groups: dict[str, dict[str, float]], title: str, path: Path, line: float) -> None:
    names = list(dict.fromkeys(n for group in groups.values() for n in group))
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(names) * len(groups) + 1.5))
    y = 0.0
    ticks, labels = [], []
    for group, values in groups.items():
        for n in names:
            if n in values:
                ax.barh(
                    y,
                    values[n],
                    color="tab:blue"
                    if "rag-pgstore" in n
                    or n
                    in (
                        "ChunkStore.upsert",
                        "ChunkStore.search",
                        "LangChainVectorStore",
                        "LlamaIndexVectorStore",
                    )
                    else "tab:gray",
                )
                ax.text(values[n], y, f" {values[n]:.2f}x", va="center", fontsize=8)
                ticks.append(y)
                labels.append(f"{group}: {n}")
                y += 1
        y += 0.6
    ax.axvline(line, color="tab:red", linestyle="--", linewidth=1)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
