"""Replaying flows: yesterday's traffic judged in bulk against a policy set (or two).

Flows come as CSV (a header naming ``src``, ``dst``, ``protocol``, ``port`` and optionally
``time``) or JSON lines (one object with those keys per line). ``src`` is an endpoint
(``namespace/name``, or one of its addresses); ``dst`` an address or an endpoint.

Every flow is judged with :meth:`PolicyEngine.verdict_array
<fqdnpolicy.engine.PolicyEngine.verdict_array>`; the deciding rule is found once per distinct
(sender's program, destination identity, protocol, port), or per distinct flow where the
destination is an endpoint (its ingress policy depends on the sender), so a day of repeated
flows costs a few thousand :meth:`~fqdnpolicy.engine.PolicyEngine.verdict` calls.
"""

from __future__ import annotations

import csv
import io
import json
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from fqdnpolicy.engine.identities import CANONICAL_IPV4
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = ["Flows", "Replay", "ReplayCount", "ReplayDifference", "read_flows", "replay"]


def _bad(message: str, hint: str = "") -> InvalidPolicy:
    return InvalidPolicy(Problem(message, hint=hint))


@attrs.frozen
class Flows:
    """Flows as columns (one element per flow).

    Attributes:
        src: Endpoint keys or addresses.
        dst: Addresses or endpoint keys.
        protocol: Protocol names or numbers.
        port: Destination ports (None for none).
        time: When each was seen (None where not given); carried, not judged.
    """

    src: Sequence[str]
    dst: Sequence[str]
    protocol: Sequence[str | int]
    port: Sequence[int | None]
    time: Sequence[str | None]

    def __len__(self) -> int:
        return len(self.src)


def _port(value: object, line: int) -> int | None:
    if value is None or value in ("", "-", "*"):
        return None
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        raise _bad(f"flow {line}: port {value!r} is not a port", "a number 0-65535") from None


def read_flows(text: str, form: str | None = None) -> Flows:
    """Read flows from CSV or JSON lines (``form`` ``csv``/``jsonl``; guessed when None).

    Raises:
        InvalidPolicy: a line is not a flow.
    """
    stripped = text.lstrip()
    if form is None:
        form = "jsonl" if stripped.startswith("{") else "csv"
    src: list[str] = []
    dst: list[str] = []
    proto: list[str | int] = []
    port: list[int | None] = []
    when: list[str | None] = []
    if form == "jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                src.append(str(item["src"]))
                dst.append(str(item["dst"]))
            except (ValueError, KeyError, TypeError):
                raise _bad(
                    f"flow {number}: not a JSON object with src and dst",
                    '{"src": "ns/pod", "dst": "10.0.0.1", "protocol": "TCP", "port": 443}',
                ) from None
            proto.append(item.get("protocol", "TCP"))
            port.append(_port(item.get("port"), number))
            moment = item.get("time")
            when.append(None if moment is None else str(moment))
        return Flows(src, dst, proto, port, when)
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if "src" not in header or "dst" not in header:
        raise _bad("flows: the CSV header names no src and dst", "src,dst,protocol,port,time")
    at = {name: header.index(name) for name in header}
    i_src, i_dst = at["src"], at["dst"]
    i_proto, i_port, i_time = at.get("protocol"), at.get("port"), at.get("time")
    for number, row in enumerate(reader, 2):
        if not row:
            continue
        try:
            src.append(row[i_src].strip())
            dst.append(row[i_dst].strip())
        except IndexError:
            raise _bad(f"flow {number}: too few columns") from None
        p = row[i_proto].strip() if i_proto is not None and i_proto < len(row) else "TCP"
        proto.append(int(p) if p.isdigit() else p or "TCP")
        port.append(_port(row[i_port].strip() if i_port is not None else None, number))
        when.append(row[i_time].strip() if i_time is not None and i_time < len(row) else None)
    return Flows(src, dst, proto, port, when)


@attrs.frozen
class ReplayCount:
    """Flows judged alike: an action and what decided it, and how many.

    Attributes:
        action: ``Allow`` or ``Deny``.
        decided_by: The deciding rule or default, in words.
        policy: The deciding policy (None for a default).
        count: How many flows.
    """

    action: str
    decided_by: str
    policy: str | None
    count: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return attrs.asdict(self)


@attrs.frozen
class ReplayDifference:
    """A flow whose verdict differs between the two policy sets.

    Attributes:
        index: Its position in the input (0-based).
        src: The flow's source.
        dst: Its destination.
        protocol: Its protocol.
        port: Its destination port.
        time: When it was seen (None where not given).
        verdict: Its verdict under the replayed policies (what decided it, in words).
        against: Its verdict under the ``against`` policies.
    """

    index: int
    src: str
    dst: str
    protocol: str | int
    port: int | None
    time: str | None
    verdict: str
    against: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return attrs.asdict(self)


