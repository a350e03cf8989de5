"""What readers see: published state, and the before-image of a change in progress.

Readers never take a lock. Writers hold one writer lock and publish in three ways:

* one dict assignment per address or endpoint (an identity in ``hosts``, a record in
  ``records``/``owners``): a reader sees the old value or the new one;
* a new :class:`PrefixTable <fqdnpolicy.engine.identities.PrefixTable>` or program, built
  aside and published by swapping a reference: never seen half built;
* for a change touching many values at once (a policy, an endpoint, a network set, a
  namespace, a tier), a :class:`Commit`: before its first assignment the writer publishes a
  :class:`Snapshot` carrying the commit, and records in it the value each assignment replaces
  before making it. A reader that finds a commit reads every value as it was before the change
  (the live value unless the commit recorded an older one); a reader that finds none reads
  live values. Either way, a reader checks at the end that the snapshot it started from is
  still the published one, and reads again if not, so no verdict mixes two states.

A DNS change is a change of one address's identity: one assignment, no commit.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from fqdnpolicy.cluster import Endpoint
from fqdnpolicy.engine.arguments import bad
from fqdnpolicy.engine.identities import Identity, PrefixTable
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.results import IPSetInfo

__all__ = ["Commit", "EndpointRecord", "PublishedState", "Snapshot", "View"]


class EndpointRecord:
    """An endpoint as readers see it: its programs and its first address of each family."""

    __slots__ = ("egress", "endpoint", "ingress", "ip4", "ip6", "key")

    def __init__(self, endpoint: Endpoint, egress: Program, ingress: Program) -> None:
        self.key = endpoint.key
        self.endpoint = endpoint
        self.egress = egress
        self.ingress = ingress
        self.ip4 = next((ip for ip in endpoint.ips if ":" not in ip), None)
        self.ip6 = next((ip for ip in endpoint.ips if ":" in ip), None)

    def address(self, family: int) -> str | None:
        """The endpoint's first address of ``family``."""
        return self.ip6 if family == 6 else self.ip4


_MISSING = object()


class Commit:
    """The before-image of a change in progress: the values its assignments replaced."""

    __slots__ = ("hosts", "owners", "prefixes", "records")

    def __init__(self, prefixes: PrefixTable) -> None:
        self.prefixes = prefixes
        self.hosts: dict[str, Identity | None] = {}
        self.records: dict[str, EndpointRecord | None] = {}
        self.owners: dict[str, EndpointRecord | None] = {}


class Snapshot:
    """The published prefix table, and the commit in progress if any.

    ``egress`` is the published dict of every endpoint's egress program for the readers'
    shortcut, or an empty dict while a commit is in progress (the shortcut then finds nothing
    and the reader reads the before-image).
    """

    __slots__ = ("commit", "egress", "prefixes")

    def __init__(
        self,
        prefixes: PrefixTable,
        egress: dict[str, Program],
        commit: Commit | None = None,
    ) -> None:
        self.prefixes = prefixes
        self.egress: dict[str, Program] = {} if commit is not None else egress
        self.commit = commit


class View:
    """One reader's consistent reading of the published dicts (see the module docstring)."""

    __slots__ = ("_before", "_hosts", "_owners", "_records", "prefixes")

    def __init__(
        self,
        snapshot: Snapshot,
        hosts: dict[str, Identity],
        records: dict[str, EndpointRecord],
        owners: dict[str, EndpointRecord],
    ) -> None:
        commit = snapshot.commit
        self._before = commit
        self._hosts = hosts
        self._records = records
        self._owners = owners
        self.prefixes = snapshot.prefixes if commit is None else commit.prefixes

    def host(self, address: str) -> Identity | None:
        """The identity ``hosts`` holds for canonical ``address``."""
        live = self._hosts.get(address)  # live first, then the before-image (see Commit)
        if self._before is None:
            return live
        old = self._before.hosts.get(address, _MISSING)
        return live if old is _MISSING else old  # type: ignore[return-value]

    def record(self, key: str) -> EndpointRecord | None:
        """The endpoint record of ``namespace/name``."""
        live = self._records.get(key)
        if self._before is None:
            return live
        old = self._before.records.get(key, _MISSING)
        return live if old is _MISSING else old  # type: ignore[return-value]

    def endpoint(self, value: Endpoint | str) -> EndpointRecord:
        """The record of an endpoint given as object or ``namespace/name``.

        Raises:
            InvalidPolicy: ``value`` is no endpoint, or one the cluster does not hold.
        """
        if isinstance(value, Endpoint):
            key = value.key
        elif isinstance(value, str):
            key = value
        else:
            raise bad(f"not an endpoint: {value!r}", "an Endpoint or namespace/name")
        record = self.record(key)
        if record is None:
            raise bad(f"unknown endpoint {key!r}", "a namespace/name the cluster holds")
        return record

    def peer_identity(self, address: str | None, record: EndpointRecord, family: int) -> Identity:
        """The identity of an endpoint's address of ``family``.

        For an endpoint without one, an identity in no set that still carries its ports.
        """
        if address is not None:
            found = self.host(address)
            if found is not None:
                return found
        return Identity(family, frozenset(), record.endpoint.named_ports)

    def owner(self, address: str) -> EndpointRecord | None:
        """The record of the endpoint owning canonical ``address``."""
        live = self._owners.get(address)
        if self._before is None:
            return live
        old = self._before.owners.get(address, _MISSING)
        return live if old is _MISSING else old  # type: ignore[return-value]


@attrs.frozen
class PublishedState:
    """A copy of what readers see at one moment, for tools that read the whole state.

    The mappings are the reader's own copies, to read only; the programs, identities and
    prefix table they hold are never changed once published (a change replaces them), so a
    :class:`PublishedState` stays the state of its moment after the engine changes.

    Attributes:
        records: Endpoint ``namespace/name`` -> its record (endpoint, egress and ingress
            programs).
        hosts: Canonical host address (DNS-learned member, endpoint address) -> its identity.
        prefixes: The prefix table: the identity of every other address.
        sets: IP set number (the numbers identities and programs hold) -> what it stands for.
    """

    records: Mapping[str, EndpointRecord]
    hosts: Mapping[str, Identity]
    prefixes: PrefixTable
    sets: Mapping[int, IPSetInfo]
