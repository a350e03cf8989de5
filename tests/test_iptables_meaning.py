"""The iptables renderer decides every flow as the engine does (no kernel needed).

A small, plain interpreter of what the backend renders (below; it shares no code with the
renderer) loads the ipset section into sets and the rules section of the packet's family into
chains, then runs a packet from ``FORWARD`` the way netfilter does: ``-j`` pushes a return
point, ``-g`` does not, ``RETURN`` or the end of a chain pops, ``DROP``/``REJECT`` end it, ``LOG``
and ``NFLOG`` go on. The outcome must equal ``PolicyEngine.verdict`` over hypothesis-generated
worlds (tiers, orders, Allow, Deny, Log, Pass, end of tier, named ports, ICMP...). A packet is
NEW (no conntrack state). The real kernel is held to the same by the conformance kit
(``tests/kernel/test_iptables_conformance.py``).
"""

from __future__ import annotations

import ipaddress
import shlex
from collections import Counter
from typing import Any

import pytest
from fqdnpolicy_iptables import IptablesBackend
from hypothesis import HealthCheck, given, settings

from fqdnpolicy.cluster import Cluster, Endpoint, NamedPort
from fqdnpolicy.datapath import RuleAction
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.model import ResourceSet
from tests.engine.strategies import FakeClock, WorldSpec, entity, policy, rule, tier, worlds
from tests.test_nftables_render import Packet, packet_for

_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "sctp": 132, "udplite": 136}
_PORTED = {6, 17, 132, 136}


class _Failed(Exception):
    """A match cannot apply to this packet (no port, wrong protocol): the rule is skipped."""


class Ruleset:
    """One rendering, loaded: sets and each family's chains."""

    def __init__(self, text: str) -> None:
        sections: dict[str, list[str]] = {}
        current: list[str] = []
        for line in text.splitlines():
            if line.startswith("# fqdnpolicy: "):
                current = sections.setdefault(line.split(" ", 3)[2], [])
            else:
                current.append(line)
        self.sets: dict[str, tuple[str, list[Any]]] = {}
        for line in sections.get("ipset", []):
            words = line.split()
            if not words or words[0] == "#":
                continue
            if words[0] == "create":
                self.sets[words[1]] = (words[2], [])
            elif words[0] == "add":
                self.sets[words[1]][1].append(self._element(self.sets[words[1]][0], words[2]))
            elif words[0] == "rename":
                self.sets[words[2]] = self.sets.pop(words[1])
            else:
                raise AssertionError(line)
        self.chains: dict[int, dict[str, list[list[str]]]] = {}
        for family, tool in ((4, "iptables-restore"), (6, "ip6tables-restore")):
            chains: dict[str, list[list[str]]] = {"FORWARD": []}
            for line in sections[tool]:
                if line.startswith(":"):
                    chains[line[1:].split()[0]] = []
                elif line.startswith(("-A ", "-I ")):
                    words = shlex.split(line)
                    body = words[2:] if words[0] == "-A" else words[3:]
                    chains[words[1]].append(body)
                else:
                    assert line in ("*filter", "COMMIT"), line
            self.chains[family] = chains

    @staticmethod
    def _element(kind: str, text: str) -> Any:
        if kind == "hash:ip":
            return ipaddress.ip_address(text)
        if kind == "hash:net":
            return ipaddress.ip_network(text)
        address, _, proto_port = text.partition(",")
        proto, _, port = proto_port.partition(":")
        return (ipaddress.ip_address(address), _PROTOCOLS[proto], int(port))

    def _in_set(self, packet: Packet, name: str, dirs: str) -> bool:
        kind, elements = self.sets[name]
        sides = dirs.split(",")
        address = ipaddress.ip_address(packet.daddr if sides[0] == "dst" else packet.saddr)
        if kind == "hash:ip":
            return address in elements
        if kind == "hash:net":
            return any(address in net for net in elements)
        port = packet.dport if sides[1] == "dst" else packet.sport
        if port is None:
            raise _Failed
        return (address, packet.l4proto, port) in elements

    def _rule_matches(self, packet: Packet, words: list[str]) -> tuple[bool, list[str]]:
        """Whether a rule's matches hold, and its target words (``-j X ...`` / ``-g X``)."""
        i = 0
        negate = False
        while i < len(words):
            word = words[i]
            if word in ("-j", "-g"):
                return True, words[i:]
            if word == "!":
                negate = True
                i += 1
                continue
            if word == "-m":
                i += 2  # the module's options follow
                continue
            value = words[i + 1]
            i += 2
            try:
                result = self._option(packet, word, value, words, i)
            except _Failed:
                return False, []
            if word == "--match-set":
                i += 1  # its direction flags
            if result is not None and result == negate:
                return False, []
            negate = False
        raise AssertionError(f"a rule without target: {words}")

    def _option(
        self, packet: Packet, option: str, value: str, words: list[str], at: int
    ) -> bool | None:
        if option == "-p":
            return packet.l4proto == _PROTOCOLS.get(value) or str(packet.l4proto) == value
        if option in ("-i", "-o"):
            name = packet.iifname if option == "-i" else packet.oifname
            return name.startswith(value[:-1]) if value.endswith("+") else name == value
        if option == "--match-set":
            return self._in_set(packet, value, words[at])
        if option in ("--dports", "--sports"):
            port = packet.dport if option == "--dports" else packet.sport
            if port is None or packet.l4proto not in _PORTED:
                raise _Failed
            for item in value.split(","):
                first, _, last = item.partition(":")
                if int(first) <= port <= int(last or first):
                    return True
            return False
        if option in ("--icmp-type", "--icmpv6-type"):
            if packet.l4proto != (1 if option == "--icmp-type" else 58):
                raise _Failed
            icmp_type, _, code = value.partition("/")
            return packet.icmp_type == int(icmp_type) and (
                not code or packet.icmp_code == int(code)
            )
        if option == "--ctstate":
            return False  # every packet here is NEW
        if option == "--comment":
            return None
        raise AssertionError(f"unknown option {option}")

    def run(self, packet: Packet) -> tuple[bool, Counter[str]]:
        """Whether the packet gets through ``FORWARD``, and the log prefixes it hit."""
        chains = self.chains[packet.family]
        logged: Counter[str] = Counter()
        stack: list[tuple[str, int]] = []
        chain, index = "FORWARD", 0
        while True:
            rules = chains[chain]
            if index >= len(rules):
                if not stack:
                    return True, logged
                chain, index = stack.pop()
                continue
            matched, target = self._rule_matches(packet, rules[index])
            index += 1
            if not matched:
                continue
            kind, name = target[0], target[1]
            if name in ("DROP", "REJECT"):
                return False, logged
            if name in ("LOG", "NFLOG"):
                logged[target[3]] += 1
            elif name == "RETURN":
                if not stack:
                    return True, logged
                chain, index = stack.pop()
            else:
                if kind == "-j":
                    stack.append((chain, index))
                chain, index = name, 0


