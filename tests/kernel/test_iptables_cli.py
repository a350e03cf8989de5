"""``fqdnpolicy render --backend iptables`` with --check and --apply --netns, and ``remove``."""

from __future__ import annotations

import importlib.resources
import io
import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from fqdnpolicy.cli import main
from tests.support import require_root, require_tool

pytestmark = pytest.mark.kernel

DATA = importlib.resources.files("fqdnpolicy") / "data"


@pytest.fixture
def ns() -> Iterator[str]:
    require_root()
    for tool in ("ip", "ipset", "iptables-nft-restore"):
        require_tool(tool)
    name = f"fqi-c-{os.getpid() % 100000}{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)


def _render(*extra: str) -> tuple[int, str]:
    seed, demo = DATA / "seed", DATA / "demo"
    out = io.StringIO()
    with importlib.resources.as_file(DATA):
        code = main(
            [
                "render", "--backend", "iptables", *extra, "--policies", str(seed),
                "--cluster", str(demo / "cluster.yaml"), "--zone", str(demo / "zone.db"),
            ],
            out=out,
        )  # fmt: skip
    return code, out.getvalue()


def _in(ns: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=30, check=True
    ).stdout


def test_render_prints_all_three_inputs_and_check_validates_them(ns: str) -> None:
    code, text = _render("--check")
    assert code == 0
    assert text.startswith("# fqdnpolicy: ipset restore\n")
    assert "\n# fqdnpolicy: iptables-restore --noflush\n*filter\n" in text
    assert "\n# fqdnpolicy: ip6tables-restore --noflush\n*filter\n" in text


def test_render_apply_installs_in_a_namespace_and_remove_takes_it_away(ns: str) -> None:
    code, _ = _render("--apply", "--netns", ns)
    assert code == 0
    saved = _in(ns, "iptables-nft-save", "-t", "filter")
    assert "-A FORWARD -m comment --comment fqdnpolicy -j fqp-FORWARD" in saved
    assert "-i cali" in saved
    assert "198.51.100.10" in _in(ns, "ipset", "list")  # api.github.com, learned from the zone
    assert main(["remove", "--backend", "iptables", "--netns", ns], out=io.StringIO()) == 0
    assert "fqp-" not in _in(ns, "iptables-nft-save", "-t", "filter")
    assert _in(ns, "ipset", "list", "-n") == ""
