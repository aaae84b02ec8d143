"""``ahead``: the next chunk is prepared in a thread while this one is scored."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator

import pytest

from covidcxr.pipeline._prepared import ahead

_SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("_SEEN", default="unset")


def test_items_come_in_order_and_are_produced_in_another_thread() -> None:
    threads: list[str] = []

    def produce() -> Iterator[int]:
        for item in range(50):
            threads.append(threading.current_thread().name)
            yield item

    assert list(ahead(produce())) == list(range(50))
    assert set(threads) == {"covidcxr-ahead"}


def test_the_producer_runs_no_further_than_depth_items_ahead() -> None:
    produced: list[int] = []

    def produce() -> Iterator[int]:
        for item in range(10):
            produced.append(item)
            yield item

    items = ahead(produce(), depth=1)
    assert next(items) == 0
    time.sleep(0.3)  # let the producer run as far as it may
    # Item 1 waits in the hand-off; item 2 is made and blocked on it; no more.
    assert len(produced) <= 3
    assert list(items) == list(range(1, 10))


def test_an_error_of_the_producer_is_raised_to_the_consumer_after_the_items_before_it() -> None:
    def produce() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    items = ahead(produce())
    assert [next(items), next(items)] == [1, 2]
    with pytest.raises(OSError, match="disk gone"):
        next(items)


def test_closing_early_stops_the_producer_and_closes_its_source() -> None:
    closed = threading.Event()

    def produce() -> Iterator[int]:
        try:
            yield from range(10_000)
        finally:
            closed.set()

    items = ahead(produce())
    assert next(items) == 0
    items.close()
    assert closed.is_set()  # close() joins the producer, which closed the source
    assert not any(t.name == "covidcxr-ahead" for t in threading.enumerate())


def test_the_producer_sees_the_callers_context_variables() -> None:
    def produce() -> Iterator[str]:
        yield _SEEN.get()

    token = _SEEN.set("the caller's")
    try:
        assert list(ahead(produce())) == ["the caller's"]
    finally:
        _SEEN.reset(token)
