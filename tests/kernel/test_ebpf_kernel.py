"""The eBPF program on a real kernel, asked for verdicts with ``BPF_PROG_TEST_RUN``.

Each test applies a hand-made :class:`~fqdnpolicy.datapath.DatapathState` to a scratch
namespace whose endpoint sits on ``lo`` (the interface test runs arrive on), then runs the
loaded program on crafted frames: nothing is sent anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fqdnpolicy_ebpf import EbpfBackend, libbpf
from fqdnpolicy_ebpf.build import PROGRAMS
from fqdnpolicy_ebpf.kernel import MAPS, Datapath
from fqdnpolicy_ebpf.packets import TC_ACT_OK, TC_ACT_SHOT, frame, run_program
from fqdnpolicy_ebpf.workbench import measure_full_workload

from fqdnpolicy.backends import BackendError
from fqdnpolicy.datapath import (
    DatapathState,
    EndpointState,
    MemberChanged,
    PortSpec,
    RuleState,
    SetState,
    TierState,
)
from tests.kernel.test_ebpf_fixtures import bpffs, ebpf_kernel

pytestmark = pytest.mark.kernel

__all__ = ["bpffs", "ebpf_kernel"]

WEB4, WEB6 = "198.51.100.10", "2001:db8:100::a"


def rule(action: str, **fields: object) -> RuleState:
    base: dict[str, object] = {"policy": "p", "tier": "t", "index": 0, "families": (4, 6)}
    base.update(fields)
    return RuleState(action=action, **base)  # type: ignore[arg-type]


def state(
    egress: tuple[TierState, ...],
    sets: tuple[SetState, ...] = (),
    ingress: tuple[TierState, ...] = (),
) -> DatapathState:
    endpoint = EndpointState("ns/web", "lo", (WEB4, WEB6), egress, ingress)
    return DatapathState(sets, (endpoint,), {})


def tier(*rules: RuleState, default: str = "Deny", name: str = "t") -> TierState:
    return TierState(name, rules, default)  # type: ignore[arg-type]


class Node:
    """A backend applied to one scratch namespace, and its program's verdicts."""

    def __init__(self, backend: EbpfBackend, netns: str) -> None:
        self.backend, self.netns = backend, netns

    def apply(self, st: DatapathState, now: float) -> None:
        self.backend.apply(self.backend.render(st, now=now), netns=self.netns)

    def delta(self, *changes: MemberChanged, now: float) -> None:
        self.backend.apply(self.backend.render_delta(changes, now=now), netns=self.netns)

    def out(self, dst: str, protocol: str = "tcp", **kw: int) -> bool:
        """Is a packet from the workload to ``dst`` let through?"""
        src = WEB6 if ":" in dst else WEB4
        return self._run(0, frame(src, dst, protocol, **kw))

    def into(self, src: str, protocol: str = "tcp", **kw: int) -> bool:
        """Is a packet from ``src`` to the workload let through?"""
        dst = WEB6 if ":" in src else WEB4
        return self._run(1, frame(src, dst, protocol, **kw))

    def _run(self, direction: int, packet: bytes) -> bool:
        dp = self.backend.datapath(netns=self.netns)
        assert dp is not None
        verdict, _ = run_program(dp.programs, direction, packet)
        assert verdict in (TC_ACT_OK, TC_ACT_SHOT)
        return verdict == TC_ACT_OK


@pytest.fixture
def node(netns: str, ebpf_kernel: None) -> Iterator[Node]:
    backend = EbpfBackend()
    yield Node(backend, netns)
    backend.remove(netns=netns)


NETS = SetState("n:net", "nets", "203.0.113.0/24", {"203.0.113.0/24": None})


def test_a_covering_prefix_lends_its_sets_to_more_specific_entries(node: Node) -> None:
    names = SetState("d:api", "domains", "api.example.test", {"203.0.113.12": 2000.0})
    st = state(
        (
            tier(
                rule("Allow", protocol=6, peer_in=("n:net",), dst_ports=PortSpec(((80, 80),))),
                rule("Allow", protocol=6, peer_in=("d:api",), dst_ports=PortSpec(((443, 443),))),
            ),
        ),
        (NETS, names),
    )
    node.apply(st, now=1000.0)
    # The longest prefix wins outright in the trie: .12 must carry the /24's set too.
    assert node.out("203.0.113.12", dport=80, sport=1)
    assert node.out("203.0.113.12", dport=443, sport=2)
    assert not node.out("203.0.113.13", dport=443, sport=3)
    node.delta(MemberChanged("d:api", "203.0.113.12", added=False), now=1001.0)
    assert not node.out("203.0.113.12", dport=443, sport=4)
    assert node.out("203.0.113.12", dport=80, sport=5)
    node.delta(MemberChanged("n:net", "203.0.113.0/24", added=False), now=1001.0)
    assert not node.out("203.0.113.12", dport=80, sport=6)


