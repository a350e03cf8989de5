"""Running ipset and iptables-restore/-save, optionally in a named network namespace.

Every tool reads its input from stdin; for a named namespace it runs through ``ip netns exec
NAME``. A refusal becomes a :class:`~fqdnpolicy.backends.BackendError` that quotes the tool's
message and the input line it names.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from typing import Literal

import attrs

from fqdnpolicy.backend_tools import check_netns, find_tool
from fqdnpolicy.backends import BackendError

__all__ = ["TIMEOUT", "Saved", "ToolRefused", "ToolRunner", "Variant"]

Variant = Literal["nft", "legacy"]
#: Bound on one tool run; a ruleset of a hundred thousand rules takes a few seconds.
TIMEOUT = 300.0
_STDERR_MAX = 2000
_LINE = re.compile(r"line:? (\d+)")
_SAVE_CHAIN = re.compile(r":(\S+) ")


class ToolRefused(BackendError):
    """A tool refused its input; ``line`` is the input line it named (1-based), if any."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


@attrs.frozen
class Saved:
    """What ``iptables-save -t filter`` shows of one family, as far as we care.

    Attributes:
        chains: Every user and built-in chain of the filter table.
        rules: The ``-A CHAIN ...`` lines of the table, in order.
    """

    chains: tuple[str, ...]
    rules: tuple[str, ...]

    def of_chains(self, wanted: set[str]) -> list[str]:
        """The rules of the chains in ``wanted``."""
        return [r for r in self.rules if r.split(" ", 2)[1] in wanted]


class ToolRunner:
    """Runs the tools of one iptables variant.

    Args:
        variant: ``nft`` (``iptables-nft-restore``...: rules in nf_tables through the
            iptables API) or ``legacy`` (``iptables-legacy-restore``...: x_tables).
        ip: The ``ip`` binary (for ``ip netns``).
        ipset: The ``ipset`` binary.
    """

    def __init__(self, variant: Variant = "nft", *, ip: str = "ip", ipset: str = "ipset") -> None:
        if variant not in ("nft", "legacy"):
            raise BackendError(f"unknown iptables variant {variant!r}: 'nft' or 'legacy'")
        self.variant = variant
        self.ip = ip
        self.ipset = ipset

    def _argv(self, argv: Sequence[str], netns: str | None) -> list[str]:
        if netns is None:
            return list(argv)
        return [find_tool(self.ip, "iproute2"), "netns", "exec", check_netns(netns), *argv]

    def _binary(self, family: int, what: Literal["restore", "save"]) -> str:
        base = "iptables" if family == 4 else "ip6tables"
        return find_tool(f"{base}-{self.variant}-{what}", "iptables")

    def _run(
        self, what: str, argv: Sequence[str], payload: str, netns: str | None
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                self._argv(argv, netns),
                input=payload.encode(),
                capture_output=True,
                timeout=TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"running {what} failed: {exc}") from exc

    def _refused(
        self, what: str, done: subprocess.CompletedProcess[bytes], payload: str
    ) -> ToolRefused:
        """The error for a refused input: the tool's words and the line it named."""
        err = done.stderr.decode(errors="replace").strip()
        message = f"{what} refused the input (exit {done.returncode}): {err[:_STDERR_MAX]}"
        found = _LINE.search(err)
        number = None if found is None else int(found.group(1))
        if number is not None:
            line = _nth_line(payload, number)
            if line is not None:
                message += f"\noffending line {number}: {line}"
        return ToolRefused(message, number)

    def ipset_restore(self, payload: str, *, netns: str | None = None) -> None:
        """Run ``ipset restore`` on ``payload`` (lines run in order; it stops at an error).

        Raises:
            BackendError: ipset refused a line (the message names it), or could not run.
        """
        if not payload.strip():
            return
        argv = [find_tool(self.ipset, "ipset"), "restore"]
        done = self._run("ipset", argv, payload, netns)
        if done.returncode != 0:
            raise self._refused("ipset", done, payload)

    def restore(
        self, family: int, payload: str, *, netns: str | None = None, test: bool = False
    ) -> None:
        """Run one ``iptables-restore --noflush`` transaction (all of it, or nothing).

        Raises:
            BackendError: the tool refused the transaction (nothing was applied).
        """
        binary = self._binary(family, "restore")
        argv = [binary, "--noflush", *(["--test"] if test else [])]
        done = self._run(os.path.basename(binary), argv, payload, netns)
        if done.returncode != 0:
            raise self._refused(os.path.basename(binary), done, payload)

    def ipset_names(self, *, netns: str | None = None) -> set[str]:
        """The names of every set in the namespace."""
        argv = [find_tool(self.ipset, "ipset"), "list", "-n"]
        done = self._run("ipset", argv, "", netns)
        if done.returncode != 0:
            raise self._refused("ipset list", done, "")
        return set(done.stdout.decode(errors="replace").split())

    def ipset_members(self, *, netns: str | None = None) -> dict[str, set[str]]:
        """Every set in the namespace and its members, as ``ipset save`` writes them.

        Members are addresses, networks or ``address,proto:port``, without their timeouts.
        """
        argv = [find_tool(self.ipset, "ipset"), "save"]
        done = self._run("ipset save", argv, "", netns)
        if done.returncode != 0:
            raise self._refused("ipset save", done, "")
        found: dict[str, set[str]] = {}
        for line in done.stdout.decode(errors="replace").splitlines():
            words = line.split(" ", 3)
            if words[0] == "create" and len(words) > 1:
                found[words[1]] = set()
            elif words[0] == "add" and len(words) > 2:
                found.setdefault(words[1], set()).add(words[2])
        return found

    def save(self, family: int, *, netns: str | None = None) -> Saved:
        """The chains and rules of the filter table of one family."""
        binary = self._binary(family, "save")
        done = self._run(os.path.basename(binary), [binary, "-t", "filter"], "", netns)
        if done.returncode != 0:
            raise self._refused(os.path.basename(binary), done, "")
        chains: list[str] = []
        rules: list[str] = []
        for line in done.stdout.decode(errors="replace").splitlines():
            if line.startswith("-A "):
                rules.append(line)
            elif (found := _SAVE_CHAIN.match(line)) is not None:
                chains.append(found.group(1))
        return Saved(tuple(chains), tuple(rules))


def _nth_line(text: str, number: int) -> str | None:
    """Line ``number`` (1-based) of ``text``, without reading past it."""
    at = 0
    for _ in range(number - 1):
        at = text.find("\n", at) + 1
        if at == 0:
            return None
    end = text.find("\n", at)
    line = text[at:] if end < 0 else text[at:end]
    return line if line or end >= 0 else None
