"""Read replicas: where a store's reads go, and which replicas are fit to take them.

A store with replicas sends its searches, gets and counts to a streaming standby, in turn,
and everything else (writes, setup, the pipeline's plans) to the primary. After a write
through the store, reads go to the primary for ``read_your_writes`` seconds, so a caller
sees what it just wrote even while the standbys replay it. A replica whose connection fails
is skipped for ``retry_after`` seconds (the read goes to the next one, or to the primary),
then tried again.

The state here is small and shared by the threads (or tasks) of one store, under a lock
that is never held across I/O.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore.driver.steps import Fetch, Plan
from rag_pgstore.errors import InvalidInputError

__all__ = ["ReadRouting", "Replica", "check_standby"]


@dataclass(frozen=True)
class Replica:
    """A streaming standby of the store's primary: its engines, and its URL without the
    password (for messages)."""

    engine: Engine | None
    async_engine: AsyncEngine | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.engine is None and self.async_engine is None:
            raise InvalidInputError("expected a replica with an engine, an async_engine or both")
        if not self.name:
            bound = self.engine or self.async_engine
            assert bound is not None
            object.__setattr__(self, "name", bound.url.render_as_string(hide_password=True))


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidInputError(f"expected {name} to be a number of seconds >= 0, got {value!r}")
    return float(value)


class ReadRouting:
    """Which engine a read goes to: the replicas in turn, unless the store wrote within
    ``read_your_writes`` seconds; a replica that failed sits out ``retry_after`` seconds."""

    def __init__(
        self,
        replicas: Sequence[Replica],
        *,
        read_your_writes: float = 5.0,
        retry_after: float = 30.0,
    ) -> None:
        self.replicas = tuple(replicas)
        for replica in self.replicas:
            if not isinstance(replica, Replica):
                raise InvalidInputError(
                    f"expected replicas to be Replica objects, got {type(replica).__name__}; "
                    "ChunkStore.from_url(..., replicas=[url, ...]) builds them from URLs"
                )
        self.read_your_writes = _number(read_your_writes, "read_your_writes")
        self.retry_after = _number(retry_after, "retry_after")
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._down_until: dict[Replica, float] = {}
        self._wrote_at = float("-inf")

    def wrote(self) -> None:
        """The store just wrote (or ran a plan that may have): read from the primary a while."""
        with self._lock:
            self._wrote_at = time.monotonic()

    def order(self) -> list[Replica]:
        """The replicas to try for the next read, in order: none while the store's own write
        is fresh, the failed ones left out until their time is up; the primary comes after."""
        now = time.monotonic()
        with self._lock:
            if now - self._wrote_at < self.read_your_writes or not self.replicas:
                return []
            start = next(self._turn) % len(self.replicas)
            turn = self.replicas[start:] + self.replicas[:start]
            return [r for r in turn if self._down_until.get(r, 0.0) <= now]

    def failed(self, replica: Replica) -> None:
        with self._lock:
            self._down_until[replica] = time.monotonic() + self.retry_after

    def down(self) -> list[str]:
        """The replicas sitting out now, by name."""
        now = time.monotonic()
        with self._lock:
            return [r.name for r, until in self._down_until.items() if until > now]


def identity() -> Plan[tuple[bool, int]]:
    """Whether the server is a standby, and its cluster's system identifier (a standby's is
    its primary's)."""
    rows = yield Fetch(
        sa.select(
            sa.func.pg_is_in_recovery(),
            sa.select(sa.column("system_identifier"))
            .select_from(sa.func.pg_control_system())
            .scalar_subquery(),
        )
    )
    return bool(rows[0][0]), int(rows[0][1])


def check_standby(name: str, found: tuple[bool, int], primary: tuple[bool, int]) -> None:
    """Refuse a "replica" that is a primary, or a standby of another cluster."""
    standby, system = found
    if not standby:
        raise InvalidInputError(
            f"expected replica {name} to be a standby (pg_is_in_recovery() true), got a "
            "primary: writes could go where reads never look; pass the standbys' URLs"
        )
    if system != primary[1]:
        raise InvalidInputError(
            f"expected replica {name} to be a standby of the primary (system identifier "
            f"{primary[1]}), got one of another cluster ({system})"
        )
