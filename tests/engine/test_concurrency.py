"""Verdicts stay correct while another thread changes what they depend on.

The engine is read from many threads (a datapath's flow lookups) while one thread writes to it
(policy and endpoint watchers, the DNS cache's thread). The contract: a verdict is always the
verdict of *some* state the engine was in while the call ran, never of a half-applied change;
no call raises for a flow that was valid; nothing deadlocks.

How it is checked. One small fixed world (two namespaces, endpoints with labels and named
ports, a Pass tier, domain rules, overlapping nets, a network set with domains) and a scripted
list of changes, each one engine call or one DNS cache update. Single-threaded, the plain-value
state after each change ``k`` is computed (state 0 is the start) and, for each flow of a fixed
list, the reference model's outcome in that state. Then a writer thread applies the changes to
the engine in order (each followed by ``engine.flush()``), publishing ``started = k`` before
change ``k`` and ``done = k`` after it, while reader threads call ``verdict()`` over and over and
record ``done`` before the call and ``started`` after it. After each change the writer waits
until every reader has made a call, so each state is read settled as well as while changes are
in flight. Every recorded outcome must be the reference outcome of a state ``j`` with
``done_before <= j <= started_after``. A flow naming an endpoint that is absent in such a state
may be refused with ``InvalidPolicy`` (and only then). The race is run several times (a fresh
engine each time, within a few seconds) for other interleavings.

``sys.setswitchinterval`` is lowered so the interpreter switches threads every few bytecodes;
threads are daemons joined with timeouts, so a deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs
import pytest

from fqdnpolicy.cluster import Cluster, Namespace
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.model import ResourceSet
from tests.engine.strategies import (
    AdvanceClock,
    Answer,
    Change,
    FlowSpec,
    LearnAnswer,
    RelabelEndpoint,
    RemoveEndpoint,
    RemoveNetworkSet,
    RemovePolicy,
    UpsertEndpoint,
    UpsertNamespace,
    UpsertNetworkSet,
    UpsertPolicy,
    entity,
    network_set,
    pod,
    policy,
    rule,
    tier,
)
from tests.engine.worlds_threads import (
    UNKNOWN_ENDPOINT,
    Applier,
    Outcome,
    Snapshot,
    outcome,
    reference_outcome,
)

READERS = 4
ROUNDS = 10  # at most; fewer when a loaded machine makes them slow
BUDGET = 3.0  # seconds of rounds
JOIN_TIMEOUT = 30.0  # seconds; the test takes a few, a deadlock would take forever

# ----------------------------------------------------------------------------- the world

WEB = pod(
    "default/web",
    "10.0.0.10",
    "fd00::a",
    labels={"app": "web"},
    ports=[("http", 8080, "TCP")],
)
API = pod("default/api", "10.0.0.11", labels={"app": "api", "role": "a"})
DB = pod("prod/db", "10.0.1.12", labels={"app": "db"}, ports=[("pg", 5432, "TCP")])
WORKER = pod("prod/worker", "10.0.1.13", labels={"app": "worker"}, service_account="sa1")
NEWCOMER = pod("prod/new", "10.0.1.20", labels={"app": "db"}, ports=[("pg", 5433, "TCP")])

DEFAULT_NS = Namespace("default", {"team": "a"})
PROD_NS = Namespace("prod", {"env": "prod"})

# A tier before the default one: the /32 inside the /24 is denied, the rest of the /24 passed
# on to the default tier; anything unmatched passes (the tier's default action).
GUARD = policy(
    "guard",
    tier="security",
    order=1,
    egress=[
        rule("Deny", destination=entity(nets=["203.0.113.12/32"])),
        rule("Pass", destination=entity(nets=["203.0.113.0/24"])),
        rule("Deny", protocol="UDP", destination=entity(ports=[53], not_selector="has(app)")),
    ],
)
GUARD_LOOSE = policy(
    "guard",
    tier="security",
    order=1,
    egress=[rule("Pass", destination=entity(nets=["203.0.113.0/24"]))],
)
WEB_EGRESS = policy(
    "web-egress",
    namespace="default",
    order=10,
    selector='app == "web"',
    egress=[
        rule(
            "Allow",
            protocol="TCP",
            destination=entity(domains=["api.example.com", "*.example.net"], ports=[443]),
        ),
        rule("Allow", protocol="TCP", destination=entity(nets=["203.0.113.0/24"], ports=[8080])),
        rule(
            "Allow",
            protocol="TCP",
            destination=entity(
                selector='app == "db"', namespace_selector='env == "prod"', ports=["pg"]
            ),
        ),
        rule("Allow", destination=entity(selector='kind == "partner"')),
    ],
)
WEB_EGRESS_NARROW = policy(
    "web-egress",
    namespace="default",
    order=10,
    selector='app == "web"',
    egress=[
        rule("Allow", protocol="TCP", destination=entity(domains=["*.example.net"])),
        rule("Deny", destination=entity(nets=["203.0.113.0/24"])),
    ],
)
APP_EGRESS = policy(
    "app-egress",
    order=20,
    selector="has(app)",
    egress=[
        rule("Allow", protocol="UDP", destination=entity(ports=[53])),
        rule("Allow", destination=entity(selector='kind == "partner"')),
        rule("Deny", protocol="TCP", destination=entity(ports=[443])),
    ],
)
DB_INGRESS = policy(
    "db-ingress",
    namespace="prod",
    order=5,
    selector='app == "db"',
    ingress=[
        rule(
            "Allow",
            protocol="TCP",
            source=entity(selector='app == "web"', namespace_selector='team == "a"'),
            destination=entity(ports=["pg"]),
        ),
    ],
)
PARTNERS = network_set(
    "partners",
    labels={"kind": "partner"},
    nets=["198.51.100.128/25"],
    domains=["*.partner.example.org"],
)
PARTNERS_MOVED = network_set(
    "partners", labels={"kind": "partner"}, nets=["198.51.100.192/26"], domains=[]
)

RESOURCES = ResourceSet(
    (GUARD, WEB_EGRESS, APP_EGRESS, DB_INGRESS),
    (PARTNERS,),
    (tier("security", 10.0, "Pass"),),
)
CLUSTER = Cluster((WEB, API, DB, WORKER), (DEFAULT_NS, PROD_NS))


def learn(qname: str, *targets: str, ttl: int = 60) -> LearnAnswer:
    """A DNS answer: CNAME targets (names) first, then addresses."""
    chain = tuple(t for t in targets if not t[0].isdigit() and ":" not in t)
    ips = tuple(t for t in targets if t not in chain)
    return LearnAnswer(Answer(qname, chain, ips, ttl))


# Each change is one engine call or one DNS cache update (checked below): the states between
# them are exactly the states a reader may see.
SCRIPT: tuple[Change, ...] = (
    learn("api.example.com", "198.51.100.1"),
    learn("cdn.example.net", "edge.example.net", "198.51.100.2", "203.0.113.12"),
    RelabelEndpoint("default/web", {"app": "other"}),
    learn("www.partner.example.org", "198.51.100.3", ttl=30),
    RelabelEndpoint("default/web", {"app": "web"}),
    UpsertPolicy(WEB_EGRESS_NARROW),
    learn("api.example.com", "198.51.100.1", "2001:db8::1", ttl=300),
    UpsertEndpoint(NEWCOMER),
    AdvanceClock(31.0),
    UpsertPolicy(GUARD_LOOSE),
    UpsertPolicy(WEB_EGRESS),
    UpsertNamespace(Namespace("default", {"team": "b"})),
    UpsertNetworkSet(PARTNERS_MOVED),
    learn("www.partner.example.org", "198.51.100.3"),
    RemovePolicy("app-egress"),
    UpsertNamespace(DEFAULT_NS),
    RemoveEndpoint("prod/new"),
    AdvanceClock(30.0),
    UpsertPolicy(GUARD),
    UpsertNetworkSet(PARTNERS),
    learn("cdn.example.net", "198.51.100.2"),
    RelabelEndpoint("prod/db", {"app": "cache"}),
    UpsertPolicy(APP_EGRESS),
    RemovePolicy("guard"),
    learn("api.example.com", "203.0.113.50"),
    RelabelEndpoint("prod/db", {"app": "db"}),
    UpsertEndpoint(NEWCOMER),
    RemovePolicy("db-ingress"),
    AdvanceClock(100.0),
    UpsertPolicy(DB_INGRESS),
    RemoveNetworkSet("partners"),
    UpsertPolicy(GUARD),
    learn("edge.example.net", "198.51.100.200", "203.0.113.12"),
    RelabelEndpoint("default/api", {"app": "web"}),
    RemoveEndpoint("prod/new"),
    UpsertNetworkSet(PARTNERS),
    learn("www.partner.example.org", "198.51.100.3", ttl=5),
    RelabelEndpoint("default/api", {"app": "api", "role": "a"}),
    UpsertPolicy(WEB_EGRESS_NARROW),
    AdvanceClock(10.0),
    learn("api.example.com", "198.51.100.1", "2001:db8::1"),
    UpsertPolicy(WEB_EGRESS),
    RemovePolicy("web-egress"),
    UpsertEndpoint(NEWCOMER),
    UpsertPolicy(WEB_EGRESS),
    AdvanceClock(400.0),
    UpsertNamespace(Namespace("prod", {"env": "dev"})),
    learn("cdn.example.net", "edge.example.net"),
    UpsertNamespace(PROD_NS),
    RemovePolicy("guard"),
)


def egress(src: str, dst: str, protocol: str = "TCP", port: int | None = 443) -> FlowSpec:
    return FlowSpec(src, dst, protocol, port, "egress")


FLOWS: tuple[FlowSpec, ...] = (
    egress("default/web", "198.51.100.1"),
    egress("default/web", "198.51.100.2"),
    egress("default/web", "198.51.100.3"),
    egress("default/web", "198.51.100.200"),
    egress("default/web", "203.0.113.12"),
    egress("default/web", "203.0.113.12", port=8080),
    egress("default/web", "203.0.113.50", port=8080),
    egress("default/web", "203.0.113.50"),
    egress("default/web", "2001:db8::1"),
    egress("default/web", "prod/db", port=5432),
    egress("default/web", "10.0.1.12", port=5432),
    egress("default/web", "10.0.1.20", port=5433),
    egress("default/web", "prod/new", port=5433),
    egress("prod/new", "198.51.100.1"),
    egress("default/api", "198.51.100.3"),
    egress("default/api", "198.51.100.200", "UDP", 53),
    egress("prod/worker", "198.51.100.9", "UDP", 53),
    egress("prod/worker", "203.0.113.12", "ICMP", None),
    FlowSpec("default/web", "198.51.100.1", "TCP", 443, "egress", src_port=40000),
    FlowSpec("192.0.2.7", "prod/db", "TCP", 5432, "ingress"),
    FlowSpec("default/web", "prod/db", "TCP", 5432, "ingress"),
    FlowSpec("default/api", "prod/db", "TCP", 5432, "ingress"),
)


def states() -> list[Snapshot]:
    """The plain-value state before the script (index 0) and after each change (index k)."""
    world = Applier(RESOURCES, CLUSTER)
    out = [world.snapshot()]
    for change in SCRIPT:
        assert world.apply(change) == 1, f"not one step, a reader could see between: {change}"
        out.append(world.snapshot())
    return out


@attrs.frozen
class Seen:
    """One verdict a reader got, and the window of states it may come from."""

    flow: int
    done_before: int
    started_after: int
    outcome: Outcome


@contextmanager
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every ~10 us instead of every 5 ms, so races show up in short runs."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class Threads:
    """Daemon threads whose exceptions are collected, joined with a timeout."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []

    def start(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except BaseException:
                self.errors.append(f"{name}:\n{traceback.format_exc()}")

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self, timeout: float) -> list[str]:
        """Join every thread; returns the names of those still running (hung)."""
        for thread in self.threads:
            thread.join(timeout)
        return [t.name for t in self.threads if t.is_alive()]