def test_calico_actions_log_pass_end_of_tier_and_default_allow(node: Node) -> None:
    st = state(
        (
            tier(
                rule("Log", protocol=17),
                rule("Pass", protocol=17, dst_ports=PortSpec(((5000, 5999),))),
                rule("Deny", protocol=17),
                rule("Allow", protocol=6, dst_ports=PortSpec(((80, 80),))),
                name="first",
            ),
            tier(rule("Deny", protocol=17, dst_ports=PortSpec(((5353, 5353),))), default="Pass"),
        ),
    )
    node.apply(st, now=0.0)
    assert node.out("203.0.113.1", "udp", dport=5001)  # passed, then every tier passed: allow
    assert not node.out("203.0.113.1", "udp", dport=5353)  # passed, denied by the next tier
    assert not node.out("203.0.113.1", "udp", dport=53)  # Deny
    assert node.out("203.0.113.1", "tcp", dport=80)
    assert not node.out("203.0.113.1", "tcp", dport=81)  # end of the first tier
    assert node.into("203.0.113.1", "tcp", dport=22)  # no ingress policy: allow
    counts = node.backend.log_counts(netns=node.netns)
    assert counts == {("ns/web", "egress", 0): 3}


def test_protocols_icmp_type_and_code_and_both_families(node: Node) -> None:
    st = state(
        (
            tier(
                rule("Allow", protocol=1, families=(4,), icmp=(8, None)),
                rule("Allow", protocol=58, families=(6,), icmp=(128, 0)),
                rule("Allow", families=(6,), not_protocol=17, not_icmp=(1, None)),
            ),
        ),
    )
    node.apply(st, now=0.0)
    assert node.out("203.0.113.1", "icmp", icmp_type=8, icmp_code=3)
    assert not node.out("203.0.113.1", "icmp", icmp_type=13)
    assert node.out("2001:db8:203::1", "icmpv6", icmp_type=128, icmp_code=0)
    assert node.out("2001:db8:203::1", "icmpv6", icmp_type=129, icmp_code=0)  # third rule
    assert not node.out("2001:db8:203::1", "icmpv6", icmp_type=1, icmp_code=4)
    assert not node.out("2001:db8:203::1", "udp", dport=53)
    assert node.out("2001:db8:203::1", "tcp", dport=53)
    assert not node.out("203.0.113.1", "tcp", dport=53)  # IPv6 only


def test_ports_ranges_negations_and_named_ports(node: Node) -> None:
    peers = SetState("s:db", "selector", "app == 'db'", {"198.51.100.20": None})
    st = DatapathState(
        (peers,),
        (
            EndpointState(
                "ns/web",
                "lo",
                (WEB4, WEB6),
                (
                    tier(
                        rule(
                            "Allow",
                            protocol=6,
                            dst_ports=PortSpec(((8000, 8099),)),
                            not_dst_ports=PortSpec(((8080, 8080),)),
                        ),
                        rule(
                            "Allow",
                            protocol=6,
                            peer_in=("s:db",),
                            dst_ports=PortSpec(peer_named=("pg",)),
                        ),
                        rule("Allow", protocol=17, src_ports=PortSpec(((53, 53),))),
                    ),
                ),
                (tier(rule("Allow", protocol=6, dst_ports=PortSpec(named=((6, 9090),)))),),
            ),
        ),
        {"pg": (("198.51.100.20", 6, 5432),)},
    )
    node.apply(st, now=0.0)
    assert node.out("203.0.113.1", dport=8050)
    assert not node.out("203.0.113.1", dport=8080)
    assert not node.out("203.0.113.1", dport=8100)
    assert node.out("198.51.100.20", dport=5432)
    assert not node.out("198.51.100.20", dport=5433)
    assert node.out("203.0.113.1", "udp", sport=53, dport=9)
    assert node.into("203.0.113.1", dport=9090)
    assert not node.into("203.0.113.1", "udp", dport=9090)


def test_the_program_drops_an_expired_member_itself_and_sweep_clears_it(node: Node) -> None:
    now = time.monotonic()
    names = SetState(
        "d:api", "domains", "api", {"203.0.113.12": now + 1.0, "2001:db8:203::c": None}
    )
    st = state((tier(rule("Allow", peer_in=("d:api",))),), (names,))
    node.apply(st, now=now)
    assert node.out("203.0.113.12", dport=80, sport=10)
    time.sleep(1.1)
    # No removal applied: the deadline in the map ends the membership.
    assert not node.out("203.0.113.12", dport=80, sport=11)
    assert node.out("2001:db8:203::c", dport=80, sport=12)
    dp = node.backend.datapath(netns=node.netns)
    assert dp is not None
    assert len(libbpf.map_keys(dp.maps["fqe_hosts"], 20)) == 2
    assert node.backend.sweep(time.monotonic(), netns=node.netns) == 1
    assert len(libbpf.map_keys(dp.maps["fqe_hosts"], 20)) == 1
    assert node.backend.sweep(time.monotonic(), netns=node.netns) == 0


