"""``Subscribers``: callbacks called in subscription order, cancelled once, safe across threads."""

from __future__ import annotations

import threading

import pytest

from fqdnpolicy.subscribers import Subscribers


def test_each_value_goes_to_every_callback_in_subscription_order() -> None:
    calls: list[tuple[str, int]] = []
    subscribers: Subscribers[int] = Subscribers()
    subscribers.add(lambda value: calls.append(("first", value)))
    subscribers.add(lambda value: calls.append(("second", value)))
    subscribers.publish(1)
    subscribers(2)
    assert calls == [("first", 1), ("second", 1), ("first", 2), ("second", 2)]


def test_cancel_ends_only_its_own_subscription_and_may_be_called_again() -> None:
    got: list[int] = []
    subscribers: Subscribers[int] = Subscribers()
    cancel_first = subscribers.add(got.append)
    subscribers.add(got.append)  # the same callback twice: two subscriptions
    assert len(subscribers) == 2
    cancel_first()
    cancel_first()
    assert len(subscribers) == 1
    subscribers.publish(7)
    assert got == [7]


def test_it_is_true_while_someone_listens() -> None:
    subscribers: Subscribers[int] = Subscribers()
    assert not subscribers
    cancel = subscribers.add(lambda value: None)
    assert subscribers
    cancel()
    assert not subscribers


def test_a_change_during_a_publication_takes_effect_from_the_next_one() -> None:
    calls: list[str] = []
    subscribers: Subscribers[int] = Subscribers()

    def late(value: int) -> None:
        calls.append(f"late {value}")

    def first(value: int) -> None:
        calls.append(f"first {value}")
        if value == 1:
            cancel_second()
            subscribers.add(late)

    subscribers.add(first)
    cancel_second = subscribers.add(lambda value: calls.append(f"second {value}"))
    subscribers.publish(1)
    subscribers.publish(2)
    assert calls == ["first 1", "second 1", "first 2", "late 2"]


def test_a_raising_callback_stops_the_publication_and_stays_subscribed() -> None:
    calls: list[int] = []
    subscribers: Subscribers[int] = Subscribers()

    def fail(value: int) -> None:
        raise RuntimeError("failed")

    subscribers.add(fail)
    subscribers.add(calls.append)
    with pytest.raises(RuntimeError, match="failed"):
        subscribers.publish(1)
    assert calls == []
    assert len(subscribers) == 2


def test_threads_subscribing_and_cancelling_at_once_lose_nothing() -> None:
    subscribers: Subscribers[int] = Subscribers()
    kept = [subscribers.add(lambda value: None) for _ in range(10)]
    start = threading.Barrier(8)

    def churn() -> None:
        start.wait()
        for _ in range(200):
            subscribers.add(lambda value: None)()
        subscribers.add(lambda value: None)

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert len(subscribers) == 10 + 8
    for cancel in kept:
        cancel()
    assert len(subscribers) == 8
