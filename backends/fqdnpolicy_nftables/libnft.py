"""libnftables through ctypes, one long-lived context per network namespace.

Starting ``ip netns exec NAME nft -f -`` for every transaction costs two process start-ups,
far more than the kernel's share of a small element update. Here ``libnftables.so.1`` (Debian's
``libnftables1``, a dependency of the ``nftables`` package) is loaded once, and each target
namespace gets one worker thread that entered it (``setns``) and keeps an nft context there:
a netlink socket keeps the namespace it was opened in, and a context is not thread-safe, so
every call for that namespace runs on that thread, one at a time.

A worker notices its namespace being replaced (``ip netns del`` then ``add`` under the same
name) by the identity of ``/run/netns/NAME`` and starts afresh; workers of namespaces that no
longer exist are let go at the next call, and all of them by :meth:`LibNft.close`. A worker
keeps its namespace alive while it runs, which is why they are let go eagerly.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import threading
from typing import Any

from fqdnpolicy.backend_tools import check_netns
from fqdnpolicy.backends import BackendError

__all__ = ["LibNft", "load"]

_CLONE_NEWNET = 0x40000000
# nft_ctx_output_flags: NFT_CTX_OUTPUT_JSON. With it set, input is parsed as JSON first.
_OUTPUT_JSON = 1 << 4
_STDERR_MAX = 2000
_TRIM_AFTER = 1 << 20  # payload size above which freed memory is handed back to the system


def load() -> Any | None:
    """Return ``libnftables.so.1`` with its prototypes declared, or None when it is absent."""
    try:
        lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
    except OSError:
        return None
    ctx = ctypes.c_void_p
    for name, restype, argtypes in (
        ("nft_ctx_new", ctx, [ctypes.c_uint32]),
        ("nft_ctx_free", None, [ctx]),
        ("nft_ctx_buffer_output", ctypes.c_int, [ctx]),
        ("nft_ctx_buffer_error", ctypes.c_int, [ctx]),
        ("nft_ctx_get_output_buffer", ctypes.c_char_p, [ctx]),
        ("nft_ctx_get_error_buffer", ctypes.c_char_p, [ctx]),
        ("nft_ctx_set_dry_run", None, [ctx, ctypes.c_bool]),
        ("nft_ctx_output_get_flags", ctypes.c_uint, [ctx]),
        ("nft_ctx_output_set_flags", None, [ctx, ctypes.c_uint]),
        ("nft_run_cmd_from_buffer", ctypes.c_int, [ctx, ctypes.c_char_p]),
    ):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def _malloc_trim() -> None:
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def _netns_path(netns: str) -> str:
    return f"/run/netns/{check_netns(netns)}"


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Worker:
    """One thread inside one namespace, holding one nft context."""

    def __init__(self, lib: Any, path: str | None, identity: tuple[int, int] | None) -> None:
        self.lib = lib
        self.path = path
        self.identity = identity
        self._ctx: int | None = None
        self.broken = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="fqdnpolicy-nft", initializer=self._enter
        )

    def _enter(self) -> None:
        # Runs first on the worker's own thread; on failure the pool refuses all work.
        if self.path is not None:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({self.path}) failed")
            finally:
                os.close(fd)
        self._ctx = self._new_context()

    def _new_context(self) -> int:
        ctx: int | None = self.lib.nft_ctx_new(0)
        if not ctx:
            raise OSError("nft_ctx_new failed")
        self.lib.nft_ctx_buffer_output(ctx)
        self.lib.nft_ctx_buffer_error(ctx)
        return ctx

    def _run(self, payload: bytes, json_io: bool, dry_run: bool) -> tuple[int, str, str]:
        if self._ctx is None:  # a fresh context could not be made after the last call
            self._ctx = self._new_context()
        lib, ctx = self.lib, self._ctx
        flags = lib.nft_ctx_output_get_flags(ctx)
        lib.nft_ctx_output_set_flags(ctx, flags | _OUTPUT_JSON if json_io else flags)
        lib.nft_ctx_set_dry_run(ctx, dry_run)
        try:
            rc = lib.nft_run_cmd_from_buffer(ctx, payload)
            out = lib.nft_ctx_get_output_buffer(ctx) or b""
            err = lib.nft_ctx_get_error_buffer(ctx) or b""
        finally:
            lib.nft_ctx_set_dry_run(ctx, False)
            lib.nft_ctx_output_set_flags(ctx, flags)
            if len(payload) > _TRIM_AFTER:
                # A large ruleset leaves its objects in the context's cache and its peak in
                # this thread's malloc arena: start a fresh context and hand the memory back.
                self._free()
                self._ctx = self._new_context()
                _malloc_trim()
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def _free(self) -> None:
        if self._ctx is not None:
            self.lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def submit(self, payload: bytes, json_io: bool, dry_run: bool, timeout: float) -> str:
        try:
            future = self._pool.submit(self._run, payload, json_io, dry_run)
            rc, out, err = future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            raise BackendError(f"libnftables did not answer within {timeout:g}s") from exc
        except concurrent.futures.BrokenExecutor as exc:
            self.broken = True  # entering the namespace failed: the next call tries afresh
            raise BackendError(f"running libnftables failed: {exc.__cause__ or exc}") from exc
        except (OSError, RuntimeError) as exc:
            raise BackendError(f"running libnftables failed: {exc}") from exc
        if rc != 0:
            raise BackendError(f"nft refused the transaction: {err[:_STDERR_MAX]}")
        return out

    def close(self) -> None:
        # The context is freed on its own thread, after any call still running there.
        with contextlib.suppress(RuntimeError):  # already shut down
            self._pool.submit(self._free)
        self._pool.shutdown(wait=False)


class LibNft:
    """Runs nft commands through libnftables, inside named network namespaces or here.

    Args:
        lib: What :func:`load` returned.
    """

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self._lock = threading.Lock()
        self._workers: dict[str | None, _Worker] = {}

    def run(
        self,
        payload: str,
        *,
        netns: str | None = None,
        json_io: bool = False,
        dry_run: bool = False,
        timeout: float = 120.0,
    ) -> str:
        """Run ``payload`` (commands, or JSON with ``json_io``) as one transaction.

        ``json_io`` also makes listings come back as JSON.

        Returns:
            What nft printed.

        Raises:
            BackendError: nft refused it (nothing was applied), the namespace does not exist,
                or libnftables could not run.
            InvalidPolicy: a bad namespace name.
        """
        worker = self._worker(netns)
        return worker.submit(payload.encode(), json_io, dry_run, timeout)

    def _worker(self, netns: str | None) -> _Worker:
        path = None if netns is None else _netns_path(netns)
        identity = None if path is None else _identity(path)
        with self._lock:
            for name, worker in list(self._workers.items()):
                # Gone or replaced (ours or any other): let it go, so it frees the namespace.
                gone = worker.path is not None and _identity(worker.path) != worker.identity
                if gone or worker.broken:
                    del self._workers[name]
                    worker.close()
            if path is not None and identity is None:
                raise BackendError(f"no network namespace named {netns!r}")
            found = self._workers.get(netns)
            if found is None:
                found = self._workers[netns] = _Worker(self.lib, path, identity)
            return found

    def release(self, netns: str | None) -> None:
        """Let the worker of one namespace go (a later :meth:`run` there starts a new one)."""
        with self._lock:
            worker = self._workers.pop(netns, None)
        if worker is not None:
            worker.close()

    def close(self) -> None:
        """Let every worker go (a later :meth:`run` starts a new one)."""
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()