def ruleset_of(world: WorldSpec) -> tuple[PolicyEngine, Ruleset]:
    clock = FakeClock()
    cache = DNSCache(clock=clock)
    engine = PolicyEngine(world.resources, world.cluster, cache)
    for learned in world.answers:
        cache.ingest(learned.extracted())
    rendering = IptablesBackend().render(engine.datapath(), now=clock())
    return engine, Ruleset(rendering.text)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(worlds(max_flows=16))
def test_rendered_rules_decide_every_flow_as_the_engine_does(world: WorldSpec) -> None:
    engine, ruleset = ruleset_of(world)
    for flow in world.flows:
        packet = packet_for(world.cluster, flow)
        if packet is None:
            continue
        verdict = engine.verdict(**flow.kwargs())
        allowed, logged = ruleset.run(packet)
        assert allowed == verdict.allowed, f"{flow}\n{engine.explain(**flow.kwargs())}"
        assert all(n == 1 for n in logged.values()), f"a rule logged twice: {logged}"


# ------------------------------------------------------- shapes the worlds rarely draw


def _endpoints(count: int) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(
            f"pod{i}",
            "ns",
            {"app": "web" if i % 2 else "db"},
            (f"198.51.100.{10 + i}",),
            interface=f"cali{i:011x}",
            named_ports=(NamedPort("http", 8080 + i % 3, "TCP"),),
        )
        for i in range(count)
    )


