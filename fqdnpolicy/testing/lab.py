"""A real-kernel network lab: namespaces, veth pairs, echo servers and a DNS server.

Part of the backend conformance kit (:mod:`fqdnpolicy.testing`), public so that a backend's own
tests can build the same lab: ``from fqdnpolicy.testing.lab import Lab, Flow, HostRecord``. It
needs root, ``ip`` (iproute2) and ``dnsmasq``; it imports only the standard library and attrs.

Layout (every namespace name carries a prefix and a per-run id of pid and counter, so parallel
runs never clash)::

    workload ns (one per Endpoint)          host ns ("the node")          server ns
    eth0 198.51.100.1x, 2001:db8:100::1x -- <Endpoint.interface>  fpsrv -- eth0 198.51.100.2
                                            forwarding, our table          203.0.113.x/32
                                                                           2001:db8:203::x
                                                                           dns 198.51.100.53

Routing is point-to-point with permanent neighbour entries (no ARP/ND, no DAD), as a CNI
does: every workload routes via 198.51.100.1 / 2001:db8:100::1, which the host has on each of
its interfaces. Only 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32 are used, only inside
namespaces created here; :meth:`Lab.close` deletes exactly those and ends exactly the
processes started here, by pid.

The module is also a small program run *inside* namespaces (``ip netns exec NS python -P
lab.py ...``), with only the standard library and dnspython:

* ``serve ADDR... --tcp P,.. --udp P,.. --deadline S``: echo servers (TCP answers ``ok``, UDP
  echoes), exits after ``S`` seconds;
* ``probe``: reads flows as JSON lines on stdin, tries them concurrently, prints results;
* ``dns SERVER NAME...``: queries A and AAAA, prints the responses' wire bytes as hex.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

GATEWAY4 = "198.51.100.1"
GATEWAY6 = "2001:db8:100::1"
SERVER_LINK4 = "198.51.100.2"
SERVER_LINK6 = "2001:db8:100::2"
DNS_SERVER = "198.51.100.53"
COMMAND_TIMEOUT = 20.0

HERE = Path(__file__).resolve()
DEFAULT_PREFIX = "fqp"
# Python run without the script's directory on sys.path (-P), so sibling modules of this file
# never shadow the standard library's or dnspython's inside the namespaces.
_PYTHON = (sys.executable, "-P", str(HERE))
_RUN_IDS = itertools.count()


def _mac(index: int, side: int) -> str:
    return f"02:fd:{side:02x}:00:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"


def _via_gateway(host_mac: str) -> list[str]:
    """Routes of a namespace whose ``eth0`` reaches the host, and the host's static neighbour."""
    return [
        f"route add {GATEWAY4}/32 dev eth0",
        f"route add default via {GATEWAY4} dev eth0",
        f"route add {GATEWAY6}/128 dev eth0",
        f"route add default via {GATEWAY6} dev eth0",
        f"neigh replace {GATEWAY4} lladdr {host_mac} dev eth0 nud permanent",
        f"neigh replace {GATEWAY6} lladdr {host_mac} dev eth0 nud permanent",
    ]


@attrs.frozen
class Workload:
    """One workload namespace: its endpoint's interface and addresses."""

    key: str  # namespace/name of the endpoint
    interface: str  # host-side veth name (the Endpoint.interface)
    ipv4: str
    ipv6: str


@attrs.frozen
class HostRecord:
    """A dnsmasq ``--host-record``: name -> addresses, with a TTL."""

    name: str
    addresses: tuple[str, ...]
    ttl: int


@attrs.frozen
class Flow:
    """A probe: from a workload to an address, protocol (``tcp``/``udp``) and port."""

    src: str  # workload key
    dst: str
    protocol: str
    port: int


def run(
    argv: Sequence[str], *, input_text: str | None = None, timeout: float = COMMAND_TIMEOUT
) -> str:
    """Run a command, raise with its stderr when it fails, return its stdout."""
    done = subprocess.run(
        list(argv),
        input=None if input_text is None else input_text.encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
        )
    return done.stdout.decode(errors="replace")