def test_established_flows_and_replies_outlive_the_expiry(node: Node) -> None:
    now = time.monotonic()
    names = SetState("d:api", "domains", "api", {"203.0.113.12": now + 1.0})
    st = state((tier(rule("Allow", peer_in=("d:api",))),), (names,), (tier(),))
    node.apply(st, now=now)
    assert node.out("203.0.113.12", dport=443, sport=1000)
    time.sleep(1.1)
    assert node.out("203.0.113.12", dport=443, sport=1000)  # established
    assert node.into("203.0.113.12", dport=1000, sport=443)  # its reply, though ingress denies
    assert not node.out("203.0.113.12", dport=443, sport=1001)  # a new flow
    assert not node.into("203.0.113.12", dport=1001, sport=443)


def test_a_syn_reusing_an_allowed_flows_ports_is_judged_by_the_policy_now(node: Node) -> None:
    now = time.monotonic()
    allow = state((tier(rule("Allow", peer_in=("n:net",))),), (NETS,))
    node.apply(allow, now=now)
    syn, ack = 0x02, 0x10
    assert node.out("203.0.113.7", dport=8080, sport=2000, tcp_flags=syn)
    assert node.out("203.0.113.7", dport=8080, sport=2000, tcp_flags=ack)
    node.apply(state((tier(),), (NETS,)), now=now)  # now everything is denied
    assert node.out("203.0.113.7", dport=8080, sport=2000, tcp_flags=ack)  # the flow goes on
    # The same addresses and ports open a connection again: a new one, denied; the old
    # flow's entry went with it.
    assert not node.out("203.0.113.7", dport=8080, sport=2000, tcp_flags=syn)
    assert not node.out("203.0.113.7", dport=8080, sport=2000, tcp_flags=ack)
    node.apply(allow, now=now)
    assert node.out("203.0.113.7", dport=8080, sport=2000, tcp_flags=syn)  # judged, allowed again


def test_a_restarted_process_finds_the_pinned_maps(netns: str, bpffs: Path) -> None:
    st = state((tier(rule("Allow", peer_in=("n:net",))),), (NETS,))
    first = Node(EbpfBackend(pin_root=str(bpffs)), netns)
    first.apply(st, now=0.0)
    dp = first.backend.datapath(netns=netns)
    assert dp is not None
    pinned = bpffs / netns / dp.key
    assert {p.name for p in pinned.iterdir()} == {*PROGRAMS, *MAPS}
    # A new process: the pins give it the same maps, enforcing what the first wrote.
    again = Datapath.open(dp.slots, dp.capacity, bpffs / netns)
    assert len(libbpf.map_keys(again.maps["fqe_members"], 21)) == 1
    assert run_program(again.programs, 0, frame(WEB4, "203.0.113.9", "tcp", dport=1))[0] == 0
    assert run_program(again.programs, 0, frame(WEB4, "198.51.100.9", "tcp", dport=1))[0] == 2
    again.close()
    second = Node(EbpfBackend(pin_root=str(bpffs)), netns)
    second.backend.remove(netns=netns)
    assert not (bpffs / netns).exists()
    dp.close()


def test_a_verifier_refusal_is_reported_with_its_log(tmp_path: Path, node: Node) -> None:
    source = Path(__file__).parents[2] / "backends/fqdnpolicy_ebpf/fqe.bpf.c"
    bad = tmp_path / "bad.bpf.c"
    # Reading the packet without a bounds check: the verifier must refuse.
    bad.write_text(
        source.read_text().replace("if ((void *)(eth + 1) > end)\n\t\treturn 0;", "(void)end;")
    )
    backend = EbpfBackend(source=str(bad))
    rendering = backend.render(state((tier(),)), now=0.0)
    with pytest.raises(BackendError, match=r"(?s)Permission denied.*verifier log.*invalid access"):
        backend.check(rendering)


def test_the_verifier_accepts_a_thousand_rules_on_one_endpoint(node: Node) -> None:
    rules = tuple(
        rule("Allow", protocol=6, index=i, dst_ports=PortSpec(((i + 1, i + 1),)))
        for i in range(1000)
    )
    backend = EbpfBackend()
    backend.check(backend.render(state((tier(*rules),)), now=0.0))
    node.apply(state((tier(*rules),)), now=0.0)
    assert node.out("203.0.113.1", dport=1000)
    assert not node.out("203.0.113.1", dport=1001)


