"""Handing rendered nftables transactions to the kernel.

Two ways in, same effect: libnftables (``libnftables.so.1`` through ctypes, see
:mod:`fqdnpolicy_nftables.libnft`) when it loads, in the current namespace or a named one
through a worker thread that entered it; else the ``nft`` binary reading the transaction from
stdin, run through ``ip netns exec NAME`` for a named namespace. Either way the whole input is
one transaction: the kernel applies all of it or nothing.
"""

from __future__ import annotations

import subprocess

from fqdnpolicy.backend_tools import check_netns, find_tool
from fqdnpolicy.backends import BackendError
from fqdnpolicy_nftables.libnft import LibNft, load

__all__ = ["NftRunner"]

#: Bound on one nft call; a 1M-element ruleset takes a few seconds.
TIMEOUT = 120.0
_STDERR_MAX = 2000


class NftRunner:
    """Runs nft transactions (text or JSON), optionally in a named network namespace.

    Args:
        nft: Path or name of the ``nft`` binary.
        ip: Path or name of the ``ip`` binary (for ``ip netns``).
        use_library: Use libnftables when it loads (else, or when False, the binary).
    """

    def __init__(self, nft: str = "nft", ip: str = "ip", *, use_library: bool = True) -> None:
        self.nft = nft
        self.ip = ip
        lib = load() if use_library else None
        self._lib = None if lib is None else LibNft(lib)

    @property
    def uses_library(self) -> bool:
        """True when transactions go through libnftables rather than the binary."""
        return self._lib is not None

    def release(self, netns: str | None) -> None:
        """Let go of the libnftables worker of one namespace (it keeps the namespace alive)."""
        if self._lib is not None:
            self._lib.release(netns)

    def close(self) -> None:
        """Let go of every libnftables worker."""
        if self._lib is not None:
            self._lib.close()

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
        if self._lib is not None:
            return self._lib.run(
                payload, netns=netns, json_io=json_input, dry_run=check, timeout=TIMEOUT
            )
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

    def list_table(self, table: str, *, netns: str | None = None, json_output: bool = False) -> str:
        """Return ``nft list table inet TABLE`` (text or JSON) from a namespace."""
        if self._lib is not None:
            command = f"list table inet {table}"
            return self._lib.run(command, netns=netns, json_io=json_output, timeout=TIMEOUT)
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
