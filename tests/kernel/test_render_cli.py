"""`fqdnpolicy render --check` and `--apply --netns` against the real kernel."""

from __future__ import annotations

import importlib.resources
import io
import subprocess

import pytest

from fqdnpolicy.cli import main

pytestmark = pytest.mark.kernel

DATA = importlib.resources.files("fqdnpolicy") / "data"


def _state_args() -> list[str]:
    seed = DATA / "seed"
    demo = DATA / "demo"
    return [
        "--policies",
        str(seed),
        "--cluster",
        str(demo / "cluster.yaml"),
        "--zone",
        str(demo / "zone.db"),
    ]


def test_render_check_validates_with_the_kernel(kernel: None) -> None:
    with importlib.resources.as_file(DATA):
        code = main(
            ["render", "--backend", "nftables", "--check", *_state_args()], out=io.StringIO()
        )
    assert code == 0


def test_render_apply_installs_the_table_in_a_namespace(netns: str) -> None:
    with importlib.resources.as_file(DATA):
        code = main(
            ["render", "--backend", "nftables", "--apply", "--netns", netns, *_state_args()],
            out=io.StringIO(),
        )
    assert code == 0
    listed = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "fqdnpolicy"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "198.51.100.10" in listed  # api.github.com, learned from the zone
    assert "iifname" in listed


def test_remove_deletes_what_render_apply_installed(netns: str) -> None:
    with importlib.resources.as_file(DATA):
        argv = ["render", "--backend", "nftables", "--apply", "--netns", netns, *_state_args()]
        assert main(argv, out=io.StringIO()) == 0
    assert main(["remove", "--backend", "nftables", "--netns", netns], out=io.StringIO()) == 0
    listed = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "tables"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "fqdnpolicy" not in listed
