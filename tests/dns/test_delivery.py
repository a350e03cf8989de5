"""How the DNS cache hands changes to subscribers: outside its lock, in order, exactly once."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from fqdnpolicy.dns import DNSCache, DNSChange
from tests.dns.helpers import A, FakeClock, answer, lock_is_free, message

SERVER = "10.96.0.10:53"
JOIN = 30.0  # seconds: a thread still running by then is deadlocked


def make_cache(clock: FakeClock | None = None, *, report_refresh: bool = False) -> DNSCache:
    return DNSCache(
        clock=clock or FakeClock(0), trusted_servers=[SERVER], report_refresh=report_refresh
    )


def learn(cache: DNSCache, name: str, ip: str, ttl: int = 60) -> list[DNSChange]:
    return cache.ingest(answer(name, (name, A, ttl, ip)))


def run_threads(*targets: Callable[[], object]) -> None:
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN)
        assert not thread.is_alive(), "deadlocked"


def test_subscribers_run_outside_the_cache_lock_whatever_made_the_change(
    tmp_path: Path,
) -> None:
    clock = FakeClock(0)
    cache = make_cache(clock)
    free: list[bool] = []
    cache.subscribe(lambda batch: free.append(lock_is_free(cache)))
    cache.observe(message("a.com", ("a.com", "A", 10, "10.0.0.1")).to_wire(), server=SERVER)
    learn(cache, "b.com", "10.0.0.2")
    cache.observe_many([(message("c.com", ("c.com", "A", 10, "10.0.0.3")), SERVER)])
    path = str(tmp_path / "cache")
    cache.save(path)
    clock.now = 100
    cache.expire()
    clock.now = 0
    assert cache.load(path).restored == 3
    assert free == [True] * 5  # observe, ingest, observe_many, expire, load


def test_a_change_is_delivered_when_the_call_that_made_it_returns() -> None:
    cache = make_cache()
    batches: list[list[DNSChange]] = []
    cache.subscribe(batches.append)
    changes = learn(cache, "a.com", "10.0.0.1")
    assert batches == [changes] == [[DNSChange("a.com", "10.0.0.1", True, 60)]]


def test_a_subscriber_may_take_a_lock_held_by_a_thread_reading_the_cache() -> None:
    # The engine's shape: a policy change holds the engine lock and reads the cache, while a
    # DNS change reaches the engine's subscriber, which takes the engine lock. Were the
    # subscriber called under the cache lock, each thread would wait for the other forever.
    cache = make_cache()
    engine_lock = threading.Lock()
    in_subscriber, reader_holds_engine_lock = threading.Event(), threading.Event()
    got_lock: list[bool] = []
    read: list[set[str]] = []

    def subscriber(batch: list[DNSChange]) -> None:
        in_subscriber.set()
        reader_holds_engine_lock.wait(timeout=JOIN)
        got_lock.append(engine_lock.acquire(timeout=JOIN))
        engine_lock.release()

    def policy_change() -> None:
        with engine_lock:
            reader_holds_engine_lock.set()
            in_subscriber.wait(timeout=JOIN)
            read.append(cache.ips("a.com"))

    cache.subscribe(subscriber)
    run_threads(lambda: learn(cache, "a.com", "10.0.0.1"), policy_change)
    assert got_lock == [True]
    assert read == [{"10.0.0.1"}]


def test_a_subscriber_may_read_the_cache_and_sees_at_least_its_batch() -> None:
    cache = make_cache()
    seen: list[set[str]] = []
    cache.subscribe(lambda batch: seen.append(cache.ips(batch[0].name)))
    learn(cache, "a.com", "10.0.0.1")
    assert seen == [{"10.0.0.1"}]


def test_a_change_made_by_a_subscriber_reaches_everyone_after_the_batch_in_hand() -> None:
    cache = make_cache()
    calls: list[tuple[str, str]] = []

    def first(batch: list[DNSChange]) -> None:
        calls.append(("first", batch[0].name))
        if batch[0].name == "a.com":
            learn(cache, "b.com", "10.0.0.2")

    cache.subscribe(first)
    cache.subscribe(lambda batch: calls.append(("second", batch[0].name)))
    learn(cache, "a.com", "10.0.0.1")
    assert calls == [
        ("first", "a.com"),
        ("second", "a.com"),
        ("first", "b.com"),
        ("second", "b.com"),
    ]


def test_a_call_may_return_before_its_batch_and_the_delivering_thread_delivers_it() -> None:
    cache = make_cache()
    delivered: list[str] = []
    in_first, release_first = threading.Event(), threading.Event()

    def subscriber(batch: list[DNSChange]) -> None:
        if batch[0].name == "a.com":
            in_first.set()
            release_first.wait(timeout=JOIN)
        delivered.append(batch[0].name)

    cache.subscribe(subscriber)
    first = threading.Thread(target=learn, args=(cache, "a.com", "10.0.0.1"), daemon=True)
    first.start()
    assert in_first.wait(timeout=JOIN)
    # a.com's delivery is under way in the other thread: b.com's batch queues behind it.
    assert learn(cache, "b.com", "10.0.0.2") == [DNSChange("b.com", "10.0.0.2", True, 60)]
    assert delivered == []
    release_first.set()
    first.join(timeout=JOIN)
    assert not first.is_alive()
    assert delivered == ["a.com", "b.com"]


def test_threads_changing_at_once_deliver_every_batch_once_in_order_one_at_a_time() -> None:
    cache = make_cache(report_refresh=True)  # each refresh is a change: a per-name history
    delivered: list[list[DNSChange]] = []
    active = [0]
    overlapped: list[bool] = []

    def subscriber(batch: list[DNSChange]) -> None:
        active[0] += 1
        overlapped.append(active[0] > 1)
        delivered.append(batch)
        active[0] -= 1

    cache.subscribe(subscriber)
    returned: dict[int, list[list[DNSChange]]] = collections.defaultdict(list)
    start = threading.Barrier(6)

    def writer(t: int) -> None:
        start.wait(timeout=JOIN)
        for ttl in range(10, 60):
            for n in range(4):
                # Names shared by all threads and names of this thread alone.
                for name in (f"shared{n}.com", f"own{t}-{n}.com"):
                    changes = learn(cache, name, f"10.0.{n}.1", ttl=ttl * 10 + t)
                    if changes:
                        returned[t].append(changes)

    run_threads(*(lambda t=t: writer(t) for t in range(6)))

    assert not any(overlapped)
    made = [batch for batches in returned.values() for batch in batches]
    assert sorted(map(tuple, delivered)) == sorted(map(tuple, made))  # each exactly once
    position = {id(batch): i for i, batch in enumerate(delivered)}
    for batches in returned.values():  # a thread's batches arrive in the order it made them
        positions = [position[id(batch)] for batch in batches]
        assert positions == sorted(positions)
    expiries: dict[str, list[float]] = collections.defaultdict(list)
    for batch in delivered:
        for change in batch:
            expiries[change.name].append(change.expiry)
    for name, history in expiries.items():  # a refresh only extends, so in cache order...
        assert history == sorted(history), name  # ...each name's expiries only grow
    assert {name: max(history) for name, history in expiries.items()} == {
        name: max(cache.expiries(name).values()) for name in cache.names()
    }


def test_a_raising_subscriber_stops_its_batch_propagates_and_leaves_delivery_working() -> None:
    cache = make_cache()
    later: list[str] = []

    def fail_once(batch: list[DNSChange]) -> None:
        if batch[0].name == "a.com":
            raise RuntimeError("subscriber failed")

    cache.subscribe(fail_once)
    cache.subscribe(lambda batch: later.append(batch[0].name))
    with pytest.raises(RuntimeError, match="subscriber failed"):
        learn(cache, "a.com", "10.0.0.1")
    assert cache.ips("a.com") == {"10.0.0.1"}  # learned: only its delivery failed
    assert later == []  # the subscribers after the raising one miss that batch
    learn(cache, "b.com", "10.0.0.2")
    assert later == ["b.com"]


def test_when_several_batches_raise_the_first_error_carries_the_others() -> None:
    cache = make_cache()

    def subscriber(batch: list[DNSChange]) -> None:
        name = batch[0].name
        if name == "a.com":
            learn(cache, "b.com", "10.0.0.2")  # queued: delivered after this call raises
        raise RuntimeError(f"failed on {name}")

    cache.subscribe(subscriber)
    with pytest.raises(RuntimeError, match=r"failed on a\.com") as info:
        learn(cache, "a.com", "10.0.0.1")
    assert "failed on b.com" in "".join(info.value.__notes__)
    assert cache.names() == {"a.com", "b.com"}
