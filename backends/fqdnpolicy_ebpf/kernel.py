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
import time
from collections.abc import Iterable
from pathlib import Path

import attrs

from fqdnpolicy.backends import BackendError
from fqdnpolicy_ebpf import libbpf
from fqdnpolicy_ebpf.build import PROGRAMS, SOURCE, compile_program, object_key
from fqdnpolicy_ebpf.layout import (
    DEADLINE_KEY,
    HOST_LEN,
    LPM_KEY,
    TABLE_KEY,
    U32,
    U64,
    Memberships,
    named_key,
    pack_rule,
    pack_table,
    port_entry,
)
from fqdnpolicy_ebpf.plan import Plan, Prefix

__all__ = ["MAPS", "MAX_PORT_ENTRIES", "MAX_RULES", "Datapath", "NodeState", "write_plan"]

MAPS = (
    "fqe_members",
    "fqe_deadlines",
    "fqe_tables",
    "fqe_rules",
    "fqe_ports",
    "fqe_named",
    "fqe_log_counts",
    "fqe_conntrack",
)
#: Capacity of the rule and port arrays (``max_entries`` in the C source).
MAX_RULES = 65536
MAX_PORT_ENTRIES = 65536


@attrs.define
class Datapath:
    """A loaded program pair and its maps (fds of this process)."""

    key: str
    words: int
    programs: dict[str, int]
    maps: dict[str, int]
    pin_dir: Path | None

    @classmethod
    def open(cls, words: int, pin_dir: Path | None, source: Path = SOURCE) -> Datapath:
        """Reuse the pinned program of this source and size, or compile, load and pin one.

        Raises:
            BackendError: clang or the verifier refused (with its log), or pinning failed.
        """
        key = object_key(words, source)
        where = pin_dir / key if pin_dir is not None else None
        if where is not None and all((where / n).exists() for n in (*PROGRAMS, *MAPS)):
            return cls(
                key,
                words,
                {n: libbpf.obj_get(str(where / n)) for n in PROGRAMS},
                {n: libbpf.obj_get(str(where / n)) for n in MAPS},
                where,
            )
        obj = libbpf.BpfObject(str(compile_program(words, source=source)), PROGRAMS)
        try:
            obj.load()
            # Duplicated so that they outlive the libbpf object, which closes its own.
            progs = {n: os.dup(obj.program_fd(n)) for n in PROGRAMS}
            maps = {n: os.dup(obj.map_fd(n)) for n in MAPS}
        finally:
            obj.close()
        loaded = cls(key, words, progs, maps, where)
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
    members: Memberships = attrs.field(factory=Memberships)
    lpm_keys: set[bytes] = attrs.field(factory=set)
    deadline_keys: set[bytes] = attrs.field(factory=set)
    table_keys: set[bytes] = attrs.field(factory=set)
    named_keys: set[bytes] = attrs.field(factory=set)
    attached: dict[str, int] = attrs.field(factory=dict)  # interface -> ifindex
    tables: dict[tuple[str, int], tuple[int, int]] = attrs.field(factory=dict)  # -> start, count


_PAD12 = bytes(12)


def write_members(node: NodeState, prefixes: Iterable[Prefix], *, now: float, mono_ns: int) -> None:
    """Write the merged entries and deadlines of these prefixes (deleting emptied ones)."""
    dp = node.datapath
    words = dp.words
    keys: list[bytes] = []
    values: list[bytes] = []
    dkeys: list[bytes] = []
    dvalues: list[bytes] = []
    gone: list[bytes] = []
    gone_deadlines: list[bytes] = []
    own_of = node.members.own.get
    value_of = node.members.value
    pack_key, pack_deadline_key, pack_u64 = LPM_KEY.pack, DEADLINE_KEY.pack, U64.pack
    known_deadlines = node.deadline_keys
    for prefix in prefixes:
        family, length, addr = prefix
        # Packed once per prefix: the entry's key and its deadlines' keys share the address.
        a16 = addr.to_bytes(16, "big") if family == 6 else addr.to_bytes(4, "big") + _PAD12
        key = pack_key(8 + length, family, a16)
        own = own_of(prefix)
        if own is None:
            gone.append(key)
            continue
        value, timed = value_of(prefix, words)
        keys.append(key)
        values.append(value)
        if length == HOST_LEN[family]:
            for index, expiry in own.items():
                dk = pack_deadline_key(index, family, a16)
                if timed >> index & 1 and expiry is not None:
                    dkeys.append(dk)
                    dvalues.append(pack_u64(mono_ns + max(0, int((expiry - now) * 1e9))))
                elif dk in known_deadlines:
                    gone_deadlines.append(dk)
    # Deadlines go in before the entries that need them, and out after them.
    libbpf.map_update_batch(
        dp.maps["fqe_deadlines"], b"".join(dkeys), b"".join(dvalues), len(dkeys), "deadlines"
    )
    node.deadline_keys.update(dkeys)
    libbpf.map_update_batch(
        dp.maps["fqe_members"], b"".join(keys), b"".join(values), len(keys), "set members"
    )
    node.lpm_keys.update(keys)
    for key in gone:
        libbpf.map_delete(dp.maps["fqe_members"], key)
        node.lpm_keys.discard(key)
    for key in gone_deadlines:
        libbpf.map_delete(dp.maps["fqe_deadlines"], key)
        node.deadline_keys.discard(key)


