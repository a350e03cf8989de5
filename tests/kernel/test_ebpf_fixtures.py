"""Fixtures of the eBPF backend's kernel tests (no tests here): tools, a bpffs of our own.

A private bpffs mount (a fresh instance, not the host's ``/sys/fs/bpf``) receives the pins,
and is unmounted and removed afterwards, so nothing is left in the host's BPF state.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import require_root, require_tool

__all__ = ["EBPF_TOOLS", "bpffs", "ebpf_kernel"]

#: What the backend needs beyond the kit's own tools (libbpf comes with libbpf-dev).
EBPF_TOOLS = ("clang",)


@pytest.fixture
def ebpf_kernel() -> None:
    """Skip (or fail under FQDNPOLICY_REQUIRE_KERNEL=1) without root, ip and clang."""
    require_root()
    for tool in ("ip", *EBPF_TOOLS):
        require_tool(tool)


@pytest.fixture
def bpffs(ebpf_kernel: None) -> Iterator[Path]:
    """A bpffs mounted on a temporary directory of our own; unmounted and removed after."""
    where = Path(tempfile.mkdtemp(prefix="fqe-bpffs-"))
    subprocess.run(["mount", "-t", "bpf", "bpf", str(where)], check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False, capture_output=True)
        where.rmdir()
