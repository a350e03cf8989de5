"""Run a backend against the engine on a real kernel, flow by flow (the kit's entry point).

:func:`check_backend` builds the lab (:mod:`fqdnpolicy.testing.lab`), draws a seeded case
(:mod:`fqdnpolicy.testing.cases`), and drives the backend the way an agent would: a full
render before any rule exists, deltas as DNS answers come and go, a full render again when a
policy changes. After each step it probes the flows from the workloads' namespaces and
compares what got through with :meth:`~fqdnpolicy.engine.PolicyEngine.verdict`:

1. ``learned``: every flow, after names were learned both before the first apply and through
   the enforced rules (a delta);
2. ``opened``: connections (TCP, UDP, ICMP echo) to the short-lived name's addresses,
   opened and kept open;
3. ``expired``: every flow again, after the short-lived name expired (the kernel's own
   element timeouts must have removed it) and after the refreshed name's *first* lifetime
   ended (answered again before that, it must still be allowed);
4. ``established``: the connections opened in 2, which must still pass both ways although
   their address expired;
5. ``refresh over``: flows to the refreshed name once its extended lifetime ended;
6. ``changed``: every flow after a policy was replaced (a full render over learned state).

A DNS query sent through the enforced rules that gets no answer, although the engine allows
it, ends the run early as a mismatch of its own (``dns``): nothing after it can be judged.

The backend comes by name from the ``fqdnpolicy.backends`` entry points, as a user's would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fqdnpolicy.backends import Backend, get
from fqdnpolicy.cluster import Cluster
from fqdnpolicy.datapath import Delta, MemberChanged
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.testing.cases import (
    CNAMES,
    NAMES_FIRST,
    NAMES_LATER,
    RECORDS,
    REFRESH_NAME,
    SERVICE_ADDRESSES,
    SHORT_NAME,
    TCP_PORTS,
    UDP_PORTS,
    Case,
    generate_case,
)
from fqdnpolicy.testing.lab import DNS_SERVER, Flow, HeldFlows, Lab, iter_flows
from fqdnpolicy.testing.report import (
    ConformanceError,
    ConformanceFailure,
    ConformanceReport,
    Mismatch,
    tally,
    verdict_kind,
)

__all__ = ["SEEDS", "BackendFactory", "check_backend", "engine_arguments", "missing_requirements"]

#: The seeds CI runs every built-in backend on: between them their cases reach every kind of
#: verdict (a rule's Allow and Deny, end of tier, no policy, every tier passed).
SEEDS = (3, 12)
#: Start of the kit's namespace names (the lab adds a pid and a counter).
PREFIX = "fqk"
#: Seconds a probe waits for an answer: a dropped packet is only seen as silence.
PROBE_TIMEOUT = 1.0
#: Seconds allowed between an expiry on the engine's clock and the kernel acting on it
#: (a datapath that counts timeouts in whole seconds may round up).
EXPIRY_SLACK = 1.2
#: Seconds before its first expiry that the refreshed name is asked again.
REFRESH_LEAD = 1.0
TOOLS = ("ip", "dnsmasq")

BackendFactory = Callable[..., Backend]


def missing_requirements(tools: Iterable[str] = ()) -> list[str]:
    """Say what the kit lacks here: root, and ``ip``, ``dnsmasq`` and the backend's ``tools``.

    Returns:
        One line per missing requirement; empty when the kit can run.
    """
    missing = [] if os.geteuid() == 0 else ["root (network namespaces, netfilter)"]
    for tool in (*TOOLS, *tools):
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin")):
            missing.append(f"the '{tool}' tool")
    return missing


def check_backend(
    backend: str | BackendFactory,
    *,
    seed: int,
    options: Mapping[str, Any] | None = None,
    prefix: str = PREFIX,
    log: Callable[[str], None] | None = None,
) -> ConformanceReport:
    """Prove on this kernel that a backend enforces exactly what the engine decides.

    Args:
        backend: A backend name (``fqdnpolicy.backends.get(name, **options)``), or a
            callable (a :class:`~fqdnpolicy.backends.Backend` subclass) called with
            ``**options``.
        seed: The case to run (:func:`~fqdnpolicy.testing.cases.generate_case`).
        options: Keyword arguments for the backend.
        prefix: Start of the lab's namespace names.
        log: Called with a line per step (e.g. ``print``), to follow a run.

    Returns:
        The report of a run where every flow agreed.

    Raises:
        ConformanceFailure: Some flows disagreed; it lists each with the engine's
            explanation, and the call that reproduces the run (its ``report`` is the
            whole run's).
        ConformanceError: The lab could not be built or ran too slowly to judge.
    """
    options = dict(options or {})
    instance = get(backend, **options) if isinstance(backend, str) else backend(**options)
    started = time.monotonic()
    run = _Run(generate_case(seed), instance, log or (lambda line: None))
    with Lab(
        [(e.key, e.interface) for e in run.case.endpoints],
        SERVICE_ADDRESSES,
        TCP_PORTS,
        UDP_PORTS,
        RECORDS,
        CNAMES,
        lifetime=180,
        prefix=prefix,
    ) as lab:
        run.lab = lab
        try:
            with contextlib.suppress(_Stopped):
                run.steps()
        except Exception as exc:
            exc.add_note(f"conformance kit: backend {instance.name!r}, seed {seed}")
            raise
    report = ConformanceReport(
        backend=instance.name,
        source=repr(backend)
        if isinstance(backend, str)
        else f"{backend.__module__}.{backend.__qualname__}",
        options=options,
        seed=seed,
        flows=run.counts,
        verdicts=tally(run.kinds),
        mismatches=tuple(run.mismatches),
        seconds=time.monotonic() - started,
    )
    if report.mismatches:
        raise ConformanceFailure(report)
    return report


def engine_arguments(flow: Flow) -> dict[str, Any]:
    """The :meth:`~fqdnpolicy.engine.PolicyEngine.verdict` arguments of a probed flow."""
    if flow.protocol == "icmp":
        v6 = ":" in flow.dst
        return {
            "protocol": "ICMPv6" if v6 else "ICMP",
            "icmp_type": 128 if v6 else 8,
            "icmp_code": 0,
        }
    return {"protocol": flow.protocol.upper(), "port": flow.port}


class _Stopped(Exception):
    """A step failed so that nothing after it can be judged; its mismatch is recorded."""


class _Run:
    """One run's state: the engine, the DNS cache, the backend, and what was found."""

    def __init__(self, case: Case, backend: Backend, log: Callable[[str], None]) -> None:
        self.case = case
        self.backend = backend
        self.log = log
        self.cache = DNSCache(trusted_servers=[DNS_SERVER], report_refresh=True)
        self.engine = PolicyEngine(case.resources, Cluster(endpoints=case.endpoints), self.cache)
        self.deltas: list[Delta] = []
        self.engine.subscribe(self.deltas.extend)
        self.rendered: set[str] | None = None  # set ids of the last full render
        self.lab: Lab
        self.counts: dict[str, int] = {}
        self.kinds: list[str] = []
        self.mismatches: list[Mismatch] = []

    # ---------------------------------------------------------------------- the steps

    def steps(self) -> None:
        lab, cache = self.lab, self.cache
        flows = list(iter_flows(lab, icmp=True))
        self.learn(NAMES_FIRST)
        self.sync()  # the first, full render
        self.learn(NAMES_LATER)  # through the enforced rules
        short_end = self.expiry(SHORT_NAME)
        first_end = self.expiry(REFRESH_NAME)
        self.sync()
        self.compare("learned", flows)
        held_flows = [
            Flow(e.key, address, protocol, port)
            for e in self.case.endpoints
            if e.labels.get("app") == "web"  # what the case's "expiring" policy selects
            for address in self.addresses(SHORT_NAME)
            for protocol, port in (("tcp", TCP_PORTS[0]), ("udp", UDP_PORTS[0]), ("icmp", 0))
        ]
        with lab.hold(held_flows, timeout=PROBE_TIMEOUT) as held:
            self.compare("opened", held_flows, held.opened)
            self.in_time("the learned flows", short_end - EXPIRY_SLACK)
            self.sleep_until(first_end - REFRESH_LEAD)
            self.learn([REFRESH_NAME])  # a refresh: the same answer, a later expiry
            refreshed_end = self.expiry(REFRESH_NAME)
            self.sync()
            self.sleep_until(max(short_end, first_end) + EXPIRY_SLACK)
            cache.expire()
            # Probed before the removals are applied: the kernel's own timeouts must act.
            self.compare("expired", flows)
            self.check_established(held)
            self.in_time("the expired flows", refreshed_end - EXPIRY_SLACK)
        self.sync()  # removing members the kernel already timed out must not fail
        self.sleep_until(refreshed_end + EXPIRY_SLACK)
        cache.expire()
        refresh_addresses = set(self.addresses(REFRESH_NAME))
        self.compare("refresh over", [f for f in flows if f.dst in refresh_addresses])
        self.sync()
        self.engine.upsert_policy(self.case.change)
        self.sync()
        self.compare("changed", flows)
        self.backend.remove(netns=lab.host)

    # -------------------------------------------------------------------- the helpers

    def learn(self, names: Sequence[str]) -> None:
        """Ask the lab's DNS server from the case's resolver; feed the answers to the cache.

        Raises:
            _Stopped: The query got no answer although the engine allows it (recorded as a
                mismatch: nothing after it can be judged without the answers).
        """
        try:
            wires = self.lab.resolve(self.case.resolver, list(names))
        except RuntimeError as exc:
            query = Flow(self.case.resolver, DNS_SERVER, "udp", 53)
            if not self.engine.verdict(query.src, query.dst, **engine_arguments(query)).allowed:
                raise  # the case's own policy allows DNS: this is the lab failing
            self.mismatch("dns", query, kernel=False, engine=True, note="a DNS query failed\n")
            raise _Stopped from exc
        for wire in wires:
            self.cache.observe(wire, server=f"{DNS_SERVER}:53")
        self.log(f"learned {', '.join(names)}")

    def expiry(self, name: str) -> float:
        return max(self.cache.expiries(name).values())

    def addresses(self, name: str) -> tuple[str, ...]:
        return next(r.addresses for r in RECORDS if r.name == name)

    def sync(self) -> None:
        """Hand the engine's changes to the backend: a delta when only members changed."""
        self.engine.flush()
        batch = list(self.deltas)
        self.deltas.clear()
        now = self.cache.clock()
        rendered = self.rendered
        if rendered is not None and all(
            isinstance(d, MemberChanged) and d.set_id in rendered for d in batch
        ):
            if batch:
                self.backend.apply(self.backend.render_delta(batch, now=now), netns=self.lab.host)
                self.log(f"applied a delta of {len(batch)} changes")
            return
        state = self.engine.datapath()
        self.rendered = {s.set_id for s in state.sets}
        self.backend.apply(self.backend.render(state, now=now), netns=self.lab.host)
        self.log(f"applied a full render ({len(state.sets)} sets)")

    def sleep_until(self, deadline: float) -> None:
        time.sleep(max(0.0, deadline - self.cache.clock()))

    def in_time(self, what: str, deadline: float) -> None:
        late = self.cache.clock() - deadline
        if late > 0:
            raise ConformanceError(
                f"probing {what} ended {late:.1f} s after a DNS lifetime ran out:"
                " the machine is too slow for the kit's timing"
            )

    def compare(
        self, phase: str, flows: Sequence[Flow], kernel: Mapping[Flow, bool] | None = None
    ) -> None:
        """Probe the flows (unless given), compare each with the engine's verdict."""
        outcome = dict(kernel) if kernel is not None else self.lab.probe(flows, PROBE_TIMEOUT)
        verdicts = {f: self.engine.verdict(f.src, f.dst, **engine_arguments(f)) for f in flows}
        # A flow the engine allows but no answer came for is tried once more, so that a
        # moment of load on the machine is not taken for a drop.
        retry = [f for f in flows if verdicts[f].allowed and not outcome[f]]
        if retry and kernel is None:
            outcome.update(self.lab.probe(retry, PROBE_TIMEOUT))
        for flow in flows:
            verdict = verdicts[flow]
            self.kinds.append(verdict_kind(verdict.action, verdict.default))
            if verdict.allowed != outcome[flow]:
                self.mismatch(phase, flow, outcome[flow], verdict.allowed)
        self.counts[phase] = self.counts.get(phase, 0) + len(flows)
        allowed = sum(v.allowed for v in verdicts.values())
        self.log(f"[{phase}] {len(flows)} flows, engine allows {allowed}")

    def check_established(self, held: HeldFlows) -> None:
        """Every connection that was open must still pass, both ways, after its expiry."""
        again = held.again()
        flows = [f for f, ok in held.opened.items() if ok]
        for flow in flows:
            if not again[flow]:
                self.mismatch(
                    "established",
                    flow,
                    kernel=False,
                    engine=True,
                    note="opened while allowed, so it must stay open; a new flow now:\n",
                )
        self.counts["established"] = len(flows)

    def mismatch(self, phase: str, flow: Flow, kernel: bool, engine: bool, note: str = "") -> None:
        trace = self.engine.explain(flow.src, flow.dst, **engine_arguments(flow))
        self.mismatches.append(Mismatch(phase, flow, kernel, engine, f"{note}{trace}"))
