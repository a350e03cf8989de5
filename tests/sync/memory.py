"""A small in-memory backend for the sync's tests: a real :class:`Backend`, kernel-free.

Its "kernel" is a dict of sets and a set of chain names, which tests may damage by hand (to
make drift) or make refuse applies (to make failures).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import ClassVar

from fqdnpolicy.backend_tools import last_changes
from fqdnpolicy.backends import Backend, BackendError, Installed, Rendering
from fqdnpolicy.datapath import DatapathState, Delta


class MemoryBackend(Backend):
    """Applies renderings to :attr:`sets` and :attr:`chains`; uses the ABC's ``needs_full``."""

    name: ClassVar[str] = "memory"

    def __init__(self) -> None:
        self.sets: dict[str, dict[str, float | None]] = {}
        self.chains: set[str] = set()
        self.applied: list[Rendering] = []
        self.refuse = 0  # refuse this many applies, then accept
        self.gate = threading.Event()  # cleared: apply blocks until set
        self.gate.set()
        self.entered = threading.Event()  # set when an apply starts (before the gate)
        self.removed = False
        self.hide_once: set[str] = set()  # members the next read-back leaves out
        self.reads = 0

    def render(self, state: DatapathState, *, now: float) -> Rendering:
        data = {s.set_id: dict(s.members) for s in state.sets}
        return Rendering(self.name, "full", f"full {len(data)} sets", data)

    def render_delta(self, deltas: Sequence[Delta], *, now: float) -> Rendering:
        changes = last_changes(deltas, self.sets)
        text = "\n".join(f"{c.set_id} {c.member} {c.added} {c.expiry}" for c in changes)
        return Rendering(self.name, "delta", text, changes)

    def apply(self, rendering: Rendering, *, netns: str | None = None) -> None:
        self.entered.set()
        self.gate.wait()
        if self.refuse:
            self.refuse -= 1
            raise BackendError("refused on purpose")
        if rendering.kind == "full":
            self.sets = {k: dict(v) for k, v in rendering.data.items()}
            self.chains = {"main"}
        else:
            for change in rendering.data:
                members = self.sets[change.set_id]
                if change.added:
                    members[change.member] = change.expiry
                else:
                    members.pop(change.member, None)
        self.applied.append(rendering)

    def installed(self, *, netns: str | None = None) -> Installed | None:
        # A kernel listing taken while a set's hash table grows can skip elements: hide_once
        # plays that, for one read.
        hidden, self.hide_once = self.hide_once, set()
        self.reads += 1
        return Installed(
            frozenset(self.chains), {k: frozenset(set(v) - hidden) for k, v in self.sets.items()}
        )

    def remove(self, *, netns: str | None = None) -> None:
        self.sets, self.chains, self.removed = {}, set(), True