@attrs.frozen
class Replay:
    """What a replay found.

    Attributes:
        total: Flows judged.
        allowed: How many were allowed.
        denied: How many were denied.
        counts: Flows by action and deciding rule, most first.
        differences: With ``against``: the flows judged differently, in input order.
        against_allowed: With ``against``: how many it allows (else None).
    """

    total: int
    allowed: int
    denied: int
    counts: tuple[ReplayCount, ...]
    differences: tuple[ReplayDifference, ...] = ()
    against_allowed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (:meth:`from_dict` reads it back)."""
        return {
            "total": self.total,
            "allowed": self.allowed,
            "denied": self.denied,
            "counts": [c.as_dict() for c in self.counts],
            "differences": [d.as_dict() for d in self.differences],
            "against_allowed": self.against_allowed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Replay:
        """Read :meth:`as_dict` back."""
        return cls(
            data["total"],
            data["allowed"],
            data["denied"],
            tuple(ReplayCount(**c) for c in data["counts"]),
            tuple(ReplayDifference(**d) for d in data["differences"]),
            data.get("against_allowed"),
        )


def decided_by(verdict: Any) -> str:
    """What decided a verdict, in words (as ``check`` prints it)."""
    if verdict.default is None:
        return f"{verdict.policy} {verdict.direction}[{verdict.rule_index}]"
    tier = f" ({verdict.tier})" if verdict.tier else ""
    return f"{verdict.direction} {verdict.default}{tier}"


class _Columns:
    """Flows as NumPy columns the engine takes."""

    def __init__(self, np: Any, engine: Any, flows: Flows) -> None:
        keys = engine.endpoint_keys()
        number = {k: i for i, k in enumerate(keys)}
        endpoints = engine.endpoints()
        owners = {ip: ep.key for ep in endpoints for ip in ep.ips}
        first_ip = {ep.key: ep.ips[0] for ep in endpoints if ep.ips}
        n = len(flows)
        src_codes: dict[str, int] = {}
        src = np.empty(n, dtype=np.int64)
        for i, text in enumerate(flows.src):
            code = src_codes.get(text)
            if code is None:
                key = text if text in number else owners.get(text)
                if key is None:
                    raise _bad(f"flow {i + 1}: source {text!r} is no endpoint")
                code = src_codes[text] = number[key]
            src[i] = code
        self.keys = keys
        self.src = src
        # Destinations: packed IPv4 where every one is canonical IPv4 text, else text.
        dst_codes: dict[str, int] = {}
        texts: list[str] = []
        packed = True
        for number_, given in enumerate(flows.dst):
            if given not in dst_codes:
                text = given
                if "/" in given:  # an endpoint: judged at its first address, as verdict() does
                    found = first_ip.get(given)
                    if found is None:
                        raise _bad(f"flow {number_ + 1}: destination {given!r} is no endpoint")
                    text = found
                dst_codes[given] = len(texts)
                texts.append(text)
                if packed and CANONICAL_IPV4.fullmatch(text) is None:
                    packed = False
        index = np.fromiter((dst_codes[t] for t in flows.dst), np.int64, n)
        self.dst_index = index
        self.dst_texts = texts
        if packed:
            values = np.fromiter(
                (int.from_bytes(socket.inet_aton(t), "big") for t in texts), np.int64, len(texts)
            )
            self.dst: Any = values[index].astype(np.uint32)
        else:
            self.dst = np.array(texts, dtype=object)[index]
        protos = list(dict.fromkeys(flows.protocol))
        self.protocols = protos
        proto_code = {p: i for i, p in enumerate(protos)}
        self.proto_index = np.fromiter((proto_code[p] for p in flows.protocol), np.int64, n)
        from fqdnpolicy.engine.arguments import protocol as protocol_number

        numbers = np.array([protocol_number(p) for p in protos], dtype=np.int64)
        self.proto = numbers[self.proto_index] if n else np.zeros(0, np.int64)
        self.port = np.fromiter((-1 if p is None else p for p in flows.port), np.int64, n)
        if n and (self.port.min() < -1 or self.port.max() > 65535):
            raise _bad("a port is out of range", "0-65535")


def _numpy() -> Any:
    from fqdnpolicy.engine.batch import _numpy as load

    return load()


def _allowed(np: Any, engine: Any, cols: _Columns) -> Any:
    port: Any = cols.port
    if (port < 0).any():
        port = np.array([None if p < 0 else int(p) for p in port], dtype=object)
    return engine.verdict_array(cols.src, cols.dst, cols.proto, port)


def _verdicts(np: Any, engine: Any, cols: _Columns) -> tuple[list[Any], Any]:
    """(distinct verdicts, per-flow index into them)."""
    n = len(cols.src)
    if not n:
        return [], np.zeros(0, np.int64)
    # Each distinct destination's identity, once; an endpoint's address marks its flow.
    ident_code: dict[int, int] = {}
    codes = np.empty(len(cols.dst_texts), dtype=np.int64)
    endpoint = np.empty(len(cols.dst_texts), dtype=bool)
    idents: list[Any] = []
    for i, text in enumerate(cols.dst_texts):
        if "/" in text:
            codes[i] = -1 - i
            endpoint[i] = True
            continue
        ident = engine.identity(text)
        code = ident_code.get(id(ident))
        if code is None:
            code = ident_code[id(ident)] = len(idents)
            idents.append(ident)
        codes[i] = code
        endpoint[i] = ident.ports is not None
    program_code: dict[int, int] = {}
    src_program = np.empty(len(cols.keys), dtype=np.int64)
    for i, key in enumerate(cols.keys):
        record = engine.record(key)
        assert record is not None  # (the keys were read from the engine)
        program = record.egress
        src_program[i] = program_code.setdefault(id(program), len(program_code))
    to_endpoint = endpoint[cols.dst_index]
    # Who decides: (program, identity) for the outside, (source, address) for endpoints.
    first = np.where(to_endpoint, cols.src, src_program[cols.src])
    second = np.where(to_endpoint, cols.dst_index, codes[cols.dst_index])
    columns = (to_endpoint.astype(np.int64), first, second, cols.proto_index, cols.port + 1)
    key = np.zeros(n, dtype=np.int64)
    size = 1
    for column in columns:
        distinct, dense = np.unique(column, return_inverse=True)
        size *= max(1, len(distinct))
        key = key * len(distinct) + dense.reshape(-1)
    if size >= 1 << 62:  # (mixed radix would overflow: sort the rows instead)
        _, firsts, inverse = np.unique(
            np.stack(columns, axis=1), axis=0, return_index=True, return_inverse=True
        )
    else:
        _, firsts, inverse = np.unique(key, return_index=True, return_inverse=True)
    verdicts = []
    for row in firsts.tolist():
        port = int(cols.port[row])
        verdicts.append(
            engine.verdict(
                cols.keys[int(cols.src[row])],
                cols.dst_texts[int(cols.dst_index[row])],
                cols.protocols[int(cols.proto_index[row])],
                None if port < 0 else port,
            )
        )
    return verdicts, inverse.reshape(-1)


def replay(engine: Any, flows: Flows, against: Any = None, *, limit: int | None = None) -> Replay:
    """Judge every flow with ``engine`` (and ``against``, another engine, if given).

    Args:
        engine: The :class:`~fqdnpolicy.engine.PolicyEngine` of the policies replayed.
        flows: What :func:`read_flows` read.
        against: Another engine: the flows it judges differently are listed.
        limit: List at most this many differences (all are counted in ``against_allowed``).

    Raises:
        InvalidPolicy: a flow names an unknown endpoint, a bad address, protocol or port.
        MissingDependency: NumPy is not installed.
    """
    np = _numpy()
    cols = _Columns(np, engine, flows)
    verdicts, inverse = _verdicts(np, engine, cols)
    weights = np.bincount(inverse, minlength=len(verdicts)) if len(verdicts) else []
    tally: dict[tuple[str, str, str | None], int] = {}
    for verdict, count in zip(verdicts, np.asarray(weights).tolist(), strict=True):
        key = (verdict.action, decided_by(verdict), verdict.policy)
        tally[key] = tally.get(key, 0) + int(count)
    counts = tuple(
        ReplayCount(action, by, policy, count)
        for (action, by, policy), count in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    ours = _allowed(np, engine, cols) if len(flows) else np.zeros(0, dtype=bool)
    allowed = int(np.count_nonzero(ours))
    total = len(flows)
    if against is None:
        return Replay(total, allowed, total - allowed, counts)
    other_cols = _Columns(np, against, flows)
    theirs = _allowed(np, against, other_cols) if len(flows) else np.zeros(0, dtype=bool)
    differ = np.flatnonzero(ours != theirs)
    shown = differ if limit is None else differ[:limit]
    differences = []
    for i in shown.tolist():
        port = flows.port[i]
        other = against.verdict(
            other_cols.keys[int(other_cols.src[i])], flows.dst[i], flows.protocol[i], port
        )
        differences.append(
            ReplayDifference(
                i,
                flows.src[i],
                flows.dst[i],
                flows.protocol[i],
                port,
                flows.time[i],
                f"{verdicts[int(inverse[i])].action} by {decided_by(verdicts[int(inverse[i])])}",
                f"{other.action} by {decided_by(other)}",
            )
        )
    return Replay(
        total,
        allowed,
        total - allowed,
        counts,
        tuple(differences),
        int(np.count_nonzero(theirs)),
    )


def flows_of(records: Iterable[Mapping[str, Any]]) -> Flows:
    """Flows from mappings with ``src``, ``dst``, ``protocol``, ``port``, ``time``."""
    items = list(records)
    return Flows(
        [str(r["src"]) for r in items],
        [str(r["dst"]) for r in items],
        [r.get("protocol", "TCP") for r in items],
        [r.get("port") for r in items],
        [None if r.get("time") is None else str(r["time"]) for r in items],
    )