def test_an_address_in_more_sets_than_the_program_holds_gets_a_larger_program(
    node: Node,
) -> None:
    sets = tuple(SetState(f"d:{i}", "domains", f"s{i}", {"203.0.113.12": 2000.0}) for i in range(4))
    last = SetState("d:9", "domains", "s9", {})
    rules = [
        rule("Allow", protocol=6, index=i, peer_in=(s.set_id,), dst_ports=PortSpec(((i, i),)))
        for i, s in enumerate((*sets, last), start=1)
    ]
    node.apply(state((tier(*rules),), (*sets, last)), now=1000.0)
    dp = node.backend.datapath(netns=node.netns)
    assert dp is not None
    assert dp.slots == 4
    assert node.out("203.0.113.12", dport=4, sport=1)
    assert not node.out("203.0.113.12", dport=5, sport=2)
    # A fifth set: the entry no longer fits, and the delta brings a program with more slots.
    node.delta(MemberChanged("d:9", "203.0.113.12", True, 2000.0), now=1000.0)
    dp = node.backend.datapath(netns=node.netns)
    assert dp is not None
    assert dp.slots == 8
    assert node.out("203.0.113.12", dport=5, sport=3)
    assert node.out("203.0.113.12", dport=1, sport=4)
    assert not node.out("203.0.113.13", dport=1, sport=5)


def test_a_peer_in_more_indexed_sets_than_cursors_is_judged_by_the_whole_table(
    node: Node,
) -> None:
    # Nine sets holding the peer, each selecting a Deny on one port and an Allow on another:
    # the program merges at most seven such lists, so it walks the whole table instead.
    count = 9
    sets = tuple(
        SetState(f"d:{i}", "domains", f"s{i}", {"203.0.113.12": None}) for i in range(count)
    )
    rules = [
        rule(
            action,
            protocol=6,
            index=i,
            peer_in=(s.set_id,),
            dst_ports=PortSpec(((port, port),)),
        )
        for i, s in enumerate(sets)
        for action, port in (("Deny", 100 + i), ("Allow", 200 + i))
    ]
    node.apply(state((tier(*rules),), sets), now=0.0)
    dp = node.backend.datapath(netns=node.netns)
    assert dp is not None
    assert dp.slots == 16
    for i in range(count):
        assert not node.out("203.0.113.12", dport=100 + i, sport=10 + i)
        assert node.out("203.0.113.12", dport=200 + i, sport=30 + i)
    assert not node.out("203.0.113.12", dport=300, sport=50)  # end of tier
    assert not node.out("203.0.113.13", dport=200, sport=51)  # in no set


def test_rules_of_several_sets_and_unindexed_rules_keep_their_order(node: Node) -> None:
    # The peer is in both sets: entries from three lists, merged in table order.
    a = SetState("n:a", "nets", "203.0.113.0/24", {"203.0.113.0/24": None})
    b = SetState("d:b", "domains", "b", {"203.0.113.12": None})
    st = state(
        (
            tier(
                rule("Deny", protocol=6, index=0, peer_in=("d:b",), dst_ports=PortSpec(((1, 1),))),
                rule("Allow", protocol=6, index=1, dst_ports=PortSpec(((1, 2),))),
                rule("Deny", protocol=6, index=2, peer_in=("n:a",), dst_ports=PortSpec(((2, 3),))),
                rule("Allow", protocol=6, index=3, peer_in=("n:a", "d:b")),
                rule("Deny", protocol=6, index=4, peer_not_in=("d:b",)),
                rule("Allow", protocol=6, index=5),
            ),
        ),
        (a, b),
    )
    node.apply(st, now=0.0)
    assert not node.out("203.0.113.12", dport=1, sport=1)  # rule 0 before rule 1
    assert node.out("203.0.113.13", dport=1, sport=2)  # not in b: rule 1
    assert node.out("203.0.113.12", dport=2, sport=3)  # rule 1 before rule 2
    assert not node.out("203.0.113.12", dport=3, sport=4)  # rule 2
    assert node.out("203.0.113.12", dport=4, sport=5)  # rule 3 (both sets)
    assert not node.out("203.0.113.13", dport=4, sport=6)  # not in b: rule 4
    assert not node.out("198.51.100.99", dport=4, sport=7)  # in no set: rule 4


def test_on_a_generated_workload_the_program_agrees_with_the_engine(ebpf_kernel: None) -> None:
    # The benchmark workload's shape at a small scale: shared tables, Log rules, CIDR and
    # selector sets, the longest egress table judging domain, CIDR and outside peers.
    run = measure_full_workload(EbpfBackend(), repeat=1, scale=0.01, rounds=1)
    assert len(run.rates) == 4
    for shape, (_, kernel, engine) in run.rates.items():
        assert kernel == engine, shape
