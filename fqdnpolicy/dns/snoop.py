"""DNS snooping: responses read off interfaces into a :class:`~fqdnpolicy.dns.DNSCache`.

A :class:`Snooper` opens one ``AF_PACKET`` socket per interface (standard library only) and
attaches a classic BPF socket filter, so the kernel hands it only IPv4 and IPv6 packets from
UDP or TCP source port 53 (:data:`DNS_FILTER`). Responses are fed to
:meth:`DNSCache.observe_many` in batches, each with its server as ``ip:port``: the cache's
trusted servers decide what is learned, so a response from anywhere else is read and
rejected there (counted in the cache's stats).

Handled: Ethernet framing without VLAN tags; IPv4 (any header length) and IPv6 whose next
header is UDP or TCP directly; TCP segments carrying one whole DNS message after its length
prefix. Not handled (skipped, counted as ``unparsed``): VLAN-tagged frames, IPv6 extension
headers, IP fragments, and TCP responses spread over several segments.

:func:`ip_payload` parses one IP packet; the hold mode (:mod:`fqdnpolicy.dns.hold`), which
gets IP packets from NFQUEUE, uses it too.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import attrs

from fqdnpolicy.backend_tools import check_netns
from fqdnpolicy.errors import InvalidPolicy, Problem

if TYPE_CHECKING:
    from fqdnpolicy.dns import DNSCache

__all__ = ["DNS_FILTER", "SnoopStats", "Snooper", "in_netns", "ip_payload"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_CLONE_NEWNET = 0x40000000

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SOL_PACKET = 263
PACKET_STATISTICS = 6
_ETH_HEADER = 14
_SNAPLEN = 65535
_SERVER_NAMES = 1024  # remembered "ip:port" spellings of source addresses
# What a packet socket's read says once its interface is gone or down: it reads no more.
_INTERFACE_GONE = frozenset({errno.ENETDOWN, errno.ENXIO, errno.ENODEV})

# Classic BPF: (code, jt, jf, k). Accept IPv4/IPv6 UDP or TCP with source port 53 (IPv4:
# first fragments only), drop everything else.
DNS_FILTER: tuple[tuple[int, int, int, int], ...] = (
    (0x28, 0, 0, 12),  # 0  ldh [12]              ethertype
    (0x15, 0, 8, 0x0800),  # 1  jeq IPv4 ? 2 : 10
    (0x30, 0, 0, 23),  # 2  ldb [23]              IPv4 protocol
    (0x15, 1, 0, 17),  # 3  jeq UDP ? 5 : 4
    (0x15, 0, 12, 6),  # 4  jeq TCP ? 5 : drop
    (0x28, 0, 0, 20),  # 5  ldh [20]              flags and fragment offset
    (0x45, 10, 0, 0x1FFF),  # 6  jset offset ? drop : 7
    (0xB1, 0, 0, 14),  # 7  ldxb 4*([14]&0xf)     IPv4 header length
    (0x48, 0, 0, 14),  # 8  ldh [x+14]            source port
    (0x15, 6, 7, 53),  # 9  jeq 53 ? accept : drop
    (0x15, 0, 6, 0x86DD),  # 10 jeq IPv6 ? 11 : drop
    (0x30, 0, 0, 20),  # 11 ldb [20]              IPv6 next header
    (0x15, 1, 0, 17),  # 12 jeq UDP ? 14 : 13
    (0x15, 0, 3, 6),  # 13 jeq TCP ? 14 : drop
    (0x28, 0, 0, 54),  # 14 ldh [54]              source port
    (0x15, 0, 1, 53),  # 15 jeq 53 ? accept : drop
    (0x06, 0, 0, _SNAPLEN),  # 16 accept
    (0x06, 0, 0, 0),  # 17 drop
)


def _filter_program() -> tuple[bytes, object]:
    """The filter as ``struct sock_fprog`` (and the instructions it points to, kept alive)."""
    code = b"".join(struct.pack("HBBI", *insn) for insn in DNS_FILTER)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(DNS_FILTER), ctypes.addressof(buffer))
    return fprog, buffer


def in_netns(netns: str | None, work: Callable[[], T]) -> T:
    """Run ``work`` in named network namespace ``netns`` (None: here) and return its result.

    Sockets keep the namespace they were made in, so a socket opened this way reads that
    namespace's interfaces for its whole life. ``work`` runs on a short-lived thread of its
    own, which alone enters the namespace.

    Raises:
        InvalidPolicy: no namespace of that name.
        OSError: entering it failed (root needed).
    """
    if netns is None:
        return work()
    path = f"/run/netns/{check_netns(netns)}"
    if not os.path.exists(path):
        raise InvalidPolicy(Problem(f"no network namespace named {netns!r}", path="netns"))
    result: list[T] = []
    error: list[BaseException] = []

    def enter_and_work() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc().setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({path}) failed")
            finally:
                os.close(fd)
            result.append(work())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=enter_and_work, name="fqdnpolicy-netns")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _server(address: bytes, port: int) -> str:
    if len(address) == 4:
        return f"{ipaddress.IPv4Address(address)}:{port}"
    return f"[{ipaddress.IPv6Address(address)}]:{port}"


def _split(view: memoryview) -> tuple[memoryview, bytes, int, bytes] | None:
    """One IP packet's DNS part: ``(message, source address, source port, destination)``."""
    if len(view) < 20:
        return None
    version = view[0] >> 4
    if version == 4:
        header = (view[0] & 0x0F) * 4
        if header < 20 or struct.unpack_from("!H", view, 6)[0] & 0x3FFF:
            return None  # fragments (more-fragments or an offset)
        proto, src, dst = view[9], bytes(view[12:16]), bytes(view[16:20])
        total = min(len(view), struct.unpack_from("!H", view, 2)[0])
    elif version == 6 and len(view) >= 40:
        header = 40
        proto, src, dst = view[6], bytes(view[8:24]), bytes(view[24:40])
        total = min(len(view), 40 + struct.unpack_from("!H", view, 4)[0])
    else:
        return None
    l4 = view[header:total]
    if proto == 17 and len(l4) >= 8:
        sport, message = struct.unpack_from("!H", l4)[0], l4[8:]
    elif proto == 6 and len(l4) >= 20:
        sport, offset = struct.unpack_from("!H", l4)[0], (l4[12] >> 4) * 4
        data = l4[offset:]
        if len(data) < 2 or struct.unpack_from("!H", data)[0] != len(data) - 2:
            return None  # no data, or a message not whole in this segment
        message = data[2:]
    else:
        return None
    if sport != 53 or len(message) < 12:
        return None
    return message, src, sport, dst