class Lab:
    """Build the lab (see the module docstring); use as a context manager.

    Args:
        workloads: ``(endpoint key, host-side interface)`` pairs; addresses are assigned
            (198.51.100.10+i, 2001:db8:100::10+i).
        service_addresses: Addresses (v4 and v6) the server namespace answers on.
        tcp_ports: Ports every server and workload accepts TCP on.
        udp_ports: Ports every server and workload echoes UDP on.
        records: DNS host records; ``cnames``: ``(alias, target, ttl)``.
        lifetime: Seconds after which servers exit by themselves (bounds a lost run).
        prefix: Start of every namespace name (``PREFIX-h-ID``, ``PREFIX-s-ID``,
            ``PREFIX-wN-ID``), so that each user of the lab can tell (and clean) its own.
    """

    def __init__(
        self,
        workloads: Sequence[tuple[str, str]],
        service_addresses: Sequence[str],
        tcp_ports: Sequence[int],
        udp_ports: Sequence[int],
        records: Sequence[HostRecord] = (),
        cnames: Sequence[tuple[str, str, int]] = (),
        lifetime: float = 240.0,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.run_id = f"{os.getpid()}x{next(_RUN_IDS)}"
        self.prefix = prefix
        self.host = f"{prefix}-h-{self.run_id}"
        self.server = f"{prefix}-s-{self.run_id}"
        self.workloads = [
            Workload(key, iface, f"198.51.100.{10 + i}", f"2001:db8:100::{10 + i:x}")
            for i, (key, iface) in enumerate(workloads)
        ]
        self.service_addresses = tuple(service_addresses)
        self.tcp_ports = tuple(tcp_ports)
        self.udp_ports = tuple(udp_ports)
        self.records = tuple(records)
        self.cnames = tuple(cnames)
        self.lifetime = lifetime
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self._ns_of = {w.key: f"{prefix}-w{i}-{self.run_id}" for i, w in enumerate(self.workloads)}

    # ------------------------------------------------------------------------- building

    def namespace_of(self, key: str) -> str:
        """The namespace of a workload."""
        return self._ns_of[key]

    def __enter__(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_ns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        # No duplicate address detection (addresses usable at once), forwarding where needed.
        sysctls = [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.default.accept_ra=0",
        ]
        if name == self.host:
            sysctls += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
        run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", *sysctls])
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _batch(self, ns: str, commands: Iterable[str]) -> None:
        run(["ip", "-n", ns, "-batch", "-"], input_text="\n".join(commands) + "\n")

    def _build(self) -> None:
        self._add_ns(self.host)
        self._add_ns(self.server)
        host_cmds: list[str] = []
        for i, w in enumerate(self.workloads):
            ns = self._ns_of[w.key]
            self._add_ns(ns)
            host_mac, wl_mac = _mac(i, 1), _mac(i, 2)
            run([
                "ip", "-n", self.host, "link", "add", w.interface, "address", host_mac,
                "type", "veth", "peer", "name", "eth0", "address", wl_mac, "netns", ns,
            ])  # fmt: skip
            host_cmds += [
                f"link set {w.interface} up",
                f"addr add {GATEWAY4}/32 dev {w.interface}",
                f"addr add {GATEWAY6}/128 dev {w.interface} nodad",
                f"route add {w.ipv4}/32 dev {w.interface}",
                f"route add {w.ipv6}/128 dev {w.interface}",
                f"neigh replace {w.ipv4} lladdr {wl_mac} dev {w.interface} nud permanent",
                f"neigh replace {w.ipv6} lladdr {wl_mac} dev {w.interface} nud permanent",
            ]
            self._batch(ns, [
                "link set eth0 up",
                f"addr add {w.ipv4}/32 dev eth0",
                f"addr add {w.ipv6}/128 dev eth0 nodad",
                *_via_gateway(host_mac),
            ])  # fmt: skip
        host_mac, srv_mac = _mac(0xFFF, 1), _mac(0xFFF, 2)
        run([
            "ip", "-n", self.host, "link", "add", "fpsrv", "address", host_mac,
            "type", "veth", "peer", "name", "eth0", "address", srv_mac, "netns", self.server,
        ])  # fmt: skip
        v4 = [a for a in self.service_addresses if ":" not in a]
        v6 = [a for a in self.service_addresses if ":" in a]
        host_cmds += [
            "link set fpsrv up",
            f"addr add {GATEWAY4}/32 dev fpsrv",
            f"addr add {GATEWAY6}/128 dev fpsrv nodad",
            f"route add {SERVER_LINK4}/32 dev fpsrv",
            f"route add {SERVER_LINK6}/128 dev fpsrv",
            f"neigh replace {SERVER_LINK4} lladdr {srv_mac} dev fpsrv nud permanent",
            f"neigh replace {SERVER_LINK6} lladdr {srv_mac} dev fpsrv nud permanent",
            f"route add {DNS_SERVER}/32 via {SERVER_LINK4}",
            *(f"route add {a}/32 via {SERVER_LINK4}" for a in v4),
            *(f"route add {a}/128 via {SERVER_LINK6}" for a in v6),
        ]
        self._batch(self.host, host_cmds)
        self._batch(self.server, [
            "link set eth0 up",
            f"addr add {SERVER_LINK4}/32 dev eth0",
            f"addr add {SERVER_LINK6}/128 dev eth0 nodad",
            f"addr add {DNS_SERVER}/32 dev eth0",
            *(f"addr add {a}/32 dev eth0" for a in v4),
            *(f"addr add {a}/128 dev eth0 nodad" for a in v6),
            *_via_gateway(host_mac),
        ])  # fmt: skip
        self._serve(self.server, self.service_addresses)
        for w in self.workloads:
            self._serve(self._ns_of[w.key], (w.ipv4, w.ipv6))
        self._dnsmasq()

    def _start(self, argv: Sequence[str], ready: bytes | None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.processes.append(proc)
        if ready is not None:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the server prints once its sockets are bound
            if line.strip() != ready:
                proc.kill()
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"{argv[4:6]} did not start: {line!r} {err}")
        return proc

    def _serve(self, ns: str, addresses: Sequence[str]) -> None:
        self._start(
            [
                "ip", "netns", "exec", ns, *_PYTHON, "serve", *addresses,
                "--tcp", ",".join(map(str, self.tcp_ports)),
                "--udp", ",".join(map(str, self.udp_ports)),
                "--deadline", str(self.lifetime),
            ],
            b"ready",
        )  # fmt: skip

    def _dnsmasq(self) -> None:
        argv = [
            "ip", "netns", "exec", self.server, "dnsmasq", "-k", "--conf-file=/dev/null",
            "--no-resolv", "--no-poll", "--no-hosts", "--bind-interfaces",
            f"--listen-address={DNS_SERVER}", "--port=53", "--pid-file=",
            "--local=/example.test/", "--local=/other.test/", "--local-ttl=30",
        ]  # fmt: skip
        for rec in self.records:
            argv.append(f"--host-record={rec.name},{','.join(rec.addresses)},{rec.ttl}")
        for alias, target, ttl in self.cnames:
            argv.append(f"--cname={alias},{target},{ttl}")
        self._start(argv, None)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait until it answers
            try:
                self.resolve(self.workloads[0].key, ["ready.invalid.example.test"], timeout=0.3)
                return
            except RuntimeError:
                time.sleep(0.05)
        raise RuntimeError("dnsmasq did not answer within 5 s")

    # -------------------------------------------------------------------------- using

    def resolve(self, key: str, names: Sequence[str], timeout: float = 2.0) -> list[bytes]:
        """Query A and AAAA of ``names`` from a workload's namespace; return the raw responses."""
        out = run(
            [
                "ip", "netns", "exec", self._ns_of[key], *_PYTHON, "dns",
                DNS_SERVER, *names, "--timeout", str(timeout),
            ],
            timeout=COMMAND_TIMEOUT,
        )  # fmt: skip
        return [bytes.fromhex(line) for line in out.split()]

    def probe(self, flows: Sequence[Flow], timeout: float = 1.5) -> dict[Flow, bool]:
        """Try every flow from its workload's namespace (concurrently); True = it got through."""
        by_src: dict[str, list[Flow]] = {}
        for flow in flows:
            by_src.setdefault(flow.src, []).append(flow)
        results: dict[Flow, bool] = {}

        def one_namespace(src: str, batch: list[Flow]) -> None:
            payload = "\n".join(
                json.dumps({"dst": f.dst, "protocol": f.protocol, "port": f.port}) for f in batch
            )
            out = run(
                [
                    "ip", "netns", "exec", self._ns_of[src], *_PYTHON,
                    "probe", "--timeout", str(timeout),
                ],
                input_text=payload,
                timeout=COMMAND_TIMEOUT + timeout * len(batch),
            )  # fmt: skip
            answers = [json.loads(line)["ok"] for line in out.splitlines()]
            results.update(zip(batch, answers, strict=True))

        with ThreadPoolExecutor(max_workers=max(1, len(by_src))) as pool:
            for future in [pool.submit(one_namespace, s, b) for s, b in by_src.items()]:
                future.result()
        return results

    def close(self) -> None:
        """End the processes started here (by pid) and delete the namespaces created here."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.processes.clear()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)
        self.namespaces.clear()


# ------------------------------------------------------------------ in-namespace programs


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
            s.listen(128)
            sockets.append((s, "tcp"))
        for port in udp:
            # One socket per address, so replies leave from the address that was asked.
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.bind((address, port))
            sockets.append((s, "udp"))

    def tcp_loop(s: socket.socket) -> None:
        while True:
            conn, _ = s.accept()
            with contextlib.suppress(OSError):
                conn.sendall(b"ok")
            conn.close()

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


def _probe_one(flow: dict[str, Any], timeout: float) -> bool:
    dst, port = flow["dst"], int(flow["port"])
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    kind = socket.SOCK_STREAM if flow["protocol"] == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(family, kind)
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
        if kind == socket.SOCK_STREAM:
            return s.recv(8) == b"ok"
        token = secrets.token_bytes(8)
        s.send(token)
        return s.recv(64) == token
    except OSError:
        return False
    finally:
        if kind == socket.SOCK_STREAM:
            # Reset instead of FIN: nothing lingers to keep the namespace busy at teardown.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def _probe(timeout: float) -> None:
    flows = [json.loads(line) for line in sys.stdin.read().splitlines() if line.strip()]
    with ThreadPoolExecutor(max_workers=48) as pool:
        results = list(pool.map(lambda f: _probe_one(f, timeout), flows))
    for ok in results:
        print(json.dumps({"ok": ok}))


def _dns(server: str, names: Sequence[str], timeout: float) -> None:
    import dns.message
    import dns.query

    for name in names:
        for rdtype in ("A", "AAAA"):
            query = dns.message.make_query(name, rdtype)
            response = dns.query.udp(query, server, timeout=timeout)
            print(response.to_wire().hex())


def _main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="lab.py")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("addresses", nargs="+")
    serve.add_argument("--tcp", default="")
    serve.add_argument("--udp", default="")
    serve.add_argument("--deadline", type=float, default=60.0)
    probe = sub.add_parser("probe")
    probe.add_argument("--timeout", type=float, default=1.5)
    dns_cmd = sub.add_parser("dns")
    dns_cmd.add_argument("server")
    dns_cmd.add_argument("names", nargs="+")
    dns_cmd.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        ports = [[int(p) for p in text.split(",") if p] for text in (args.tcp, args.udp)]
        _serve(args.addresses, ports[0], ports[1], args.deadline)
    elif args.command == "probe":
        _probe(args.timeout)
    else:
        try:
            _dns(args.server, args.names, args.timeout)
        except Exception as exc:  # reported to the parent through the exit status
            print(f"dns query failed: {exc}", file=sys.stderr)
            sys.exit(1)


def iter_flows(lab: Lab) -> Iterator[Flow]:
    """Every flow of the lab.

    Each workload to each service address and to each other workload's addresses, on every
    TCP and UDP port.
    """
    for w in lab.workloads:
        targets = list(lab.service_addresses)
        for other in lab.workloads:
            if other.key != w.key:
                targets += [other.ipv4, other.ipv6]
        for dst in targets:
            for port in lab.tcp_ports:
                yield Flow(w.key, dst, "tcp", port)
            for port in lab.udp_ports:
                yield Flow(w.key, dst, "udp", port)


if __name__ == "__main__":
    _main(sys.argv[1:])
