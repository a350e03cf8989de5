"""``DNSCache.observe_many``: the same as ``observe`` on each pair in turn, in chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.dns import DNSCache, DNSChange
from tests.dns.helpers import lock_is_free, message

SERVER = "10.96.0.10:53"
OTHER = "10.96.0.11:53"  # not trusted


class TickingClock:
    """Moves on at every read, so both ways of observing must read it equally often."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def typical(i: int, target: int, ttl: int = 60, rcode: int = 0) -> dns.message.Message:
    name = f"api{i}.example.com."
    edge = f"edge{target}.cdn.example.net."
    response = message(
        name,
        (name, "CNAME", 300, edge),
        (edge, "A", ttl, f"198.51.100.{target}"),
        (edge, "A", ttl, f"198.51.100.{target + 100}"),
    )
    response.set_rcode(dns.rcode.Rcode(rcode))
    return response


def _pool() -> list[Any]:
    """Responses of every kind ``observe`` takes, some sharing names and chain ends."""
    pool: list[Any] = []
    for i in range(6):
        for ttl in (30, 60):
            pool.append(typical(i, i % 3, ttl).to_wire())
    data = typical(7, 1).to_wire()
    pool += [bytearray(data), memoryview(typical(8, 2).to_wire()), typical(9, 0)]
    pool.append(typical(10, 1, rcode=3).to_wire())  # NXDOMAIN: counted, not learned
    pool.append(data[:-3])  # cut short: malformed
    pool.append(b"\x00\x01garbage")
    mx = message("mx.example.", ("mx.example.", "MX", 60, "10 mail.example."))
    mx.answer += message("mx.example.", ("mx.example.", "A", 60, "203.0.113.9")).answer
    pool.append(mx.to_wire())  # declined by the fast path: parsed by dnspython
    return pool


POOL = _pool()


def _recording_cache(clock: Callable[[], float], max_names: int) -> tuple[DNSCache, list[Any]]:
    cache = DNSCache(clock=clock, trusted_servers=[SERVER], max_names=max_names)
    calls: list[Any] = []
    # What a subscriber gets and what it sees of the cache when it gets it.
    cache.subscribe(lambda batch: calls.append((list(batch), cache.mapping())))
    return cache, calls


def _outcome(cache: DNSCache, calls: list[Any]) -> tuple[Any, ...]:
    changes = [change for batch, _ in calls for change in batch]
    return cache.mapping(), cache.links(), cache.stats, cache.next_expiry(), changes


def _views(calls: list[Any]) -> list[tuple[int, Any]]:
    """Each call's view of the cache, keyed by how many changes had been delivered by its end."""
    views, delivered = [], 0
    for batch, mapping in calls:
        delivered += len(batch)
        views.append((delivered, mapping))
    return views


# The pool's names overflow 40 names, so answers also evict.
def _one_at_a_time(
    pairs: list[tuple[Any, str]], max_names: int = 40
) -> tuple[tuple[Any, ...], int]:
    cache, calls = _recording_cache(TickingClock(), max_names)
    count = sum(len(cache.observe(response, server=server)) for response, server in pairs)
    return _outcome(cache, calls), count


def _many(pairs: list[tuple[Any, str]], max_names: int = 40) -> tuple[tuple[Any, ...], int]:
    cache, calls = _recording_cache(TickingClock(), max_names)
    count = cache.observe_many(iter(pairs))
    return _outcome(cache, calls), count


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(POOL), st.sampled_from([SERVER, OTHER, "not an address"])),
        max_size=200,
    )
)
def test_observe_many_is_observe_on_each_pair_in_turn(pairs: list[tuple[Any, str]]) -> None:
    assert _many(pairs) == _one_at_a_time(pairs)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(POOL), max_size=200))
