"""Batch verdicts: many egress flows judged at once from the identity tables, with NumPy.

A flow's egress verdict depends on the sender's program, the destination's identity and
(protocol, port). Destinations become identity codes by array search (host addresses sorted,
then the CIDR intervals of the prefix table); most identities are in none of the sets a
program names, so for them the verdict depends on (program, family, protocol, port) only and is
judged once per distinct combination. The few flows whose destination is in one of the
program's sets are judged once per distinct (program, identity, protocol, port); flows to an
endpoint, which also need its ingress policy, go through :meth:`PolicyEngine.verdict` once per
distinct (source, address, protocol, port). Combinations are grouped by direct indexing where
their number space is small, so most batches need no sort.

The tables are built from the published state on first use and kept until an identity
changes (``AddressTable.version``): replaying a day of flows against one state builds them once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from fqdnpolicy.engine.arguments import port_number as _port
from fqdnpolicy.engine.arguments import protocol as _protocol
from fqdnpolicy.engine.identities import Identity, identity_of
from fqdnpolicy.engine.programs import Program
from fqdnpolicy.engine.published import View
from fqdnpolicy.errors import InvalidPolicy, MissingDependency, Problem

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from fqdnpolicy.engine.engine import PolicyEngine

    BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

__all__ = ["verdict_array"]

_NO_PORT = -1


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise MissingDependency(
            "verdict_array needs NumPy: pip install 'fqdnpolicy[fast]' (or pip install numpy)"
        ) from None
    return numpy


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds (other values as they are)."""
    item = getattr(value, "item", None)
    return item() if item is not None and getattr(value, "ndim", None) == 0 else value


def _bad(message: str, hint: str = "") -> InvalidPolicy:
    return InvalidPolicy(Problem(message, hint=hint))


class _Tables:
    """Identity codes for packed IPv4 destinations, and each code's identity."""

    def __init__(self, np: Any, hosts: dict[str, Identity], engine: PolicyEngine) -> None:
        prefixes = engine._snapshot.prefixes
        self.prefixes = prefixes
        self.idents: list[Identity] = []
        self._code: dict[int, int] = {}
        self._coding = threading.Lock()
        v4 = [(address, ident) for address, ident in hosts.items() if ":" not in address]
        v4.sort(key=lambda item: socket.inet_aton(item[0]))
        packed = b"".join(socket.inet_aton(address) for address, _ in v4)
        self.host_addr = np.frombuffer(packed, dtype=">u4").astype(np.uint32)
        self.host_code = np.fromiter((self.code(i) for _, i in v4), np.int64, len(v4))
        # Elementary IPv4 intervals between prefix boundaries, each with its identity.
        points = {0}
        for net in prefixes.prefixes:
            if net.version == 4:
                points.add(int(net.network_address))
                end = int(net.broadcast_address) + 1
                if end < 1 << 32:
                    points.add(end)
        starts = sorted(points)
        self.bounds = np.array(starts, dtype=np.uint32)
        self.bound_code = np.array(
            [self.code(prefixes.identity(socket.inet_ntoa(s.to_bytes(4, "big")))) for s in starts],
            dtype=np.int64,
        )
        self._relevant: dict[int, tuple[Program, Any]] = {}
        self._by_set: dict[int, list[int]] | None = None
        self._indexed = 0

    def code(self, ident: Identity) -> int:
        """The code of an identity (new identities get the next one)."""
        found = self._code.get(id(ident))
        if found is None:
            with self._coding:  # two batches coding at once must not share a number
                found = self._code.get(id(ident))
                if found is None:
                    self.idents.append(ident)
                    found = self._code[id(ident)] = len(self.idents) - 1
        return found

    def lookup(self, np: Any, packed: Any) -> Any:
        """Identity codes of packed IPv4 addresses."""
        order = np.argsort(packed)
        queries = packed[order]  # in order: each binary search starts where the last ended
        codes = self.bound_code[np.searchsorted(self.bounds, queries, side="right") - 1]
        if len(self.host_addr):
            pos = np.searchsorted(self.host_addr, queries)
            pos_clipped = np.minimum(pos, len(self.host_addr) - 1)
            hit = self.host_addr[pos_clipped] == queries
            codes = np.where(hit, self.host_code[pos_clipped], codes)
        out = np.empty_like(codes)
        out[order] = codes
        return out

    def relevant(self, np: Any, program: Program) -> Any:
        """Codes of the non-endpoint identities in some set ``program`` names (sorted)."""
        if self._by_set is None or self._indexed != len(self.idents):
            self._index_sets()  # identities coded since: every program's answer may grow
        assert self._by_set is not None
        found = self._relevant.get(id(program))
        if found is not None and found[0] is program:
            return found[1]
        codes = sorted({c for n in program.refs for c in self._by_set.get(n, ())})
        array = np.array(codes, dtype=np.int64)
        self._relevant[id(program)] = (program, array)
        return array

    def _index_sets(self) -> None:
        by_set: dict[int, list[int]] = {}
        for code, ident in enumerate(self.idents):
            if ident.ports is None:
                for num in ident:
                    by_set.setdefault(num, []).append(code)
        self._by_set = by_set
        self._indexed = len(self.idents)
        self._relevant.clear()


