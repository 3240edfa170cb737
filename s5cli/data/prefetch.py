"""Run an iterator in a background thread, a bounded number of items ahead of whoever consumes it.

Why: turning a video into tokens alternates two slow steps, decoding (decord and the uint8 resize, both
outside the GIL) and the backbone. Run in turn, each waits for the other; with the decoder a few chunks
ahead they overlap, and the bound keeps only those few chunks in memory, never a whole film's frames.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
_POLL_SECONDS = 0.1  # how often a producer blocked on a full queue checks whether the consumer has left


@dataclass
class _Raised:
    error: BaseException


_FINISHED = object()


@contextmanager
def running_ahead(items: Iterable[T], depth: int = 2, name: str = "s5-prefetch") -> Iterator[Iterator[T]]:
    """`with running_ahead(items) as ahead:` iterate `ahead` like `items`, produced up to `depth` items early.

    An exception raised while producing an item is raised by the consumer's iteration at that item, in
    order. Leaving the block early (a `break`, an error, Ctrl-C) stops the producer after the item it is
    making, so no thread outlives the block.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not offer(item):
                    return
        except BaseException as error:  # handed to the consumer, which raises it in its own thread
            offer(_Raised(error))
            return
        finally:
            close = getattr(source, "close", None)  # a generator's `finally` (an open video) runs here
            if close is not None:
                close()
        offer(_FINISHED)

    def consume() -> Iterator[T]:
        while True:
            item = handoff.get()
            if item is _FINISHED:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item  # type: ignore[misc]

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        yield consume()
    finally:
        stop.set()
        worker.join()
