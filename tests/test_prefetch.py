"""A stream's next batch is prepared in a worker thread while the current one is written."""

from __future__ import annotations

import contextvars
import gc
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from rag_pgstore.driver.prefetch import aprefetched, prefetched

REQUEST = contextvars.ContextVar("request", default="none")


def test_items_come_in_order_from_one_thread_in_the_callers_context() -> None:
    threads: set[int] = set()
    seen: list[str] = []

    def source() -> Iterator[int]:
        for i in range(20):
            threads.add(threading.get_ident())
            seen.append(REQUEST.get())
            yield i

    REQUEST.set("req-42")
    stream = prefetched(source())
    assert list(stream) == list(range(20))
    assert next(stream, None) is None  # exhausted stays exhausted
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert set(seen) == {"req-42"}


def test_the_next_item_is_prepared_while_the_current_one_is_used() -> None:
    def slow() -> Iterator[int]:
        for i in range(4):
            time.sleep(0.2)
            yield i

    started = time.perf_counter()
    for _ in prefetched(slow()):
        time.sleep(0.2)  # the "write" of this item overlaps the preparation of the next
    assert time.perf_counter() - started < 1.4  # 1.6 s if done in turn


def test_the_sources_exception_reaches_the_caller_and_the_thread_stops() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("bad chunk 2")

    stream = prefetched(failing())
    assert next(stream) == 1
    with pytest.raises(ValueError, match="bad chunk 2"):
        next(stream)
    assert next(stream, None) is None


def test_an_abandoned_stream_stops_its_thread() -> None:
    def endless() -> Iterator[int]:
        i = 0
        while True:
            i += 1
            yield i

    before = set(threading.enumerate())
    stream = prefetched(endless())
    assert next(stream) == 1
    mine = [t for t in threading.enumerate() if t not in before]
    assert [t.name.startswith("rag-pgstore-prefetch") for t in mine] == [True]
    del stream
    gc.collect()
    deadline = time.monotonic() + 5
    while mine[0].is_alive():
        assert time.monotonic() < deadline, "the prefetch thread outlived its stream"
        time.sleep(0.05)


async def test_an_async_stream_is_prepared_while_the_current_item_is_used() -> None:
    import asyncio

    async def slow() -> AsyncIterator[int]:
        for i in range(4):
            await asyncio.sleep(0.2)
            yield i

    started = time.perf_counter()
    got = []
    async for item in aprefetched(slow()):
        got.append(item)
        await asyncio.sleep(0.2)
    assert got == [0, 1, 2, 3]
    assert time.perf_counter() - started < 1.4


async def test_an_async_sources_exception_reaches_the_caller() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise ValueError("bad chunk 2")

    stream = aprefetched(failing())
    assert await anext(stream) == 1
    with pytest.raises(ValueError, match="bad chunk 2"):
        await anext(stream)
