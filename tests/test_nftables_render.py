"""The nftables renderer, without a kernel: names, escaping, elements, deltas, and meaning.

Meaning is checked differentially: a small, plain interpreter of the libnftables JSON we
render (below; it shares no code with the renderer) runs each generated flow through the
rendered table, and the outcome must equal ``PolicyEngine.verdict`` over hypothesis-generated
worlds. The interpreter follows nft's rules for the subset the renderer emits: payload
expressions carry implicit dependencies (``ip ...`` needs IPv4, ``ip6 ...`` IPv6, ``icmp ...``
protocol 1, ``icmpv6 ...`` 58; a failed dependency fails the match whatever its operator), and
a port the flow does not give fails every port test, negated or not (a real packet always has
both ports; the engine's convention for an unknown one). The real kernel is held
to the same in ``tests/kernel/test_nftables_kernel.py``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any

import attrs
import pytest
from fqdnpolicy_nftables import NftablesBackend
from fqdnpolicy_nftables.elements import MAX_TIMEOUT_MS
from fqdnpolicy_nftables.render import RenderOptions, duration, render_full
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fqdnpolicy.cluster import Cluster
from fqdnpolicy.datapath import DatapathState, MemberChanged, SetState
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.errors import InvalidPolicy
from tests.engine.strategies import FakeClock, WorldSpec, worlds

# ------------------------------------------------------------------ reference interpreter


@attrs.frozen
class Packet:
    """The fields a rendered rule can test."""

    family: int
    l4proto: int
    saddr: str
    daddr: str
    iifname: str
    oifname: str
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None


class _Failed(Exception):
    """An implicit dependency failed: the whole match is false."""


def _field(packet: Packet, left: Any) -> Any:
    if "meta" in left:
        key = left["meta"]["key"]
        return {
            "nfproto": "ipv4" if packet.family == 4 else "ipv6",
            "l4proto": packet.l4proto,
            "iifname": packet.iifname,
            "oifname": packet.oifname,
        }[key]
    if "ct" in left:
        return "new"
    if "concat" in left:
        return tuple(_field(packet, part) for part in left["concat"])
    payload = left["payload"]
    proto, field = payload["protocol"], payload["field"]
    if proto in ("ip", "ip6"):
        if (proto == "ip") != (packet.family == 4):
            raise _Failed
        return ipaddress.ip_address(packet.saddr if field == "saddr" else packet.daddr)
    if proto in ("icmp", "icmpv6"):
        if packet.l4proto != (1 if proto == "icmp" else 58):
            raise _Failed
        return packet.icmp_type if field == "type" else packet.icmp_code
    assert proto == "th", proto
    port = packet.sport if field == "sport" else packet.dport
    if port is None:  # an unknown port matches no port test, negated or not (as the engine)
        raise _Failed
    return port


def _element_matches(value: Any, element: Any) -> bool:
    if isinstance(element, dict) and "elem" in element:
        return _element_matches(value, element["elem"]["val"])
    if isinstance(element, dict) and "concat" in element:
        parts = element["concat"]
        return (
            isinstance(value, tuple)
            and len(value) == len(parts)
            and all(_element_matches(v, e) for v, e in zip(value, parts, strict=True))
        )
    if value is None:
        return False
    if isinstance(element, dict) and "prefix" in element:
        net = ipaddress.ip_network(f"{element['prefix']['addr']}/{element['prefix']['len']}")
        return isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address) and value in net
    if isinstance(element, dict) and "range" in element:
        first, last = element["range"]
        return bool(first <= value <= last)
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return isinstance(element, str) and value == ipaddress.ip_address(element)
    return bool(value == element)


class Table:
    """A rendered full table (its JSON commands), ready to judge packets."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.sets: dict[str, list[Any]] = {}
        self.chains: dict[str, list[list[dict[str, Any]]]] = {}
        self.bases: list[tuple[int, str]] = []
        for command in data["nftables"]:
            add = command.get("add")
            if not add:
                continue
            if "set" in add:
                self.sets[add["set"]["name"]] = list(add["set"].get("elem", []))
            elif "element" in add:
                self.sets[add["element"]["name"]].extend(add["element"]["elem"])
            elif "chain" in add:
                chain = add["chain"]
                self.chains[chain["name"]] = []
                if "hook" in chain:
                    self.bases.append((chain["prio"], chain["name"]))
            elif "rule" in add:
                self.chains[add["rule"]["chain"]].append(add["rule"]["expr"])
        self.bases.sort()

    def _matches(self, packet: Packet, match: dict[str, Any]) -> bool:
        try:
            value = _field(packet, match["left"])
        except _Failed:
            return False
        right, op = match["right"], match["op"]
        if isinstance(right, str) and right.startswith("@"):
            found = any(_element_matches(value, e) for e in self.sets[right[1:]])
        elif isinstance(right, dict) and "set" in right:
            found = any(_element_matches(value, e) for e in right["set"])
        elif isinstance(right, list):  # ct state flags
            found = value in right
        else:
            found = _element_matches(value, right)
        return found if op in ("==", "in") else not found

    def _run(self, packet: Packet, base: str) -> str:
        """Run one base chain: ``accept``, ``drop`` or ``continue`` (fell off: policy)."""
        stack: list[tuple[str, int]] = []
        chain, index = base, 0
        while True:
            rules = self.chains[chain]
            if index >= len(rules):
                if not stack:
                    return "continue"
                chain, index = stack.pop()
                continue
            expr = rules[index]
            index += 1
            verdict: tuple[str, str | None] | None = None
            for statement in expr:
                if "match" in statement:
                    if not self._matches(packet, statement["match"]):
                        break
                    continue
                if "vmap" in statement:
                    key = _field(packet, statement["vmap"]["key"])
                    for k, target in statement["vmap"]["data"]["set"]:
                        if k == key:
                            verdict = ("jump", target["jump"]["target"])
                    if verdict is None:
                        break
                elif "accept" in statement:
                    return "accept"
                elif "drop" in statement or "reject" in statement:
                    return "drop"
                elif "return" in statement:
                    verdict = ("return", None)
                elif "jump" in statement:
                    verdict = ("jump", statement["jump"]["target"])
                elif "goto" in statement:
                    verdict = ("goto", statement["goto"]["target"])
                elif "log" in statement:
                    continue
                if verdict is not None:
                    break
            if verdict is None:
                continue
            kind, target = verdict
            if kind == "return":
                if not stack:
                    return "continue"
                chain, index = stack.pop()
            else:
                assert target is not None
                if kind == "jump":
                    stack.append((chain, index))
                chain, index = target, 0

    def allows(self, packet: Packet) -> bool:
        """Whether the packet passes every base chain (in priority order)."""
        return all(self._run(packet, base) != "drop" for _, base in self.bases)


