"""Loading, pinning and attaching the program, and writing plans into its maps.

One :class:`Datapath` per network namespace: the program pair and its maps, pinned under
``<pin_root>/<namespace>/<object key>/`` when a pin root is given, so that a new process finds
them (:meth:`Datapath.open` reuses the pins) and enforcement never stops with the process (TC
holds the program). :class:`NodeState` is what this process knows it wrote there.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
from collections.abc import Iterable
from pathlib import Path

import attrs

from fqdnpolicy.backends import BackendError
from fqdnpolicy_ebpf import libbpf
from fqdnpolicy_ebpf.build import PROGRAMS, SOURCE, compile_program, object_key
from fqdnpolicy_ebpf.layout import (
    BY_SET,
    HOST_KEY,
    HOST_LEN,
    LPM_KEY,
    TABLE_KEY,
    U32,
    U64,
    Memberships,
    members_struct,
    named_key,
    pack_rule,
    pack_table,
    port_entry,
)
from fqdnpolicy_ebpf.plan import Entry, Plan, Prefix, table_index

__all__ = [
    "MAPS",
    "MAX_CAPACITY",
    "Datapath",
    "NodeState",
    "Tables",
    "capacity_for",
    "pack_tables",
    "write_members",
    "write_plan",
]

MAPS = (
    "fqe_members",
    "fqe_hosts",
    "fqe_tables",
    "fqe_by_set",
    "fqe_index",
    "fqe_rules",
    "fqe_ports",
    "fqe_named",
    "fqe_log_counts",
    "fqe_conntrack",
    "fqe_scratch",
)
#: Arrays sized at load time to the rule tables' capacity.
SIZED = ("fqe_index", "fqe_rules", "fqe_ports", "fqe_log_counts")
MIN_CAPACITY = 1 << 16
#: ``fqe_by_set`` keys of a table's unindexed entries for one protocol: this | protocol.
PROTOCOL_KEY = 0xFFFFFF00
#: Protocols whose unindexed entries' span is in the table entry itself (TCP, UDP).
TABLE_PROTOCOLS = (6, 17)
#: Rule-table entries (or port entries) one namespace's program holds at most.
MAX_CAPACITY = 1 << 22


def capacity_for(count: int) -> int:
    """Entries of the sized arrays for ``count`` rule or port entries: a power of two.

    Raises:
        BackendError: more than :data:`MAX_CAPACITY`.
    """
    if count > MAX_CAPACITY:
        raise BackendError(
            f"the rule tables need {count} entries; the program holds at most {MAX_CAPACITY}"
        )
    capacity = MIN_CAPACITY
    while capacity < count:
        capacity *= 2
    return capacity


@attrs.define
class Datapath:
    """A loaded program pair and its maps (fds of this process)."""

    key: str
    slots: int
    capacity: int
    programs: dict[str, int]
    maps: dict[str, int]
    pin_dir: Path | None

    @classmethod
    def open(
        cls, slots: int, capacity: int, pin_dir: Path | None, source: Path = SOURCE
    ) -> Datapath:
        """Reuse the pinned program of this source and size, or compile, load and pin one.

        Raises:
            BackendError: clang or the verifier refused (with its log), or pinning failed.
        """
        key = object_key(slots, capacity, source)
        where = pin_dir / key if pin_dir is not None else None
        if where is not None and all((where / n).exists() for n in (*PROGRAMS, *MAPS)):
            return cls(
                key,
                slots,
                capacity,
                {n: libbpf.obj_get(str(where / n)) for n in PROGRAMS},
                {n: libbpf.obj_get(str(where / n)) for n in MAPS},
                where,
            )
        obj = libbpf.BpfObject(str(compile_program(slots, source=source)), PROGRAMS)
        try:
            for name in SIZED:
                obj.set_max_entries(name, capacity)
            obj.load()
            # Duplicated so that they outlive the libbpf object, which closes its own.
            progs = {n: os.dup(obj.program_fd(n)) for n in PROGRAMS}
            maps = {n: os.dup(obj.map_fd(n)) for n in MAPS}
        finally:
            obj.close()
        loaded = cls(key, slots, capacity, progs, maps, where)
        if where is not None:
            where.mkdir(parents=True, exist_ok=True)
            for name, fd in (*progs.items(), *maps.items()):
                if not (where / name).exists():
                    libbpf.obj_pin(fd, str(where / name))
        return loaded

    def close(self) -> None:
        """Close this process's fds (pins and attachments stay)."""
        for fd in (*self.programs.values(), *self.maps.values()):
            os.close(fd)
        self.programs.clear()
        self.maps.clear()


