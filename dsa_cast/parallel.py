"""Ordered, bounded parallel map over chunks of work, in worker processes.

Grading is pure CPU work in Python, so threads do not help (the GIL); processes do. The CLI's
``grade --jobs N`` streams a file through :func:`ordered_map`: chunks of records go to ``N``
worker processes, results come back in input order, and at most ``window`` chunks are in
flight, so memory stays constant however long the file is (``multiprocessing.Pool.imap`` would
read the whole input ahead). Standard library only.
"""

from __future__ import annotations

import enum
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import Final, TypeVar

__all__ = ["available_cores", "ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _context() -> BaseContext:
    """``forkserver`` where available (no fork of a process that may hold threads, e.g. tqdm's
    monitor; cheaper than ``spawn``), else ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def ordered_map(fn: Callable[[T], R], chunks: Iterable[T], *, jobs: int, window: int) -> Generator[R, None, None]:
    """``fn(chunk)`` for every chunk, yielded in input order.

    ``fn`` must be a picklable module-level function (it runs in worker processes). With
    ``jobs == 1``, or when the input holds a single chunk, everything runs in this process and
    no worker is started. Otherwise ``jobs`` processes work on at most ``window`` chunks at a
    time (at least 2); the next chunk is read only when one is handed back. An exception raised by ``fn`` is
    re-raised here, at that chunk's place in the order. Stopping the iteration early (``break``,
    ``close()``) cancels the chunks not started and shuts the workers down.
    """
    if jobs < 1 or window < 1:
        raise ValueError(f"jobs and window must be >= 1, got jobs={jobs}, window={window}")
    window = max(window, 2)
    it = iter(chunks)
    first = next(it, _END)
    if first is _END:
        return
    second = next(it, _END) if jobs > 1 else _END
    if second is _END:
        yield fn(first)
        yield from map(fn, it)
        return
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=_context())
    try:
        pending: deque[Future[R]] = deque([pool.submit(fn, first), pool.submit(fn, second)])
        for chunk in it:
            while len(pending) >= window:
                yield pending.popleft().result()
            pending.append(pool.submit(fn, chunk))
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _End(enum.Enum):
    """The type of the end-of-input marker (an enum member, so ``x is _END`` narrows a type)."""

    END = 0


_END: Final = _End.END