def drop_deadlines(node: NodeState, keys: Iterable[bytes]) -> None:
    """Delete deadlines of memberships that ended."""
    for key in keys:
        if key in node.deadline_keys:
            libbpf.map_delete(node.datapath.maps["fqe_deadlines"], key)
            node.deadline_keys.discard(key)


def _pack_tables(
    plan: Plan, ifindex: dict[str, int]
) -> tuple[
    list[tuple[bytes, bytes]], bytes, bytes, int, int, dict[tuple[str, int], tuple[int, int]]
]:
    tables: list[tuple[bytes, bytes]] = []
    rules: list[bytes] = []
    ports: list[bytes] = []
    starts: dict[tuple[str, int], tuple[int, int]] = {}
    for table in plan.tables:
        start = len(rules)
        for entry in table.entries:
            offsets = []
            for spec in entry.ports:
                offsets.append(len(ports))
                ports.extend(port_entry(p) for p in spec)
            rules.append(pack_rule(entry, plan.words, offsets, len(rules)))
        tables.append(
            pack_table(ifindex[table.interface], table.direction, start, len(table.entries))
        )
        starts[(table.endpoint, table.direction)] = (start, len(table.entries))
    if len(rules) > MAX_RULES or len(ports) > MAX_PORT_ENTRIES:
        raise BackendError(
            f"the rule tables need {len(rules)} entries and {len(ports)} port entries; the"
            f" program holds {MAX_RULES} and {MAX_PORT_ENTRIES}"
        )
    return tables, b"".join(rules), b"".join(ports), len(rules), len(ports), starts


def _indices(count: int) -> bytes:
    return b"".join(U32.pack(i) for i in range(count))


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


def write_plan(node: NodeState, plan: Plan, ifindex: dict[str, int], *, fresh: bool) -> None:
    """Write a full plan into a datapath's maps (stale entries deleted), then attach.

    Args:
        node: The namespace's state; its knowledge of the maps is replaced.
        plan: What to write.
        ifindex: Every table's interface, resolved in the namespace.
        fresh: True when this process never wrote these maps (a new process on pinned
            maps): what is there is read back to know what to delete.
    """
    dp = node.datapath
    tables, rules, ports, n_rules, n_ports, starts = _pack_tables(plan, ifindex)
    if fresh:
        node.lpm_keys = set(libbpf.map_keys(dp.maps["fqe_members"], LPM_KEY.size))
        node.deadline_keys = set(libbpf.map_keys(dp.maps["fqe_deadlines"], 24))
        node.table_keys = set(libbpf.map_keys(dp.maps["fqe_tables"], TABLE_KEY.size))
        node.named_keys = set(libbpf.map_keys(dp.maps["fqe_named"], 24))
    old_lpm, old_deadlines = node.lpm_keys, node.deadline_keys
    node.members = Memberships()
    node.lpm_keys, node.deadline_keys = set(), set()
    for member in plan.members:
        node.members.add(member.set_index, member.prefix, member.expiry)
    write_members(node, list(node.members.own), now=plan.now, mono_ns=time.monotonic_ns())
    for key in old_lpm - node.lpm_keys:
        libbpf.map_delete(dp.maps["fqe_members"], key)
    for key in old_deadlines - node.deadline_keys:
        libbpf.map_delete(dp.maps["fqe_deadlines"], key)
    libbpf.map_update_batch(dp.maps["fqe_rules"], _indices(n_rules), rules, n_rules, "rules")
    libbpf.map_update_batch(dp.maps["fqe_ports"], _indices(n_ports), ports, n_ports, "ports")
    named = [named_key(*n) for n in plan.named]
    libbpf.map_update_batch(
        dp.maps["fqe_named"], b"".join(named), b"\1" * len(named), len(named), "named ports"
    )
    for key in node.named_keys - set(named):
        libbpf.map_delete(dp.maps["fqe_named"], key)
    node.named_keys = set(named)
    new_tables = {k for k, _ in tables}
    for key, value in tables:
        libbpf.map_update(dp.maps["fqe_tables"], key, value)
    for key in node.table_keys - new_tables:
        libbpf.map_delete(dp.maps["fqe_tables"], key)
    node.table_keys = new_tables
    node.tables = starts
    prog_in, prog_out = (dp.programs[n] for n in PROGRAMS)
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
    for (endpoint, direction), (start, count) in node.tables.items():
        for i in range(count):
            raw = libbpf.map_lookup(fd, U32.pack(start + i), 8)
            if raw is not None and U64.unpack(raw)[0]:
                out[(endpoint, direction, i)] = U64.unpack(raw)[0]
    return out
