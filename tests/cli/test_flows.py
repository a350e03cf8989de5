"""Flow syntax: what parses, and a specific message for each way it can be wrong."""

from __future__ import annotations

import pytest

from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.flows import parse_flow


@pytest.mark.parametrize(
    ("text", "dst", "kind", "port", "protocol"),
    [
        ("default/backend -> api.github.com:443/tcp", "api.github.com", "name", 443, "TCP"),
        ("default/backend -> default/database:5432", "default/database", "endpoint", 5432, "TCP"),
        ("a/b -> [2001:db8::1]:443/udp", "2001:db8::1", "ip", 443, "UDP"),
        ("a/b -> ns/udp:53/udp", "ns/udp", "endpoint", 53, "UDP"),
        ("a/b -> 198.51.100.7:80/6", "198.51.100.7", "ip", 80, "TCP"),
        ("a/b -> 198.51.100.7/icmp", "198.51.100.7", "ip", None, "ICMP"),
        ("a/b -> 2001:db8::1/icmpv6", "2001:db8::1", "ip", None, "ICMPV6"),
    ],
)
def test_flows_parse_into_their_parts(
    text: str, dst: str, kind: str, port: int | None, protocol: str
) -> None:
    flow = parse_flow(text)
    assert (flow.dst, flow.dst_kind, flow.port, flow.protocol) == (dst, kind, port, protocol)


def test_star_is_any_port_written_deliberately() -> None:
    flow = parse_flow("a/b -> example.com:*/udp")
    assert (flow.port, flow.any_port) == (None, True)
    assert str(flow) == "a/b -> example.com:*/udp"


def test_a_source_by_label_keeps_its_labels() -> None:
    flow = parse_flow("shop/app=checkout,tier=web -> example.com:443")
    assert flow.src_namespace == "shop"
    assert flow.src_labels == (("app", "checkout"), ("tier", "web"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a/b -> example.com:443/tpc", "unknown protocol 'tpc'"),
        ("a/b -> example.com/tpc", "unknown protocol 'tpc'"),
        ("a/b -> 198.51.100.7:-1", "bad port '-1'"),
        ("a/b -> 198.51.100.7:65536", "port '65536' out of range"),
        ("a/b -> 198.51.100.7:" + "9" * 5000, "out of range"),
        ("a/b -> 999.1.1.1:443", "not an IP address: '999.1.1.1'"),
        ("a/b -> 2001:db8::1:443/tcp", "IPv6 address without brackets"),
        ("a/b -> example.com:https", "named port 'https'"),
        ("a/b -> example.com", "tcp flow has no port"),
        ("a/b -> default/database/udp", "udp flow has no port"),
        ("a/b -> 198.51.100.7:8/icmp", "icmp has no ports"),
        ("backend -> example.com:443", "source 'backend' is not namespace/name"),
        ("a/app=x,bad -> example.com:443", "'bad' is not key=value"),
        ("a/b example.com:443", "not a flow"),
        ("a/b -> *.example.com:443", "is not an address, endpoint or domain name"),
    ],
)
def test_each_mistake_gets_its_own_message(text: str, message: str) -> None:
    with pytest.raises(InvalidPolicy) as caught:
        parse_flow(text)
    assert message in str(caught.value)


def test_an_ipv6_address_without_brackets_is_shown_with_them() -> None:
    with pytest.raises(InvalidPolicy, match=r"e\.g\. \[2001:db8::1\]:443"):
        parse_flow("a/b -> 2001:db8::1:443/tcp")
