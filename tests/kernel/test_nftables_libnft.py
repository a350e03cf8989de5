"""libnftables through ctypes: one worker per namespace, and what happens to namespaces."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fqdnpolicy_nftables.libnft import LibNft, load

from fqdnpolicy.backends import BackendError

pytestmark = pytest.mark.kernel

TABLE = "table inet fqsl {\n\tset s {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t}\n}\n"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def links(netns: str) -> str:
    return subprocess.run(
        ["ip", "-n", netns, "-o", "link"], capture_output=True, text=True, timeout=30, check=True
    ).stdout


@pytest.fixture
def nft(kernel: None) -> Iterator[LibNft]:
    lib = load()
    if lib is None:
        pytest.skip("libnftables.so.1 is not installed")
    runner = LibNft(lib)
    yield runner
    runner.close()


@pytest.fixture
def other(kernel: None) -> Iterator[str]:
    """A second namespace, which the test may delete and make again under the same name."""
    name = f"fqs-l-{os.getpid() % 100000}{secrets.token_hex(3)}"
    ip("netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)


def test_commands_run_in_the_named_namespace_only(nft: LibNft, netns: str, other: str) -> None:
    nft.run(TABLE, netns=netns)
    nft.run("add element inet fqsl s { 198.51.100.7 timeout 60s }", netns=netns)
    listing = json.loads(nft.run("list table inet fqsl", netns=netns, json_io=True))
    sets = [item["set"] for item in listing["nftables"] if "set" in item]
    assert [[e["elem"]["val"] for e in s["elem"]] for s in sets] == [["198.51.100.7"]]
    with pytest.raises(BackendError, match="No such file or directory"):
        nft.run("list table inet fqsl", netns=other)


def test_a_refused_transaction_changes_nothing_and_says_why(nft: LibNft, netns: str) -> None:
    nft.run(TABLE, netns=netns)
    with pytest.raises(BackendError, match="refused"):
        nft.run(
            "add element inet fqsl s { 198.51.100.7 }\nadd element inet fqsl nope { 1.2.3.4 }\n",
            netns=netns,
        )
    assert "198.51.100.7" not in nft.run("list table inet fqsl", netns=netns)


def test_dry_run_and_json_input(nft: LibNft, netns: str) -> None:
    nft.run(TABLE, netns=netns, dry_run=True)
    with pytest.raises(BackendError):
        nft.run("list table inet fqsl", netns=netns)
    add = {"add": {"element": {"family": "inet", "table": "fqsl", "name": "s",
                               "elem": ["198.51.100.9"]}}}  # fmt: skip
    nft.run(TABLE, netns=netns)
    nft.run(json.dumps({"nftables": [add]}), netns=netns, json_io=True)
    assert "198.51.100.9" in nft.run("list table inet fqsl", netns=netns)


def test_an_unknown_namespace_is_an_error(nft: LibNft) -> None:
    with pytest.raises(BackendError, match="no network namespace"):
        nft.run(TABLE, netns=f"fqs-none-{os.getpid()}")


def test_a_namespace_made_again_under_its_name_is_the_new_one(nft: LibNft, other: str) -> None:
    nft.run(TABLE, netns=other)
    ip("netns", "del", other)
    ip("netns", "add", other)
    with pytest.raises(BackendError, match="No such file or directory"):
        nft.run("list table inet fqsl", netns=other)
    nft.run(TABLE, netns=other)
    assert "set s" in nft.run("list table inet fqsl", netns=other)


def test_a_deleted_namespace_is_let_go_at_the_next_call(
    nft: LibNft, netns: str, other: str
) -> None:
    # A veth pair between the two: when the kernel really destroys `other`, its end goes and
    # takes the peer in `netns` with it; a worker still inside `other` would keep both.
    ip("-n", netns, "link", "add", "fqsl0", "type", "veth", "peer", "name", "fqsl1",
       "netns", other)  # fmt: skip
    nft.run(TABLE, netns=other)
    ip("netns", "del", other)
    nft.run(TABLE, netns=netns)
    deadline = time.monotonic() + 10
    while "fqsl0" in links(netns) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "fqsl0" not in links(netns)


def test_close_lets_every_namespace_go(nft: LibNft, netns: str, other: str) -> None:
    ip("-n", netns, "link", "add", "fqsl0", "type", "veth", "peer", "name", "fqsl1",
       "netns", other)  # fmt: skip
    nft.run(TABLE, netns=other)
    ip("netns", "del", other)
    nft.close()
    deadline = time.monotonic() + 10
    while "fqsl0" in links(netns) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "fqsl0" not in links(netns)
    nft.run(TABLE, netns=netns)  # usable again after close


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_large_transaction_leaves_no_peak_behind(nft: LibNft, netns: str) -> None:
    # The context caches what a transaction declared: kept, a full apply of a large state
    # would stay in the agent's memory until the next one.
    elements = ", ".join(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(200_000))
    payload = f"{TABLE}add element inet fqsl s {{ {elements} }}\n"
    nft.run(TABLE, netns=netns)  # the worker and its context exist before measuring
    before = rss_mib()
    nft.run(payload, netns=netns)
    assert rss_mib() - before < 40
    # Asked by lookup: a dump right after so large an insertion may walk the kernel's hash
    # table while it grows, and show some elements twice and others not at all.
    for address in ("10.0.0.0", "10.3.13.63"):  # the first and the last
        assert address in nft.run(f"get element inet fqsl s {{ {address} }}", netns=netns)
