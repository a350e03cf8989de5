"""libbpf (``libbpf.so.1``) through ctypes: objects, maps, pins, TC attachment, test runs.

Only what the backend needs, each call turning libbpf's negative error codes into a
:class:`~fqdnpolicy.backends.BackendError` that names the operation and the kernel's reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from fqdnpolicy.backends import BackendError

__all__ = [
    "LOG_SIZE",
    "BpfObject",
    "in_netns",
    "lib",
    "map_delete",
    "map_delete_batch",
    "map_keys",
    "map_lookup",
    "map_update",
    "map_update_batch",
    "obj_get",
    "obj_pin",
    "tc_attach",
    "tc_detach",
    "test_run",
]

T = TypeVar("T")
LOG_SIZE = 1 << 22
BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_TC_F_REPLACE = 1
#: Handle and priority of our TC filters (so we replace and remove only our own).
TC_HANDLE = 0xFE1
TC_PRIORITY = 0xFE1
_CLONE_NEWNET = 0x40000000

_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    """Load ``libbpf.so.1`` once and declare the functions used.

    Raises:
        BackendError: libbpf is not installed.
    """
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        handle = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise BackendError(
            f"the eBPF backend needs libbpf (apt-get install libbpf1): {exc}"
        ) from exc
    vp, ci, cu = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
    signatures: dict[str, tuple[object, list[object]]] = {
        "bpf_object__open_file": (vp, [ctypes.c_char_p, vp]),
        "bpf_object__load": (ci, [vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__find_program_by_name": (vp, [vp, ctypes.c_char_p]),
        "bpf_object__find_map_by_name": (vp, [vp, ctypes.c_char_p]),
        "bpf_program__fd": (ci, [vp]),
        "bpf_program__set_log_buf": (ci, [vp, ctypes.c_char_p, ctypes.c_size_t]),
        "bpf_map__fd": (ci, [vp]),
        "bpf_map__set_max_entries": (ci, [vp, cu]),
        "bpf_obj_pin": (ci, [ci, ctypes.c_char_p]),
        "bpf_obj_get": (ci, [ctypes.c_char_p]),
        "bpf_map_update_elem": (ci, [ci, vp, vp, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (ci, [ci, vp, vp]),
        "bpf_map_delete_elem": (ci, [ci, vp]),
        "bpf_map_get_next_key": (ci, [ci, vp, vp]),
        "bpf_map_update_batch": (ci, [ci, vp, vp, ctypes.POINTER(cu), vp]),
        "bpf_map_delete_batch": (ci, [ci, vp, ctypes.POINTER(cu), vp]),
        "bpf_tc_hook_create": (ci, [vp]),
        "bpf_tc_attach": (ci, [vp, vp]),
        "bpf_tc_detach": (ci, [vp, vp]),
        "bpf_prog_test_run_opts": (ci, [ci, vp]),
        "libbpf_set_print": (vp, [vp]),
    }
    for fn, (restype, argtypes) in signatures.items():
        func = getattr(handle, fn)
        func.restype = restype
        func.argtypes = argtypes
    handle.libbpf_set_print(None)  # failures are reported through the verifier log buffer
    _lib = handle
    return handle


def _check(rc: int, what: str) -> int:
    if rc < 0:
        code = -rc if rc < -1 else ctypes.get_errno()
        raise BackendError(f"{what}: {os.strerror(code)}")
    return rc


class _TcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
        ("_end", ctypes.c_size_t * 0),
    ]


class _TcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
        ("_end", ctypes.c_size_t * 0),
    ]


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class BpfObject:
    """A compiled object file opened with libbpf, loaded by :meth:`load`.

    Args:
        path: The ``.o`` file.
        programs: Names of its programs (each gets a verifier log buffer).

    Raises:
        BackendError: libbpf cannot open the file.
    """

    def __init__(self, path: str, programs: tuple[str, ...]) -> None:
        self._lib = lib()
        ptr = self._lib.bpf_object__open_file(path.encode(), None)
        if not ptr:
            _check(-ctypes.get_errno(), f"opening {path}")
        self._ptr: int | None = ptr
        self._logs: dict[str, ctypes.Array[ctypes.c_char]] = {}
        self._programs = programs
        for name in programs:
            buf = ctypes.create_string_buffer(LOG_SIZE)
            self._logs[name] = buf
            self._lib.bpf_program__set_log_buf(self._program(name), buf, LOG_SIZE)

    def _program(self, name: str) -> int:
        ptr = self._lib.bpf_object__find_program_by_name(self._ptr, name.encode())
        if not ptr:
            raise BackendError(f"the BPF object has no program {name!r}")
        return int(ptr)

    def _map(self, name: str) -> int:
        ptr = self._lib.bpf_object__find_map_by_name(self._ptr, name.encode())
        if not ptr:
            raise BackendError(f"the BPF object has no map {name!r}")
        return int(ptr)

    def set_max_entries(self, name: str, count: int) -> None:
        """Size a map before :meth:`load`."""
        _check(self._lib.bpf_map__set_max_entries(self._map(name), count), f"sizing map {name}")

    def load(self) -> None:
        """Load maps and programs into the kernel.

        Raises:
            BackendError: the verifier (or the kernel) refused; the message holds the log.
        """
        rc = self._lib.bpf_object__load(self._ptr)
        if rc < 0:
            code = -rc if rc < -1 else ctypes.get_errno()
            logs = "\n".join(
                f"--- verifier log of {name} ---\n{buf.value.decode(errors='replace').strip()}"
                for name, buf in self._logs.items()
                if buf.value
            )
            raise BackendError(f"loading the BPF program failed: {os.strerror(code)}\n{logs}")

    def program_fd(self, name: str) -> int:
        """The fd of a loaded program (owned by this object)."""
        return _check(self._lib.bpf_program__fd(self._program(name)), f"program {name}")

    def map_fd(self, name: str) -> int:
        """The fd of a loaded map (owned by this object)."""
        return _check(self._lib.bpf_map__fd(self._map(name)), f"map {name}")

    def close(self) -> None:
        """Close the object and its fds (pinned and attached things stay in the kernel)."""
        if self._ptr:
            self._lib.bpf_object__close(self._ptr)
            self._ptr = None


def obj_pin(fd: int, path: str) -> None:
    """Pin a map or program under bpffs."""
    _check(lib().bpf_obj_pin(fd, path.encode()), f"pinning {path}")


def obj_get(path: str) -> int:
    """Open a pinned map or program; returns a new fd."""
    return _check(lib().bpf_obj_get(path.encode()), f"opening pinned {path}")


def map_update(fd: int, key: bytes, value: bytes) -> None:
    """Set one element."""
    _check(lib().bpf_map_update_elem(fd, key, value, 0), "updating a map element")


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """Read one element (None: absent)."""
    out = ctypes.create_string_buffer(value_size)
    rc = lib().bpf_map_lookup_elem(fd, key, out)
    if rc < 0:
        if ctypes.get_errno() == errno.ENOENT or rc == -errno.ENOENT:
            return None
        _check(rc, "reading a map element")
    return out.raw


def map_delete(fd: int, key: bytes) -> None:
    """Delete one element; an absent one is no error."""
    rc = lib().bpf_map_delete_elem(fd, key)
    if rc < 0 and not (rc == -errno.ENOENT or ctypes.get_errno() == errno.ENOENT):
        _check(rc, "deleting a map element")


def map_update_batch(fd: int, keys: bytes, values: bytes, count: int, what: str) -> None:
    """Set ``count`` elements in one call (keys and values packed back to back)."""
    if not count:
        return
    n = ctypes.c_uint32(count)
    _check(lib().bpf_map_update_batch(fd, keys, values, ctypes.byref(n), None), what)


def map_delete_batch(fd: int, keys: bytes, count: int, what: str) -> None:
    """Delete ``count`` elements in one call; all must exist."""
    if not count:
        return
    n = ctypes.c_uint32(count)
    _check(lib().bpf_map_delete_batch(fd, keys, ctypes.byref(n), None), what)


def map_keys(fd: int, key_size: int) -> list[bytes]:
    """Every key of a map (for state left by an earlier process)."""
    keys: list[bytes] = []
    cur = None
    nxt = ctypes.create_string_buffer(key_size)
    while lib().bpf_map_get_next_key(fd, cur, nxt) == 0:
        keys.append(nxt.raw)
        cur = ctypes.create_string_buffer(nxt.raw, key_size)
    return keys


def in_netns(netns: str | None, work: Callable[[], T]) -> T:
    """Run ``work`` in network namespace ``netns`` (None: here), on a thread of its own.

    Only the thread enters the namespace, so the process stays where it is; BPF fds are
    process-wide and usable from anywhere.

    Raises:
        BackendError: the namespace does not exist.
    """
    if netns is None:
        return work()
    path = f"/run/netns/{netns}"
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            failure.append(BackendError(f"no network namespace {netns!r}: {exc.strerror}"))
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                failure.append(BackendError(f"entering {netns!r}: {os.strerror(err)}"))
                return
            result.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=run, name=f"fqe-netns-{netns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _hook(ifindex: int, point: int) -> _TcHook:
    return _TcHook(sz=ctypes.sizeof(_TcHook), ifindex=ifindex, attach_point=point)


def tc_attach(ifindex: int, ingress_fd: int, egress_fd: int) -> None:
    """Attach our filter pair to an interface's clsact hooks (replacing ours if there)."""
    lb = lib()
    for point, fd in ((BPF_TC_INGRESS, ingress_fd), (BPF_TC_EGRESS, egress_fd)):
        hook = _hook(ifindex, point)
        rc = lb.bpf_tc_hook_create(ctypes.byref(hook))
        if rc < 0 and rc != -errno.EEXIST:
            _check(rc, f"creating clsact on ifindex {ifindex}")
        opts = _TcOpts(
            sz=ctypes.sizeof(_TcOpts),
            prog_fd=fd,
            flags=BPF_TC_F_REPLACE,
            handle=TC_HANDLE,
            priority=TC_PRIORITY,
        )
        _check(lb.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)), "attaching to TC")


def tc_detach(ifindex: int) -> None:
    """Remove our filters from an interface (absent ones are no error)."""
    lb = lib()
    for point in (BPF_TC_INGRESS, BPF_TC_EGRESS):
        hook = _hook(ifindex, point)
        opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=TC_HANDLE, priority=TC_PRIORITY)
        rc = lb.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
        if rc < 0 and rc not in (-errno.ENOENT, -errno.EINVAL, -errno.ENODEV):
            _check(rc, f"detaching from ifindex {ifindex}")


def test_run(prog_fd: int, packet: bytes, repeat: int) -> tuple[int, int]:
    """Run a program ``repeat`` times on ``packet`` in the kernel (``BPF_PROG_TEST_RUN``).

    Returns:
        The program's return value and the kernel's mean time per run in ns.
    """
    buf = ctypes.create_string_buffer(packet, len(packet))
    out = ctypes.create_string_buffer(len(packet) + 256)
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        data_in=ctypes.addressof(buf),
        data_size_in=len(packet),
        data_out=ctypes.addressof(out),
        data_size_out=len(out),
        repeat=repeat,
    )
    _check(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")
    return opts.retval, opts.duration