@attrs.define
class NodeState:
    """What this process wrote into one namespace's datapath."""

    datapath: Datapath
    plan: Plan | None = None  # the last full plan written
    members: Memberships = attrs.field(factory=Memberships)
    lpm_keys: set[bytes] = attrs.field(factory=set)
    host_keys: set[bytes] = attrs.field(factory=set)
    table_keys: set[bytes] = attrs.field(factory=set)
    by_set_keys: set[bytes] = attrs.field(factory=set)
    named_keys: set[bytes] = attrs.field(factory=set)
    attached: dict[str, int] = attrs.field(factory=dict)  # interface -> ifindex
    log_bases: dict[tuple[str, int], int] = attrs.field(factory=dict)  # (endpoint, direction)


_PAD12 = bytes(12)
# The hosts map's key of an IPv4 address given as an integer (big-endian, padded).
_HOST_KEY4 = struct.Struct(">B3xI12x")


def write_members(node: NodeState, prefixes: Iterable[Prefix], *, now: float, mono_ns: int) -> int:
    """Write the merged entries of these prefixes (deleting emptied ones).

    Full-length prefixes go to the hosts hash, shorter ones to the trie.

    Returns:
        0 when written; otherwise the most sets one entry needs, more than the program's
        slots, and nothing was written.
    """
    dp = node.datapath
    slots = dp.slots
    pack = members_struct(slots).pack
    # An entry of one set (most DNS members): its padding packed by the format.
    pack_one = struct.Struct(f"<II{4 * (slots - 1) + 4}xQ{8 * (slots - 1)}x").pack
    zeros = [0] * slots
    # [trie, hosts]: keys, values and emptied keys of each map.
    keys: tuple[list[bytes], list[bytes]] = ([], [])
    values: tuple[list[bytes], list[bytes]] = ([], [])
    gone: tuple[list[bytes], list[bytes]] = ([], [])
    widest = 0
    own_of = node.members.own.get
    merged_of = node.members.merged
    pack_lpm, pack_host, pack_host4 = LPM_KEY.pack, HOST_KEY.pack, _HOST_KEY4.pack
    for prefix in prefixes:
        family, length, addr = prefix
        host = length == HOST_LEN[family]
        if host and family == 4:
            key = pack_host4(4, addr)
        else:
            a16 = addr.to_bytes(16, "big") if family == 6 else addr.to_bytes(4, "big") + _PAD12
            key = pack_host(family, a16) if host else pack_lpm(8 + length, family, a16)
        own = own_of(prefix)
        if own is None:
            gone[host].append(key)
            continue
        merged = merged_of(prefix)
        count = len(merged)
        if count == 1:
            ((set_index, expiry),) = merged.items()
            keys[host].append(key)
            # Deadlines on the monotonic clock the program reads; 0 is "none".
            deadline = 0 if expiry is None else mono_ns + max(0, int((expiry - now) * 1e9))
            values[host].append(pack_one(1, set_index, deadline))
            continue
        if count > slots:
            widest = max(widest, count)
            continue
        pad = zeros[: slots - count]
        deadlines = [
            0 if e is None else mono_ns + max(0, int((e - now) * 1e9)) for e in merged.values()
        ]
        keys[host].append(key)
        values[host].append(pack(count, *merged, *pad, *deadlines, *pad))
    if widest:
        return widest
    for name, known, k, v, g in (
        ("fqe_members", node.lpm_keys, keys[0], values[0], gone[0]),
        ("fqe_hosts", node.host_keys, keys[1], values[1], gone[1]),
    ):
        libbpf.map_update_batch(dp.maps[name], b"".join(k), b"".join(v), len(k), "set members")
        known.update(k)
        for key in g:
            libbpf.map_delete(dp.maps[name], key)
            known.discard(key)
    return 0


@attrs.define
class Tables:
    """Rule tables packed for the maps; endpoints with equal tables share one copy."""

    keys: list[bytes]
    values: list[bytes]
    rules: list[bytes]
    ports: list[bytes]
    index: list[int]
    by_set: dict[bytes, bytes]
    log_bases: dict[tuple[str, int], int]  # (endpoint, direction) -> its first Log counter
    log_slots: int = 0  # every endpoint has counters of its own for its table's Log rules

    @property
    def size(self) -> int:
        """Entries the largest sized array needs."""
        return max(len(self.rules), len(self.ports), len(self.index), self.log_slots)


