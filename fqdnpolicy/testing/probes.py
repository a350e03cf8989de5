"""The programs the lab runs *inside* its namespaces: echo servers, probes and DNS queries.

Run as ``ip netns exec NS python -P probes.py COMMAND ...`` by :mod:`fqdnpolicy.testing.lab`;
it needs only the standard library (and dnspython for ``dns``), so it starts quickly:

* ``serve ADDR... --tcp P,.. --udp P,.. --deadline S``: echo servers (TCP greets with ``ok``
  then echoes until the peer closes, UDP echoes), exits after ``S`` seconds;
* ``probe --timeout T``: reads flows as JSON lines (``{"dst", "protocol", "port"}``,
  protocol ``tcp``, ``udp`` or ``icmp``) on stdin, tries them all at once, prints one
  ``{"ok": bool}`` line per flow;
* ``hold --timeout T``: like ``probe``, but keeps every flow open; each further stdin line
  exchanges once more on every flow (an established connection, a UDP or ICMP exchange the
  kernel tracks) and prints the results again; EOF closes everything;
* ``dns SERVER NAME...``: queries A and AAAA, prints the responses' wire bytes as hex.

A flow "gets through" when the exchange comes back: TCP connects and reads the greeting (then
an echo), UDP and ICMP echo requests come back with the same payload.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Most probes tried at once in one namespace (each a thread that mostly waits).
MAX_PARALLEL = 512
_ICMP_ECHO = {socket.AF_INET: (8, 0), socket.AF_INET6: (128, 129)}  # request, reply


def _serve(
    addresses: Sequence[str], tcp: Sequence[int], udp: Sequence[int], deadline: float
) -> None:
    sockets: list[tuple[socket.socket, str]] = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        for port in tcp:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.listen(512)
            sockets.append((s, "tcp"))
        for port in udp:
            # One socket per address, so replies leave from the address that was asked.
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.bind((address, port))
            sockets.append((s, "udp"))

    def connection(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(b"ok")
            while data := conn.recv(2048):
                conn.sendall(data)
        conn.close()

    def tcp_loop(s: socket.socket) -> None:
        while True:
            conn, _ = s.accept()
            threading.Thread(target=connection, args=(conn,), daemon=True).start()

    def udp_loop(s: socket.socket) -> None:
        while True:
            data, peer = s.recvfrom(2048)
            with contextlib.suppress(OSError):
                s.sendto(data, peer)

    for s, kind in sockets:
        threading.Thread(
            target=tcp_loop if kind == "tcp" else udp_loop, args=(s,), daemon=True
        ).start()
    print("ready", flush=True)
    time.sleep(deadline)


class _Exchange:
    """One flow's socket: opened once, then exchanged on again while it is held."""

    def __init__(self, flow: dict[str, Any], timeout: float) -> None:
        self.dst = str(flow["dst"])
        self.port = int(flow["port"])
        self.protocol = str(flow["protocol"])
        self.family = socket.AF_INET6 if ":" in self.dst else socket.AF_INET
        self.sequence = 0
        kind, proto = {
            "tcp": (socket.SOCK_STREAM, 0),
            "udp": (socket.SOCK_DGRAM, 0),
            # Unprivileged ICMP echo sockets: the kernel sets the identifier and hands back
            # only our replies (the lab allows them with net.ipv4.ping_group_range).
            "icmp": (
                socket.SOCK_DGRAM,
                socket.IPPROTO_ICMPV6 if self.family == socket.AF_INET6 else socket.IPPROTO_ICMP,
            ),
        }[self.protocol]
        self.sock = socket.socket(self.family, kind, proto)
        self.sock.settimeout(timeout)
        sport = flow.get("sport")
        if sport is not None:  # the lab's own, so no two probes share a five-tuple
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("::" if self.family == socket.AF_INET6 else "0.0.0.0", int(sport)))
        self.open = False

    def first(self) -> bool:
        """Connect and exchange once."""
        try:
            if self.protocol == "icmp":
                self.open = self._echo()
            else:
                self.sock.connect((self.dst, self.port))
                if self.protocol == "tcp":
                    self.open = self.sock.recv(8) == b"ok"
                else:
                    self.open = self._echo()
        except OSError:
            self.open = False
        return self.open

    def again(self) -> bool:
        """Exchange once more on an open flow (False when it never opened)."""
        if not self.open:
            return False
        try:
            return self._echo()
        except OSError:
            return False

    def _echo(self) -> bool:
        token = secrets.token_bytes(8)
        if self.protocol != "icmp":
            self.sock.send(token)
            return self._receive(lambda data: data == token, len(token))
        request, reply = _ICMP_ECHO[self.family]
        self.sequence += 1
        # Identifier 0 and no checksum: the kernel fills both in for an echo socket.
        packet = struct.pack("!BBHHH", request, 0, 0, 0, self.sequence) + token
        self.sock.sendto(packet, (self.dst, 0))
        return self._receive(lambda data: data[0] == reply and data[8:] == token, 64)

    def _receive(self, matches: Callable[[bytes], bool], size: int) -> bool:
        # Skip stale answers (an earlier exchange's late echo) until the timeout.
        while True:
            data = self.sock.recv(max(size, 64))
            if len(data) >= 1 and matches(data):
                return True

    def close(self) -> None:
        """Close; a TCP socket with a reset, so nothing lingers to keep the namespace busy."""
        if self.protocol == "tcp":
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def _read_flows(stop_at_blank: bool) -> list[dict[str, Any]]:
    flows = []
    for line in sys.stdin:
        if not line.strip():
            if stop_at_blank:
                break
            continue
        flows.append(json.loads(line))
    return flows


def _print(results: Sequence[bool]) -> None:
    sys.stdout.write("".join(json.dumps({"ok": ok}) + "\n" for ok in results))
    sys.stdout.flush()


def _probe(timeout: float, hold: bool) -> None:
    flows = _read_flows(stop_at_blank=hold)
    exchanges = [_Exchange(flow, timeout) for flow in flows]
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(exchanges)))) as pool:
        _print(list(pool.map(_Exchange.first, exchanges)))
        if hold:
            for _ in sys.stdin:  # one line per round of exchanges, until EOF
                _print(list(pool.map(_Exchange.again, exchanges)))
    for exchange in exchanges:
        exchange.close()


def _dns(server: str, names: Sequence[str], timeout: float) -> None:
    import dns.message
    import dns.query

    for name in names:
        for rdtype in ("A", "AAAA"):
            query = dns.message.make_query(name, rdtype)
            response = dns.query.udp(query, server, timeout=timeout)
            print(response.to_wire().hex())


def main(argv: Sequence[str]) -> None:
    """Run one of the programs (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="probes.py")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("addresses", nargs="+")
    serve.add_argument("--tcp", default="")
    serve.add_argument("--udp", default="")
    serve.add_argument("--deadline", type=float, default=60.0)
    for command in ("probe", "hold"):
        sub.add_parser(command).add_argument("--timeout", type=float, default=1.5)
    dns_cmd = sub.add_parser("dns")
    dns_cmd.add_argument("server")
    dns_cmd.add_argument("names", nargs="+")
    dns_cmd.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        ports = [[int(p) for p in text.split(",") if p] for text in (args.tcp, args.udp)]
        _serve(args.addresses, ports[0], ports[1], args.deadline)
    elif args.command in ("probe", "hold"):
        _probe(args.timeout, hold=args.command == "hold")
    else:
        try:
            _dns(args.server, args.names, args.timeout)
        except Exception as exc:  # reported to the parent through the exit status
            print(f"dns query failed: {exc}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
