"""Map keys and values as bytes (the C structs of ``fqe.bpf.c``), and the membership model.

The LPM trie answers a lookup with its longest matching prefix only, so an entry must carry
the memberships of every prefix covering it: :class:`Memberships` keeps each prefix's own
memberships and computes the merged memberships of any entry (set ids, each with its DNS
deadline), and which entries a change touches.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Iterable

from fqdnpolicy.backends import BackendError
from fqdnpolicy_ebpf.plan import MAX_RULE_SETS, Entry, Prefix

__all__ = [
    "ACTIONS",
    "LPM_KEY",
    "MAX_SLOTS",
    "Memberships",
    "lpm_key",
    "members_struct",
    "pack_rule",
    "pack_table",
    "port_entry",
    "slots_for",
]

LPM_KEY = struct.Struct("<IB16s")
HOST_KEY = struct.Struct("<B3x16s")
NAMED_KEY = struct.Struct("<IBBH16s")
TABLE_KEY = struct.Struct("<II")
TABLE_VALUE = struct.Struct("<10I")
BY_SET = struct.Struct("<II")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
_RULE = struct.Struct(f"<BBBBBBBBBBxxII4I4IBBxx{MAX_RULE_SETS}I{MAX_RULE_SETS}I")
_PORT = struct.Struct("<HHBBxxI")
ACTIONS = {"Allow": 1, "Deny": 2, "Log": 3, "Pass": 4}
F_PROTO, F_NOT_PROTO, F_ICMP, F_NOT_ICMP = 0x01, 0x02, 0x04, 0x08
F_ICMP_TYPE, F_ICMP_CODE, F_NOT_ICMP_TYPE, F_NOT_ICMP_CODE = 0x10, 0x20, 0x40, 0x80
HOST_LEN = {4: 32, 6: 128}


def addr16(family: int, value: int) -> bytes:
    """An address as the 16 bytes the maps hold (IPv4 in the first 4)."""
    return value.to_bytes(4 if family == 4 else 16, "big").ljust(16, b"\0")


def lpm_key(prefix: Prefix) -> bytes:
    """The trie key of a prefix: the family byte counts as 8 bits of the prefix."""
    family, length, value = prefix
    return LPM_KEY.pack(8 + length, family, addr16(family, value))


#: Memberships one address entry can hold at most (the program's live-set mask is 64 bits).
MAX_SLOTS = 64


def slots_for(count: int) -> int:
    """Membership slots of an entry holding ``count`` sets: a power of two, at least 4.

    Powers of two, so growth rarely recompiles.

    Raises:
        BackendError: more than :data:`MAX_SLOTS`.
    """
    if count > MAX_SLOTS:
        raise BackendError(
            f"an address is in {count} sets; the eBPF program holds at most {MAX_SLOTS}"
        )
    slots = 4
    while slots < count:
        slots *= 2
    return slots


def members_struct(slots: int) -> struct.Struct:
    """``struct members``: the count, the set ids, the deadlines (0: none)."""
    return struct.Struct(f"<I{slots}I4x{slots}Q")


def named_key(name: int, family: int, value: int, proto: int, port: int) -> bytes:
    """The key of one endpoint's named port."""
    return NAMED_KEY.pack(name, family, proto, port, addr16(family, value))


def pack_table(
    ifindex: int,
    direction: int,
    ident: int,
    start: int,
    count: int,
    first: tuple[int, ...],
    log_base: int,
) -> tuple[bytes, bytes]:
    """Key and value of an endpoint's rule table.

    The value: the table's id, entries, the spans (offset, count) of its unindexed entries
    for any protocol, TCP and UDP, the endpoint's first Log counter.
    """
    value = TABLE_VALUE.pack(ident, start, count, *first, log_base)
    return TABLE_KEY.pack(ifindex, direction), value


def port_entry(entry: tuple[int, int, int, int]) -> bytes:
    """One port range, or a peer named port (``name >= 0``)."""
    lo, hi, proto, name = entry
    return _PORT.pack(lo, hi, proto, 1 if name >= 0 else 0, max(name, 0))


def _sets(indices: tuple[int, ...]) -> list[int]:
    return list(indices) + [0] * (MAX_RULE_SETS - len(indices))


def _icmp(
    value: tuple[int | None, int | None] | None, present: int, has_type: int, has_code: int
) -> tuple[int, int, int]:
    """Flags, type and code of an ICMP condition."""
    if value is None:
        return 0, 0, 0
    kind, code = value
    flags = present | (has_type if kind is not None else 0) | (has_code if code is not None else 0)
    return flags, kind or 0, code or 0


