"""`fqdnpolicy render --backend ebpf [--check]` and `bench --backend ebpf` on the real kernel."""

from __future__ import annotations

import importlib.resources
import io
import re

import pytest
from fqdnpolicy_ebpf.build import source_hash

from fqdnpolicy.cli import main
from tests.kernel.test_ebpf_fixtures import ebpf_kernel

pytestmark = pytest.mark.kernel

__all__ = ["ebpf_kernel"]

DATA = importlib.resources.files("fqdnpolicy") / "data"


def _state_args() -> list[str]:
    demo = DATA / "demo"
    return [
        "--policies",
        str(DATA / "seed"),
        "--cluster",
        str(demo / "cluster.yaml"),
        "--zone",
        str(demo / "zone.db"),
    ]


def test_render_prints_the_program_hash_sets_and_rule_tables(ebpf_kernel: None) -> None:
    out = io.StringIO()
    with importlib.resources.as_file(DATA):
        assert main(["render", "--backend", "ebpf", *_state_args()], out=out) == 0
    text = out.getvalue()
    assert f"sha256 {source_hash()}" in text
    assert re.search(r"set \d+ d:\S+ domains '.*api\.github\.com", text)
    assert "198.51.100.10" in text  # api.github.com, learned from the zone
    assert re.search(r"endpoint \S+ on \S+, egress \(from the workload\):", text)
    assert "end of tier" in text


def test_render_check_loads_the_program_into_the_verifier(
    ebpf_kernel: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with importlib.resources.as_file(DATA):
        code = main(["render", "--backend", "ebpf", "--check", *_state_args()], out=io.StringIO())
    assert code == 0
    assert "ebpf: the kernel accepts the ruleset" in capsys.readouterr().err


def test_bench_reports_kernel_verdicts_beside_the_engine(ebpf_kernel: None) -> None:
    out = io.StringIO()
    argv = ["bench", "--backend", "ebpf", "--addresses", "1000", "--repeat", "1000"]
    assert main([*argv, "--scale", "0.005", "--flows", "1000"], out=out) == 0
    text = out.getvalue()
    for shape in ("domain-allowed", "end-of-tier-deny", "cidr-deny", "ipv6-allowed"):
        assert re.search(rf"{shape}\s+[\d,]+", text)
    assert "engine verdict() per second" in text


def test_bench_refuses_a_backend_without_a_kernel_benchmark(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "--backend", "nftables"], out=io.StringIO()) != 0
    assert "cannot judge packets in the kernel" in capsys.readouterr().err