def pack_tables(plan: Plan, ifindex: dict[str, int]) -> Tables:
    """Pack every rule table, its index (by peer set) and the endpoints' table keys."""
    sizes = {s.index: s.members for s in plan.sets}
    packed = Tables([], [], [], [], [], {}, {})
    shared: dict[int, tuple[int, int, int, tuple[int, ...], int]] = {}
    for table in plan.tables:
        found = shared.get(id(table.entries))
        if found is None:
            found = _pack_table(packed, table.entries, len(shared), sizes)
            shared[id(table.entries)] = found
        ident, start, count, first, logs = found
        key, value = pack_table(
            ifindex[table.interface],
            table.direction,
            ident,
            start,
            count,
            first,
            packed.log_slots,
        )
        packed.keys.append(key)
        packed.values.append(value)
        packed.log_bases[(table.endpoint, table.direction)] = packed.log_slots
        packed.log_slots += logs
    return packed


def _pack_table(
    packed: Tables, rows: tuple[Entry, ...], ident: int, sizes: dict[int, int]
) -> tuple[int, int, int, tuple[int, ...], int]:
    start = len(packed.rules)
    logs = 0
    for entry in rows:
        offsets = []
        for spec in entry.ports:
            offsets.append(len(packed.ports))
            packed.ports.extend(port_entry(p) for p in spec)
        # A Log rule's counter: its number among the table's Log rules, from the endpoint's
        # base (tables are shared, counters are not).
        packed.rules.append(pack_rule(entry, offsets, logs))
        logs += entry.kind == "rule" and entry.action == "Log"
    index = table_index(rows, sizes)
    spans = {0: (len(packed.index), len(index.unindexed))}
    packed.index.extend(index.unindexed)
    for protocol, positions in index.by_protocol.items():
        spans[protocol] = (len(packed.index), len(positions))
        packed.index.extend(positions)
        if protocol not in TABLE_PROTOCOLS:
            packed.by_set[BY_SET.pack(ident, PROTOCOL_KEY | protocol)] = BY_SET.pack(
                *spans[protocol]
            )
    for set_index, positions in index.by_set.items():
        packed.by_set[BY_SET.pack(ident, set_index)] = BY_SET.pack(
            len(packed.index), len(positions)
        )
        packed.index.extend(positions)
    first = tuple(n for p in (0, *TABLE_PROTOCOLS) for n in spans.get(p, spans[0]))
    return ident, start, len(rows), first, logs


def _u32s(values: Iterable[int], count: int) -> bytes:
    return struct.pack(f"<{count}I", *values)


def _indices(count: int) -> bytes:
    return _u32s(range(count), count)


def interface_indices(names: Iterable[str]) -> dict[str, int]:
    """Resolve interface names in the current (thread's) namespace.

    Raises:
        BackendError: an interface does not exist.
    """
    found: dict[str, int] = {}
    for name in names:
        try:
            found[name] = socket.if_nametoindex(name)
        except OSError as exc:
            raise BackendError(f"no interface {name!r} to attach the eBPF program to") from exc
    return found


def _batch(fd: int, keys: list[bytes], values: list[bytes], what: str) -> None:
    libbpf.map_update_batch(fd, b"".join(keys), b"".join(values), len(keys), what)