def ip_payload(packet: bytes | memoryview) -> tuple[bytes, str, str] | None:
    """Parse one IP packet from source port 53: ``(dns message, server, client)`` or None.

    ``server`` is ``ip:port`` (``[v6]:port``), ``client`` the destination address. None for
    anything not handled (see the module docstring).
    """
    split = _split(memoryview(packet))
    if split is None:
        return None
    message, src, sport, dst = split
    return bytes(message), _server(src, sport), str(ipaddress.ip_address(dst))


@attrs.frozen
class SnoopStats:
    """What a :class:`Snooper` read.

    Attributes:
        packets: Packets the kernel filter passed.
        responses: DNS messages handed to the cache (trusted or not: the cache decides).
        unparsed: Packets skipped (see the module docstring for what is not handled).
        batches: Calls to ``observe_many``.
        dropped: Packets the filter passed that the kernel dropped because the socket's
            receive buffer was full (reading fell behind): responses never seen.
        lost: Interfaces no longer read because they went down or away without
            :meth:`Snooper.remove_interface` (a pod deleted while the agent was down, say).
    """

    packets: int
    responses: int
    unparsed: int
    batches: int
    dropped: int = 0
    lost: int = 0


class Snooper:
    """Read DNS responses on interfaces and feed them to a cache, on a thread of its own.

    Args:
        cache: The cache to feed (its trusted servers decide what is learned).
        interfaces: Interface names to read on (more can come and go later:
            :meth:`add_interface`, :meth:`remove_interface`).
        netns: Read in this named network namespace (default: the current one).
        batch: Most responses per ``observe_many`` call.
        buffer_bytes: Receive buffer of each socket, where responses wait while the thread
            is busy learning: bursts beyond it are lost (counted in ``dropped``). Root gets
            it whatever ``net.core.rmem_max`` says; others get at most that.

    Raises:
        InvalidPolicy: an interface that does not exist.
        PermissionError: not allowed to open packet sockets (root or CAP_NET_RAW needed).
    """

    def __init__(
        self,
        cache: DNSCache,
        interfaces: Sequence[str],
        *,
        netns: str | None = None,
        batch: int = 256,
        buffer_bytes: int = 16 << 20,
    ) -> None:
        self._fprog, self._code = _filter_program()
        self.buffer_bytes = buffer_bytes
        self.netns = netns
        opened = in_netns(netns, lambda: self._open_all(interfaces))
        self._sockets: dict[str, socket.socket] = dict(zip(interfaces, opened, strict=True))
        self._changing = threading.Lock()
        self.cache = cache
        self.batch = batch
        self._stop_r, self._stop_w = socket.socketpair()
        self._packets = self._responses = self._unparsed = self._batches = self._dropped = 0
        self._lost = 0
        self._servers: dict[tuple[bytes, int], str] = {}
        self._frame = bytearray(_SNAPLEN)
        self._retired: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name="fqdnpolicy-snoop", daemon=True)
        self._thread.start()

    def _open_all(self, interfaces: Sequence[str]) -> list[socket.socket]:
        known = {name for _, name in socket.if_nameindex()}
        missing = [name for name in interfaces if name not in known]
        if missing:
            raise InvalidPolicy(
                Problem(
                    f"no such interface: {', '.join(missing)}",
                    path="interfaces",
                    hint=f"one of: {', '.join(sorted(known))}",
                )
            )
        opened: list[socket.socket] = []
        try:
            for name in interfaces:
                opened.append(self._open(name))
        except OSError:
            for sock in opened:
                sock.close()
            raise
        return opened

    def _open(self, interface: str) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, self._fprog)
            sock.bind((interface, ETH_P_ALL))
            # Packets queued before the filter was attached passed no filter: drop them.
            sock.setblocking(False)
            while True:
                try:
                    sock.recv(1)
                except BlockingIOError:
                    break
            try:  # beyond net.core.rmem_max: needs CAP_NET_ADMIN
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.buffer_bytes)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.buffer_bytes)
            _kernel_drops(sock)  # counted from here on
        except OSError:
            sock.close()
            raise
        return sock

    def add_interface(self, interface: str) -> None:
        """Start reading on one more interface (nothing if already read).

        Raises:
            InvalidPolicy: no such interface.
        """
        with self._changing:
            if interface in self._sockets:
                return
            (sock,) = in_netns(self.netns, lambda: self._open_all([interface]))
            self._sockets = {**self._sockets, interface: sock}
        self._stop_w.send(b"r")  # the reading thread polls the new set of sockets

    def remove_interface(self, interface: str) -> None:
        """Stop reading on an interface (nothing if not read)."""
        with self._changing:
            sockets = dict(self._sockets)
            sock = sockets.pop(interface, None)
            self._sockets = sockets
            if sock is not None:
                self._dropped += _kernel_drops(sock)
        if sock is not None:
            self._retired.append(sock)  # closed by the reading thread, which may be in it
            self._stop_w.send(b"r")

    def interfaces(self) -> list[str]:
        """The interfaces read now."""
        return list(self._sockets)

    def stats(self) -> SnoopStats:
        """Return the counters so far."""
        with self._changing:  # the kernel resets its count at each read: add them up here
            for sock in self._sockets.values():
                self._dropped += _kernel_drops(sock)
            dropped = self._dropped
        return SnoopStats(
            self._packets, self._responses, self._unparsed, self._batches, dropped, self._lost
        )

    def close(self) -> None:
        """Stop reading and close the sockets (:meth:`stats` keeps their counts)."""
        self._stop_w.send(b"x")
        self._thread.join()
        self.stats()
        for sock in [*self._sockets.values(), *self._retired]:
            sock.close()
        self._stop_r.close()
        self._stop_w.close()

    def __enter__(self) -> Snooper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        stop = self._stop_r.fileno()
        sockets: list[socket.socket] = []
        poller = select.poll()
        changed = True
        while True:
            if changed:  # first round, or interfaces came or went
                sockets = list(self._sockets.values())
                poller = select.poll()
                for fd in (*sockets, self._stop_r):
                    poller.register(fd, select.POLLIN)
                changed = False
            ready = [fd for fd, _ in poller.poll()]
            if stop in ready:
                if b"x" in self._stop_r.recv(4096):
                    return
                while self._retired:  # interfaces removed: their sockets are ours to close
                    self._retired.pop().close()
                changed = True
                continue
            found: list[tuple[bytes, str]] = []
            for sock in sockets:
                if not self._drain(sock, found):
                    changed = True  # that socket is gone: poll the others
            if found:
                self._responses += len(found)
                self._batches += 1
                self.cache.observe_many(found)

    def _drain(self, sock: socket.socket, found: list[tuple[bytes, str]]) -> bool:
        """Read what ``sock`` holds into ``found``; False once it is dropped (:meth:`_lose`)."""
        frame, servers = memoryview(self._frame), self._servers
        while len(found) < self.batch:
            try:
                size = sock.recv_into(frame)
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno not in _INTERFACE_GONE:
                    raise
                self._lose(sock, exc)
                return False
            self._packets += 1
            split = _split(frame[_ETH_HEADER:size])
            if split is None:
                self._unparsed += 1
                continue
            message, src, sport, _ = split
            server = servers.get((src, sport))
            if server is None:
                if len(servers) >= _SERVER_NAMES:
                    servers.clear()  # many senders (untrusted ones): start over
                server = servers[src, sport] = _server(src, sport)
            found.append((bytes(message), server))
        return True

    def _lose(self, sock: socket.socket, error: OSError) -> None:
        """Stop reading a socket whose interface went down or away; the others read on."""
        with self._changing:
            names = [name for name, open_ in self._sockets.items() if open_ is sock]
            if not names:
                return  # removed meanwhile: closed with the retired ones
            self._sockets = {n: s for n, s in self._sockets.items() if s is not sock}
            self._dropped += _kernel_drops(sock)
            self._lost += 1
        sock.close()
        log.warning("no longer snooping on %s: %s", names[0], error.strerror)


def _kernel_drops(sock: socket.socket) -> int:
    """Packets the kernel dropped on ``sock`` since the last call (reading resets the count)."""
    try:
        _, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    except OSError:
        return 0  # closed meanwhile
    return int(drops)
