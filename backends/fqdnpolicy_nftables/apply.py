"""Handing rendered nftables transactions to the kernel.

Two ways in, same effect: libnftables (``import nftables``, Debian's python3-nftables, only
importable under the system interpreter) when it is importable and the target is the current
network namespace; else the ``nft`` binary reading the transaction from stdin, run through
``ip netns exec NAME`` for a named namespace. Either way the whole input is one transaction:
the kernel applies all of it or nothing.
"""

from __future__ import annotations

import subprocess
from typing import Any

from fqdnpolicy.backend_tools import check_netns, find_tool
from fqdnpolicy.backends import BackendError

__all__ = ["NftRunner"]

#: Bound on one nft call; a 1M-element ruleset takes a few seconds.
TIMEOUT = 120.0
_STDERR_MAX = 2000


def _libnftables() -> Any | None:
    try:
        import nftables  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return nftables.Nftables()


class NftRunner:
    """Runs nft transactions (text or JSON), optionally in a named network namespace.

    Args:
        nft: Path or name of the ``nft`` binary.
        ip: Path or name of the ``ip`` binary (for ``ip netns``).
        use_library: Use libnftables when importable and no namespace is given.
    """

    def __init__(self, nft: str = "nft", ip: str = "ip", *, use_library: bool = True) -> None:
        self.nft = nft
        self.ip = ip
        self._lib = _libnftables() if use_library else None

    def run(
        self,
        payload: str,
        *,
        netns: str | None = None,
        json_input: bool = False,
        check: bool = False,
    ) -> str:
        """Run one transaction; return nft's output.

        Raises:
            BackendError: nft refused the transaction (nothing was applied) or could not run.
        """
        if not payload.strip():
            return ""
        if netns is None and self._lib is not None:
            return self._run_library(payload, json_input=json_input, check=check)
        argv = [find_tool(self.nft, "nftables")]
        if json_input:
            argv.append("-j")
        if check:
            argv.append("-c")
        argv += ["-f", "-"]
        if netns is not None:
            argv = [find_tool(self.ip, "iproute2"), "netns", "exec", check_netns(netns), *argv]
        try:
            done = subprocess.run(
                argv, input=payload.encode(), capture_output=True, timeout=TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"running nft failed: {exc}") from exc
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace")[:_STDERR_MAX]
            raise BackendError(f"nft refused the transaction (exit {done.returncode}): {err}")
        return done.stdout.decode(errors="replace")

    def _run_library(self, payload: str, *, json_input: bool, check: bool) -> str:
        lib = self._lib
        assert lib is not None
        lib.set_dry_run(check)
        try:
            if json_input:
                rc, out, err = lib.json_cmd(_loads(payload))
            else:
                rc, out, err = lib.cmd(payload)
        finally:
            lib.set_dry_run(False)
        if rc != 0:
            raise BackendError(f"nft refused the transaction: {str(err)[:_STDERR_MAX]}")
        return str(out)

    def list_table(self, table: str, *, netns: str | None = None, json_output: bool = False) -> str:
        """Return ``nft list table inet TABLE`` (text or JSON) from a namespace."""
        argv = [find_tool(self.nft, "nftables")]
        if json_output:
            argv.append("-j")
        argv += ["list", "table", "inet", table]
        if netns is not None:
            argv = [find_tool(self.ip, "iproute2"), "netns", "exec", check_netns(netns), *argv]
        done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
        if done.returncode != 0:
            raise BackendError(done.stderr.decode(errors="replace")[:_STDERR_MAX])
        return done.stdout.decode(errors="replace")


def _loads(payload: str) -> Any:
    import json

    return json.loads(payload)