def write_plan(node: NodeState, plan: Plan, tables: Tables, *, fresh: bool, mono_ns: int) -> int:
    """Write a full plan into a datapath's maps (stale entries deleted).

    Args:
        node: The namespace's state; its knowledge of the maps is replaced.
        plan: What to write.
        tables: The plan's packed rule tables (fitting the datapath's capacity).
        fresh: True when this process never wrote these maps (a new process on pinned
            maps): what is there is read back to know what to delete.
        mono_ns: ``CLOCK_MONOTONIC`` now, the clock of the deadlines.

    Returns:
        0 when written; otherwise the most sets one address entry needs, more than the
        program's slots, and nothing was written.
    """
    dp = node.datapath
    maps = dp.maps
    members = Memberships.of((m.set_index, m.prefix, m.expiry) for m in plan.members)
    if fresh:
        node.lpm_keys = set(libbpf.map_keys(maps["fqe_members"], LPM_KEY.size))
        node.host_keys = set(libbpf.map_keys(maps["fqe_hosts"], HOST_KEY.size))
        node.table_keys = set(libbpf.map_keys(maps["fqe_tables"], TABLE_KEY.size))
        node.by_set_keys = set(libbpf.map_keys(maps["fqe_by_set"], BY_SET.size))
        node.named_keys = set(libbpf.map_keys(maps["fqe_named"], 24))
    old = node.members, node.lpm_keys, node.host_keys
    node.members, node.lpm_keys, node.host_keys = members, set(), set()
    widest = write_members(node, list(members.own), now=plan.now, mono_ns=mono_ns)
    if widest:
        node.members, node.lpm_keys, node.host_keys = old
        return widest
    for key in old[1] - node.lpm_keys:
        libbpf.map_delete(maps["fqe_members"], key)
    for key in old[2] - node.host_keys:
        libbpf.map_delete(maps["fqe_hosts"], key)
    n_rules, n_ports = len(tables.rules), len(tables.ports)
    libbpf.map_update_batch(
        maps["fqe_rules"], _indices(n_rules), b"".join(tables.rules), n_rules, "rules"
    )
    libbpf.map_update_batch(
        maps["fqe_ports"], _indices(n_ports), b"".join(tables.ports), n_ports, "ports"
    )
    libbpf.map_update_batch(
        maps["fqe_index"],
        _indices(len(tables.index)),
        _u32s(tables.index, len(tables.index)),
        len(tables.index),
        "rule index",
    )
    _batch(maps["fqe_by_set"], list(tables.by_set), list(tables.by_set.values()), "rule index")
    for key in node.by_set_keys - tables.by_set.keys():
        libbpf.map_delete(maps["fqe_by_set"], key)
    node.by_set_keys = set(tables.by_set)
    named = [named_key(*n) for n in plan.named]
    _batch(maps["fqe_named"], named, [b"\1"] * len(named), "named ports")
    for key in node.named_keys - set(named):
        libbpf.map_delete(maps["fqe_named"], key)
    node.named_keys = set(named)
    _batch(maps["fqe_tables"], tables.keys, tables.values, "rule tables")
    new_tables = set(tables.keys)
    for key in node.table_keys - new_tables:
        libbpf.map_delete(maps["fqe_tables"], key)
    node.table_keys = new_tables
    node.log_bases = tables.log_bases
    node.plan = plan
    return 0


def attach(node: NodeState, ifindex: dict[str, int]) -> None:
    """Attach the program to these interfaces, and take it off those no longer among them."""
    prog_in, prog_out = (node.datapath.programs[n] for n in PROGRAMS)
    for index in ifindex.values():
        libbpf.tc_attach(index, prog_in, prog_out)
    for name, index in node.attached.items():
        if name not in ifindex:
            libbpf.tc_detach(index)
    node.attached = dict(ifindex)


def detach_all(node: NodeState) -> None:
    """Take our filters off every interface this process attached them to."""
    for index in node.attached.values():
        libbpf.tc_detach(index)
    node.attached = {}


def unpin(pin_dir: Path | None, keep: str | None = None) -> None:
    """Remove pinned objects under ``pin_dir`` except those of object ``keep``."""
    if pin_dir is None or not pin_dir.is_dir():
        return
    for sub in pin_dir.iterdir():
        if sub.name != keep and sub.is_dir():
            shutil.rmtree(sub, ignore_errors=True)
    if keep is None:
        shutil.rmtree(pin_dir, ignore_errors=True)


def log_counts(node: NodeState) -> dict[tuple[str, int, int], int]:
    """Packets counted by Log rules: ``(endpoint, direction, entry index) -> count``."""
    fd = node.datapath.maps["fqe_log_counts"]
    out: dict[tuple[str, int, int], int] = {}
    tables = node.plan.tables if node.plan is not None else ()
    for table in tables:
        base = node.log_bases[(table.endpoint, table.direction)]
        logs = [i for i, e in enumerate(table.entries) if e.action == "Log" and e.kind == "rule"]
        endpoint, direction = table.endpoint, table.direction
        for slot, i in enumerate(logs, start=base):
            raw = libbpf.map_lookup(fd, U32.pack(slot), 8)
            if raw is not None and U64.unpack(raw)[0]:
                out[(endpoint, direction, i)] = U64.unpack(raw)[0]
    return out
