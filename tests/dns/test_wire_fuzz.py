"""Differential fuzzing: the fast path extracts exactly what dnspython extracts.

The reference is ``extract_message(dns.message.from_wire(data))``, with any exception from
dnspython meaning "rejected". For every input the fast path must give the same answer, reject
it, or decline (``None``, handing it to dnspython). Inputs are messages built byte by byte
(:class:`Wire`, so shapes dnspython's renderer never writes occur: interleaved and duplicate
records, odd pointers, odd label bytes), messages rendered by dnspython, and both corrupted.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

import dns.edns
import dns.message
import dns.rcode
import dns.rrset
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fqdnpolicy.dns.wire import (
    Extracted,
    MalformedDNSMessage,
    extract_message,
    extract_wire,
    extract_wire_fast,
)
from tests.dns.helpers import fast_path_result

REJECTED = "rejected"


class Wire:
    """Writes a DNS message field by field; compresses names when asked (case-insensitively)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.suffixes: dict[tuple[bytes, ...], int] = {}
        self.ttl_offsets: list[int] = []

    def u8(self, v: int) -> Wire:
        self.buf += struct.pack("!B", v)
        return self

    def u16(self, v: int) -> Wire:
        self.buf += struct.pack("!H", v)
        return self

    def u32(self, v: int) -> Wire:
        self.buf += struct.pack("!I", v)
        return self

    def raw(self, b: bytes) -> Wire:
        self.buf += b
        return self

    def header(self, flags: int, qd: int, an: int, ns: int, ar: int, ident: int = 0x1234) -> Wire:
        return self.u16(ident).u16(flags).u16(qd).u16(an).u16(ns).u16(ar)

    def name(self, labels: Sequence[bytes], compress: bool = True) -> Wire:
        for i in range(len(labels)):
            suffix = tuple(label.lower() for label in labels[i:])
            at = self.suffixes.get(suffix)
            if compress and at is not None:
                return self.u16(0xC000 | at)
            if len(self.buf) < 0x4000:
                self.suffixes.setdefault(suffix, len(self.buf))
            self.u8(len(labels[i])).raw(labels[i])
        return self.u8(0)

    def question(self, labels: Sequence[bytes], qtype: int = 1, qclass: int = 1) -> Wire:
        return self.name(labels).u16(qtype).u16(qclass)

    def rr_start(self, labels: Sequence[bytes], rtype: int, rclass: int, ttl: int) -> int:
        """Write an RR header with a zero RDLENGTH; return where the RDLENGTH sits."""
        self.name(labels).u16(rtype).u16(rclass)
        self.ttl_offsets.append(len(self.buf))
        self.u32(ttl)
        at = len(self.buf)
        self.u16(0)
        return at

    def rr_end(self, at: int, delta: int = 0) -> Wire:
        length = len(self.buf) - at - 2 + delta
        self.buf[at : at + 2] = struct.pack("!H", length & 0xFFFF)
        return self

    def rr(
        self, labels: Sequence[bytes], rtype: int, rdata: bytes, ttl: int = 300, rclass: int = 1
    ) -> Wire:
        at = self.rr_start(labels, rtype, rclass, ttl)
        return self.raw(rdata).rr_end(at)

    def rr_name(
        self, labels: Sequence[bytes], rtype: int, target: Sequence[bytes], ttl: int = 300
    ) -> Wire:
        at = self.rr_start(labels, rtype, 1, ttl)
        return self.name(target).rr_end(at)

    def bytes(self) -> bytes:
        return bytes(self.buf)


def labels_of(name: str) -> list[bytes]:
    return [label.encode() for label in name.split(".") if label]


def reference(data: bytes) -> Extracted | str:
    try:
        msg = dns.message.from_wire(data)
    except Exception:
        return REJECTED
    return extract_message(msg)


def check_against_dnspython(data: bytes, *, in_hypothesis: bool = True) -> None:
    expected = reference(data)
    try:
        fast: Extracted | str | None = extract_wire_fast(data)
    except MalformedDNSMessage:
        fast = REJECTED
    if fast is None:
        label = "declined by the fast path"
    else:
        label = f"fast path: {'rejected' if fast == REJECTED else 'extracted'}"
        assert fast == expected
    if in_hypothesis:
        event(label)
    try:
        full: Extracted | str = extract_wire(data)
    except MalformedDNSMessage:
        full = REJECTED
    assert full == expected


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