# ------------------------------------------------------------- meaning: engine vs rendering

UPLINK = "uplink0"


def _ip_family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def packet_for(cluster: Cluster, flow: Any) -> Packet | None:
    """The packet the host's forward hook sees for a generated flow (None: not a forward)."""
    from fqdnpolicy.engine import protocol_number

    by_key = {ep.key: ep for ep in cluster.endpoints}
    owner = {ip: ep for ep in cluster.endpoints for ip in ep.ips}
    proto = protocol_number(flow.protocol)
    fields = {
        "l4proto": proto,
        "sport": flow.src_port,
        "dport": flow.port,
        "icmp_type": flow.icmp_type,
        "icmp_code": flow.icmp_code,
    }
    if flow.direction == "egress":
        src = by_key[flow.src]
        dst_ip = by_key[flow.dst].ips[0] if "/" in flow.dst else flow.dst
        family = _ip_family(dst_ip)
        src_ip = next((ip for ip in src.ips if _ip_family(ip) == family), None)
        if src_ip is None:
            return None
        dst = owner.get(dst_ip)
        return Packet(
            family, saddr=src_ip, daddr=dst_ip, iifname=src.interface,
            oifname=dst.interface if dst else UPLINK, **fields,
        )  # fmt: skip
    # Ingress alone: only a source outside the cluster (else its egress applies too).
    if "/" in flow.src or flow.src in owner:
        return None
    dst = by_key[flow.dst]
    dst_ip = dst.ips[0]
    if _ip_family(flow.src) != _ip_family(dst_ip):
        return None
    return Packet(
        _ip_family(dst_ip), saddr=flow.src, daddr=dst_ip, iifname=UPLINK,
        oifname=dst.interface, **fields,
    )  # fmt: skip


def table_of(world: WorldSpec, *, use_text_check: bool = False) -> tuple[PolicyEngine, Table]:
    clock = FakeClock()
    cache = DNSCache(clock=clock)
    engine = PolicyEngine(world.resources, world.cluster, cache)
    for learned in world.answers:
        cache.ingest(learned.extracted())
    rendering = NftablesBackend().render_structured(engine.datapath(), now=clock())
    return engine, Table(rendering.data)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(worlds(max_flows=16))
def test_rendered_table_decides_every_flow_as_the_engine_does(world: WorldSpec) -> None:
    engine, table = table_of(world)
    for flow in world.flows:
        packet = packet_for(world.cluster, flow)
        if packet is None:
            continue
        verdict = engine.verdict(**flow.kwargs())
        assert table.allows(packet) == verdict.allowed, f"{flow}\n{engine.explain(**flow.kwargs())}"


# ------------------------------------------------------------------ set elements, fast path