def _judge(
    endpoints: tuple[Endpoint, ...], resources: ResourceSet, flows: list[dict[str, Any]]
) -> None:
    engine = PolicyEngine(resources, Cluster(endpoints=endpoints), DNSCache(clock=FakeClock()))
    ruleset = Ruleset(IptablesBackend().render(engine.datapath(), now=1000.0).text)
    owner = {ep.ips[0]: ep for ep in endpoints}
    decided: Counter[bool] = Counter()
    for flow in flows:
        src = next(ep for ep in endpoints if ep.key == flow["src"])
        dst = owner.get(flow["dst"])
        packet = Packet(
            4, 6, saddr=src.ips[0], daddr=flow["dst"], iifname=src.interface,
            oifname=dst.interface if dst else "uplink0", sport=40000, dport=flow["port"],
        )  # fmt: skip
        verdict = engine.verdict(flow["src"], flow["dst"], "TCP", flow["port"], src_port=40000)
        allowed, logged = ruleset.run(packet)
        assert allowed == verdict.allowed, f"{flow}\n{engine.explain(**flow)}"
        assert all(n == 1 for n in logged.values()), logged
        decided[verdict.allowed] += 1
    assert decided[True], "the flows must exercise both outcomes"
    assert decided[False], "the flows must exercise both outcomes"


def test_many_interfaces_are_dispatched_through_branches_to_their_own_rules() -> None:
    endpoints = _endpoints(60)
    resources = ResourceSet(
        policies=(
            policy(
                "web-out",
                namespace="ns",
                selector='app == "web"',
                egress=[rule("Allow", protocol="TCP", destination=entity(ports=[443]))],
            ),
            policy(
                "db-out",
                namespace="ns",
                selector='app == "db"',
                egress=[rule("Allow", protocol="TCP", destination=entity(ports=[5432]))],
            ),
        )
    )
    text = IptablesBackend().render(
        PolicyEngine(resources, Cluster(endpoints=endpoints), DNSCache()).datapath(), now=0.0
    )
    assert "+ -g fqp-fd-" in text.text  # branches by interface-name prefix
    flows = [
        {"src": ep.key, "dst": "203.0.113.9", "port": port}
        for ep in endpoints
        for port in (443, 5432)
    ]
    _judge(endpoints, resources, flows)


@pytest.mark.parametrize("action", ["Allow", "Log", "Deny"])
def test_more_ports_than_one_multiport_match_holds_are_split_and_judged_once(
    action: RuleAction,
) -> None:
    endpoints = _endpoints(3)
    # pod1's "http" is 8081, also listed by number: two alternatives match one packet.
    ports: list[int | str] = [*range(1000, 1040, 2), "2000:2010", "3000:3005", 8081, "http"]
    resources = ResourceSet(
        policies=(
            policy(
                "many-ports",
                namespace="ns",
                egress=[
                    rule(action, protocol="TCP", destination=entity(ports=ports)),
                    rule(
                        "Allow",
                        protocol="TCP",
                        destination=entity(nets=["198.51.100.11/32"], not_ports=ports),
                    ),
                ],
            ),
        ),
        tiers=(tier("default", 1.0, "Deny"),),
    )
    flows = [
        {"src": "ns/pod0", "dst": dst, "port": port}
        for dst in ("203.0.113.9", "198.51.100.11")
        for port in (999, 1000, 1001, 1038, 1039, 2005, 3005, 3006, 8080, 8081)
    ]
    _judge(endpoints, resources, flows)


def test_pass_goes_on_to_the_next_tier_that_applies_and_after_the_last_allows() -> None:
    endpoints = _endpoints(2)  # pod0 is app=db, pod1 app=web
    resources = ResourceSet(
        policies=(
            policy(
                "sec",
                namespace="ns",
                tier="security",
                egress=[
                    rule("Pass", protocol="TCP", destination=entity(ports=[443])),
                    rule("Allow", protocol="TCP", destination=entity(ports=[80])),
                ],
            ),
            policy(
                "web",
                namespace="ns",
                selector='app == "web"',
                egress=[rule("Allow", protocol="TCP", destination=entity(nets=["203.0.113.0/25"]))],
            ),
        ),
        tiers=(tier("security", 1.0, "Deny"), tier("default", 2.0, "Deny")),
    )
    flows = [
        {"src": src, "dst": dst, "port": port}
        for src in ("ns/pod0", "ns/pod1")
        for dst in ("203.0.113.9", "203.0.113.200")
        for port in (80, 443, 22)
    ]
    _judge(endpoints, resources, flows)
