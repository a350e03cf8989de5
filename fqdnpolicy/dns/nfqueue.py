"""A small NFQUEUE client over netlink (standard library only): packets in, verdicts out.

The kernel's ``nfnetlink_queue`` protocol, the part the hold mode needs: bind a queue, copy
whole packets, read them, and accept or drop each by id. Packets come as IP packets (no
link-layer header). libnetfilter_queue speaks the same protocol; doing it here avoids a C
library and its packaging.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Iterator

import attrs

__all__ = ["ACCEPT", "DROP", "NfqueueError", "QueueSocket", "QueuedPacket"]

NETLINK_NETFILTER = 12
_SUBSYS_QUEUE = 3
_MSG_PACKET, _MSG_VERDICT, _MSG_CONFIG = 0, 1, 2
_CFG_CMD, _CFG_PARAMS, _CFG_MASK, _CFG_FLAGS = 1, 2, 4, 5
_CMD_BIND, _CMD_UNBIND = 1, 2
_COPY_PACKET = 2
_CFG_F_FAIL_OPEN = 1
_ATTR_PACKET_HDR, _ATTR_VERDICT_HDR, _ATTR_PAYLOAD = 1, 2, 10
_NLM_F_REQUEST, _NLM_F_ACK = 1, 4
_NLMSG_ERROR = 2
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_GEN = struct.Struct("!BBH")  # nfgenmsg: family, version, queue number (big endian)

#: Verdicts.
DROP, ACCEPT = 0, 1


class NfqueueError(OSError):
    """The kernel refused a queue request (the queue is taken, or NFQUEUE is unavailable)."""


@attrs.frozen
class QueuedPacket:
    """A packet the kernel queued: its id (for the verdict) and the IP packet."""

    packet_id: int
    payload: bytes


def _attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


class QueueSocket:
    """One bound NFQUEUE queue, in the network namespace the socket is opened in.

    Args:
        queue: The queue number the iptables ``NFQUEUE`` rule names.
        fail_open: When the queue is full the kernel accepts instead of dropping.

    Raises:
        NfqueueError: binding failed (the queue is bound by another process, or the kernel
            lacks nfnetlink_queue); the message says which.
    """

    def __init__(self, queue: int, *, fail_open: bool = True) -> None:
        self.queue = queue
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._seq = 0
        try:
            self.sock.bind((0, 0))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self._config(_attr(_CFG_CMD, struct.pack("!BxH", _CMD_BIND, 0)))
            self._config(_attr(_CFG_PARAMS, struct.pack("!IB", 0xFFFF, _COPY_PACKET)))
            flags = _CFG_F_FAIL_OPEN if fail_open else 0
            self._config(
                _attr(_CFG_MASK, struct.pack("!I", _CFG_F_FAIL_OPEN))
                + _attr(_CFG_FLAGS, struct.pack("!I", flags))
            )
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        """The socket's descriptor (to poll)."""
        return self.sock.fileno()

    def _send(self, kind: int, body: bytes, flags: int) -> int:
        self._seq += 1
        header = _HEADER.pack(
            _HEADER.size + len(body), (_SUBSYS_QUEUE << 8) | kind, flags, self._seq, 0
        )
        self.sock.send(header + body)
        return self._seq

    def _config(self, attrs_: bytes) -> None:
        seq = self._send(
            _MSG_CONFIG,
            _GEN.pack(socket.AF_UNSPEC, 0, self.queue) + attrs_,
            _NLM_F_REQUEST | _NLM_F_ACK,
        )
        while True:
            data = self.sock.recv(65536)
            for kind, msg_seq, body in _messages(data):
                if kind == _NLMSG_ERROR and msg_seq == seq:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        name = errno.errorcode.get(code, str(code))
                        text = f"NFQUEUE {self.queue}: {os.strerror(code)} ({name})"
                        raise NfqueueError(code, text)
                    return

    def receive(self) -> list[QueuedPacket]:
        """Read the packets available now (blocks until at least one message arrives)."""
        data = self.sock.recv(1 << 20)
        packets: list[QueuedPacket] = []
        for kind, _, body in _messages(data):
            if kind != (_SUBSYS_QUEUE << 8) | _MSG_PACKET:
                continue
            packet_id, payload = None, b""
            for attr_kind, value in _attributes(body[_GEN.size :]):
                if attr_kind == _ATTR_PACKET_HDR:
                    packet_id = struct.unpack_from("!I", value)[0]
                elif attr_kind == _ATTR_PAYLOAD:
                    payload = bytes(value)
            if packet_id is not None:
                packets.append(QueuedPacket(packet_id, payload))
        return packets

    def verdict(self, packet_id: int, verdict: int) -> None:
        """Accept or drop one queued packet."""
        body = _GEN.pack(socket.AF_UNSPEC, 0, self.queue) + _attr(
            _ATTR_VERDICT_HDR, struct.pack("!II", verdict, packet_id)
        )
        self._send(_MSG_VERDICT, body, _NLM_F_REQUEST)

    def close(self) -> None:
        """Unbind the queue and close the socket (the kernel drops packets still queued)."""
        unbind = _attr(_CFG_CMD, struct.pack("!BxH", _CMD_UNBIND, 0))
        # Closing anyway: the kernel unbinds a closed socket's queue itself.
        with contextlib.suppress(OSError):
            self._send(
                _MSG_CONFIG, _GEN.pack(socket.AF_UNSPEC, 0, self.queue) + unbind, _NLM_F_REQUEST
            )
        self.sock.close()


def _messages(data: bytes) -> Iterator[tuple[int, int, memoryview]]:
    view = memoryview(data)
    offset = 0
    while offset + _HEADER.size <= len(view):
        length, kind, _, seq, _ = _HEADER.unpack_from(view, offset)
        if length < _HEADER.size:
            return
        yield kind, seq, view[offset + _HEADER.size : offset + length]
        offset += (length + 3) & ~3


def _attributes(view: memoryview) -> Iterator[tuple[int, memoryview]]:
    offset = 0
    while offset + 4 <= len(view):
        length, kind = struct.unpack_from("=HH", view, offset)
        if length < 4:
            return
        yield kind & 0x7FFF, view[offset + 4 : offset + length]
        offset += (length + 3) & ~3
