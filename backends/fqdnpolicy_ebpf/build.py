"""Compiling the BPF program with clang, once per source and membership slots (cached on disk).

The object's name is the SHA-256 of the C source and the compile-time constants, so a changed
source or more membership slots get a new object and an unchanged one is never rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from fqdnpolicy.backends import BackendError

__all__ = ["SOURCE", "compile_program", "object_key", "parse_object_key", "source_hash"]

SOURCE = Path(__file__).resolve().with_name("fqe.bpf.c")
#: The two programs of the object.
PROGRAMS = ("fqe_from_workload", "fqe_to_workload")
_INCLUDES = ("/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu")


def source_hash(source: Path = SOURCE) -> str:
    """The SHA-256 (hex) of the program's C source."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def object_key(slots: int, capacity: int, source: Path = SOURCE) -> str:
    """The name of a loaded object: source hash, membership slots, rule table capacity."""
    return f"{source_hash(source)[:16]}-s{slots}-r{capacity}"


def parse_object_key(name: str) -> tuple[int, int] | None:
    """``(slots, capacity)`` of an :func:`object_key` (None: not one)."""
    try:
        _, slots, capacity = name.rsplit("-", 2)
        if slots[0] == "s" and capacity[0] == "r":
            return int(slots[1:]), int(capacity[1:])
    except (ValueError, IndexError):
        pass
    return None


def cache_dir() -> Path:
    """Where compiled objects are kept (``$XDG_CACHE_HOME/fqdnpolicy/ebpf``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fqdnpolicy" / "ebpf"


def compile_program(slots: int, *, source: Path = SOURCE, cache: Path | None = None) -> Path:
    """Return the object for ``slots`` membership slots, compiling it on first use.

    Args:
        slots: Set memberships an address entry holds (``FQE_SLOTS``).
        source: The C source (another one for tests of the compile errors).
        cache: The cache directory (default :func:`cache_dir`).

    Raises:
        BackendError: clang is missing, or it refused the source (its message included).
    """
    target = (cache or cache_dir()) / f"fqe-{source_hash(source)[:16]}-s{slots}.o"
    if target.exists():
        return target
    clang = shutil.which("clang")
    if clang is None:
        raise BackendError(
            "the eBPF backend compiles its program with clang, which is not installed"
            " (apt-get install clang llvm libbpf-dev)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{d}" for d in _INCLUDES if os.path.isdir(d)]
    # Written to a temporary name and renamed: a concurrent user never sees half an object.
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".o.tmp")
    os.close(fd)
    argv = [clang, "-O2", "-g", "-target", "bpf", f"-DFQE_SLOTS={slots}", *includes]
    try:
        done = subprocess.run(
            [*argv, "-c", str(source), "-o", tmp], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise BackendError(f"clang refused the BPF program:\n{done.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