def test_script_changes_what_the_flows_get() -> None:
    # The concurrency test is only as strong as its script: most flows must change outcome
    # along it, and every kind of outcome (rule, end of tier, refusal) must occur.
    expected = [[reference_outcome(state, flow) for flow in FLOWS] for state in states()]
    changing = [i for i in range(len(FLOWS)) if len({row[i] for row in expected}) > 1]
    assert len(changing) >= len(FLOWS) * 2 // 3, [str(FLOWS[i]) for i in range(len(FLOWS))]
    seen = {o for row in expected for o in row}
    assert UNKNOWN_ENDPOINT in seen
    assert {o[0] for o in seen} == {"Allow", "Deny", "InvalidPolicy"}
    assert {o[5] for o in seen} >= {None, "end-of-tier", "no-policy"}
    assert any(o[2] == "security" for o in seen)  # the Pass tier decides some


def test_every_verdict_read_during_changes_is_the_verdict_of_a_state_in_its_window() -> None:
    expected = [[reference_outcome(state, flow) for flow in FLOWS] for state in states()]
    budget = time.monotonic() + BUDGET
    for _ in range(ROUNDS):  # each round a fresh engine and another interleaving
        engine, seen = race(expected[0])
        for records in seen:  # every reader saw every state settled
            assert {s.done_before for s in records} == set(range(len(SCRIPT) + 1))
        for records in seen:
            for s in records:
                window = range(s.done_before, s.started_after + 1)
                allowed = {expected[j][s.flow] for j in window}
                assert s.outcome in allowed, (
                    f"{FLOWS[s.flow]} between states {s.done_before} and {s.started_after}\n"
                    f" engine:    {s.outcome}\n reference: {sorted(allowed, key=str)}"
                )
        # Quiet again: the final state, for every flow.
        assert [judge(engine, flow) for flow in FLOWS] == expected[-1]
        if time.monotonic() > budget:
            break