def test_each_batch_ends_where_a_response_ends_and_sees_the_cache_after_it(
    responses: list[Any],
) -> None:
    pairs = [(response, SERVER) for response in responses]
    one, calls_one = _recording_cache(TickingClock(), 40)
    after_response = []  # (changes delivered so far, the cache) after each response
    for response, server in pairs:
        one.observe(response, server=server)
        after_response.append((sum(len(batch) for batch, _ in calls_one), one.mapping()))
    many, calls_many = _recording_cache(TickingClock(), 40)
    many.observe_many(pairs)
    for view in _views(calls_many):
        assert view in after_response
    # One batch per chunk that changed anything, not one per response.
    assert len(calls_many) <= -(-len(pairs) // 64)


def test_chunks_of_new_names_untrusted_and_malformed_alike() -> None:
    # 300 pairs: several chunks, with the counted-only kinds between the learned ones.
    pairs: list[tuple[Any, str]] = []
    for i in range(300):
        if i % 7 == 3:
            pairs.append((typical(i, i % 50).to_wire(), OTHER))
        elif i % 11 == 5:
            pairs.append((b"\x00\x01garbage", SERVER))
        else:
            pairs.append((typical(i, i % 50).to_wire(), SERVER))
    many, count = _many(pairs, max_names=1000)
    assert (many, count) == _one_at_a_time(pairs, max_names=1000)
    stats = many[2]
    untrusted = sum(1 for i in range(300) if i % 7 == 3)
    malformed = sum(1 for i in range(300) if i % 7 != 3 and i % 11 == 5)
    assert (stats.untrusted, stats.malformed) == (untrusted, malformed)
    assert stats.answers == 300 - untrusted - malformed
    assert count == len(many[4])
    assert many[0]["api299.example.com"].keys() == {"198.51.100.49", "198.51.100.149"}


def test_responses_are_parsed_outside_the_lock_learned_under_it_delivered_outside() -> None:
    cache = DNSCache(trusted_servers=[SERVER])
    lock_free_while_parsing: list[bool] = []

    class Probed(bytearray):
        def __bytes__(self) -> bytes:  # observe's extraction turns a bytearray into bytes
            lock_free_while_parsing.append(lock_is_free(cache))
            return bytes(memoryview(self))

    lock_free_in_subscriber: list[bool] = []
    cache.subscribe(lambda batch: lock_free_in_subscriber.append(lock_is_free(cache)))
    cache.observe_many((Probed(typical(i, i).to_wire()), SERVER) for i in range(3))
    assert lock_free_while_parsing == [True, True, True]
    assert lock_free_in_subscriber == [True]  # the chunk's changes in one batch
    # observe, by contrast, parses under the lock: the probe can tell the difference.
    cache.observe(Probed(typical(5, 5).to_wire()), server=SERVER)
    assert lock_free_while_parsing[-1] is False


@pytest.mark.parametrize("bad_at", [2, 70, 130])
@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (42, "item {} is not a (response, server) pair"),
        ((None, SERVER), "item {}: .* not NoneType"),
    ],
    ids=["not a pair", "not a response"],
)
def test_a_bad_item_raises_after_learning_what_came_before_it(
    bad_at: int, bad: Any, says: str
) -> None:
    pairs: list[Any] = [(typical(i, i % 50).to_wire(), SERVER) for i in range(140)]
    pairs.insert(bad_at, bad)
    cache = DNSCache(trusted_servers=[SERVER])
    with pytest.raises(
        TypeError, match=says.format(bad_at).replace("(", r"\(").replace(")", r"\)")
    ):
        cache.observe_many(pairs)
    learned = {f"api{i}.example.com" for i in range(bad_at)}
    assert {name for name in cache.names() if name.startswith("api")} == learned


def test_observe_takes_wire_bytes_or_a_message_and_says_so_otherwise() -> None:
    cache = DNSCache(trusted_servers=[SERVER])
    for bad in (None, "text", 123):
        with pytest.raises(TypeError, match=f"not {type(bad).__name__}"):
            cache.observe(bad, server=SERVER)  # type: ignore[arg-type]
    assert len(cache) == 0
    assert cache.stats.malformed == 0


@pytest.mark.parametrize(("failing_call", "learned"), [(1, 64), (2, 128)])
def test_a_raising_subscriber_stops_after_the_chunk_it_was_given(
    failing_call: int, learned: int
) -> None:
    pairs = [(typical(i, i % 50).to_wire(), SERVER) for i in range(150)]
    cache = DNSCache(clock=lambda: 1000.0, trusted_servers=[SERVER])
    calls: list[list[DNSChange]] = []

    def subscriber(batch: list[DNSChange]) -> None:
        calls.append(batch)
        if len(calls) == failing_call:
            raise RuntimeError("subscriber failed")

    cache.subscribe(subscriber)
    with pytest.raises(RuntimeError, match="subscriber failed"):
        cache.observe_many(pairs)
    assert {name for name in cache.mapping() if name.startswith("api")} == {
        f"api{i}.example.com" for i in range(learned)
    }
    # Its batch held every change of the chunk, in order.
    assert list(dict.fromkeys(c.name for c in calls[-1] if c.name.startswith("api"))) == [
        f"api{i}.example.com" for i in range(learned - 64, learned)
    ]


def test_responses_are_taken_in_chunks_of_64_parsed_then_learned() -> None:
    cache = DNSCache(trusted_servers=[SERVER])
    events: list[str] = []

    class Recorded(bytearray):
        def __bytes__(self) -> bytes:
            events.append("parse")
            return bytes(memoryview(self))

    cache.subscribe(lambda batch: events.append("learn"))
    cache.observe_many((Recorded(typical(i, i).to_wire()), SERVER) for i in range(130))
    chunks = [64, 64, 2]
    assert events == [kind for size in chunks for kind in ["parse"] * size + ["learn"]]