plain_labels = st.sampled_from(
    [b"www", b"WWW", b"Example", b"com", b"cdn", b"a", b"x-y", b"_srv", b"k8s", b"Svc", b"1"]
)
odd_labels = st.binary(min_size=1, max_size=12) | st.sampled_from(
    [b"a.b", b"back\\slash", b"\xc3\xa9t\xc3\xa9", b"sp ace", b'q"(;@$', b"x" * 63]
)
labels = st.one_of(plain_labels, plain_labels, plain_labels, odd_labels)
names = st.lists(labels, min_size=0, max_size=4)
ttls = st.one_of(
    st.sampled_from([0, 1, 60, 300, 2**31 - 1, 2**31, 2**32 - 1]),
    st.integers(0, 2**31 - 1),
    st.integers(2**31, 2**32 - 1),  # read as 0
)


@st.composite
def opt_rdata(draw: st.DrawFn) -> bytes:
    out = bytearray()
    for _ in range(draw(st.integers(0, 3))):
        code = draw(st.sampled_from([10, 10, 12, 3, 8, 15, 65001, 9]))
        if code == 10:
            data = b"c" * draw(st.sampled_from([8, 16, 24, 40, 8, 16, 0, 7, 9, 15, 41]))
        else:
            data = draw(st.binary(max_size=10))
        out += struct.pack("!HH", code, len(data)) + data
    return bytes(out)


