"""The map against network-config-analyzer (np-guard) on Calico policies it supports.

Runs where network-config-analyzer's ``nca`` command is installed: the ``test`` extra installs
it, so CI runs it; the library does not depend on it (``FQDNPOLICY_NCA`` may name another).
Seeded clusters (:func:`~fqdnpolicy.connectivity.samples.calico_cluster`:
no domains, no tiers) are given to both tools; for every ordered pair of distinct pods, and
every pod with each outside address range ``nca`` reports, the connections must be the same,
up to the departures of network-config-analyzer from Calico documented in
``docs/connectivity.md``:

* its port range is 1-65535 (port 0 is left out of the comparison);
* its ``ipBlock`` s never hold pods, while Calico's ``nets`` match pod addresses: the sample
  clusters put pods outside every CIDR the policies name;
* it does not list a pod with itself.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fqdnpolicy.cluster import loads_cluster
from fqdnpolicy.connectivity import Connections, connectivity
from fqdnpolicy.connectivity.spaces import ALL, FULL, make, ports_of
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.loader import loads
from fqdnpolicy.protocols import protocol_number

# Installed into the test's own environment, its script sits beside the interpreter.
NCA = (
    os.environ.get("FQDNPOLICY_NCA")
    or shutil.which("nca", path=os.path.dirname(sys.executable))
    or shutil.which("nca")
)
pytestmark = pytest.mark.skipif(NCA is None, reason="network-config-analyzer is not installed")

_KEYS = re.compile(r",(?=(?:protocols|dst_ports|src_ports|icmp_type|icmp_code):)")


def parse_nca(text: str) -> Connections:
    """``All connections`` or ``{protocols:TCP,dst_ports:1-21,23-65535},{...}`` as ours."""
    text = text.strip()
    if text == "All connections":
        return Connections.of({4: ALL})
    if text in ("No connections", ""):
        return Connections()
    items: dict[int, tuple[int, ...]] = {}
    for part in re.findall(r"\{([^}]*)\}", text):
        fields = dict(f.split(":", 1) for f in _KEYS.split(part))
        protos = [protocol_number(p) for p in fields["protocols"].split(",")]
        if "dst_ports" in fields:
            ranges = []
            for item in fields["dst_ports"].split(","):
                first, _, last = item.partition("-")
                ranges.append((int(first), int(last or first)))
            ports = ports_of(ranges)
        elif "icmp_type" in fields:
            icmp_type = int(fields["icmp_type"])
            code = fields.get("icmp_code")
            ports = (
                (icmp_type * 256, icmp_type * 256 + 256)
                if code is None
                else (icmp_type * 256 + int(code), icmp_type * 256 + int(code) + 1)
            )
        else:
            ports = FULL
        for proto in protos:
            old = items.get(proto, ())
            items[proto] = ports_of(
                [(old[i], old[i + 1] - 1) for i in range(0, len(old), 2)]
                + [(ports[i], ports[i + 1] - 1) for i in range(0, len(ports), 2)]
            )
    return Connections.of({4: make(4, False, items)})


def without_port_zero(conns: Connections) -> Connections:
    """Port 0 of TCP, UDP and SCTP dropped (network-config-analyzer's ports start at 1)."""
    zero = Connections.of({4: make(4, False, {6: (0, 1), 17: (0, 1), 132: (0, 1)})})
    return conns - zero


def run_nca(folder: Path) -> list[tuple[str, str, Connections]]:
    assert NCA is not None
    done = subprocess.run(
        [
            NCA,
            "--connectivity",
            str(folder / "policies.yaml"),
            "--pod_list",
            str(folder / "pods.yaml"),
            "--ns_list",
            str(folder / "namespaces.yaml"),
            "--output_format",
            "txt_no_fw_rules",
            "--output_endpoints",
            "pods",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    found: dict[tuple[str, str], Connections] = {}
    for line in done.stdout.splitlines():
        if " => " not in line or " : " not in line:
            continue
        pair, _, conns = line.partition(" : ")
        src, _, dst = pair.partition(" => ")
        key = (src.strip(), dst.strip())
        found[key] = found.get(key, Connections()) | parse_nca(conns)
    return [(s, d, c) for (s, d), c in found.items()]


def _address(peer: str) -> str | None:
    """The first address of an ``a.b.c.d-e.f.g.h`` range (None for a pod)."""
    if "/" in peer:
        return None
    return str(ipaddress.ip_address(peer.split("-")[0]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_maps_agree_with_network_config_analyzer(tmp_path: Path, seed: int) -> None:
    from fqdnpolicy.connectivity.samples import calico_cluster

    sample = calico_cluster(24, 12, namespaces=3, seed=seed, pod_net="172.20")
    for name in ("namespaces", "pods", "policies"):
        (tmp_path / f"{name}.yaml").write_text(getattr(sample, name))
    engine = PolicyEngine(loads(sample.policies), loads_cluster(sample.cluster), DNSCache())
    cmap = connectivity(engine)
    theirs = run_nca(tmp_path)
    listed = {(s, d) for s, d, _ in theirs}
    pods = [ep.key for ep in engine.endpoints()]
    checked = 0
    for src, dst, conns in theirs:
        src_address, dst_address = _address(src), _address(dst)
        ours = cmap.connections(src_address or src, dst_address or dst)
        assert without_port_zero(ours) == without_port_zero(conns), f"{src} -> {dst}"
        checked += 1
    # Pairs network-config-analyzer leaves out allow nothing for us either.
    for src in pods:
        for dst in pods:
            if src != dst and (src, dst) not in listed:
                assert not without_port_zero(cmap.connections(src, dst)), f"{src} -> {dst}"
    assert checked