def race(start: list[Outcome]) -> tuple[PolicyEngine, list[list[Seen]]]:
    """Run the script on a fresh engine in a writer thread while readers judge the flows.

    Returns:
        The engine, and what each reader saw.
    """
    world = Applier(RESOURCES, CLUSTER)
    engine = world.build_engine()
    # Single-threaded first: the engine agrees with the reference on the starting state.
    assert [judge(engine, flow) for flow in FLOWS] == start

    started = done = 0  # written only by the writer; ints are read atomically
    finished = threading.Event()
    seen: list[list[Seen]] = [[] for _ in range(READERS)]
    calls = [0] * READERS  # each written by its reader only
    threads = Threads()

    def wait_for_readers() -> None:
        """Until every reader has finished a call begun after this point (or one failed)."""
        mark = list(calls)
        deadline = time.monotonic() + JOIN_TIMEOUT
        while any(now < then + 2 for now, then in zip(calls, mark, strict=True)):
            if threads.errors or time.monotonic() > deadline:
                raise RuntimeError("readers stopped")
            time.sleep(1e-4)

    def writer() -> None:
        nonlocal started, done
        try:
            wait_for_readers()
            for k, change in enumerate(SCRIPT, start=1):
                started = k
                world.apply(change)
                engine.flush()
                done = k
                # Readers run during each change and also see each state settled.
                wait_for_readers()
        finally:
            finished.set()

    def reader(number: int) -> None:
        out = seen[number]
        order = list(range(len(FLOWS)))
        order = order[number::READERS] + [i for i in order if i % READERS != number]
        while not finished.is_set():
            for i in order:
                before = done
                got = judge(engine, FLOWS[i])
                out.append(Seen(i, before, started, got))
                calls[number] += 1

    with frequent_thread_switches():
        for number in range(READERS):
            threads.start(f"reader-{number}", functools.partial(reader, number))
        threads.start("writer", writer)
        hung = threads.join(JOIN_TIMEOUT)
        finished.set()  # a hung writer must not keep the readers looping
    assert not threads.errors, "\n".join(threads.errors)
    assert not hung, f"deadlock: {hung} still running"
    return engine, seen


