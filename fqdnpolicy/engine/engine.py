"""The engine's face: :class:`PolicyEngine`, its readers and its writer side.

Readers (:meth:`PolicyEngine.verdict`, :meth:`~PolicyEngine.verdicts`,
:meth:`~PolicyEngine.verdict_array`) take no lock: they read what the writer side published
(see :mod:`fqdnpolicy.engine.published`). Everything else runs under one writer lock, which
changes go through (:mod:`fqdnpolicy.engine.graph` does the work) and which explanations and
datapath projections hold while they read.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fqdnpolicy import collector
from fqdnpolicy.cluster import Cluster, Endpoint, Namespace
from fqdnpolicy.datapath import DatapathState, Delta, Direction
from fqdnpolicy.engine import shortcut
from fqdnpolicy.engine.arguments import DIRECTIONS, bad, icmp_field, port_number
from fqdnpolicy.engine.arguments import protocol as protocol_of
from fqdnpolicy.engine.evaluate import Flow, evaluate
from fqdnpolicy.engine.explain import describe_reason, not_applying
from fqdnpolicy.engine.graph import Graph
from fqdnpolicy.engine.identities import Identity, family_of, identity_of
from fqdnpolicy.engine.kept import KeptVerdicts, first_sighting, kept_simple, kept_to_endpoint
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.project import children_of, set_state
from fqdnpolicy.engine.published import Commit, EndpointRecord, PublishedState, Snapshot, View
from fqdnpolicy.engine.results import IPSetInfo, Trace, TraceStep, Verdict
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.model import NetworkSet, Policy, ResourceSet, Tier
from fqdnpolicy.subscribers import Subscribers

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from fqdnpolicy.dns import DNSCache, DNSChange

__all__ = ["PolicyEngine"]


class PolicyEngine:
    """Judge flows against policies, cluster state and learned DNS; emit datapath deltas.

    Args:
        resources: What :func:`fqdnpolicy.load` returned.
        cluster: Endpoints and namespaces (:func:`fqdnpolicy.load_cluster`).
        dns: The DNS cache whose names give ``domains`` rules their addresses. The engine
            subscribes to it: each batch of DNS changes the cache delivers is applied and
            published on the delivering thread before the cache's call returns (see
            :meth:`subscribe`).
    """

    def __init__(self, resources: ResourceSet, cluster: Cluster, dns: DNSCache) -> None:
        self._lock = threading.RLock()
        self._dns = dns
        self._subscribers: Subscribers[list[Delta]] = Subscribers()
        self._inbox: deque[DNSChange] = deque()
        self._batch: tuple[int, Any] | None = None  # verdict_array's tables and their version
        # The build's objects are long-lived: the collector neither rescans them while they
        # are made nor in its young generations after (see fqdnpolicy/collector.py).
        with collector.building(), self._lock:
            self._unsubscribe = dns.subscribe(self._on_dns)
            graph = Graph(resources, cluster, dns)
        self._graph = graph
        # The published dicts, the same objects for the engine's life.
        self._hosts = graph.table.hosts
        self._records = graph.records
        self._owners = graph.owners
        self._kept = KeptVerdicts(self._records)
        self._snapshot = Snapshot(graph.table.prefixes, graph.egress)
        self._shortcut = shortcut.install(self, PolicyEngine.verdict, self._snapshot)
        self.flush()  # DNS changes that arrived while building

    # -- readers -------------------------------------------------------------------------

    def verdict(
        self,
        src: Endpoint | str,
        dst: Endpoint | str,
        protocol: str | int = "TCP",
        port: int | None = None,
        direction: Direction = "egress",
        src_port: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
    ) -> Verdict:
        """Judge one flow. Takes no lock and never waits for a change in progress.

        Args:
            src: The sending endpoint (an :class:`Endpoint` or ``"namespace/name"``); with
                ``direction="ingress"`` also an IP address.
            dst: An IP address, an :class:`Endpoint` or ``"namespace/name"``.
            protocol: Protocol name or number.
            port: Destination port (None for protocols without ports).
            direction: ``"egress"`` judges the sender's egress policy and, when the
                destination is a known endpoint, the receiver's ingress policy too (the
                reported verdict is the egress side's if it denies, else the ingress side's
                if it denies, else the egress side's). ``"ingress"`` judges only the
                receiver's ingress policy.
            src_port: Source port, for rules that match on it.
            icmp_type: ICMP type, for ICMP rules.
            icmp_code: ICMP code.

        ``src_port``, ``icmp_type`` and ``icmp_code`` are not keyword-only, although
        meant to be given by keyword: CPython calls a function with keyword-only parameters
        by a slower path, whatever the caller passes, and this is the call a datapath makes
        per flow.

        Raises:
            InvalidPolicy: an unknown endpoint, a bad address, protocol, port, ICMP type or
                code, or direction.
        """
        snapshot = self._snapshot
        if direction == "egress" and src_port is icmp_type is icmp_code is None:
            # The common question, judged before: three lookups, the sender's program, the
            # address's identity, and the program's verdict, from the slice of the rules
            # this protocol and port can meet: its one verdict for every peer in none of the
            # slice's sets (most destinations), else the one for what of the peer's identity
            # those rules can tell apart (Slice.view).
            # Verdicts are kept under the protocol as asked (text or number) and the port, and
            # served only for a plain int port and a protocol that is no bool: True and 443.0
            # hash like 1 and 443 but are refused.
            try:
                program = snapshot.egress.get(src)  # type: ignore[arg-type]
                ident = self._hosts.get(dst)  # type: ignore[arg-type]
            except TypeError:  # an Endpoint object (unhashable labels): the general path
                program = None
            if program is not None:
                if ident is None:
                    ident = snapshot.prefixes.outside.get(dst)  # type: ignore[arg-type]
                    if ident is None:
                        ident = first_sighting(snapshot, dst)
                if ident is not None:
                    if ident.ports is not None:
                        found = kept_to_endpoint(
                            self._hosts,
                            self._records,
                            self._owners,
                            program,
                            ident,
                            src,
                            dst,
                            protocol,
                            port,
                        )
                    else:
                        found = kept_simple(program, ident, protocol, port)
                    if (
                        found is not None
                        and port.__class__ is int
                        and protocol.__class__ is not bool
                        and self._snapshot is snapshot
                    ):
                        return found
        while True:
            view = View(snapshot, self._hosts, self._records, self._owners)
            try:
                result = self._judge(
                    view, src, dst, protocol, port, direction, src_port, icmp_type, icmp_code
                )
            except InvalidPolicy:
                if self._snapshot is snapshot:
                    raise
            else:
                if self._snapshot is snapshot:
                    return result
            snapshot = self._snapshot  # a change began or ended meanwhile: read again

    def verdicts(
        self, flows: Iterable[tuple[Endpoint | str, Endpoint | str, str | int, int | None]]
    ) -> list[Verdict]:
        """Judge many ``(src, dst, protocol, port)`` egress flows; same order out."""
        verdict = self.verdict
        return [verdict(src, dst, proto, port) for src, dst, proto, port in flows]

    def verdict_array(
        self,
        src: Sequence[str] | npt.ArrayLike,
        dst: Sequence[str] | npt.ArrayLike,
        protocol: str | int | Sequence[object] | npt.ArrayLike = "TCP",
        port: int | Sequence[object] | npt.ArrayLike | None = None,
    ) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Judge many egress flows at once; element ``i`` is ``verdict(...).allowed``.

        Args:
            src: Endpoint keys, or an integer array of indices into :meth:`endpoint_keys`.
            dst: Address text, or an integer array of packed IPv4 addresses.
            protocol: One protocol for every flow, or one per flow.
            port: One port (or None) for every flow, or one per flow.

        Needs NumPy (``pip install 'fqdnpolicy[fast]'``); never waits for a change in
        progress (a change that begins or ends meanwhile sends the batch flow by flow
        through :meth:`verdict`).

        Raises:
            InvalidPolicy: lengths differ, or some flow is invalid (see :meth:`verdict`).
            MissingDependency: NumPy is not installed.
        """
        from fqdnpolicy.engine.batch import verdict_array

        return verdict_array(self, src, dst, protocol, port)

    def identity(self, address: str) -> Identity:
        """The identity readers see for ``address`` now (its family, sets and endpoint ports).

        Raises:
            InvalidPolicy: ``address`` is not an IP address.
        """
        while True:
            snapshot = self._snapshot
            view = View(snapshot, self._hosts, self._records, self._owners)
            found = identity_of(view.host, view.prefixes, address)[0]
            if self._snapshot is snapshot:
                return found

    def endpoint_keys(self) -> list[str]:
        """The keys of the endpoints readers see now, sorted (``verdict_array`` indexes)."""
        return sorted(self._records)

    def record(self, key: str) -> EndpointRecord | None:
        """The published record (endpoint, egress and ingress programs) of ``namespace/name``."""
        while True:
            snapshot = self._snapshot
            found = View(snapshot, self._hosts, self._records, self._owners).record(key)
            if self._snapshot is snapshot:
                return found

    def _judge(
        self,
        view: View,
        src: Endpoint | str,
        dst: Endpoint | str,
        protocol: object,
        port: object,
        direction: object,
        src_port: object,
        icmp_type: object,
        icmp_code: object,
        trace: list[TraceStep] | None = None,
    ) -> Verdict:
        """The general path: any flow, read through ``view``."""
        proto = protocol_of(protocol)
        dport = port_number(port, "port")
        sport = port_number(src_port, "source port")
        itype = icmp_field(icmp_type, "ICMP type")
        icode = icmp_field(icmp_code, "ICMP code")
        if direction not in DIRECTIONS:
            raise bad(f"unknown direction {direction!r}", "egress or ingress")
        # Kept verdicts are keyed by the protocol as asked (the fast path's key; a bool was
        # refused above), else by its number in a key of another shape (see verdict()).
        asked: object = protocol if protocol.__class__ in (str, int) else (proto,)

        src_record: EndpointRecord | None = None
        src_ident: Identity | None = None
        src_ip: str | None = None
        if direction == "ingress" and isinstance(src, str) and "/" not in src:
            src_ident, src_ip = identity_of(view.host, view.prefixes, src)
            src_record = view.owner(src_ip)
        else:
            src_record = view.endpoint(src)

        if isinstance(dst, str) and "/" not in dst:
            dst_ident, dst_ip = identity_of(view.host, view.prefixes, dst)
            dst_record = view.owner(dst_ip)
        else:
            dst_record = view.endpoint(dst)
            if not dst_record.endpoint.ips:
                raise bad(f"endpoint {dst_record.key!r} has no IP address")
            family = family_of(src_ip) if src_ip is not None else None
            dst_ip = next(
                (ip for ip in dst_record.endpoint.ips if family_of(ip) == family),
                dst_record.endpoint.ips[0],
            )
            dst_ident, _ = identity_of(view.host, view.prefixes, dst_ip)
        family = dst_ident.family
        flow: Flow = (proto, dport, sport, family, itype, icode)
        simple = sport is None and itype is None and icode is None

        if direction == "egress":
            assert src_record is not None
            egress = self._run(src_record, "egress", dst_ident, flow, asked, simple, trace)
            if not egress.allowed or dst_record is None:
                return egress
            src_ip = src_record.address(family)
            src_ident = view.peer_identity(src_ip, src_record, family)
            ingress = self._run(dst_record, "ingress", src_ident, flow, asked, simple, trace)
            return ingress if not ingress.allowed else egress
        if dst_record is None:
            raise bad(
                f"ingress needs a destination endpoint; {dst!r} is not one",
                "an endpoint, its namespace/name, or one of its IPs",
            )
        if src_ident is None:
            assert src_record is not None
            src_ident = view.peer_identity(src_record.address(family), src_record, family)
        return self._run(dst_record, "ingress", src_ident, flow, asked, simple, trace)

    def _run(
        self,
        record: EndpointRecord,
        direction: Direction,
        peer: Identity,
        flow: Flow,
        asked: object,
        simple: bool,
        trace: list[TraceStep] | None,
    ) -> Verdict:
        """Judge with ``record``'s program of ``direction``, from what it kept if it can."""
        program = record.egress if direction == "egress" else record.ingress
        if trace is not None:
            graph = self._graph
            state = graph.endpoints[record.key]
            scope = graph.in_scope(record.endpoint.namespace)
            tier_key = graph.resolver.tier_sort_key
            trace.extend(not_applying(scope, state.policies[direction], direction, tier_key))
            return evaluate(
                program, peer, flow, trace, lambda reason: describe_reason(reason, graph.set_info)
            )
        if not simple:
            return self._kept.kept_or_judged(program, peer, flow)
        return self._kept.simple(program, peer, flow, asked)

    def _judge_program(
        self, program: Program, peer: Identity, proto: int, port: int | None
    ) -> Verdict:
        """One program's verdict for a peer identity and (protocol number, port)."""
        flow: Flow = (proto, port, None, peer.family, None, None)
        return self._kept.simple(program, peer, flow, (proto,))

    # -- explanations and state (under the writer lock) ------------------------------------

    def explain(
        self,
        src: Endpoint | str,
        dst: Endpoint | str,
        protocol: str | int = "TCP",
        port: int | None = None,
        direction: Direction = "egress",
        *,
        src_port: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
    ) -> Trace:
        """Return every tier, policy and rule considered for a flow, and why.

        Same arguments as :meth:`verdict`, whose answer the trace ends with.
        """
        with self._lock:
            view = View(self._snapshot, self._hosts, self._records, self._owners)
            steps: list[TraceStep] = []
            result = self._judge(
                view, src, dst, protocol, port, direction, src_port, icmp_type, icmp_code, steps
            )
            dst_text = dst.key if isinstance(dst, Endpoint) else dst
            src_text = src.key if isinstance(src, Endpoint) else src
            flow = f"{src_text} -> {dst_text}:{port if port is not None else '*'}/{protocol}"
            tier_key = self._graph.resolver.tier_sort_key
            tiers = tuple(sorted({s.tier for s in steps}, key=tier_key))
            return Trace(flow, result, tuple(steps), tiers)

    def subscribe(self, callback: Callable[[list[Delta]], None]) -> Callable[[], None]:
        """Call ``callback`` with each batch of deltas, in order; returns an unsubscribe.

        Thread contract: callbacks run on the writer side, one batch at a time and in order,
        holding the engine's writer lock: in the thread of the change that made them (an
        ``upsert_*``/``remove_*`` call), in the thread through which the DNS cache delivered
        its changes (the caller of ``observe``/``ingest``/``expire``..., after the cache has
        let go of its own lock), or in :meth:`flush`. Never inside :meth:`verdict`,
        :meth:`verdict_array`, :meth:`explain` or :meth:`datapath`, and never while the DNS
        cache's lock is held. A callback may call :meth:`verdict` (it sees the state the
        deltas describe).
        """
        return self._subscribers.add(callback)

    def close(self) -> None:
        """Stop following the DNS cache."""
        self._unsubscribe()

    def flush(self) -> None:
        """Apply and publish every DNS change delivered to the engine so far."""
        with self._writing(commit=False):
            pass

    def published_state(self) -> PublishedState:
        """A copy of the whole published state now, DNS changes applied first (read-only).

        Taken under the writer lock, so no change is half applied in it.
        """
        with self._lock:
            self.flush()
            by_num = self._graph.registry.by_num
            return PublishedState(
                dict(self._records),
                dict(self._hosts),
                self._snapshot.prefixes,
                {num: ipset.info for num, ipset in by_num.items()},
            )

    def resources(self) -> ResourceSet:
        """The tiers, network sets and policies the engine holds now."""
        with self._lock:
            graph = self._graph
            return ResourceSet(
                policies=tuple(c.policy for c in graph.resolver.policies.values()),
                network_sets=tuple(nset for nset, _ in graph._netsets.values()),
                tiers=tuple(graph.resolver.tiers.values()),
            )

    def sets(self) -> list[IPSetInfo]:
        """Return every IP set in use, ordered by id."""
        with self._lock:
            return sorted((s.info for s in self._graph.registry), key=lambda i: i.set_id)

    def members(self, set_id: str) -> dict[str, float | None]:
        """Return a set's members (addresses and CIDRs) with their DNS expiry, if any."""
        with self._lock:
            graph = self._graph
            ipset = graph.registry.by_id(set_id)
            if ipset is None:
                raise KeyError(set_id)
            children = children_of(graph.registry).get(ipset.num, [])
            return set_state(ipset, children, graph.selectors, graph.names.members).members

    def datapath(self) -> DatapathState:
        """Return everything a datapath must enforce now (see :mod:`fqdnpolicy.datapath`)."""
        with self._lock:
            return self._graph.datapath()

    def set_ids_of(self, address: str) -> set[str]:
        """Return the ids of every set holding ``address``."""
        with self._lock:
            view = View(self._snapshot, self._hosts, self._records, self._owners)
            ident, _ = identity_of(view.host, view.prefixes, address)
            by_num = self._graph.registry.by_num
            return {by_num[n].set_id for n in ident.sets}

    def endpoints(self) -> list[Endpoint]:
        """Return the endpoints the engine knows."""
        with self._lock:
            return [state.endpoint for state in self._graph.endpoints.values()]

    def policies_for(self, endpoint: Endpoint | str, direction: Direction) -> list[str]:
        """Return the display names of the policies applying to an endpoint, in order."""
        with self._lock:
            view = View(self._snapshot, self._hosts, self._records, self._owners)
            record = view.endpoint(endpoint)
            state = self._graph.endpoints[record.key]
            policies = self._graph.resolver.policies
            compiled = [policies[key] for key in state.policies[direction]]
            return [c.display for c in sorted(compiled, key=lambda c: c.sort_key)]

    # -- writers -----------------------------------------------------------------------------

    @contextmanager
    def _writing(self, *, commit: bool = True) -> Iterator[Graph]:
        """Hold the writer lock for one change; publish it whole; hand deltas out after."""
        with self._lock:
            graph = self._graph
            self._apply_dns()
            if commit:
                graph.commit = Commit(self._snapshot.prefixes)
                self._publish(Snapshot(self._snapshot.prefixes, graph.egress, graph.commit))
            try:
                yield graph
            finally:
                if commit:
                    try:
                        graph.settle()
                    finally:
                        graph.commit = None
                        self._publish(Snapshot(graph.table.prefixes, graph.egress))
            self._apply_dns()
            self._deliver()

    def _publish(self, snapshot: Snapshot) -> None:
        # The C shortcut reads its own copy of the reference: both are set under the writer
        # lock, and each reader checks at its end the one it started from.
        self._snapshot = snapshot
        if self._shortcut is not None:
            self._shortcut.publish(snapshot)

    def _apply_dns(self) -> None:
        inbox = self._inbox
        if not inbox:
            return
        changes = []
        while inbox:
            changes.append(inbox.popleft())
        self._graph.dns(changes)

    def _deliver(self) -> None:
        deltas = self._graph.deltas
        if not deltas:
            return
        batch = list(deltas)
        deltas.clear()
        self._subscribers(batch)

    def _on_dns(self, changes: list[DNSChange]) -> None:
        self._inbox.extend(changes)
        if getattr(self, "_graph", None) is None:
            return  # still building: the build reads the cache itself, flush() follows
        # What _writing(commit=False) does, without a generator: this runs per DNS batch.
        with self._lock:
            self._apply_dns()
            self._deliver()

    def upsert_policy(self, policy: Policy) -> None:
        """Add a policy or replace the one with the same kind, namespace and name."""
        with self._writing() as graph:
            graph.upsert_policy(policy)

    def remove_policy(self, policy: Policy) -> None:
        """Remove a policy (matched by kind, namespace and name)."""
        with self._writing() as graph:
            graph.remove_policy(policy)

    def upsert_tier(self, tier: Tier) -> None:
        """Add or replace a tier (its order and default action)."""
        with self._writing() as graph:
            graph.upsert_tier(tier)

    def upsert_endpoint(self, endpoint: Endpoint) -> None:
        """Add an endpoint or replace the one with the same namespace and name."""
        with self._lock:
            self._graph.check_addresses(endpoint)  # refused before anything changes
            with self._writing() as graph:
                graph.upsert_endpoint(endpoint)

    def remove_endpoint(self, endpoint: Endpoint | str) -> None:
        """Remove an endpoint (by object or ``namespace/name``)."""
        key = endpoint.key if isinstance(endpoint, Endpoint) else endpoint
        with self._writing() as graph:
            graph.remove_endpoint(key)

    def upsert_network_set(self, nset: NetworkSet) -> None:
        """Add or replace a (Global)NetworkSet."""
        with self._writing() as graph:
            graph.upsert_network_set(nset)

    def remove_network_set(self, nset: NetworkSet) -> None:
        """Remove a (Global)NetworkSet."""
        with self._writing() as graph:
            graph.remove_network_set(nset)

    def upsert_namespace(self, namespace: Namespace) -> None:
        """Add or relabel a namespace; its endpoints and network sets are re-evaluated."""
        with self._writing() as graph:
            graph.upsert_namespace(namespace)
