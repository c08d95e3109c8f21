"""runslots.py: run slots, a first-come-first-served wait queue, Busy after the queue timeout."""

from __future__ import annotations

import threading

import pytest

from clinvk_lib.runslots import Abandoned, Busy, RunLimiter
from tests.serverutil import wait_for


def waiter(limiter: RunLimiter, count: int, got: list) -> threading.Thread:
    """Start a thread that takes ``count`` slots and appends ``count`` to ``got``."""
    def take() -> None:
        limiter.acquire(count)
        got.append(count)
    t = threading.Thread(target=take, daemon=True)
    t.start()
    return t


def test_slots_within_the_limit_are_taken_at_once():
    limiter = RunLimiter(3, 0)
    assert limiter.acquire(2) == 2
    assert limiter.acquire() == 1
    assert limiter.in_use == 3


def test_no_queue_time_means_busy_at_once_with_a_retry_hint():
    limiter = RunLimiter(1, 0)
    limiter.acquire()
    with pytest.raises(Busy) as info:
        limiter.acquire()
    assert info.value.retry_after >= 1 and info.value.limit == 1


def test_waiter_gets_the_slot_that_is_released():
    limiter = RunLimiter(1, 30)
    limiter.acquire()
    got: list = []
    t = waiter(limiter, 1, got)
    assert wait_for(lambda: limiter.waiting == 1)
    limiter.release()
    t.join(5)
    assert got == [1] and limiter.in_use == 1


def test_later_small_request_does_not_overtake_the_head_of_the_line():
    limiter = RunLimiter(2, 30)
    limiter.acquire(2)
    got: list = []
    big = waiter(limiter, 2, got)
    assert wait_for(lambda: limiter.waiting == 1)
    small = waiter(limiter, 1, got)
    assert wait_for(lambda: limiter.waiting == 2)
    limiter.release(1)
    assert limiter.waiting == 2 and got == []      # one free slot is not enough for the head
    limiter.release(1)
    big.join(5)
    assert got == [2] and limiter.waiting == 1
    limiter.release(2)
    small.join(5)
    assert got == [2, 1]


def test_waiting_past_the_queue_timeout_is_busy_and_leaves_the_queue():
    limiter = RunLimiter(1, 0.2)
    limiter.acquire()
    with pytest.raises(Busy):
        limiter.acquire()
    assert limiter.waiting == 0


def test_abandoned_waiter_leaves_the_queue():
    limiter = RunLimiter(1, 30)
    limiter.acquire()
    gone = threading.Event()
    gone.set()
    with pytest.raises(Abandoned):
        limiter.acquire(abandoned=gone.is_set)
    assert limiter.waiting == 0


def test_more_than_the_limit_is_clamped_to_the_limit():
    limiter = RunLimiter(2, 0)
    assert limiter.acquire(5) == 2


def test_releasing_slots_that_were_not_held_is_an_error():
    limiter = RunLimiter(2, 0)
    with pytest.raises(RuntimeError):
        limiter.release()


def test_slot_context_manager_gives_the_slots_back():
    limiter = RunLimiter(2, 0)
    with limiter.slot(2) as taken:
        assert taken == 2 and limiter.in_use == 2
    assert limiter.in_use == 0
