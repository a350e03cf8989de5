"""Hold mode: DNS responses wait in NFQUEUE until the datapath allows their addresses.

Without it, a workload that connects as soon as its answer arrives races the datapath: the
answer reaches the workload before the kernel holds the new address, and the first packet is
dropped. Calico's DelayDNSResponse and Cilium's DNS proxy close that race the same way: the
response is held until the rules exist.

:class:`DnsHold` first asks the sync's backend to render the rule sending DNS responses to
the queue (:meth:`~fqdnpolicy.backends.Backend.hold_dns`; the iptables backend does, into
its own chains, for the workloads' interfaces) and waits until the sync applied it. A
backend that cannot (nftables: its ``queue`` statement is not built into every kernel, and
its full apply recreates the table, dropping queued packets; eBPF) gets a rule inserted
here instead: iptables ``NFQUEUE`` through ``iptables-nft`` and ``ip6tables-nft`` on the
forward path for UDP and TCP from source port 53. It then reads the queued responses
(:mod:`fqdnpolicy.dns.nfqueue`), has the cache learn them, waits until the
:class:`~fqdnpolicy.sync.DatapathSync` has applied what they changed, and only then accepts
them. A response still unprogrammed after ``bound`` seconds is accepted (``fail="open"``) or
dropped (``fail="closed"``), and counted. Responses that teach nothing (untrusted servers,
known names) are released as soon as their batch is learned.

While responses are held, a full nftables apply (which deletes and recreates a table) makes
the kernel drop every queued packet, so policy changes during a burst of DNS cost the
resolver a retry; member changes (deltas) never do.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import attrs

from fqdnpolicy.backend_tools import check_netns, find_tool
from fqdnpolicy.dns.nfqueue import ACCEPT, DROP, QueueSocket
from fqdnpolicy.dns.snoop import in_netns, ip_payload
from fqdnpolicy.errors import InvalidPolicy, Problem

if TYPE_CHECKING:
    from fqdnpolicy.dns import DNSCache
    from fqdnpolicy.sync import DatapathSync

__all__ = ["DnsHold", "HoldError", "HoldStats"]

_COMMENT = "fqdnpolicy-hold"
_RULE_WAIT = 10.0  # seconds the sync has to apply the backend's hold rule
log = logging.getLogger(__name__)


class HoldError(RuntimeError):
    """The hold mode cannot run here (no iptables-nft, no NFQUEUE); the message says why."""


@attrs.frozen
class HoldStats:
    """What a :class:`DnsHold` did.

    Attributes:
        held: Responses queued and read.
        released: Responses accepted once their addresses were programmed (or taught nothing).
        timed_out: Responses still unprogrammed at the bound.
        dropped: Of those, the ones dropped (``fail="closed"``).
        passed: Packets accepted unread (not a DNS message this module parses).
    """

    held: int
    released: int
    timed_out: int
    dropped: int
    passed: int


def _rules(queue: int) -> list[list[str]]:
    target = ["-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]
    tag = ["-m", "comment", "--comment", _COMMENT]
    return [["FORWARD", "-p", proto, "--sport", "53", *tag, *target] for proto in ("udp", "tcp")]


class DnsHold:
    """Hold DNS responses forwarded through this node until the sync programmed them.

    Args:
        cache: The DNS cache to learn into (its trusted servers decide).
        sync: The datapath sync whose progress releases responses.
        queue: The NFQUEUE number.
        netns: Work inside this named network namespace.
        bound: Most seconds a response is held.
        fail: At the bound, ``open`` releases the response, ``closed`` drops it.
        install_rules: Have the rules sending responses to the queue made (and removed at
            close): by the sync's backend when it can render them
            (:meth:`~fqdnpolicy.backends.Backend.hold_dns`), else inserted here; False when
            the operator installs them.

    Raises:
        InvalidPolicy: a bad option.
        HoldError: the rules or the queue could not be set up (nothing is left installed).
    """

    def __init__(
        self,
        cache: DNSCache,
        sync: DatapathSync,
        *,
        queue: int = 5353,
        netns: str | None = None,
        bound: float = 1.0,
        fail: Literal["open", "closed"] = "open",
        install_rules: bool = True,
    ) -> None:
        problems = []
        if not (isinstance(bound, int | float) and 0 < bound <= 30):
            problems.append(Problem(f"must be in (0, 30] seconds, not {bound!r}", path="bound"))
        if fail not in ("open", "closed"):
            problems.append(Problem(f"must be open or closed, not {fail!r}", path="fail"))
        if not (isinstance(queue, int) and 0 <= queue <= 65535):
            problems.append(Problem(f"must be 0..65535, not {queue!r}", path="queue"))
        if problems:
            raise InvalidPolicy(problems)
        self.cache, self.sync = cache, sync
        self.queue, self.netns, self.bound, self.fail = queue, netns, float(bound), fail
        self._installed: list[tuple[str, list[str]]] = []
        try:
            self._socket = in_netns(netns, lambda: QueueSocket(queue, fail_open=fail == "open"))
        except OSError as exc:
            raise HoldError(f"cannot bind NFQUEUE {queue}: {exc}") from exc
        self._by_backend = False
        try:
            if install_rules and sync.backend.hold_dns(queue):
                self._by_backend = True
                try:
                    self._apply_backend_rule(queue)
                except HoldError:
                    sync.backend.hold_dns(None)
                    sync.resync()
                    raise
            elif install_rules:
                self._install()
        except HoldError:
            self._socket.close()
            raise
        self._held = self._released = self._timed_out = self._dropped = self._passed = 0
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="fqdnpolicy-hold", daemon=True)
        self._thread.start()

    def _apply_backend_rule(self, queue: int | None) -> None:
        """Wait until the sync applied a full rendering begun after the backend's change.

        A full apply under way when the backend changed may have rendered before it; the
        one after it cannot have, so two full applies are waited for (asking again each
        round, since a request made while one is under way may be merged into it).
        """
        target = self.sync.stats().full_applies + 2
        deadline = time.monotonic() + _RULE_WAIT
        while self.sync.stats().full_applies < target:
            if time.monotonic() > deadline:
                error = self.sync.stats().last_error or "no full apply in time"
                raise HoldError(f"the {self.sync.backend.name} backend's hold rule: {error}")
            seen = self.sync.stats().full_applies
            self.sync.resync()
            round_end = min(deadline, time.monotonic() + 0.5)
            while self.sync.stats().full_applies == seen and time.monotonic() < round_end:
                time.sleep(0.005)
        if queue is not None:
            log.info("DNS responses held by the %s backend's rule", self.sync.backend.name)

    def _iptables(self, tool: str, action: str, rule: Sequence[str]) -> None:
        argv = [find_tool(tool, "iptables"), "-w", "5", action, *rule]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", check_netns(self.netns), *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise HoldError(f"{tool} {action} failed: {done.stderr.strip()[:500]}")

    def _install(self) -> None:
        try:
            for tool in ("iptables-nft", "ip6tables-nft"):
                for rule in _rules(self.queue):
                    self._iptables(tool, "-I", rule)
                    self._installed.append((tool, rule))
        except (HoldError, InvalidPolicy):
            self._uninstall()
            raise

    def _uninstall(self) -> None:
        while self._installed:
            tool, rule = self._installed.pop()
            with contextlib.suppress(HoldError):  # removed by hand already: nothing to undo
                self._iptables(tool, "-D", rule)

    def stats(self) -> HoldStats:
        """Return the counters so far."""
        return HoldStats(self._held, self._released, self._timed_out, self._dropped, self._passed)

    def close(self) -> None:
        """Remove the rules (responses flow unheld again), then stop and unbind the queue."""
        self._uninstall()
        if self._by_backend:
            self._by_backend = False
            self.sync.backend.hold_dns(None)
            # Without the rule the queue's reader may go: --queue-bypass lets responses
            # through meanwhile, so a failure here only leaves the rule in place.
            with contextlib.suppress(HoldError):
                self._apply_backend_rule(None)
        self._stop_w.send(b"x")
        self._thread.join()
        self._socket.close()
        self._stop_r.close()
        self._stop_w.close()

    def __enter__(self) -> DnsHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._socket.fileno(), select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        stop = self._stop_r.fileno()
        while True:
            if stop in [fd for fd, _ in poller.poll()]:
                return
            try:
                packets = self._socket.receive()
            except OSError:
                continue  # ENOBUFS: the kernel dropped (or, failing open, passed) some
            held: list[int] = []
            responses: list[tuple[bytes, str]] = []
            for packet in packets:
                parsed = ip_payload(packet.payload)
                if parsed is None:
                    self._socket.verdict(packet.packet_id, ACCEPT)
                    self._passed += 1
                else:
                    held.append(packet.packet_id)
                    responses.append((parsed[0], parsed[1]))
            if held:
                self._release(held, responses)

    def _release(self, held: list[int], responses: list[tuple[bytes, str]]) -> None:
        deadline = time.monotonic() + self.bound
        self._held += len(held)
        self.cache.observe_many(responses)
        programmed = self.sync.wait(self.sync.mark(), max(0.0, deadline - time.monotonic()))
        verdict = ACCEPT
        if not programmed:
            self._timed_out += len(held)
            if self.fail == "closed":
                verdict = DROP
                self._dropped += len(held)
        if verdict == ACCEPT:
            self._released += len(held)
        for packet_id in held:
            self._socket.verdict(packet_id, verdict)
