"""The nftables backend: :class:`NftablesBackend`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

from fqdnpolicy.backend_tools import gc_paused, last_changes, scratch_namespace
from fqdnpolicy.backends import Backend, BackendError, Installed, Rendering
from fqdnpolicy.datapath import DatapathState, Delta, MemberChanged
from fqdnpolicy.errors import Problem
from fqdnpolicy_nftables.apply import NftRunner
from fqdnpolicy_nftables.names import set_names
from fqdnpolicy_nftables.render import (
    ElementOp,
    RenderOptions,
    SetMirror,
    dumps,
    mirrors_of,
    render_delta_ops,
    render_full,
)

__all__ = ["NftablesBackend"]


class NftablesBackend(Backend):
    """Enforce a :class:`~fqdnpolicy.datapath.DatapathState` with one nftables table.

    The table (family ``inet``) sits on the forward hook of the host (node) namespace and
    dispatches by the workloads' host-side interfaces; see
    :mod:`fqdnpolicy_nftables.render` for its layout.

    Rendering is pure with respect to the kernel. The backend remembers, per set, the members
    the engine last reported (from :meth:`render` and :meth:`render_delta`): an interval set
    touched where CIDRs are involved is rewritten whole from that memory, since nft cannot add
    a member that overlaps another.

    Args:
        table: Name of our table.
        priority: Priority of the egress base chain on the forward hook (ingress: +1).
        reject: Deny with TCP reset / ICMP admin-prohibited instead of dropping (tests).
        use_json: Apply the libnftables JSON form instead of the text form.
        json_data: Build the libnftables JSON form (:attr:`Rendering.data`) of full renderings
            even when applying text. Off (the default), ``data`` of a full rendering is None
            unless ``use_json`` is set or :meth:`render_structured` is called: the JSON form
            of a million set elements is millions of objects and takes longer than the text.
        nft: The ``nft`` binary.
        use_library: Apply through libnftables (``libnftables.so.1``) when it loads, with one
            long-lived context per namespace; False, or no library: run the ``nft`` binary
            (through ``ip netns exec`` for a namespace) for each transaction.

    Raises:
        InvalidPolicy: an invalid table name.
    """

    name: ClassVar[str] = "nftables"

    def __init__(
        self,
        table: str = "fqdnpolicy",
        *,
        priority: int = 0,
        reject: bool = False,
        use_json: bool = False,
        json_data: bool = False,
        nft: str = "nft",
        use_library: bool = True,
    ) -> None:
        self.options = RenderOptions(table=table, priority=priority, reject=reject)
        self.use_json = use_json
        self.json_data = json_data
        self.runner = NftRunner(nft, use_library=use_library)
        self._mirrors: dict[str, SetMirror] = {}
        self._last_full: Rendering | None = None

    @property
    def table(self) -> str:
        """Name of our table."""
        return self.options.table

    def render(self, state: DatapathState, *, now: float) -> Rendering:
        """Render the whole table as one transaction (see :func:`render_full`).

        A set member no nft set can hold (a scoped IPv6 address such as ``fe80::1%eth0``) is
        left out and reported in :attr:`Rendering.skipped`; the rest is rendered.

        Raises:
            InvalidPolicy: an interface that cannot be rendered safely.
        """
        return self._render(state, now, with_json=self.json_data or self.use_json)

    def render_structured(self, state: DatapathState, *, now: float) -> Rendering:
        """Like :meth:`render`, with the libnftables JSON form in :attr:`Rendering.data`."""
        return self._render(state, now, with_json=True)

    def _render(self, state: DatapathState, now: float, *, with_json: bool) -> Rendering:
        skipped: list[Problem] = []
        with gc_paused():  # the mirrors copy a million members too
            text, data = render_full(state, now, self.options, with_json=with_json, skipped=skipped)
            self._mirrors = mirrors_of(state)
        rendering = Rendering(self.name, "full", text, data, skipped=tuple(skipped))
        self._last_full = rendering
        return rendering

    def needs_full(self, deltas: Sequence[Delta]) -> bool:
        """Tell whether these deltas need a full :meth:`render` (not just elements).

        True when a set was created or dropped, an endpoint's rules changed, or a member
        belongs to a set the last full render did not declare.
        """
        for delta in deltas:
            if not isinstance(delta, MemberChanged) or delta.set_id not in self._mirrors:
                return True
        return False

    def render_delta(self, deltas: Sequence[Delta], *, now: float) -> Rendering:
        """Render member changes as one element transaction.

        Only :class:`~fqdnpolicy.datapath.MemberChanged` of sets the last full render
        declared are rendered; everything else needs :meth:`render` (:meth:`needs_full`).
        Within the batch the last change of a member wins.
        """
        ops = [
            ElementOp(d.set_id, d.member, d.added, d.expiry)
            for d in last_changes(deltas, self._mirrors)
        ]
        skipped: list[Problem] = []
        text, data = render_delta_ops(ops, self._mirrors, now, self.table, skipped)
        return Rendering(self.name, "delta", text, data, skipped=tuple(skipped))

    def _payload(self, rendering: Rendering) -> tuple[str, bool]:
        if rendering.backend != self.name:
            raise BackendError(f"cannot apply a {rendering.backend!r} rendering with nftables")
        if self.use_json and rendering.data is not None:
            if len(rendering.data.get("nftables", ())) <= 1:
                return "", True  # only metainfo: nothing to do
            return dumps(rendering.data), True
        return rendering.text, False

    def apply(self, rendering: Rendering, *, netns: str | None = None) -> None:
        """Apply a rendering in one transaction (inside ``netns`` when given).

        Raises:
            BackendError: nft refused it (nothing was applied) or could not run.
            InvalidPolicy: a bad namespace name.
        """
        payload, json_input = self._payload(rendering)
        self.runner.run(payload, netns=netns, json_input=json_input)

    def check(self, rendering: Rendering) -> None:
        """Validate a rendering with ``nft -c`` in a scratch namespace created and deleted here.

        A delta is checked on top of the last full rendering (applied in the scratch
        namespace first), since its sets must exist.

        Raises:
            BackendError: nft refused it, or a delta comes before any full rendering, or the
                scratch namespace cannot be made (root needed).
        """
        payload, json_input = self._payload(rendering)
        base = None
        if rendering.kind == "delta":
            if self._last_full is None:
                raise BackendError("a delta can only be checked after a full render")
            base = self._payload(self._last_full)
        with scratch_namespace(self.runner.ip) as scratch:
            try:
                if base is not None:
                    self.runner.run(base[0], netns=scratch, json_input=base[1])
                self.runner.run(payload, netns=scratch, json_input=json_input, check=True)
            finally:
                self.runner.release(scratch)  # the scratch namespace goes now

    def installed(self, *, netns: str | None = None) -> Installed | None:
        """Read back our table: its chains, and the plain addresses of the declared sets.

        Raises:
            BackendError: nft could not list the table (it is absent, or nft failed).
        """
        listing = json.loads(self.runner.list_table(self.table, netns=netns, json_output=True))
        chains: set[str] = set()
        found: dict[str, set[str]] = {}
        for item in listing.get("nftables", ()):
            if "chain" in item:
                chains.add(item["chain"]["name"])
            elif "set" in item:
                found[item["set"]["name"]] = {_plain(e) for e in item["set"].get("elem", ())}
        members: dict[str, frozenset[str]] = {}
        for set_id in self._mirrors:
            names = [n for n in set_names(set_id) if n in found]
            if names:
                members[set_id] = frozenset().union(*(found[n] for n in names)) - {""}
        return Installed(frozenset(chains), members)

    def remove(self, *, netns: str | None = None) -> None:
        """Delete our table (no error when it does not exist)."""
        table = self.table
        self.runner.run(f"table inet {table}\ndelete table inet {table}\n", netns=netns)

    def close(self) -> None:
        """Let go of what applying holds: the libnftables worker of each namespace.

        A worker keeps its namespace alive; a later call starts a new one.
        """
        self.runner.close()


def _plain(element: Any) -> str:
    """The address of a listed plain element; "" for a prefix or range (not compared)."""
    if isinstance(element, dict) and "elem" in element:
        element = element["elem"].get("val")
    return element if isinstance(element, str) else ""
