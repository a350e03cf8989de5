"""The kit's lab on a real kernel: probes see what passes and what is dropped; it cleans up."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from fqdnpolicy.testing.lab import PROBE_PORTS, Flow, HostRecord, Lab, iter_flows

pytestmark = pytest.mark.kernel

SERVICES = ("203.0.113.10", "2001:db8:203::10")


def small_lab(prefix: str = "fqk", interface: str = "fqklab0") -> Lab:
    return Lab(
        [("a/one", interface), ("a/two", "fqklab1")],
        SERVICES,
        [80],
        [5353],
        [HostRecord("api.example.test", ("203.0.113.10",), 30)],
        prefix=prefix,
    )


def namespaces() -> set[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_without_rules_every_flow_gets_through_and_held_flows_stay_open(kernel: None) -> None:
    with small_lab() as lab:
        flows = list(iter_flows(lab, icmp=True))
        assert {f.protocol for f in flows} == {"tcp", "udp", "icmp"}
        assert lab.probe(flows, timeout=1.0) == dict.fromkeys(flows, True)
        with lab.hold(flows, timeout=1.0) as held:
            assert held.opened == dict.fromkeys(flows, True)
            assert held.again() == dict.fromkeys(flows, True)
        assert len(lab.resolve("a/one", ["api.example.test"])) == 2  # A and AAAA


def test_dropped_flows_are_reported_blocked_after_one_timeout_for_all(kernel: None) -> None:
    with small_lab() as lab:
        forward_nothing = (
            "table inet sink { chain f { type filter hook forward priority 0; policy drop; }; }"
        )
        subprocess.run(
            ["ip", "netns", "exec", lab.host, "nft", "-f", "-"],
            input=forward_nothing,
            text=True,
            check=True,
            timeout=30,
        )
        flows = list(iter_flows(lab, icmp=True))
        started = time.monotonic()
        assert lab.probe(flows, timeout=1.0) == dict.fromkeys(flows, False)
        # Tried in parallel: the timeouts are paid once, not once per flow.
        assert time.monotonic() - started < len(flows) / 4


def test_namespace_names_carry_the_prefix_and_the_process_id(kernel: None) -> None:
    with small_lab(prefix="fqk") as first, small_lab(prefix="fqk") as second:
        made = set(first.namespaces) | set(second.namespaces)
        assert len(made) == len(first.namespaces) + len(second.namespaces)
        for name in made:
            assert name.startswith("fqk-")
            assert str(os.getpid()) in name
        assert made <= namespaces()
    assert not made & namespaces()


def test_a_lab_that_fails_to_build_deletes_what_it_made(kernel: None) -> None:
    lab = small_lab(interface="an-interface-name-too-long")
    with pytest.raises(RuntimeError, match="failed"), lab:
        pass
    assert not [ns for ns in namespaces() if lab.run_id in ns]
    assert lab.processes == []


def test_a_probe_program_that_fails_is_an_error_not_a_blocked_flow(kernel: None) -> None:
    unknown = Flow("a/one", SERVICES[0], "sctp", 80)  # a protocol the probes do not speak
    with small_lab() as lab:
        with pytest.raises(RuntimeError, match="failed"):
            lab.probe([unknown], timeout=1.0)
        with pytest.raises(RuntimeError, match="ended early"):
            lab.hold([unknown], timeout=1.0)


def test_no_two_probes_of_a_run_share_a_source_port() -> None:
    # An allowed exchange leaves a connection-tracking entry for minutes: a later probe of
    # the same five-tuple would pass as established whatever the rules say then.
    lab = small_lab()
    flow = Flow("a/one", SERVICES[0], "udp", 5353)
    lines = lab._flow_lines([flow, flow]) + lab._flow_lines([flow])
    ports = [json.loads(line)["sport"] for line in lines.splitlines()]
    assert len(set(ports)) == 3
    assert all(port in PROBE_PORTS for port in ports)
