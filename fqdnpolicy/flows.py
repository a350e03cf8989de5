"""Flows written as text: ``default/backend -> api.github.com:443/tcp``.

The command line and tools describe a flow as ``SRC -> DST[:PORT][/PROTOCOL]``:

* ``SRC`` is an endpoint ``namespace/name``, or ``namespace/key=value[,key=value...]`` for
  every endpoint of the namespace with those labels;
* ``DST`` is an IP address (``[2001:db8::1]`` in brackets when a port follows), an endpoint
  ``namespace/name``, or a domain name (resolved through the DNS cache: one flow per address);
* ``PORT`` is a number 0-65535, or ``*`` for "any port" (a flow of TCP, UDP or SCTP needs one
  of the two); ``PROTOCOL`` is a name or number (default ``tcp``).
"""

from __future__ import annotations

import ipaddress
import re

import attrs

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.protocols import (
    PORT_RULE_PROTOCOLS,
    PORTED_PROTOCOLS,
    PROTOCOL_NAMES,
    PROTOCOL_NUMBERS,
    protocol_name,
)

__all__ = ["ANY_PORT", "Flow", "parse_flow"]

#: How a flow writes "any port".
ANY_PORT = "*"

_HINT = "write SRC -> DST[:PORT][/PROTOCOL], e.g. default/backend -> api.github.com:443/tcp"
_PORT_HINT = "a port is a number 0-65535, or * for any port"
# A Kubernetes namespace is a DNS label: no dots, so 'example.com/x' cannot be an endpoint.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_POD_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_./]{0,316})=([-A-Za-z0-9_.]{0,63})")
_DOMAIN = re.compile(r"(?=.{1,253}$)([A-Za-z0-9_*]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?\.?)+")
_DOTTED = re.compile(r"[0-9.]+")


@attrs.frozen
class Flow:
    """A parsed flow.

    Attributes:
        src: Source endpoint key (``namespace/name``), or ``namespace/key=value,...`` when
            ``src_labels`` is set.
        dst: Destination: an address, an endpoint key, or a domain name.
        dst_kind: ``"ip"``, ``"endpoint"`` or ``"name"``.
        port: Destination port, or None (none written, or ``*``).
        protocol: Protocol in upper case, e.g. ``TCP`` (a number stays digits).
        any_port: True when the port was written ``*``.
        src_labels: For a source chosen by labels: the ``(key, value)`` pairs every chosen
            endpoint has; empty for a source that names one endpoint.
    """

    src: str
    dst: str
    dst_kind: str
    port: int | None
    protocol: str
    any_port: bool = False
    src_labels: tuple[tuple[str, str], ...] = ()

    @property
    def src_namespace(self) -> str:
        """The source's namespace."""
        return self.src.partition("/")[0]

    def __str__(self) -> str:
        """Render back as text."""
        return self.with_source(self.src)

    def with_source(self, src: str) -> str:
        """This flow as text, from ``src`` (one endpoint of a source chosen by labels)."""
        ported = self.port is not None or self.any_port
        dst = f"[{self.dst}]" if ":" in self.dst and ported else self.dst
        port = f":{self.port}" if self.port is not None else (":*" if self.any_port else "")
        return f"{src} -> {dst}{port}/{self.protocol.lower()}"


def _fail(message: str, hint: str = _HINT) -> InvalidPolicy:
    return InvalidPolicy(Problem(message, hint=hint, code="bad-flow"))


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _protocol(word: str) -> str:
    upper = word.upper()
    if upper in PROTOCOL_NUMBERS:
        return upper
    if word.isdigit() and len(word) <= 3 and 1 <= int(word) <= 255:
        return protocol_name(int(word)).upper() if int(word) in PROTOCOL_NUMBERS.values() else word
    raise _fail(
        f"unknown protocol {_short(word)}",
        f"one of {', '.join(p.lower() for p in PROTOCOL_NAMES)}, or a number 1-255",
    )


def _split_protocol(rest: str) -> tuple[str, str]:
    """Split a trailing ``/PROTOCOL`` off the destination (default ``TCP``).

    ``ns/name`` is an endpoint, not a name and a protocol: a namespace is a DNS label, so a
    head with a dot, a colon or a bracket cannot be one, and a tail with a colon holds a port.
    """
    head, sep, tail = rest.rpartition("/")
    if not sep:
        return rest, "TCP"
    if tail.upper() in PROTOCOL_NUMBERS or (tail.isdigit() and "/" in head):
        return head, _protocol(tail)
    if ":" in tail or ("/" not in head and _NAMESPACE.fullmatch(head)):
        return rest, "TCP"  # an endpoint ns/name, with or without a port
    return head, _protocol(tail)


def _port(text: str) -> tuple[int | None, bool]:
    if text == ANY_PORT:
        return None, True
    if not text.isdigit() or not text.isascii():
        if re.fullmatch(r"[A-Za-z][-A-Za-z0-9]*", text):
            raise _fail(
                f"named port {_short(text)}: a flow needs the port number",
                "write the number the pod declares for it, e.g. :8080",
            )
        raise _fail(f"bad port {_short(text)}", _PORT_HINT)
    if len(text) > 5 or int(text) > 65535:
        raise _fail(f"port {_short(text)} out of range", _PORT_HINT)
    return int(text), False


