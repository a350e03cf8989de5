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

The processes run inside the namespaces (echo servers, probes, DNS queries) are the programs
of :mod:`fqdnpolicy.testing.probes`, started with this interpreter.

Use::

    with Lab([("team-a/web", "caliweb0")], ["203.0.113.10"], [80], [5353]) as lab:
        lab.probe([Flow("team-a/web", "203.0.113.10", "tcp", 80)])  # {Flow(...): True}
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

GATEWAY4 = "198.51.100.1"
GATEWAY6 = "2001:db8:100::1"
SERVER_LINK4 = "198.51.100.2"
SERVER_LINK6 = "2001:db8:100::2"
DNS_SERVER = "198.51.100.53"
COMMAND_TIMEOUT = 20.0

HERE = Path(__file__).resolve()
#: The in-namespace programs (:mod:`fqdnpolicy.testing.probes`), run as a script.
PROGRAM = HERE.with_name("probes.py")
DEFAULT_PREFIX = "fqp"
# Python run without the script's directory on sys.path (-P), so sibling modules of that file
# never shadow the standard library's or dnspython's inside the namespaces.
_PYTHON = (sys.executable, "-P", str(PROGRAM))
_RUN_IDS = itertools.count()
#: Source ports the probes take in turn, below the kernel's ephemeral range: no probe of a
#: run reuses an earlier one's five-tuple, whose connection-tracking entry (an allowed
#: exchange's, kept for minutes) would let it through as established.
PROBE_PORTS = range(10000, 32768)


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


def workload_addresses(index: int) -> tuple[str, str]:
    """The IPv4 and IPv6 address the lab gives its ``index``-th workload."""
    return f"198.51.100.{10 + index}", f"2001:db8:100::{10 + index:x}"


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
    """A probe: from a workload to an address, protocol and port.

    ``protocol`` is ``tcp``, ``udp`` or ``icmp`` (an echo request: ICMP to an IPv4 address,
    ICMPv6 to an IPv6 one; ``port`` is 0 and ignored).
    """

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
            by :func:`workload_addresses` (198.51.100.10+i, 2001:db8:100::10+i).
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
            Workload(key, iface, *workload_addresses(i)) for i, (key, iface) in enumerate(workloads)
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
        self._probe_ports = itertools.cycle(PROBE_PORTS)

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
            # ICMP echo sockets for every user: probes ping without raw sockets.
            "net.ipv4.ping_group_range=0 2147483647",
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

    def _program(self, src: str, command: str, timeout: float) -> list[str]:
        return [
            "ip",
            "netns",
            "exec",
            self._ns_of[src],
            *_PYTHON,
            command,
            "--timeout",
            str(timeout),
        ]

    def probe(self, flows: Sequence[Flow], timeout: float = 1.5) -> dict[Flow, bool]:
        """Try every flow from its workload's namespace, all at once; True = it got through.

        A blocked flow costs ``timeout`` seconds (a dropped packet is only seen as no
        answer), paid once for the whole batch since every flow is tried in parallel.
        """
        by_src = _by_source(flows)
        results: dict[Flow, bool] = {}

        def one_namespace(src: str, batch: list[Flow]) -> None:
            out = run(
                self._program(src, "probe", timeout),
                input_text=self._flow_lines(batch),
                timeout=COMMAND_TIMEOUT + timeout * len(batch),
            )
            results.update(zip(batch, _answers(out), strict=True))

        with ThreadPoolExecutor(max_workers=max(1, len(by_src))) as pool:
            for future in [pool.submit(one_namespace, s, b) for s, b in by_src.items()]:
                future.result()
        return results

    def _flow_lines(self, flows: Iterable[Flow]) -> str:
        """The probe program's input: one flow per line, each with a source port of its own."""
        ports = self._probe_ports
        return "".join(
            json.dumps({"dst": f.dst, "protocol": f.protocol, "port": f.port, "sport": next(ports)})
            + "\n"
            for f in flows
        )

    def hold(self, flows: Sequence[Flow], timeout: float = 1.5) -> HeldFlows:
        """Open every flow and keep it open (see :class:`HeldFlows`); close it when done."""
        held = HeldFlows()
        try:
            for src, batch in _by_source(flows).items():
                proc = subprocess.Popen(
                    self._program(src, "hold", timeout),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
                self.processes.append(proc)
                held.add(proc, batch, self._flow_lines(batch))
            held.start()
        except BaseException:
            held.close()
            raise
        return held

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


def _by_source(flows: Iterable[Flow]) -> dict[str, list[Flow]]:
    by_src: dict[str, list[Flow]] = {}
    for flow in flows:
        by_src.setdefault(flow.src, []).append(flow)
    return by_src


def _answers(out: str) -> list[bool]:
    return [bool(json.loads(line)["ok"]) for line in out.splitlines() if line.strip()]


class HeldFlows:
    """Flows opened once and kept open, to exchange on again later (:meth:`Lab.hold`).

    What conntrack calls established: a TCP connection, or a UDP or ICMP echo exchange that
    was answered. :attr:`opened` says which flows got through when opened; :meth:`again`
    exchanges once more on every flow and says which still get through.
    """

    def __init__(self) -> None:
        self._procs: list[tuple[subprocess.Popen[bytes], list[Flow]]] = []
        self._lines: list[str] = []
        self.opened: dict[Flow, bool] = {}

    def add(self, proc: subprocess.Popen[bytes], flows: list[Flow], lines: str) -> None:
        """Take over a started ``hold`` program, the flows it is to open and their lines."""
        self._procs.append((proc, flows))
        self._lines.append(lines)

    def start(self) -> None:
        """Send every program its flows; wait until each has opened them."""
        for (proc, _), lines in zip(self._procs, self._lines, strict=True):
            assert proc.stdin is not None
            proc.stdin.write((lines + "\n").encode())
            proc.stdin.flush()
        self.opened = self._collect()

    def again(self) -> dict[Flow, bool]:
        """Exchange once more on every flow; True = it still gets through."""
        for proc, _ in self._procs:
            assert proc.stdin is not None
            proc.stdin.write(b"again\n")
            proc.stdin.flush()
        return self._collect()

    def _collect(self) -> dict[Flow, bool]:
        results: dict[Flow, bool] = {}
        for proc, flows in self._procs:
            assert proc.stdout is not None
            # The program answers every flow within its own timeout, one line each.
            lines: list[str] = []
            while len(lines) < len(flows):
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"the hold program ended early (status {proc.poll()})")
                lines.append(line.decode())
            results.update(zip(flows, _answers("".join(lines)), strict=True))
        return results

    def close(self) -> None:
        """Close every flow (the programs exit at the end of their input)."""
        for proc, _ in self._procs:
            if proc.stdin is not None and not proc.stdin.closed:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc, _ in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()

    def __enter__(self) -> HeldFlows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_flows(lab: Lab, *, icmp: bool = False) -> Iterator[Flow]:
    """Every flow of the lab.

    Each workload to each service address and to each other workload's addresses, on every
    TCP and UDP port, and (``icmp``) an echo request to each.
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
            if icmp:
                yield Flow(w.key, dst, "icmp", 0)