def judge(engine: PolicyEngine, flow: FlowSpec) -> Outcome:
    """The engine's outcome for a flow; refusing an unknown endpoint is an outcome too."""
    try:
        return outcome(engine.verdict(**flow.kwargs()))
    except InvalidPolicy as exc:
        if "unknown endpoint" not in str(exc):
            raise
        return UNKNOWN_ENDPOINT


# ----------------------------------------------------------------------------- other readers

POLICY_ROUNDS = 60
PROGRESS = 20  # calls each reader must make once the writes are done


def test_readers_progress_while_datapath_and_explain_run_and_policies_change() -> None:
    # datapath() and explain() read the engine's whole state: readers must neither fail nor
    # starve nor deadlock with them and a writer.
    world = Applier(RESOURCES, CLUSTER)
    engine = world.build_engine()
    writes_done, finished = threading.Event(), threading.Event()
    go = threading.Barrier(READERS + 2, timeout=JOIN_TIMEOUT)
    calls = [0] * READERS
    renders = [0]
    variants = (WEB_EGRESS_NARROW, GUARD_LOOSE, WEB_EGRESS, GUARD)
    stable = [f for f in FLOWS if "prod/new" not in (f.src, f.dst)]  # endpoints always there

    def writer() -> None:
        go.wait()
        for i in range(POLICY_ROUNDS):
            world.apply(UpsertPolicy(variants[i % len(variants)]))
        writes_done.set()

    def inspector() -> None:
        go.wait()
        while not finished.is_set():
            state = engine.datapath()
            assert "default/web" in {e.key for e in state.endpoints}
            trace = engine.explain("default/web", "203.0.113.12", "TCP", 8080)
            assert trace.verdict.action in ("Allow", "Deny")
            renders[0] += 1

    def reader(number: int) -> None:
        go.wait()
        while not finished.is_set():
            for flow in stable:
                engine.verdict(**flow.kwargs())
                calls[number] += 1

    threads = Threads()
    with frequent_thread_switches():
        for number in range(READERS):
            threads.start(f"reader-{number}", functools.partial(reader, number))
        threads.start("inspector", inspector)
        threads.start("writer", writer)
        try:
            writes_done.wait(JOIN_TIMEOUT)
            during = list(calls)
            for _ in range(int(JOIN_TIMEOUT * 100)):
                if all(now >= then + PROGRESS for now, then in zip(calls, during, strict=True)):
                    break
                if threads.errors:
                    break
                finished.wait(0.01)
            after = list(calls)
        finally:
            finished.set()
            hung = threads.join(JOIN_TIMEOUT)
    assert not threads.errors, "\n".join(threads.errors)
    assert not hung, f"deadlock: {hung} still running"
    assert writes_done.is_set()
    assert all(n > 0 for n in during), f"a reader made no call while policies changed: {during}"
    assert all(a >= d + PROGRESS for a, d in zip(after, during, strict=True)), (during, after)
    assert renders[0] > 0
    final = world.snapshot()
    for flow in stable:
        assert outcome(engine.verdict(**flow.kwargs())) == reference_outcome(final, flow)


def test_flush_returns_once_answers_fed_from_another_thread_are_visible() -> None:
    world = Applier(RESOURCES, CLUSTER)
    engine = world.build_engine()
    to_api = egress("default/web", "198.51.100.1")
    assert outcome(engine.verdict(**to_api.kwargs()))[0] == "Deny"
    # The cache's own thread delivers the answer; flush() from this thread waits for it.
    feeder = threading.Thread(target=lambda: world.apply(learn("api.example.com", "198.51.100.1")))
    feeder.start()
    feeder.join(JOIN_TIMEOUT)
    engine.flush()
    assert outcome(engine.verdict(**to_api.kwargs())) == (
        "Allow",
        "NetworkPolicy default/web-egress",
        "default",
        0,
        "egress",
        None,
    )


@pytest.mark.parametrize("times", [1, 3])
def test_flush_with_nothing_pending_returns_at_once(times: int) -> None:
    engine = Applier(RESOURCES, CLUSTER).build_engine()
    for _ in range(times):
        engine.flush()
    assert engine.verdict("default/web", "198.51.100.1", "TCP", 443).action == "Deny"
