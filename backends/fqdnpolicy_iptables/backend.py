"""The iptables+ipset backend: :class:`IptablesBackend`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import attrs

from fqdnpolicy.backend_tools import digest, last_changes
from fqdnpolicy.backends import Backend, BackendError, Installed, Rendering
from fqdnpolicy.datapath import DatapathState, Delta, MemberChanged
from fqdnpolicy.errors import Problem
from fqdnpolicy_iptables.apply import Applier
from fqdnpolicy_iptables.kernel import ToolRunner, Variant
from fqdnpolicy_iptables.names import Names
from fqdnpolicy_iptables.options import DEFAULT_MAXELEM, RenderOptions
from fqdnpolicy_iptables.render import Document, render_delta, render_full

__all__ = ["IptablesBackend"]


class IptablesBackend(Backend):
    """Enforce a :class:`~fqdnpolicy.datapath.DatapathState` with ipsets and iptables chains.

    Rules sit in the filter table of the host (node) namespace, in chains of our own reached
    from one rule at the top of ``FORWARD``, and dispatch by the workloads' host-side
    interfaces; see :mod:`fqdnpolicy_iptables.rules` for the layout and
    :mod:`fqdnpolicy_iptables.sets` for the sets. A rendering's text holds the input of
    ``ipset restore``, ``iptables-restore`` and ``ip6tables-restore``, each under a header
    line (:mod:`fqdnpolicy_iptables.render`).

    The backend remembers the kind of every set of the last full :meth:`render`, so that
    :meth:`render_delta` knows each set's type.

    Args:
        variant: ``nft`` (``iptables-nft-*``, Debian's default) or ``legacy``
            (``iptables-legacy-*``): the variant the host's other rules use.
        prefix: What every set and chain name starts with (default ``fqp``).
        reject: Deny with TCP reset / ICMP admin-prohibited instead of dropping (tests).
        log: Target of Log rules: ``LOG`` or ``NFLOG``.
        nflog_group: NFLOG group when ``log="NFLOG"``.
        maxelem: Smallest ``maxelem`` of a set.

    Raises:
        InvalidPolicy: an invalid prefix, log target, group or maxelem.
        BackendError: an unknown variant.
    """

    name: ClassVar[str] = "iptables"

    def __init__(
        self,
        variant: Variant = "nft",
        *,
        prefix: str = "fqp",
        reject: bool = False,
        log: Literal["LOG", "NFLOG"] = "LOG",
        nflog_group: int = 0,
        maxelem: int = DEFAULT_MAXELEM,
    ) -> None:
        self.options = RenderOptions(
            prefix=prefix, reject=reject, log=log, nflog_group=nflog_group, maxelem=maxelem
        )
        self.runner = ToolRunner(variant)
        self.applier = Applier(self.runner, Names(prefix))
        self._kinds: dict[str, str] = {}
        self._last_full: Rendering | None = None

    @property
    def variant(self) -> Variant:
        """The iptables variant in use."""
        return self.runner.variant

    def hold_dns(self, queue: int | None) -> bool:
        """Render the hold mode's rules from the next full :meth:`render` on (None: stop).

        ``<prefix>-hold``, jumped to first from ``<prefix>-FORWARD`` for UDP and TCP from
        port 53, sends what goes out of a workload's interface to NFQUEUE ``queue`` with
        ``--queue-bypass`` (accepted when no reader is bound), in both families.

        Raises:
            InvalidPolicy: a queue number outside 0-65535.
        """
        self.options = attrs.evolve(self.options, hold_queue=queue)
        return True

    def render(self, state: DatapathState, *, now: float) -> Rendering:
        """Render sets and rules of both families as one document.

        A set member no set can hold (a scoped IPv6 address, a network in a set of
        addresses) is left out and reported in :attr:`Rendering.skipped`.

        Raises:
            InvalidPolicy: an interface that cannot be rendered safely.
        """
        return self._render(state, now, structured=False)

    def render_structured(self, state: DatapathState, *, now: float) -> Rendering:
        """Like :meth:`render`, with each tool's input as a list of lines in ``data``.

        ``data`` is ``{"ipset": [...], "iptables": [...], "ip6tables": [...]}``.
        """
        return self._render(state, now, structured=True)

    def _render(self, state: DatapathState, now: float, *, structured: bool) -> Rendering:
        skipped: list[Problem] = []
        text, sections = render_full(state, now, self.options, skipped)
        data = {tool: body.splitlines() for tool, body in sections.items()} if structured else None
        self._kinds = {s.set_id: s.kind for s in state.sets}
        rendering = Rendering(self.name, "full", text, data, skipped=tuple(skipped))
        self._last_full = rendering
        return rendering

    def needs_full(self, deltas: Sequence[Delta]) -> bool:
        """Tell whether these deltas need a full :meth:`render` (not just set members).

        True when a set was created or dropped, an endpoint's rules changed, or a member
        belongs to a set the last full render did not declare.
        """
        return any(not isinstance(d, MemberChanged) or d.set_id not in self._kinds for d in deltas)

    def render_delta(self, deltas: Sequence[Delta], *, now: float) -> Rendering:
        """Render member changes as one ``ipset restore`` batch.

        Only :class:`~fqdnpolicy.datapath.MemberChanged` of sets the last full render
        declared are rendered; everything else needs :meth:`render` (:meth:`needs_full`).
        Within the batch the last change of a member wins.
        """
        skipped: list[Problem] = []
        text = render_delta(
            last_changes(deltas, self._kinds), self._kinds, now, self.options.prefix, skipped
        )
        return Rendering(self.name, "delta", text, skipped=tuple(skipped))

    def _document(self, rendering: Rendering) -> Document:
        if rendering.backend != self.name:
            raise BackendError(f"cannot apply a {rendering.backend!r} rendering with iptables")
        return Document.parse(rendering.text)

    def apply(self, rendering: Rendering, *, netns: str | None = None) -> None:
        """Apply a rendering (inside ``netns`` when given): sets first, then rules.

        See :mod:`fqdnpolicy_iptables.apply` for the steps and what is undone on a refusal.

        Raises:
            BackendError: a tool refused the rendering (the previous state was put back) or
                could not run.
            InvalidPolicy: a bad namespace name.
        """
        doc = self._document(rendering)
        if rendering.kind == "delta":
            self.applier.delta(doc, netns=netns)
        else:
            self.applier.full(doc, netns=netns)

    def check(self, rendering: Rendering) -> None:
        """Validate a rendering in a scratch namespace created and deleted here.

        Sets are created there and each family's rules tested with ``iptables-restore
        --test``; a delta is applied there on top of the last full rendering.

        Raises:
            BackendError: a tool refused it, a delta comes before any full rendering, or
                the scratch namespace cannot be made (root needed).
        """
        doc = self._document(rendering)
        base = None
        if rendering.kind == "delta":
            if self._last_full is None:
                raise BackendError("a delta can only be checked after a full render")
            base = self._document(self._last_full)
        self.applier.check(doc, base)

    def installed(self, *, netns: str | None = None) -> Installed | None:
        """Read back our chains, our jump in ``FORWARD`` and the members of our sets.

        Chains are named ``<family>:<chain>:<digest of its rules>`` (and the jump
        ``<family>:FORWARD:<our root chain>``), so a chain whose rules were changed by hand
        reads as a chain gone. Members are the plain addresses of both families' sets of
        each engine set the last full :meth:`render` declared; a set one of whose families is
        gone is absent.

        Raises:
            BackendError: a tool could not list the kernel's state.
        """
        chains: set[str] = set()
        for family in (4, 6):
            saved = self.runner.save(family, netns=netns)
            ours, jumps = self.applier.ours(saved)
            for chain in ours:
                rules = "\n".join(saved.of_chains({chain}))
                chains.add(f"{family}:{chain}:{digest(rules)}")
            if jumps:
                chains.add(f"{family}:FORWARD:{self.applier.names.root}")
        listed = self.runner.ipset_members(netns=netns)
        members: dict[str, frozenset[str]] = {}
        for set_id in self._kinds:
            names = [self.applier.names.set_name(set_id, family) for family in (4, 6)]
            if all(name in listed for name in names):
                found = listed[names[0]] | listed[names[1]]
                members[set_id] = frozenset(m for m in found if "/" not in m)
        return Installed(frozenset(chains), members)

    def remove(self, *, netns: str | None = None) -> None:
        """Delete our jump in ``FORWARD``, our chains and our sets (none: no error)."""
        self.applier.remove(netns=netns)