NOW = 1000.0
_V4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
_V6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1))
_EXPIRY = st.one_of(st.none(), st.floats(NOW - 5, NOW + 20 * 86400, allow_nan=False))
# What a set member may look like (the renderer's contract, restated here on its own).
_MEMBER_SPEC = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")


def _one_set_state(kind: str, members: dict[str, float | None]) -> DatapathState:
    return DatapathState((SetState("d:S", kind, "test", members),), (), {})  # type: ignore[arg-type]


def _elements_of(text: str, name: str) -> list[str]:
    """The elements declared in set ``name`` of a rendered text (none: empty list)."""
    found = re.search(rf"\tset {name} {{\n(.*?)\n\t}}\n", text, re.S)
    assert found is not None, name
    listed = re.search(r"elements = \{ (.*) \}", found.group(1), re.S)
    return [] if listed is None else listed.group(1).split(",\n\t\t\t")


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["domains", "selector"]),
    st.dictionaries(st.one_of(_V4, _V6), _EXPIRY, max_size=12),
)
def test_set_elements_are_the_unexpired_members_with_their_remaining_lifetime(
    kind: str, members: dict[str, float | None]
) -> None:
    if kind == "domains":
        members = {m: NOW + 60 if e is None else e for m, e in members.items()}
    text, _ = render_full(_one_set_state(kind, members), NOW, RenderOptions())
    text_only, nothing = render_full(
        _one_set_state(kind, members), NOW, RenderOptions(), with_json=False
    )
    assert text_only == text
    assert nothing is None
    for family, name in ((4, "d4_S"), (6, "d6_S")):
        expected: list[tuple[str, int | None]] = []
        for member, expiry in members.items():  # reference: one element at a time
            if (":" in member) != (family == 6):
                continue
            if expiry is None:
                expected.append((member, None))
            elif (remaining := math.ceil((expiry - NOW) * 1000)) > 0:
                expected.append((member, remaining))
        elements = [e.partition(" timeout ") for e in _elements_of(text, name)]
        assert [(m, _nft_ms(t) if t else None) for m, _, t in elements] == expected


_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
# nft reads each figure of a time into a bounded field: 100,000,000 ms or more is refused.
_NFT_FIGURE_LIMIT = 100_000_000


def _nft_ms(text: str) -> int:
    """Read an nft time (``1d2h3m4s5ms``) back into ms, as nft does; its figures bounded."""
    parts = re.findall(r"(\d+)(ms|d|h|m|s)", text)
    assert "".join(a + b for a, b in parts) == text, text
    assert all(int(figure) < _NFT_FIGURE_LIMIT for figure, _ in parts), text
    return sum(int(figure) * _UNIT_MS[unit] for figure, unit in parts)


@given(st.integers(0, MAX_TIMEOUT_MS))
def test_a_duration_is_written_in_units_nft_reads_back_exactly(ms: int) -> None:
    assert _nft_ms(duration(ms)) == ms


@pytest.mark.parametrize(
    ("lifetime", "written"),
    [(7 * 86400, "7d"), (10 * 86400, "10d"), (86400 + 1.5, "1d1s500ms"), (0.25, "250ms")],
)
def test_lifetimes_of_days_are_written_in_days(lifetime: float, written: str) -> None:
    text, _ = render_full(
        _one_set_state("domains", {"198.51.100.1": NOW + lifetime}), NOW, RenderOptions()
    )
    assert _elements_of(text, "d4_S") == [f"198.51.100.1 timeout {written}"]


def test_a_lifetime_beyond_what_dns_can_give_is_cut_to_the_longest_dns_ttl() -> None:
    text, _ = render_full(
        _one_set_state("domains", {"198.51.100.1": NOW + 1e12}), NOW, RenderOptions()
    )
    (element,) = _elements_of(text, "d4_S")
    assert _nft_ms(element.partition(" timeout ")[2]) == (2**31 - 1) * 1000


def test_a_delta_states_the_expiry_of_each_added_member() -> None:
    # Re-adding an element with an unchanged timeout keeps its old expiry in the kernel.
    backend = NftablesBackend()
    backend.render(_one_set_state("domains", {"198.51.100.1": NOW + 60}), now=NOW)
    delta = backend.render_delta(
        [MemberChanged("d:S", "198.51.100.1", True, NOW + 90)], now=NOW + 30
    )
    assert "198.51.100.1 timeout 1m expires 1m" in delta.text
    (command,) = [c for c in delta.data["nftables"] if "add" in c]
    assert command["add"]["element"]["elem"] == [
        {"elem": {"val": "198.51.100.1", "timeout": 60, "expires": 60}}
    ]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            _V4,
            _V6,
            st.text(alphabet='0123456789abcdefABCDEF:./ }\n\t,;"é', max_size=50),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_set_member_that_is_not_an_address_is_refused_before_reaching_the_ruleset(
    members: list[str],
) -> None:
    state = _one_set_state("domains", dict.fromkeys(members, NOW + 60))
    bad = [m for m in members if _MEMBER_SPEC.fullmatch(m) is None]
    if bad:
        with pytest.raises(InvalidPolicy) as raised:
            render_full(state, NOW, RenderOptions(), with_json=False)
        assert raised.value.problems[0].code == "bad-member"
    else:
        text, _ = render_full(state, NOW, RenderOptions(), with_json=False)
        assert all(m in text for m in members)


