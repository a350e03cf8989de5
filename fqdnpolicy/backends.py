"""The backend plugin contract, and discovery of installed backends.

A backend turns a :class:`~fqdnpolicy.datapath.DatapathState` into kernel state and applies it.
It is a plugin: it imports only the public ``fqdnpolicy`` API (this module,
:mod:`fqdnpolicy.datapath`, the engine's public names) and registers a :class:`Backend`
subclass under the entry-point group ``fqdnpolicy.backends``::

    [project.entry-points."fqdnpolicy.backends"]
    mybackend = "my_package.module:MyBackend"

The built-in backends (nftables, iptables+ipset, eBPF) register themselves the same way; the
core never imports them.

The contract, in two halves:

* **Rendering is pure**: :meth:`Backend.render` and :meth:`Backend.render_delta` return a
  :class:`Rendering` (text, and a structured form where the tool has one) and touch nothing.
* **Applying** (:meth:`Backend.apply`) hands a rendering to the kernel, optionally inside a
  named network namespace, atomically where the kernel allows it. A full rendering replaces
  the backend's own rules; a delta rendering only adds and removes set members.

Lifetimes: DNS-learned members carry an expiry on the DNS cache's clock; renderers get
``now`` on that same clock and program element timeouts of ``expiry - now`` seconds.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal

import attrs

from fqdnpolicy.datapath import DatapathState, Delta, MemberChanged
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "BackendError",
    "Installed",
    "Rendering",
    "available",
    "get",
]

ENTRY_POINT_GROUP = "fqdnpolicy.backends"


class BackendError(RuntimeError):
    """Applying a rendering failed (the kernel or tool said no); the message says why."""


@attrs.frozen
class Rendering:
    """What a backend rendered.

    Attributes:
        backend: The backend's name.
        kind: ``"full"`` (replaces everything the backend owns) or ``"delta"`` (set members).
        text: The rendering in the tool's own language (nft script, iptables-restore input...).
        data: A structured form, when the tool has one (e.g. libnftables JSON); else None.
        skipped: What was left out because the datapath cannot hold it (a set member that is
            no plain address, such as a scoped IPv6 address), one problem each. A backend
            never fails a whole rendering for one member: it skips it and says so here.
    """

    backend: str
    kind: Literal["full", "delta"]
    text: str
    data: Any = attrs.field(default=None, eq=False)
    skipped: tuple[Problem, ...] = attrs.field(default=(), eq=False)


@attrs.frozen
class Installed:
    """What a backend reads back from the kernel, to find drift (:meth:`Backend.installed`).

    Attributes:
        chains: Names of the backend's chains present in the kernel.
        members: For each engine set id the backend declared, the plain addresses the kernel
            holds (both families together); a set absent from the kernel is absent here.
    """

    chains: frozenset[str]
    members: dict[str, frozenset[str]] = attrs.field(hash=False)


class Backend(abc.ABC):
    """Base class of datapath backends (see the module docstring for the contract)."""

    #: The name the backend is registered and selected by (``nftables``).
    name: ClassVar[str]

    @abc.abstractmethod
    def render(self, state: DatapathState, *, now: float) -> Rendering:
        """Render the full state; pure.

        Args:
            state: What :meth:`fqdnpolicy.engine.PolicyEngine.datapath` returned.
            now: The DNS cache clock's current time, to turn expiries into timeouts.
        """

    @abc.abstractmethod
    def render_delta(self, deltas: Sequence[Delta], *, now: float) -> Rendering:
        """Render set-member changes (:class:`~fqdnpolicy.datapath.MemberChanged`); pure.

        Deltas of other kinds (sets created or dropped, endpoint rules changed) need a full
        :meth:`render`; a backend may ignore them here.
        """

    @abc.abstractmethod
    def apply(self, rendering: Rendering, *, netns: str | None = None) -> None:
        """Apply a rendering to the kernel, inside network namespace ``netns`` if given.

        Raises:
            BackendError: the kernel or the tool refused it; nothing was half-applied.
        """

    def needs_full(self, deltas: Sequence[Delta]) -> bool:
        """Tell whether these deltas need a full :meth:`render` rather than :meth:`render_delta`.

        The default: any delta other than a member change (a set created or dropped, an
        endpoint's rules changed) needs a full rendering. Backends that remember which sets
        their last full rendering declared also say True for a member of an unknown set.
        """
        return any(not isinstance(delta, MemberChanged) for delta in deltas)

    def installed(self, *, netns: str | None = None) -> Installed | None:
        """Read back what this backend installed, for drift repair; None when it cannot.

        Raises:
            BackendError: the kernel could not be read.
        """
        return None

    def hold_dns(self, queue: int | None) -> bool:
        """Render, from the next full :meth:`render` on, the hold mode's rule (or stop: None).

        The rule sends DNS responses (UDP and TCP from port 53) going to the workloads'
        interfaces to NFQUEUE ``queue`` and lets them through when no reader is bound. The
        default: this backend cannot (False, nothing changes), and the hold mode
        (:mod:`fqdnpolicy.dns.hold`) installs a rule of its own.
        """
        return False

    def render_structured(self, state: DatapathState, *, now: float) -> Rendering:
        """Render the full state with its structured form (:attr:`Rendering.data`) filled in.

        For callers that want the structured form (``fqdnpolicy render --format json``). A
        backend whose structured form costs extra (millions of objects for a million set
        members) leaves it out of :meth:`render` and builds it here; the default is
        :meth:`render`.
        """
        return self.render(state, now=now)

    def check(self, rendering: Rendering) -> None:
        """Validate a rendering with the kernel's own tool without applying it.

        Backends that can (``nft -c`` in a scratch namespace) override this; the default says
        it cannot be checked.

        Raises:
            BackendError: the rendering is invalid, or checking is not supported.
        """
        raise BackendError(f"backend {self.name!r} cannot check a rendering without applying it")

    def remove(self, *, netns: str | None = None) -> None:  # noqa: B027 - optional hook
        """Remove everything this backend installed (default: nothing to do)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Let go of what this object holds (threads, library contexts); rules stay installed.

        The default has nothing to let go of. A backend holding, say, a worker inside a
        network namespace releases it here, so the namespace can go once deleted.
        """


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Return the names of the installed backends, sorted."""
    return sorted(_entry_points())


def get(name: str, **options: Any) -> Backend:
    """Instantiate the backend registered as ``name`` with ``options``.

    Raises:
        InvalidPolicy: no backend of that name is installed, or it is not a :class:`Backend`.
    """
    found = _entry_points().get(name)
    if found is None:
        raise InvalidPolicy(
            Problem(
                f"no backend named {name!r} is installed",
                hint=f"one of: {', '.join(available()) or 'none'}",
            )
        )
    cls = found.load()
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise InvalidPolicy(Problem(f"entry point {name!r} is not a fqdnpolicy Backend"))
    backend: Backend = cls(**options)
    return backend
