"""Timing helpers shared by the benchmark sections (no database code here)."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Latency", "interleaved", "latencies"]


def interleaved(runs: dict[str, Callable[[], float]], repeat: int) -> dict[str, float]:
    """Median seconds of each run, alternating them so drift on the machine hits all alike.

    The garbage collector is emptied before each run, so that no run pays for the objects a
    previous one left behind.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            gc.collect()
            times[name].append(run())
    return {name: statistics.median(values) for name, values in times.items()}


@dataclass(frozen=True)
class Latency:
    p50: float  # milliseconds
    p95: float


def latencies(
    searches: dict[str, Callable[[int], object]], count: int, warmup: int = 20
) -> dict[str, Latency]:
    """Per-query latency of each search over queries ``0..count-1``, round-robin per query.

    Every search answers query ``i`` in turn, and the turn order rotates with ``i``: the first
    to visit a part of the index reads it into memory for the others, so no search may always
    go first.
    """
    for i in range(min(warmup, count)):
        for search in searches.values():
            search(i)
    times: dict[str, list[float]] = {name: [] for name in searches}
    names = list(searches)
    for i in range(count):
        turn = i % len(names)
        for name in names[turn:] + names[:turn]:
            started = time.perf_counter()
            searches[name](i)
            times[name].append(time.perf_counter() - started)
    return {
        name: Latency(1000 * statistics.median(t), 1000 * float(np.percentile(t, 95)))
        for name, t in times.items()
    }


def recall(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    """Mean share of the true top-k found, over queries."""
    shares = [len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True) if t]
    return float(np.mean(shares))
