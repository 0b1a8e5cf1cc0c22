"""The server's Prometheus metrics, in a registry of its own (two apps in one process, as in
tests, do not share counters).

Requests are labelled by route *template* (``/v1/collections/{name}/search/hybrid``), never
by the raw path, so the number of series stays bounded whatever the clients send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

# Seconds; finer at the low end, where a search over an index lands.
_LATENCY = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    """Every metric the server reports, and the registry ``/metrics`` renders."""

    def __init__(self, pool: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rag_pgstore_http_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "rag_pgstore_http_request_duration_seconds",
            "Time to answer an HTTP request, by route, method and status",
            ["route", "method", "status"],
            buckets=_LATENCY,
            registry=r,
        )
        self.search_seconds = Histogram(
            "rag_pgstore_search_duration_seconds",
            "Time the store took for a search, by kind (vector, text, hybrid, mmr, similar); "
            "without embedding the query",
            ["kind"],
            buckets=_LATENCY,
            registry=r,
        )
        self.rows_written = Counter(
            "rag_pgstore_rows_written",
            "Chunks written, by operation (upsert, ingest)",
            ["operation"],
            registry=r,
        )
        self.rows_deleted = Counter(
            "rag_pgstore_rows_deleted", "Chunks deleted, by operation", ["operation"], registry=r
        )
        self.embedding_seconds = Histogram(
            "rag_pgstore_embedding_duration_seconds",
            "Time to embed one call's texts, by model",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.embedded_texts = Counter(
            "rag_pgstore_embedded_texts", "Texts embedded, by model", ["model"], registry=r
        )
        r.register(_PoolCollector(pool))


class _PoolCollector(Collector):
    """The connection pool as it is at each scrape."""

    def __init__(self, pool: Callable[[], Any]) -> None:
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self._pool()
        readings = {
            "size": ("Connections the pool keeps open", "size"),
            "checked_out": ("Connections in use by a request", "checkedout"),
            "overflow": (
                "Connections opened beyond the pool size (negative: not yet opened)",
                "overflow",
            ),
            "checked_in": ("Idle connections in the pool", "checkedin"),
        }
        for name, (help_text, method) in readings.items():
            family = GaugeMetricFamily(f"rag_pgstore_pool_{name}", help_text)
            reading = getattr(pool, method, None) if pool is not None else None
            if reading is not None:
                family.add_metric([], float(reading()))
            yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