def test_render_leaves_json_out_unless_asked_and_the_text_is_the_same() -> None:
    state = _one_set_state("domains", {"192.0.2.1": NOW + 30, "2001:db8::1": NOW + 90})
    text_only = NftablesBackend().render(state, now=NOW)
    structured = NftablesBackend().render_structured(state, now=NOW)
    with_data = NftablesBackend(json_data=True).render(state, now=NOW)
    for_json_apply = NftablesBackend(use_json=True).render(state, now=NOW)
    assert text_only.data is None
    assert structured.data is not None
    assert with_data.data == for_json_apply.data == structured.data
    assert text_only.text == structured.text == with_data.text


def test_a_cidr_like_member_that_is_no_network_is_refused() -> None:
    state = DatapathState(
        (SetState("n:S", "nets", "test", {"10.0.0.0/8": None, "1.2/3": None}),), (), {}
    )
    with pytest.raises(InvalidPolicy) as raised:
        render_full(state, NOW, RenderOptions())
    assert raised.value.problems[0].code == "bad-member"


SCOPED = "fe80::1%eth0"


def test_a_member_no_set_can_hold_is_skipped_and_reported_not_fatal() -> None:
    state = _one_set_state("domains", {SCOPED: NOW + 60, "2001:db8::1": NOW + 60})
    rendering = NftablesBackend().render(state, now=NOW)
    (problem,) = rendering.skipped
    assert (problem.code, problem.resource) == ("bad-member", "d:S")
    assert _elements_of(rendering.text, "d6_S") == ["2001:db8::1 timeout 1m"]
    assert "%" not in rendering.text


def test_a_delta_skips_a_member_no_set_can_hold_and_renders_the_rest() -> None:
    backend = NftablesBackend()
    backend.render(_one_set_state("domains", {}), now=NOW)
    delta = backend.render_delta(
        [
            MemberChanged("d:S", SCOPED, True, NOW + 60),
            MemberChanged("d:S", "2001:db8::2", True, NOW + 60),
        ],
        now=NOW,
    )
    assert [p.code for p in delta.skipped] == ["bad-member"]
    assert "2001:db8::2 timeout 1m expires 1m" in delta.text
    assert "%" not in delta.text


def test_a_cidr_keeps_its_length_whatever_its_family() -> None:
    # An IPv6 /32 is a prefix, not a host; only a full-length prefix is written bare.
    from fqdnpolicy_nftables.render import canonical_elements

    members: dict[str, float | None] = {"2001:db8::/32": None, "2001:db8:1::1/128": None}
    assert canonical_elements(members, interval=True) == {"2001:db8::/32": None}
    assert canonical_elements({"198.51.100.7/32": None, "2001:db8::/32": None}, interval=True) == {
        "198.51.100.7": None,
        "2001:db8::/32": None,
    }


_SELECTOR_MEMBERS = st.sampled_from(
    ["198.51.100.1", "198.51.100.2", "198.51.100.0/28", "203.0.113.0/24", "203.0.113.9/32"]
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(_SELECTOR_MEMBERS, st.booleans()), min_size=1, max_size=4),
        max_size=6,
    )
)
def test_a_delta_rewrites_a_set_whole_exactly_when_a_cidr_is_involved(
    batches: list[list[tuple[str, bool]]],
) -> None:
    # The backend keeps a count of each mirror's CIDRs instead of scanning the set per
    # change: its decisions must be those of a scan of the members held.
    backend = NftablesBackend()
    backend.render(_one_set_state("selector", {}), now=NOW)
    held: set[str] = set()

    def is_prefix(member: str) -> bool:
        return ipaddress.ip_network(member).prefixlen < 32

    for batch in batches:
        last = dict(batch)  # within a batch the last change of a member wins
        involved = any(is_prefix(m) for m in held) or any(is_prefix(m) for m in last)
        delta = backend.render_delta(
            [MemberChanged("d:S", m, added, NOW + 60) for m, added in batch], now=NOW
        )
        held |= {m for m, added in last.items() if added}
        held -= {m for m, added in last.items() if not added}
        assert ("flush set" in delta.text) == involved
