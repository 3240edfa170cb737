"""running_ahead: a background producer a bounded number of items ahead, errors in order, no thread left behind."""

from __future__ import annotations

import threading
import time

import pytest

from s5cli.data.prefetch import running_ahead
from tests.waiting import wait_until


def test_items_arrive_in_order_and_all_of_them() -> None:
    with running_ahead(iter(range(50)), depth=3) as ahead:
        assert list(ahead) == list(range(50))


def test_the_producer_stays_at_most_depth_items_ahead() -> None:
    produced: list[int] = []

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    lead = []
    with running_ahead(items(), depth=2) as ahead:
        for item in ahead:
            # A slow consumer: wait until the producer is as far ahead as it may go (or has finished), then
            # a little longer, in which an unbounded producer would run further.
            assert wait_until(lambda item=item: len(produced) >= min(20, item + 1 + 3))
            time.sleep(0.002)
            lead.append(len(produced) - (item + 1))
    # Ahead of the consumed item: `depth` items in the queue and one made and waiting to be put.
    assert max(lead) == 3


def test_an_error_while_producing_is_raised_at_its_place() -> None:
    def items():
        yield 1
        yield 2
        raise ValueError("bad frame")

    seen = []
    with pytest.raises(ValueError, match="bad frame"), running_ahead(items()) as ahead:
        for item in ahead:
            seen.append(item)
    assert seen == [1, 2]


def test_leaving_early_stops_the_producer_and_closes_its_generator() -> None:
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    before = threading.active_count()
    with running_ahead(endless(), depth=2, name="s5-test-prefetch") as ahead:
        for item in ahead:
            if item == 5:
                break
    assert closed.is_set()
    assert threading.active_count() == before
    assert not any(thread.name == "s5-test-prefetch" for thread in threading.enumerate())


def test_an_error_in_the_consumer_also_stops_the_producer() -> None:
    with pytest.raises(RuntimeError, match="consumer"), running_ahead(iter(range(10**9)), depth=1) as ahead:
        next(ahead)
        raise RuntimeError("consumer failed")
    assert not any(thread.name == "s5-prefetch" for thread in threading.enumerate())


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"), running_ahead([1], depth=0):
        pass
