"""Prepare a stream's next item while the current one is written.

A streamed upsert alternates between two kinds of work: the client preparing a batch (the
caller's iterator, its embedding calls, the checks, the vectors' conversion) and the server
writing the batch before (``COPY``, triggers, indexes). Done in turn, each waits for the
other. :func:`prefetched` moves the preparation of batch *n + 1* to a worker thread while the
plan streams batch *n*: the thread holds the GIL only while it computes, and the plan's thread
gives it up whenever it waits for the server.

The caller's iterator is only ever advanced by the one worker thread, one item at a time, in
the caller's context (``contextvars``), so it sees what it would see on the caller's thread.
:func:`aprefetched` does the same for an async stream with a task on the running loop: the
next batch is prepared whenever the plan awaits the server.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["aprefetched", "prefetched"]

T = TypeVar("T")
_END = object()


def prefetched(source: Iterator[T]) -> Iterator[T]:
    """``source``'s items, each computed in a worker thread while the one before is used."""
    return _Prefetched(source)


class _Prefetched(Iterator[T]):
    def __init__(self, source: Iterator[T]) -> None:
        self._source = source
        self._context = contextvars.copy_context()
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: Future[object] | None = None
        self._ended = False

    def _advance(self) -> object:
        return next(self._source, _END)

    def _submit(self) -> Future[object]:
        if self._pool is None:  # the thread starts at the first item, not at construction
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="rag-pgstore-prefetch")
            # Stop the thread once nobody holds the stream (a plan that failed mid-way).
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool.submit(self._context.run, self._advance)

    def __next__(self) -> T:
        if self._ended:
            raise StopIteration
        ahead = self._ahead if self._ahead is not None else self._submit()
        self._ahead = None
        try:
            item = ahead.result()  # the caller's exception, if its iterator raised one
        except BaseException:
            self._end()
            raise
        if item is _END:
            self._end()
            raise StopIteration
        self._ahead = self._submit()
        return item  # type: ignore[return-value]

    def _end(self) -> None:
        self._ended = True
        if self._pool is not None:
            self._pool.shutdown(wait=False)


async def aprefetched(source: AsyncIterator[T]) -> AsyncIterator[T]:
    """``source``'s items, each computed by a task while the one before is used."""
    ahead: asyncio.Future[object] = asyncio.ensure_future(anext(source, _END))
    try:
        while True:
            item = await ahead
            if item is _END:
                return
            ahead = asyncio.ensure_future(anext(source, _END))
            yield item  # type: ignore[misc]
    finally:
        # The plan stopped early (it failed, or was cancelled): drop the batch in preparation,
        # and its error if it had one, which would only be logged as never retrieved.
        ahead.cancel()
        ahead.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()