def _tables(np: Any, engine: PolicyEngine) -> _Tables:
    table = engine._graph.table
    cached = engine._batch
    if cached is not None and cached[0] == table.version and cached[1].prefixes is table.prefixes:
        found: _Tables = cached[1]
        return found
    version = table.version
    tables = _Tables(np, dict(engine._hosts), engine)
    engine._batch = (version, tables)
    return tables


def _column(np: Any, value: Any, n: int, what: str) -> tuple[Any, bool]:
    """(array, is_scalar) of one per-flow argument."""
    if isinstance(value, str | int | type(None)) or np.isscalar(value):
        return value, True
    array = np.asarray(value, dtype=object if isinstance(value, Sequence) else None)
    if array.ndim != 1 or len(array) != n:
        raise _bad(f"{what} has {array.size} elements for {n} flows", "one per flow, or one value")
    return array, False


def verdict_array(
    engine: PolicyEngine,
    src: Sequence[str] | npt.ArrayLike,
    dst: Sequence[str] | npt.ArrayLike,
    protocol: Any,
    port: Any,
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """See :meth:`PolicyEngine.verdict_array`."""
    np = _numpy()
    src_array = np.asarray(src, dtype=None if hasattr(src, "dtype") else object)
    dst_array = np.asarray(dst, dtype=None if hasattr(dst, "dtype") else object)
    n = len(src_array)
    if src_array.ndim != 1 or dst_array.ndim != 1 or len(dst_array) != n:
        raise _bad(
            f"src and dst have {src_array.size} and {dst_array.size} elements",
            "equal-length one-dimensional sequences",
        )
    protocols, one_protocol = _column(np, protocol, n, "protocol")
    ports, one_port = _column(np, port, n, "port")
    if n == 0:
        return cast("BoolArray", np.zeros(0, dtype=bool))
    snapshot = engine._snapshot
    if snapshot.commit is None:
        repeats = _repeats(np, src_array, dst_array, one_protocol and one_port)
        if repeats is not None:
            # Flows repeat (real traffic does): judge each distinct one once.
            firsts, inverse = repeats
            result = _vectorised(
                np, engine, src_array[firsts], dst_array[firsts], protocols, True, ports, True
            )[inverse]
        else:
            result = _vectorised(
                np, engine, src_array, dst_array, protocols, one_protocol, ports, one_port
            )
        if engine._snapshot is snapshot:
            return cast("BoolArray", result)
    # A change began or ended meanwhile: judge flow by flow (each consistent on its own).
    keys = engine.endpoint_keys() if src_array.dtype.kind in "iu" else None
    out = np.empty(n, dtype=bool)
    for i in range(n):
        source = keys[int(src_array[i])] if keys is not None else src_array[i]
        target = dst_array[i]
        if dst_array.dtype.kind in "iu":
            target = socket.inet_ntoa(int(target).to_bytes(4, "big"))
        out[i] = engine.verdict(
            _plain(source),
            _plain(target),
            _plain(protocols if one_protocol else protocols[i]),
            _plain(ports if one_port else ports[i]),
        ).allowed
    return cast("BoolArray", out)


def _repeats(np: Any, src: Any, dst: Any, one_flow_kind: bool) -> tuple[Any, Any] | None:
    """(first index, inverse) of the distinct flows, when a sample says many repeat.

    Only for integer sources and packed destinations with one protocol and port: a flow is
    then one 47-bit number. The sample keeps a batch of distinct flows (a scan) from paying
    for the sort.
    """
    if not one_flow_kind or src.dtype.kind not in "iu" or dst.dtype.kind not in "iu":
        return None
    n = len(src)
    if n < 1 << 14 or src.min() < 0 or dst.min() < 0 or dst.max() >= 1 << 32:
        return None  # (bad input is refused by the general path, with its message)
    flows = (src.astype(np.int64) << 32) | dst.astype(np.int64)
    sample = flows[:: max(1, n // 8192)]
    if len(np.unique(sample)) > 0.7 * len(sample):
        return None
    _, firsts, inverse = np.unique(flows, return_index=True, return_inverse=True)
    return firsts, inverse.reshape(-1)


def _vectorised(
    np: Any,
    engine: PolicyEngine,
    src: Any,
    dst: Any,
    protocols: Any,
    one_protocol: bool,
    ports: Any,
    one_port: bool,
) -> Any:

    n = len(src)
    records = engine._records
    # Sources -> records -> program codes.
    keys = sorted(records)
    if src.dtype.kind in "iu":
        if len(src) and (src.min() < 0 or src.max() >= len(keys)):
            raise _bad("an endpoint index is out of range", f"0 to {len(keys) - 1}")
        src_idx = src.astype(np.int64)
    else:
        index = {key: i for i, key in enumerate(keys)}
        try:
            src_idx = np.fromiter((index[k] for k in src), np.int64, n)
        except (KeyError, TypeError):
            bad = next(k for k in src if not isinstance(k, str) or k not in index)
            raise _bad(f"unknown endpoint {bad!r}", "a namespace/name the cluster holds") from None
    programs: list[Program] = []
    program_code: dict[int, int] = {}
    record_program = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        program = records[key].egress
        code = program_code.get(id(program))
        if code is None:
            code = program_code[id(program)] = len(programs)
            programs.append(program)
        record_program[i] = code
    prog = record_program[src_idx]

    # Destinations -> identity codes.
    tables = _tables(np, engine)
    if dst.dtype.kind in "iu":
        if len(dst) and (dst.min() < 0 or dst.max() >= 1 << 32):
            raise _bad("a packed IPv4 address is out of range", "0 to 2**32 - 1")
        ident = tables.lookup(np, dst.astype(np.uint32))
        address = dst.astype(np.int64)
    else:
        view = View(engine._snapshot, engine._hosts, records, engine._owners)
        seen: dict[object, tuple[int, int]] = {}
        codes = np.empty(n, dtype=np.int64)
        address = np.empty(n, dtype=np.int64)  # a number per distinct text
        for i, text in enumerate(dst):
            found = seen.get(text)
            if found is None:
                if not isinstance(text, str):
                    raise _bad(f"not an IP address: {text!r}", "an IPv4 or IPv6 address")
                code = tables.code(identity_of(view.host, view.prefixes, text)[0])
                found = seen[text] = (code, len(seen))
            codes[i], address[i] = found
        ident = codes
    idents = tables.idents
    family6 = np.fromiter((i.family == 6 for i in idents), bool, len(idents))[ident]
    endpoint = np.fromiter((i.ports is not None for i in idents), bool, len(idents))[ident]

    # Protocols and ports -> numbers (validated once per distinct value).
    if one_protocol:
        proto = np.full(n, _protocol(_plain(protocols)), dtype=np.int64)
    else:
        numbers: dict[object, int] = {}
        for value in set(protocols.tolist()):
            numbers[value] = _protocol(value)
        proto = np.fromiter((numbers[p] for p in protocols.tolist()), np.int64, n)
    if one_port:
        checked = _port(_plain(ports), "port")
        port = np.full(n, _NO_PORT if checked is None else checked, dtype=np.int64)
    else:
        if ports.dtype.kind not in "iu":
            for p in ports:
                _port(p, "port")
        port = ports.astype(np.int64)
        if len(port) and (port.min() < 0 or port.max() > 65535):
            bad = port[(port < 0) | (port > 65535)][0]
            raise _bad(f"port {int(bad)!r} is not a port", "an integer 0-65535, or None")

    # Which flows are to an identity in some set of the sender's program.
    present = np.flatnonzero(np.bincount(prog, minlength=len(programs)))
    n_idents = len(idents)
    pair = prog * n_idents + ident
    rel_keys = [c * n_idents + tables.relevant(np, programs[c]) for c in present]
    relevant_keys = np.sort(np.concatenate(rel_keys)) if rel_keys else np.zeros(0, np.int64)
    if len(relevant_keys):
        order = np.argsort(pair)
        ordered = pair[order]
        pos = np.minimum(np.searchsorted(relevant_keys, ordered), len(relevant_keys) - 1)
        relevant = np.empty(n, dtype=bool)
        relevant[order] = relevant_keys[pos] == ordered
    else:
        relevant = np.zeros(n, dtype=bool)

    out = np.empty(n, dtype=bool)
    columns = (prog, proto, port + 1)

    def by_program(rows: Any) -> bool:
        row = int(rows)
        peer = idents[int(ident[row])]
        port_value = int(port[row])
        return engine._judge_program(
            programs[int(prog[row])], peer, int(proto[row]), None if port_value < 0 else port_value
        ).allowed

    def to_endpoint(rows: Any) -> bool:
        # Their ingress policy too: verdict() judges both sides.
        row = int(rows)
        port_value = int(port[row])
        return engine.verdict(
            keys[int(src_idx[row])],
            identity_address(engine, dst, row),
            int(proto[row]),
            None if port_value < 0 else port_value,
        ).allowed

    plain = ~relevant & ~endpoint
    _judge_groups(np, out, plain, (*columns, family6), by_program)
    _judge_groups(np, out, relevant & ~endpoint, (*columns, ident), by_program)
    if endpoint.any():
        _judge_groups(np, out, endpoint, (src_idx, proto, port + 1, address), to_endpoint)
    return out


def _dense(np: Any, values: Any) -> tuple[Any, int]:
    """Small codes (0 to k - 1) for the distinct values, in their order, and k."""
    values = values.astype(np.int64)
    if not len(values):
        return values, 0
    low, high = int(values.min()), int(values.max())
    if high - low < 1 << 22:
        present = np.zeros(high - low + 1, dtype=bool)
        present[values - low] = True
        remap = np.cumsum(present) - 1
        return remap[values - low], int(present.sum())
    distinct, codes = np.unique(values, return_inverse=True)
    return codes.reshape(-1), len(distinct)


def identity_address(engine: PolicyEngine, dst: Any, i: int) -> str:
    """Destination ``i`` as text."""
    value = dst[i]
    if dst.dtype.kind in "iu":
        return socket.inet_ntoa(int(value).to_bytes(4, "big"))
    return str(value)


def _judge_groups(
    np: Any,
    out: Any,
    mask: Any,
    columns: tuple[Any, ...],
    judge: Callable[[Any], bool],
) -> None:
    """Judge each distinct combination of ``columns`` among the ``mask`` flows once.

    ``judge`` gets one flow's index standing for its combination. The combinations are
    numbered by mixed radix over each column's distinct values; where that space is small they
    are grouped by direct indexing (no sort), else by sorting the numbers.
    """
    rows = np.flatnonzero(mask)
    if not len(rows):
        return
    key = np.zeros(len(rows), dtype=np.int64)
    size = 1
    for column in columns:
        codes, count = _dense(np, column[rows])
        if size * max(count, 1) >= 1 << 62:
            raise AssertionError("combination space out of range")  # (columns are bounded)
        key = key * max(count, 1) + codes
        size *= max(count, 1)
    if size <= 1 << 22:
        first = np.full(size, -1, dtype=np.int64)
        first[key[::-1]] = np.arange(len(key) - 1, -1, -1)  # the first row of each
        combos = np.flatnonzero(first >= 0)
        allowed = np.zeros(size, dtype=bool)
        allowed[combos] = [judge(rows[first[c]]) for c in combos]
        out[rows] = allowed[key]
        return
    _, firsts, inverse = np.unique(key, return_index=True, return_inverse=True)
    verdicts = np.array([judge(rows[f]) for f in firsts], dtype=bool)
    out[rows] = verdicts[inverse.reshape(-1)]