def _host_port(rest: str) -> tuple[str, str | None, bool]:
    """Split ``host[:port]``; the bool says the host was written in brackets."""
    if rest.startswith("["):
        host, close, after = rest[1:].partition("]")
        if not close:
            raise _fail(f"missing ']' in {_short(rest)}", "write [2001:db8::1]:443")
        if after and not after.startswith(":"):
            raise _fail(f"unexpected {_short(after)} after ']'", "write [2001:db8::1]:443")
        return host, (after[1:] if after else None), True
    if rest.count(":") >= 2:
        return rest, None, False  # a bare IPv6 address: no port can follow
    host, colon, port = rest.partition(":")
    return host, (port if colon else None), False


def _source(src: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    namespace, slash, name = src.partition("/")
    if not slash or not namespace or not name or ("/" in name and "=" not in name):
        raise _fail(
            f"source {_short(src)} is not namespace/name",
            "a source is a pod, namespace/name, or pods by label, namespace/key=value",
        )
    if not _NAMESPACE.fullmatch(namespace):
        raise _fail(f"source {_short(src)}: {_short(namespace)} is not a namespace name")
    if "=" not in name:
        if not _POD_NAME.fullmatch(name):
            raise _fail(f"source {_short(src)}: {_short(name)} is not a pod name")
        return src, ()
    labels: list[tuple[str, str]] = []
    for part in name.split(","):
        found = _LABEL.fullmatch(part)
        if found is None:
            raise _fail(
                f"source {_short(src)}: {_short(part)} is not key=value",
                "choose pods by label as namespace/key=value[,key=value...]",
            )
        labels.append((found.group(1), found.group(2)))
    return src, tuple(labels)


def parse_flow(text: str) -> Flow:
    """Parse ``SRC -> DST[:PORT][/PROTOCOL]``.

    A trailing ``/word`` is read as the protocol when the word is a protocol name or number,
    so an endpoint whose name is a protocol name needs an explicit protocol
    (``ns/udp:53/udp``).

    Raises:
        InvalidPolicy: what is wrong, specifically: not a flow, a source that is not
            ``namespace/name``, an unknown protocol, a bad or missing port, an address that is
            not one, an IPv6 address with a port but no brackets.
    """
    src, arrow, rest = text.partition("->")
    src, rest = src.strip(), rest.strip()
    if not arrow or not src or not rest or any(c.isspace() for c in src + rest):
        raise _fail(f"not a flow: {_short(text)}")
    src, labels = _source(src)
    rest, protocol = _split_protocol(rest)
    host, port_text, bracketed = _host_port(rest)
    if not host:
        raise _fail(f"no destination in {_short(text)}")
    port, any_port = (None, False) if port_text is None else _port(port_text)
    dst, kind = _destination(host, bracketed)
    number = PROTOCOL_NUMBERS.get(protocol) or int(protocol)
    needs_port = number in PORT_RULE_PROTOCOLS
    if needs_port and port is None and not any_port:
        if kind == "ip" and ":" in dst and not bracketed:
            address, _, last = host.rpartition(":")
            meant = f"[{address}]:{last}" if last.isdigit() and _is_ip(address) else f"[{dst}]:443"
            raise _fail(
                f"IPv6 address without brackets: {_short(host)} (a {protocol.lower()} flow "
                "needs a port)",
                f"an IPv6 address with a port goes in brackets, e.g. {meant}; [{dst}]:* for "
                "any port",
            )
        shown = f"[{dst}]" if ":" in dst else dst
        raise _fail(
            f"{protocol.lower()} flow has no port: {_short(text)}",
            f"add one, e.g. {shown}:443/{protocol.lower()}, or {shown}:*/{protocol.lower()} "
            "for any port",
        )
    if number not in PORTED_PROTOCOLS and (port is not None or any_port):
        raise _fail(
            f"{protocol.lower()} has no ports: {_short(text)}",
            "leave the port out for this protocol",
        )
    return Flow(src, dst, kind, port, protocol, any_port, labels)


def _destination(host: str, bracketed: bool) -> tuple[str, str]:
    """The destination in canonical form, and its kind (``ip``, ``endpoint`` or ``name``)."""
    if _is_ip(host):
        return str(ipaddress.ip_address(host)), "ip"
    if bracketed or ":" in host or _DOTTED.fullmatch(host):
        raise _fail(f"not an IP address: {_short(host)}", "e.g. 198.51.100.7 or [2001:db8::1]")
    if "/" in host:
        namespace, _, name = host.partition("/")
        if not _NAMESPACE.fullmatch(namespace) or not _POD_NAME.fullmatch(name):
            raise _fail(f"destination {_short(host)} is not namespace/name")
        return host, "endpoint"
    if _DOMAIN.fullmatch(host) and "*" not in host:
        return host, "name"
    raise _fail(f"destination {_short(host)} is not an address, endpoint or domain name")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