def pack_rule(entry: Entry, port_off: list[int], counter: int) -> bytes:
    """``struct rule`` of an entry whose port conditions start at ``port_off`` in the ports map.

    ``counter``: a Log rule's counter, from the endpoint's first.
    """
    flags = 0
    proto = not_proto = 0
    if entry.protocol is not None:
        flags, proto = flags | F_PROTO, entry.protocol
    if entry.not_protocol is not None:
        flags, not_proto = flags | F_NOT_PROTO, entry.not_protocol
    icmp_flags, itype, icode = _icmp(entry.icmp, F_ICMP, F_ICMP_TYPE, F_ICMP_CODE)
    not_flags, not_itype, not_icode = _icmp(
        entry.not_icmp, F_NOT_ICMP, F_NOT_ICMP_TYPE, F_NOT_ICMP_CODE
    )
    flags |= icmp_flags | not_flags
    families = (1 if 4 in entry.families else 0) | (2 if 6 in entry.families else 0)
    return _RULE.pack(
        0 if entry.kind == "rule" else 1,
        ACTIONS[entry.action],
        families,
        flags,
        proto,
        not_proto,
        itype,
        icode,
        not_itype,
        not_icode,
        entry.next_tier,
        counter,
        *port_off,
        *(len(p) for p in entry.ports),
        len(entry.peer_in),
        len(entry.peer_not_in),
        *_sets(entry.peer_in),
        *_sets(entry.peer_not_in),
    )


class Memberships:
    """Each prefix's own memberships, and the merged LPM entries they make.

    ``own[prefix]`` maps set ids to the member's expiry (None: none). Only full-length
    (host) members carry a deadline in the kernel: the program checks it by the packet's
    address, which a shorter prefix is not.
    """

    def __init__(self) -> None:
        self.own: dict[Prefix, dict[int, float | None]] = {}
        self._lengths: dict[int, defaultdict[int, int]] = {4: defaultdict(int), 6: defaultdict(int)}

    @classmethod
    def of(cls, members: Iterable[tuple[int, Prefix, float | None]]) -> Memberships:
        """Memberships of ``(set id, prefix, expiry)`` triples (a later one of a pair wins)."""
        made = cls()
        own = made.own
        for set_index, prefix, expiry in members:
            sets = own.get(prefix)
            if sets is None:
                own[prefix] = {set_index: expiry}
            else:
                sets[set_index] = expiry
        for family, length, _ in own:
            made._lengths[family][length] += 1
        return made

    def add(self, set_index: int, prefix: Prefix, expiry: float | None) -> None:
        """Record a membership (again: its expiry is replaced)."""
        sets = self.own.get(prefix)
        if sets is None:
            sets = self.own[prefix] = {}
            self._lengths[prefix[0]][prefix[1]] += 1
        sets[set_index] = expiry

    def remove(self, set_index: int, prefix: Prefix) -> bool:
        """Forget a membership; True when the prefix is in no set any more."""
        sets = self.own.get(prefix)
        if sets is None:
            return False
        sets.pop(set_index, None)
        if sets:
            return False
        del self.own[prefix]
        lengths = self._lengths[prefix[0]]
        lengths[prefix[1]] -= 1
        if not lengths[prefix[1]]:
            del lengths[prefix[1]]
        return True

    def affected(self, prefix: Prefix) -> list[Prefix]:
        """The prefix and every more specific one it covers (whose entries inherit from it)."""
        family, length, value = prefix
        if length == HOST_LEN[family]:
            return [prefix]
        shift = HOST_LEN[family] - length
        return [prefix] + [
            p
            for p in self.own
            if p[0] == family and p[1] > length and p[2] >> shift == value >> shift
        ]

    def merged(self, prefix: Prefix) -> dict[int, float | None]:
        """The sets of an entry and their expiries: its own and its covering prefixes'.

        A set holding a covering prefix too keeps the address when the deadline passes, so
        its expiry is dropped; so is any of a shorter prefix (the program checks the
        deadline of the entry the packet's address finds). Read only: it may be ``own``'s
        own dict.
        """
        family, length, addr = prefix
        own = self.own[prefix]
        full = HOST_LEN[family]
        out = own if length == full else dict.fromkeys(own)
        for shorter in self._lengths[family]:
            if shorter < length:
                shift = full - shorter
                cover = self.own.get((family, shorter, addr >> shift << shift))
                if cover:
                    out = {**out, **dict.fromkeys(cover)}
        return out