@st.composite
def raw_messages_and_ttl_offsets(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A message written byte by byte; valid unless the strategy chose a bad count/length."""
    pool = draw(st.lists(names, min_size=1, max_size=5))

    def pick() -> list[bytes]:
        return draw(st.sampled_from(pool))

    opcode = draw(st.sampled_from([0] * 12 + [1, 2, 4, 5]))
    flags = (
        draw(st.integers(0, 0xFFFF)) & ~0x7800 | opcode << 11
        if draw(st.booleans())
        else (0x8180 | opcode << 11 | draw(st.integers(0, 15)))
    )
    qd = draw(st.sampled_from([1, 1, 1, 1, 1, 1, 0, 2]))
    w = Wire()
    w.header(flags, 0, 0, 0, 0)
    for _ in range(qd):
        w.question(pick(), draw(st.sampled_from([1, 28, 5, 255, 0])), draw(st.sampled_from([1, 3])))
    # Mostly what the fast path reads itself (so its answers are compared), sometimes what it
    # hands to dnspython.
    kinds = ["A", "A", "A", "A", "AAAA", "AAAA", "CNAME", "CNAME", "CNAME", "NS", "SOA", "OPT"] * 3
    kinds += ["MX", "TXT", "CH-A", "TYPE65280", "RRSIG", "BAD-A"]
    specs = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(kinds))
        # OPT belongs in the additional section; now and then it is put elsewhere
        sections = [2, 2, 2, 0] if kind == "OPT" else [0, 0, 0, 1, 2]
        specs.append((draw(st.sampled_from(sections)), kind))
    if draw(st.integers(0, 4)):  # usually in section order; sometimes in draw order
        specs.sort(key=lambda spec: spec[0])
    counts = [0, 0, 0]
    for section, kind in specs:
        ttl = draw(ttls)
        owner = pick()
        if kind == "A":
            w.rr(owner, 1, draw(st.binary(min_size=4, max_size=4)), ttl)
        elif kind == "BAD-A":
            w.rr(owner, 1, draw(st.binary(max_size=6)), ttl)
        elif kind == "AAAA":
            w.rr(owner, 28, draw(st.binary(min_size=16, max_size=16)), ttl)
        elif kind == "CH-A":
            w.rr(owner, 1, draw(st.binary(min_size=4, max_size=4)), ttl, rclass=3)
        elif kind in ("CNAME", "NS"):
            w.rr_name(owner, 5 if kind == "CNAME" else 2, pick(), ttl)
        elif kind == "SOA":
            at = w.rr_start(owner, 6, 1, ttl)
            w.name(pick()).name(pick()).raw(struct.pack("!IIIII", 1, 2, 3, 4, 5))
            w.rr_end(at, draw(st.sampled_from([0, 0, 0, 0, 1, -1])))
        elif kind == "MX":
            at = w.rr_start(owner, 15, 1, ttl)
            w.u16(10).name(pick()).rr_end(at)
        elif kind == "TXT":
            w.rr(owner, 16, b"\x05hello", ttl)
        elif kind == "RRSIG":
            w.rr(owner, 46, draw(st.binary(max_size=30)), ttl)
        elif kind == "TYPE65280":
            w.rr(owner, 65280, draw(st.binary(max_size=8)), ttl)
        else:  # OPT: usually owned by the root, sometimes not
            owner = [] if draw(st.integers(0, 5)) else pick()
            w.rr(owner, 41, draw(opt_rdata()), ttl, rclass=draw(st.sampled_from([1232, 4096, 1])))
        counts[section] += 1
    # The reader splits records into sections by the counts alone; when the records were
    # written in draw order, this moves some between sections: another shape to compare.
    an, ns, ar = counts
    if draw(st.integers(0, 9)) == 0:
        an += draw(st.sampled_from([-1, 1]))
    data = bytearray(w.bytes())
    data[4:12] = struct.pack("!HHHH", qd, max(an, 0), ns, ar)
    return bytes(data), w.ttl_offsets


def raw_messages() -> st.SearchStrategy[bytes]:
    return raw_messages_and_ttl_offsets().map(lambda pair: pair[0])


@st.composite
def dnspython_messages(draw: st.DrawFn) -> bytes:
    """A response rendered by dnspython (always valid): chains, many records, AAAA, OPT."""
    names_ = [
        ".".join(
            [*draw(st.lists(st.sampled_from(["www", "API", "cdn", "edge", "x"]), max_size=3)), ""]
        )
        + "example.com."
        for _ in range(4)
    ]
    query = dns.message.make_query(
        names_[0], draw(st.sampled_from(["A", "AAAA"])), id=draw(st.integers(0, 0xFFFF))
    )
    if draw(st.booleans()):
        options: list[dns.edns.Option] = []
        if draw(st.booleans()):
            options.append(dns.edns.CookieOption(b"c" * 8, b"s" * draw(st.sampled_from([0, 8]))))
        if draw(st.booleans()):
            options.append(dns.edns.ECSOption("192.0.2.0", 24))
        query.use_edns(0, options=options)
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(draw(st.sampled_from([0, 0, 3, 2, 16]))))
    chain = draw(st.integers(0, 3))
    for i in range(chain):
        response.answer.append(
            dns.rrset.from_text(names_[i], draw(ttls) % 2**31, "IN", "CNAME", names_[i + 1])
        )
    last = names_[chain]
    v4 = draw(st.lists(st.integers(0, 2**32 - 1), max_size=6, unique=True))
    if v4:
        addresses = [".".join(str(b) for b in n.to_bytes(4, "big")) for n in v4]
        response.answer.append(dns.rrset.from_text(last, 60, "IN", "A", *addresses))
    v6 = draw(st.lists(st.binary(min_size=16, max_size=16), max_size=3, unique=True))
    if v6:
        texts = [str(ipaddress.IPv6Address(b)) for b in v6]
        response.answer.append(dns.rrset.from_text(last, 60, "IN", "AAAA", *texts))
    if draw(st.booleans()):
        response.authority.append(
            dns.rrset.from_text(
                "example.com.", 60, "IN", "SOA", "ns.example.com. h.example.com. 1 2 3 4 5"
            )
        )
    if draw(st.booleans()):
        response.additional.append(
            dns.rrset.from_text("ns.example.com.", 60, "IN", "A", "198.51.100.53")
        )
    if draw(st.booleans()):
        response.answer.append(dns.rrset.from_text(last, 60, "IN", "TXT", '"v=1"'))
    return response.to_wire(want_shuffle=False)  # dnspython shuffles with `random`


valid_messages = st.one_of(raw_messages(), dnspython_messages())


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_messages))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "pointer", "label-type", "insert"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "pointer":
            # backwards (anywhere, so also into the name holding the pointer), at itself,
            # forwards or beyond the end
            earlier = draw(st.integers(0, max(at - 1, 0)))
            target = draw(st.sampled_from([earlier, earlier, at - 2, at, at + 2, len(data) + 5]))
            data[at : at + 2] = struct.pack("!H", 0xC000 | (target & 0x3FFF))
        elif kind == "label-type":
            data[at] = draw(st.integers(64, 191))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
    return bytes(data)


fuzz = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(valid_messages)
def test_fast_path_matches_dnspython_on_valid_messages(data: bytes) -> None:
    check_against_dnspython(data)


@fuzz
@given(corrupted())
def test_fast_path_matches_dnspython_on_corrupted_messages(data: bytes) -> None:
    check_against_dnspython(data)


@fuzz
@given(raw_messages_and_ttl_offsets(), st.data())
def test_repeats_with_other_ids_and_ttls_are_extracted_like_dnspython(
    message: tuple[bytes, list[int]], data: st.DataObject
) -> None:
    # The fast path remembers the layout of a message seen twice and extracts its repeats
    # (equal bytes but for the ID and the TTLs) from that layout.
    original, ttl_offsets = message
    for _ in range(3):
        check_against_dnspython(original)
    repeat = bytearray(original)
    repeat[0:2] = struct.pack("!H", data.draw(st.integers(0, 0xFFFF)))
    for at in ttl_offsets:
        repeat[at : at + 4] = struct.pack("!I", data.draw(ttls))
    # The fast path's own result: a repeat from the layout is the very tuple it gave last.
    first = fast_path_result(bytes(repeat)) if reference(original) != REJECTED else None
    check_against_dnspython(bytes(repeat))
    # With one question written out in full, the remembered layout's key (the bytes up to
    # the question's end) never holds a TTL, so a repeat must come from the layout.
    one_plain_question = original[4:6] == b"\x00\x01" and original[12] < 0xC0
    if first is not None and one_plain_question:
        assert fast_path_result(bytes(repeat)) is first, "a repeat was parsed again"
        event("remembered layout used")
    # A change anywhere else must not be taken for a repeat.
    variable = set(range(2)) | {at + k for at in ttl_offsets for k in range(4)}
    fixed = [i for i in range(len(original)) if i not in variable]
    if fixed:
        at = data.draw(st.sampled_from(fixed))
        changed = bytearray(repeat)
        changed[at] = (changed[at] + data.draw(st.integers(1, 255))) % 256
        check_against_dnspython(bytes(changed))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=80))
def test_fast_path_matches_dnspython_on_random_bytes(data: bytes) -> None:
    check_against_dnspython(data)


@settings(max_examples=40, deadline=None)
@given(valid_messages)
def test_every_truncation_is_judged_like_dnspython(data: bytes) -> None:
    for end in range(len(data)):
        check_against_dnspython(data[:end])


def _typical() -> bytes:
    return (
        Wire()
        .header(0x8180, 1, 4, 0, 0)
        .question(labels_of("www.Example.com"))
        .rr_name(labels_of("www.example.com"), 5, labels_of("cdn.example.net"), 300)
        .rr(labels_of("cdn.example.net"), 1, bytes([10, 0, 0, 1]), 60)
        .rr(labels_of("cdn.example.net"), 1, bytes([10, 0, 0, 2]), 60)
        .rr(labels_of("cdn.example.net"), 1, bytes([10, 0, 0, 3]), 60)
        .bytes()
    )


def test_every_truncation_of_the_typical_response_is_rejected_by_both() -> None:
    data = _typical()
    assert extract_wire_fast(data) == reference(data)
    for end in range(len(data)):
        assert reference(data[:end]) == REJECTED
        try:
            extract_wire_fast(data[:end])
        except MalformedDNSMessage:
            continue
        raise AssertionError(f"prefix of {end} bytes was accepted")


def test_every_single_byte_change_of_the_typical_response_is_judged_like_dnspython() -> None:
    data = _typical()
    values = (0, 1, 0x3F, 0x40, 0xBF, 0xC0, 0xFF)
    for at in range(len(data)):
        for value in values:
            changed = data[:at] + bytes([value]) + data[at + 1 :]
            check_against_dnspython(changed, in_hypothesis=False)
