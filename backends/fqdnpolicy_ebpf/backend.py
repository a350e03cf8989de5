"""The eBPF backend: :class:`EbpfBackend`."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import attrs

from fqdnpolicy.backend_tools import (
    check_netns,
    find_tool,
    gc_paused,
    last_changes,
    scratch_namespace,
)
from fqdnpolicy.backends import Backend, BackendError, Rendering
from fqdnpolicy.datapath import DatapathState, Delta, MemberChanged
from fqdnpolicy.errors import Problem
from fqdnpolicy_ebpf import libbpf
from fqdnpolicy_ebpf.build import SOURCE, parse_object_key, source_hash
from fqdnpolicy_ebpf.kernel import (
    Datapath,
    NodeState,
    Tables,
    attach,
    capacity_for,
    detach_all,
    interface_indices,
    log_counts,
    pack_tables,
    unpin,
    write_members,
    write_plan,
)
from fqdnpolicy_ebpf.layout import TABLE_KEY, slots_for
from fqdnpolicy_ebpf.plan import Member, Plan, Prefix, build_plan, parse_member
from fqdnpolicy_ebpf.text import plan_json, plan_text
from fqdnpolicy_ebpf.workbench import measure_verdicts

__all__ = ["DeltaPlan", "EbpfBackend"]


@attrs.frozen
class DeltaPlan:
    """Member changes: ``(set number, prefix, text, added, expiry)``, at DNS clock time ``now``."""

    changes: tuple[tuple[int, Prefix, str, bool, float | None], ...]
    now: float


class EbpfBackend(Backend):
    """Enforce a :class:`~fqdnpolicy.datapath.DatapathState` with a TC eBPF program.

    The program (``fqe.bpf.c``, compiled with clang on first use) sits on the clsact hooks of
    every endpoint's host-side interface and reads the policy from maps: set memberships in
    an LPM trie (each with its DNS deadline), per endpoint and direction a rule table and an
    index from peer sets to its rules, named ports, Log counters and a conntrack LRU hash.
    Policy and DNS changes are map writes.

    Args:
        pin_root: A directory on a bpffs mount; the program and maps of each namespace are
            pinned under ``<pin_root>/<namespace or "host">/`` so that a restarted process
            picks them up. None: nothing is pinned (enforcement still outlives the process,
            held by TC, but a new process cannot update it).
        source: Another C source (tests of the verifier's refusals).

    Raises:
        BackendError: the pin root is not a directory.
    """

    name: ClassVar[str] = "ebpf"

    def __init__(self, *, pin_root: str | None = None, source: str | None = None) -> None:
        if pin_root is not None and not Path(pin_root).is_dir():
            raise BackendError(f"pin root {pin_root!r} is not a directory (mount a bpffs there)")
        self.pin_root = Path(pin_root) if pin_root is not None else None
        self.source = Path(source) if source is not None else SOURCE
        self._slots: dict[str, int] = {}
        self._nodes: dict[str | None, NodeState] = {}
        self._last: tuple[str, Plan] | None = None

    # ------------------------------------------------------------------ rendering (pure)

    def _assign(self, state: DatapathState) -> dict[str, int]:
        wanted = {s.set_id for s in state.sets}
        # Kept stable across renders so that deltas and loaded entries keep their meaning.
        slots = {k: v for k, v in self._slots.items() if k in wanted}
        used = set(slots.values())
        free = (i for i in range(len(wanted) + len(used) + 1) if i not in used)
        for set_id in sorted(wanted - slots.keys()):
            slots[set_id] = next(free)
        self._slots = slots
        return slots

    def render(self, state: DatapathState, *, now: float) -> Rendering:
        """Render the maps' contents; ``data`` is the :class:`~fqdnpolicy_ebpf.plan.Plan`.

        Raises:
            InvalidPolicy: a rule names more ports on one side than the program tests.
        """
        skipped: list[Problem] = []
        plan = build_plan(state, now, self._assign(state), skipped)
        text = plan_text(plan, source_hash(self.source))
        self._last = (text, plan)
        return Rendering(self.name, "full", text, plan, skipped=tuple(skipped))

    def render_structured(self, state: DatapathState, *, now: float) -> Rendering:
        """Like :meth:`render`, with ``data`` as JSON-ready sets and rule tables."""
        full = self.render(state, now=now)
        assert isinstance(full.data, Plan)
        data = plan_json(full.data, source_hash(self.source))
        return Rendering(self.name, "full", full.text, data, skipped=full.skipped)

    def render_delta(self, deltas: Sequence[Delta], *, now: float) -> Rendering:
        """Render member changes of sets the last full render knew; ``data`` a :class:`DeltaPlan`.

        Other kinds of delta need a full :meth:`render`. Within the batch the last change of
        a member wins.
        """
        skipped: list[Problem] = []
        changes = []
        lines = []
        for change in last_changes(deltas, self._slots):
            prefix = parse_member(change.member)
            if prefix is None:
                skipped.append(Problem(f"set {change.set_id}: {change.member!r} is no address"))
                continue
            index = self._slots[change.set_id]
            changes.append((index, prefix, change.member, change.added, change.expiry))
            left = "" if change.expiry is None else f" expires in {change.expiry - now:.1f}s"
            verb = "add" if change.added else "remove"
            lines.append(f"{verb} set {index} {change.member}{left}")
        text = "# fqdnpolicy eBPF set member changes\n" + "".join(f"{x}\n" for x in lines)
        return Rendering(
            self.name, "delta", text, DeltaPlan(tuple(changes), now), skipped=tuple(skipped)
        )

    def needs_full(self, deltas: Sequence[Delta]) -> bool:
        """True when the deltas hold more than member changes of known sets."""
        return any(not isinstance(d, MemberChanged) or d.set_id not in self._slots for d in deltas)

    # ------------------------------------------------------------------------- kernel

    def _plan(self, rendering: Rendering) -> Plan | DeltaPlan:
        if rendering.backend != self.name:
            raise BackendError(f"cannot apply a {rendering.backend!r} rendering with eBPF")
        if isinstance(rendering.data, Plan | DeltaPlan):
            return rendering.data
        if self._last is not None and rendering.text == self._last[0]:
            return self._last[1]
        raise BackendError("apply a rendering made by this backend's render()")

    def _pin_dir(self, netns: str | None) -> Path | None:
        return None if self.pin_root is None else self.pin_root / (netns or "host")

    def apply(self, rendering: Rendering, *, netns: str | None = None) -> None:
        """Write a rendering into the maps of ``netns``'s datapath (loading it if needed).

        A full rendering replaces the maps' contents and attaches the program to every
        endpoint's interface (taking it off those no longer there); a delta adds and removes
        members.

        Raises:
            BackendError: the program could not be built, loaded or attached, an interface is
                missing, or a delta comes before any full apply here.
            InvalidPolicy: a bad namespace name.
        """
        if netns is not None:
            check_netns(netns)
        plan = self._plan(rendering)
        # Writing allocates a burst of small acyclic objects; collections would rescan every
        # live object (the plan's members included) for nothing.
        with gc_paused():
            libbpf.in_netns(netns, lambda: self._apply(plan, netns))

    def _apply(self, plan: Plan | DeltaPlan, netns: str | None) -> None:
        current = self._nodes.get(netns)
        if isinstance(plan, DeltaPlan):
            if current is None:
                raise BackendError("a delta can only be applied after a full apply")
            self._apply_delta(current, plan, netns)
            return
        ifindex = interface_indices(sorted({t.interface for t in plan.tables}))
        tables = pack_tables(plan, ifindex)
        node = self._write_full(current, plan, tables, netns)
        attach(node, ifindex)
        if current is not None and current is not node:
            current.datapath.close()
        self._nodes[netns] = node
        unpin(self._pin_dir(netns), keep=node.datapath.key)

    def _write_full(
        self, current: NodeState | None, plan: Plan, tables: Tables, netns: str | None
    ) -> NodeState:
        """Write a plan into a program big enough for it (the current one, or a larger one)."""
        slots, capacity = 4, capacity_for(tables.size)
        if current is not None:
            # Never shrink: a smaller object would be a reload for nothing.
            slots = current.datapath.slots
            capacity = max(capacity, current.datapath.capacity)
        node = current
        while True:
            fresh = node is None or (node.datapath.slots, node.datapath.capacity) != (
                slots,
                capacity,
            )
            if node is None or fresh:
                opened = NodeState(
                    Datapath.open(slots, capacity, self._pin_dir(netns), self.source)
                )
                if node is not None:
                    opened.attached = node.attached
                    if node is not current:
                        node.datapath.close()
                node = opened
            widest = write_plan(node, plan, tables, fresh=fresh, mono_ns=time.monotonic_ns())
            if not widest:
                return node
            slots = slots_for(widest)  # an address in more sets than the program holds

    def _apply_delta(self, node: NodeState, plan: DeltaPlan, netns: str | None) -> None:
        touched: dict[Prefix, None] = {}
        for index, prefix, _text, added, expiry in plan.changes:
            if added:
                node.members.add(index, prefix, expiry)
            else:
                node.members.remove(index, prefix)
            touched.update(dict.fromkeys(node.members.affected(prefix)))
        if write_members(node, touched, now=plan.now, mono_ns=time.monotonic_ns()):
            # An address is now in more sets than the program holds: a larger program,
            # written in full with the members as they now are.
            assert node.plan is not None
            members = tuple(
                Member(index, prefix, "", expiry)
                for prefix, sets in node.members.own.items()
                for index, expiry in sets.items()
            )
            self._apply(attrs.evolve(node.plan, members=members, now=plan.now), netns)

    def sweep(self, now: float, *, netns: str | None = None) -> int:
        """Remove every DNS-learned member whose expiry (DNS cache clock) is at or before ``now``.

        The program already ignores such members; this frees their entries. The agent's sync
        loop calls it.

        Returns:
            How many memberships were removed.
        """
        node = self._nodes.get(netns)
        if node is None:
            return 0
        due = [
            (index, prefix, "", False, None)
            for prefix, sets in node.members.own.items()
            for index, expiry in sets.items()
            if expiry is not None and expiry <= now
        ]
        if due:
            delta = DeltaPlan(tuple(due), now)
            libbpf.in_netns(netns, lambda: self._apply_delta(node, delta, netns))
        return len(due)

    def datapath(self, *, netns: str | None = None) -> Datapath | None:
        """The program and maps this backend applied to ``netns`` (None: not yet)."""
        node = self._nodes.get(netns)
        return None if node is None else node.datapath

    def bench_verdicts(self, *, addresses: int, repeat: int) -> dict[str, float]:
        """Verdicts per second per core of the program on a state of ``addresses`` members.

        ``BPF_PROG_TEST_RUN`` on prepared packets (:mod:`fqdnpolicy_ebpf.workbench`), in a
        scratch namespace made and deleted here: ``{shape: verdicts per second}``.

        Raises:
            BackendError: no root, or a verdict was not the expected one.
        """
        return measure_verdicts(self, addresses, repeat)

    def log_counts(self, *, netns: str | None = None) -> dict[tuple[str, str, int], int]:
        """Packets counted by Log rules: ``(endpoint, direction, entry index) -> count``."""
        node = self._nodes.get(netns)
        if node is None:
            return {}
        return {
            (endpoint, "egress" if d == 0 else "ingress", i): n
            for (endpoint, d, i), n in log_counts(node).items()
        }

    def check(self, rendering: Rendering) -> None:
        """Load the program into the verifier and apply a full rendering in a scratch namespace.

        The namespace gets a veth interface per endpoint to attach to; it is deleted here.

        Raises:
            BackendError: the verifier refused (its log in the message), the maps cannot hold
                the rendering, or the scratch namespace cannot be made (root needed).
        """
        plan = self._plan(rendering)
        if isinstance(plan, DeltaPlan):
            raise BackendError("only a full rendering can be checked")
        ip = find_tool("ip", "iproute2")
        with scratch_namespace() as ns:
            for i, interface in enumerate(sorted({t.interface for t in plan.tables})):
                # veth, as a CNI makes (dummy is a module this kernel may lack). One that
                # cannot be made (``lo`` is there already) is found, or named, below.
                subprocess.run(
                    [
                        ip,
                        "-n",
                        ns,
                        "link",
                        "add",
                        interface,
                        *("type", "veth", "peer"),
                        f"fqe-p{i}",
                    ],
                    check=False,
                    capture_output=True,
                    timeout=30,
                )
            scratch = EbpfBackend(source=str(self.source))
            try:
                libbpf.in_netns(ns, lambda: scratch._apply(plan, ns))
            finally:
                for node in scratch._nodes.values():
                    node.datapath.close()

    def remove(self, *, netns: str | None = None) -> None:
        """Take the program off every interface, clear the pins (none: no error)."""
        if netns is not None:
            check_netns(netns)
        libbpf.in_netns(netns, lambda: self._remove(netns))

    def _remove(self, netns: str | None) -> None:
        node = self._nodes.pop(netns, None)
        pin_dir = self._pin_dir(netns)
        if node is None and pin_dir is not None and pin_dir.is_dir():
            # A new process: the pinned tables say which interfaces carry the program.
            for sub in pin_dir.iterdir():
                sizes = parse_object_key(sub.name)
                if sizes is None:
                    continue
                try:
                    dp = Datapath.open(*sizes, pin_dir, self.source)
                except BackendError:
                    continue
                found = NodeState(dp)
                for key in libbpf.map_keys(dp.maps["fqe_tables"], TABLE_KEY.size):
                    index = TABLE_KEY.unpack(key)[0]
                    found.attached[str(index)] = index
                detach_all(found)
                dp.close()
        if node is not None:
            detach_all(node)
            node.datapath.close()
        unpin(pin_dir)
