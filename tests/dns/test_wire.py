"""What fqdnpolicy.dns.wire extracts from DNS messages, case by case."""

from __future__ import annotations

import gc
import ipaddress
import itertools
import struct

import dns.message
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.dns import layouts, wirenames
from fqdnpolicy.dns.wire import (
    Extracted,
    MalformedDNSMessage,
    Record,
    extract_message,
    extract_wire,
    extract_wire_fast,
    format_ipv6,
)
from fqdnpolicy.domains import canonical_dns_name
from fqdnpolicy.errors import InvalidPolicy
from tests.dns.helpers import fast_path_result
from tests.dns.test_wire_fuzz import REJECTED, Wire, labels_of, reference

A, CNAME, AAAA = 1, 5, 28


def typical_response() -> bytes:
    return (
        Wire()
        .header(0x8180, 1, 3, 0, 0)
        .question(labels_of("WWW.Example.com"))
        .rr_name(labels_of("www.example.com"), CNAME, labels_of("CDN.example.net"), 300)
        .rr(labels_of("cdn.example.net"), A, bytes([10, 0, 0, 1]), 60)
        .rr(labels_of("cdn.example.net"), A, bytes([10, 0, 0, 2]), 60)
        .bytes()
    )


def fast_and_full(data: bytes) -> Extracted:
    """Extract through the fast path, insisting that it took it, and check the reference.

    Both public functions give an Extracted of Records however the message was read (afresh,
    regrouped or from a remembered layout): the plain tuples the fast path builds for the
    cache stay inside the module.
    """
    fast = extract_wire_fast(data)
    assert fast is not None, "the fast path declined a common message"
    full = extract_wire(data)
    assert fast == full == reference(data)
    for got in (fast, full):
        assert type(got) is Extracted
        assert all(type(record) is Record for record in got.records)
    return fast


def test_typical_response_gives_question_header_bits_and_answer_records() -> None:
    got = fast_and_full(typical_response())
    assert got == Extracted(
        qname="www.example.com",
        is_response=True,
        opcode=0,
        rcode=0,
        truncated=False,
        records=(
            Record("www.example.com", CNAME, 300, "cdn.example.net"),
            Record("cdn.example.net", A, 60, "10.0.0.1"),
            Record("cdn.example.net", A, 60, "10.0.0.2"),
        ),
    )


def test_records_of_one_owner_and_type_are_grouped_at_their_first_place_with_the_smallest_ttl() -> (
    None
):
    owner, other = labels_of("a.example"), labels_of("b.example")
    data = (
        Wire()
        .header(0x8180, 1, 4, 0, 0)
        .question(owner)
        .rr(owner, A, bytes([10, 0, 0, 1]), ttl=300)
        .rr(other, A, bytes([10, 0, 0, 9]), ttl=50)
        .rr(owner, A, bytes([10, 0, 0, 2]), ttl=30)
        .rr(owner, A, bytes([10, 0, 0, 1]), ttl=20)  # duplicate value, still lowers the TTL
        .bytes()
    )
    assert fast_and_full(data).records == (
        Record("a.example", A, 20, "10.0.0.1"),
        Record("a.example", A, 20, "10.0.0.2"),
        Record("b.example", A, 50, "10.0.0.9"),
    )


NS, SOA = 2, 6
_SOA_RDATA = b"\x02ns\x00\x01h\x00" + struct.pack("!IIIII", 1, 2, 3, 4, 5)


@pytest.mark.parametrize(
    "answer",
    [
        # (owner, type, value, ttl); the owner of the first record is the question
        [("q", CNAME, "t", 300), ("t", A, "1", 60), ("t", A, "2", 60), ("t", A, "3", 60)],
        [("q", A, "1", 60), ("q", AAAA, "1", 60)],  # one owner, two RRsets side by side
        [("q", A, "1", 60), ("q", A, "2", 30)],  # a later record lowers the RRset's TTL
        [("q", A, "1", 30), ("q", A, "2", 60)],
        [("q", A, "1", 60), ("q", A, "2", 60), ("q", A, "1", 60)],  # a value again
        [("q", A, "1", 60), ("q", A, "1", 60)],
        [("q", A, "1", 60), ("t", A, "2", 60), ("q", A, "3", 60)],  # an RRset split
        [("q", CNAME, "t", 60), ("q", A, "1", 60), ("q", CNAME, "u", 30)],
        [("q", CNAME, "t", 60), ("q", CNAME, "u", 90)],  # a second CNAME replaces the first
        [("q", CNAME, "t", 60), ("q", CNAME, "u", 60)],
        [("q", CNAME, "t", 60), ("q", CNAME, "t", 60)],
        [("q", NS, "t", 60), ("q", A, "1", 60), ("q", A, "2", 60)],  # NS among the answers
        [("q", A, "1", 60), ("q", SOA, "", 60), ("q", A, "2", 50)],  # SOA among the answers
        [("q", A, "1", 60), ("x", A, "1", 60)],  # one address for two owners
        [("q", AAAA, "1", 60), ("q", AAAA, "2", 60), ("q", AAAA, "3", 60)],
        [("q", AAAA, "1", 60), ("q", AAAA, "2", 60), ("q", AAAA, "1", 60)],
    ],
    ids=[
        "typical",
        "two types",
        "ttl lowered",
        "ttl higher later",
        "value repeated",
        "value twice in a row",
        "rrset split",
        "cname split",
        "second cname",
        "second cname, same ttl",
        "cname twice",
        "ns in answer",
        "soa in answer",
        "address shared",
        "aaaa rrset",
        "aaaa repeated",
    ],
)
def test_answer_records_come_out_as_dnspython_groups_them_however_they_arrive(
    answer: list[tuple[str, int, str, int]],
) -> None:
    # The fast path keeps records as they come while each RRset's are adjacent, share a TTL
    # and repeat no value, and regroups otherwise: both must give dnspython's RRsets, and so
    # must a remembered layout for a repeat of the message with other TTLs.
    def message(ttl_delta: int) -> bytes:
        w = Wire().header(0x8180, 1, len(answer), 0, 0).question(labels_of("q.example"))
        for owner, rtype, value, ttl in answer:
            labels = labels_of(f"{owner}.example")
            if rtype in (CNAME, NS):
                w.rr_name(labels, rtype, labels_of(f"{value}.example"), ttl + ttl_delta)
            elif rtype == SOA:
                w.rr(labels, rtype, _SOA_RDATA, ttl + ttl_delta)
            else:
                rdata = bytes([10, 0, 0, int(value)] if rtype == A else [0] * 15 + [int(value)])
                w.rr(labels, rtype, rdata, ttl + ttl_delta)
        return w.bytes()

    layouts._TEMPLATES.clear()  # the cases share their keys (header and question)
    for _ in range(3):  # seen once, then its layout is remembered, then used
        fast_and_full(message(0))
    fast_and_full(message(7))


def test_an_address_record_like_the_last_answer_but_in_the_next_section_is_not_an_answer() -> None:
    owner = labels_of("q.example")
    for an, ns, ar in ((1, 1, 0), (1, 0, 1), (2, 1, 0)):
        w = Wire().header(0x8180, 1, an, ns, ar).question(owner)
        for k in range(an + ns + ar):
            w.rr(owner, A, bytes([10, 0, 0, k + 1]), ttl=60)
        assert [r.value for r in fast_and_full(w.bytes()).records] == [
            f"10.0.0.{k + 1}" for k in range(an)
        ]


@pytest.mark.parametrize(
    ("question", "target"),
    [
        ([b"a\x00b", b"example"], [b"t", b"example"]),  # the first zero byte is in a label
        ([b"\x01x\x00"], [b"t\x00", b"\x00"]),  # zeros that look like name ends
        ([b"q", b"example"], [b"\x03a\x00", b"x"]),
        ([b"x" * 63] * 3 + [b"x" * 61], [b"t"]),  # 254 octets in all: the longest name
        ([b"Q", b"Example"], [b"T" * 63, b"Example"]),
        # a length octet that is "." (46); a ".", a "\\" or a byte above 127 inside a label
        ([b"q" * 46, b"example"], [b"t", b"x" * 46]),
        ([b"a.b", b"example"], [b"t\\u", b"example"]),
        ([b"caf\xe9", b"example"], [b"t", b"\xff"]),
    ],
)
def test_names_written_out_in_full_read_as_dnspython_reads_them(
    question: list[bytes], target: list[bytes]
) -> None:
    # The fast path takes a name written out in full from its first zero byte (question) or
    # its record's last byte (CNAME target) when the bytes before it split into labels.
    data = (
        Wire()
        .header(0x8180, 1, 2, 0, 0)
        .question(question)
        .rr_name(question, CNAME, target, 300)
        .rr(target, A, bytes([10, 0, 0, 1]), 60)
        .bytes()
    )
    wirenames._RUN_TEXT.clear()
    for _ in range(2):  # with the label runs remembered from the first read, then without
        fast_and_full(data)


def test_a_cname_target_followed_by_a_stray_zero_byte_is_rejected_by_both() -> None:
    owner = labels_of("q.example")
    data = (
        Wire().header(0x8180, 1, 1, 0, 0).question(owner).rr(owner, CNAME, b"\x01a\x00\x00")
    ).bytes()
    assert reference(data) == REJECTED
    with pytest.raises(MalformedDNSMessage):
        extract_wire_fast(data)


@pytest.mark.parametrize("octet", [0x40, 0x41, 0x7F])
def test_a_label_type_octet_in_a_name_written_out_in_full_is_rejected_by_both(octet: int) -> None:
    # 0x40-0x7F start an extended label (unknown to dnspython), not a label of that length,
    # even where the octet's value would end the "label" exactly at a zero byte.
    name = b"\x01x" + bytes([octet]) + b"a" * octet + b"\x00"
    for data in (
        Wire().header(0x8180, 1, 0, 0, 0).raw(name).u16(1).u16(1).bytes(),
        Wire()
        .header(0x8180, 1, 1, 0, 0)
        .question(labels_of("q.example"))
        .rr(labels_of("q.example"), CNAME, name)
        .bytes(),
    ):
        assert reference(data) == REJECTED
        with pytest.raises(MalformedDNSMessage):
            extract_wire_fast(data)


def test_ttl_above_2_to_the_31_minus_1_reads_as_zero() -> None:
    owner = labels_of("a.example")
    for ttl, expected in ((2**31 - 1, 2**31 - 1), (2**31, 0), (2**32 - 1, 0)):
        data = Wire().header(0x8180, 1, 1, 0, 0).question(owner).rr(owner, A, b"\n\0\0\1", ttl)
        assert fast_and_full(data.bytes()).records[0].ttl == expected


def test_a_second_cname_for_one_owner_replaces_the_first() -> None:
    owner = labels_of("a.example")
    data = (
        Wire()
        .header(0x8180, 1, 2, 0, 0)
        .question(owner)
        .rr_name(owner, CNAME, labels_of("first.example"), ttl=100)
        .rr_name(owner, CNAME, labels_of("second.example"), ttl=200)
        .bytes()
    )
    assert fast_and_full(data).records == (Record("a.example", CNAME, 100, "second.example"),)


def test_records_outside_the_answer_section_and_of_other_classes_are_not_extracted() -> None:
    owner = labels_of("a.example")
    data = (
        Wire()
        .header(0x8180, 1, 2, 1, 1)
        .question(owner)
        .rr(owner, A, b"\n\0\0\1")
        .rr(owner, A, b"\n\0\0\2", rclass=4)  # class HS
        .rr(labels_of("ns.example"), A, b"\n\0\0\3")
        .rr(labels_of("glue.example"), AAAA, bytes(16))
        .bytes()
    )
    assert extract_wire_fast(data) is None  # class HS needs dnspython
    assert extract_wire(data).records == (Record("a.example", A, 300, "10.0.0.1"),)


def test_extended_rcode_comes_from_the_opt_record() -> None:
    query = dns.message.make_query("a.example.", "A", use_edns=0, id=1)
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.BADVERS)  # 16: 0 in the header, 1 in the OPT TTL
    assert fast_and_full(response.to_wire()).rcode == 16


def test_truncated_bit_and_missing_question_are_reported() -> None:
    data = Wire().header(0x8380, 0, 0, 0, 0).bytes()
    got = fast_and_full(data)
    assert got.truncated
    assert got.qname is None
    assert got.records == ()


def test_names_are_lowercase_and_escaped_like_canonical_dns_name() -> None:
    odd = [b"A.B", b"back\\slash", b"\xc3\xa9", b"Sp ace", b"Com"]
    data = Wire().header(0x8180, 1, 1, 0, 0).question(odd).rr(odd, A, b"\n\0\0\1").bytes()
    got = fast_and_full(data)
    expected = r"a\046b.back\092slash.\195\169.sp ace.com"
    assert got.qname == expected == got.records[0].name
    assert canonical_dns_name(expected) == expected


def test_every_byte_value_in_a_label_renders_as_canonical_dns_name_would() -> None:
    for b in range(256):
        label = [bytes([b]), b"x"]
        data = Wire().header(0x8180, 1, 0, 0, 0).question(label).bytes()
        assert fast_and_full(data).qname == reference(data).qname  # type: ignore[union-attr]


def test_root_name_is_the_empty_string() -> None:
    data = Wire().header(0x8180, 1, 0, 0, 0).question([]).bytes()
    assert fast_and_full(data).qname == ""


@pytest.mark.parametrize(
    ("why", "data"),
    [
        ("short header", b"\x00" * 11),
        ("pointer to itself", Wire().header(0, 1, 0, 0, 0).u16(0xC00C).u32(0x10001).bytes()),
        ("pointer forward", Wire().header(0, 1, 0, 0, 0).u16(0xC00E).u8(0).u32(0x10001).bytes()),
        ("pointer past the end", Wire().header(0, 1, 0, 0, 0).u16(0xFFFF).u32(0x10001).bytes()),
        ("label type 0x40", Wire().header(0, 1, 0, 0, 0).u8(0x40).u8(0).u32(0x10001).bytes()),
        ("label type 0x80", Wire().header(0, 1, 0, 0, 0).u8(0x80).u8(0).u32(0x10001).bytes()),
        (
            "name of 256 octets",
            Wire().header(0, 1, 0, 0, 0).question([b"x" * 63] * 4).bytes(),
        ),
        (
            "bad rdlength",
            Wire().header(0x8180, 0, 1, 0, 0).rr([b"a"], A, b"\n\0\0\1\5").bytes(),
        ),
        ("trailing junk", typical_response() + b"\0"),
        (
            "count larger than the records",
            typical_response()[:7] + b"\x09" + typical_response()[8:],
        ),
    ],
)
def test_malformed_messages_are_rejected_by_both_paths(why: str, data: bytes) -> None:
    assert reference(data) == REJECTED, why
    with pytest.raises(MalformedDNSMessage):
        extract_wire_fast(data)
    with pytest.raises(MalformedDNSMessage) as info:
        extract_wire(data)
    assert isinstance(info.value, InvalidPolicy)
    assert isinstance(info.value, ValueError)
    assert info.value.problem.code == "malformed-dns-message"


def chained_owners(records: int) -> bytes:
    """Each answer record's owner is a pointer to the previous record's owner (a chain)."""
    w = Wire().header(0x8180, 1, records, 0, 0).question(labels_of("a.example"))
    previous = 12
    for i in range(records):
        here = len(w.buf)
        w.u16(0xC000 | previous).u16(A).u16(1).u32(60).u16(4).raw(bytes([10, 0, 0, i]))
        previous = here
    return w.bytes()


def test_a_pointer_may_not_lead_to_a_name_overlapping_the_pointing_one() -> None:
    # The question's only label holds the bytes C0 0C; an answer owner points into that
    # label, where those bytes read as a pointer back to the question: the name pointed to
    # (at 12) runs over the place that points to it (15), which dnspython refuses.
    w = Wire().header(0x8180, 1, 1, 0, 0)
    w.u8(5).raw(b"ab\xc0\x0cd").u8(0).u16(A).u16(1)
    w.u16(0xC00F).u16(A).u16(1).u32(60).u16(4).raw(b"\n\0\0\1")
    data = w.bytes()
    assert reference(data) == REJECTED
    with pytest.raises(MalformedDNSMessage):
        extract_wire_fast(data)


def test_a_compressed_name_over_255_octets_is_rejected() -> None:
    long_name = [b"x" * 63] * 3 + [b"y" * 58]  # 3 * 64 + 59 + root = 252 octets: valid
    for prefix, accepted in (([b"ab"], True), ([b"abc"], False)):  # 255 and 256 octets
        w = Wire().header(0x8180, 1, 1, 0, 0).question(long_name)
        w.u8(len(prefix[0])).raw(prefix[0]).u16(0xC00C)  # prefix label + pointer to question
        w.u16(A).u16(1).u32(60).u16(4).raw(b"\n\0\0\1")
        data = w.bytes()
        assert (reference(data) != REJECTED) is accepted
        if accepted:
            fast_and_full(data)
        else:
            with pytest.raises(MalformedDNSMessage):
                extract_wire_fast(data)


def test_thousands_of_chained_pointers_are_rejected_without_deep_recursion() -> None:
    # Owner labels whose bytes are pointers, each to the one before (the first to the
    # question): plain label bytes to a reader, a chain of 3,100 pointers to one that jumps
    # into it. The last record's owner jumps to the end of the chain.
    records = 100
    w = Wire().header(0x8180, 1, records + 1, 0, 0).question([b"q"])
    previous = 12
    for _ in range(records):
        w.u8(62)
        for _ in range(31):
            here = len(w.buf)
            w.u16(0xC000 | previous)
            previous = here
        w.u8(0).u16(A).u16(1).u32(60).u16(4).raw(b"\n\0\0\1")
    w.u16(0xC000 | previous).u16(A).u16(1).u32(60).u16(4).raw(b"\n\0\0\2")
    data = w.bytes()
    assert reference(data) == REJECTED
    with pytest.raises(MalformedDNSMessage):
        extract_wire_fast(data)


def test_a_name_may_follow_16_compression_pointers_but_not_17() -> None:
    records = fast_and_full(chained_owners(16)).records
    assert len(records) == 16
    assert {r.name for r in records} == {"a.example"}
    data = chained_owners(17)
    assert reference(data) == REJECTED
    with pytest.raises(MalformedDNSMessage):
        extract_wire_fast(data)


def test_unusual_messages_go_to_dnspython_and_give_the_same_answer() -> None:
    owner = labels_of("a.example")
    two_questions = Wire().header(0x8180, 2, 0, 0, 0).question(owner).question(owner).bytes()
    rrsig = (
        Wire().header(0x8180, 1, 1, 0, 0).question(owner).rr(owner, 46, bytes(18) + b"\0").bytes()
    )
    update = Wire().header(0x2800, 1, 0, 0, 0).question(owner, 6).bytes()
    query = dns.message.make_query("a.example.", "A", id=3)
    query.use_edns(0, options=[dns.edns.ECSOption("198.51.100.0", 24)])
    for data in (two_questions, rrsig, update, query.to_wire()):
        assert extract_wire_fast(data) is None
        assert extract_wire(data) == reference(data)


def test_extract_wire_accepts_bytes_like_and_rejects_other_types() -> None:
    data = typical_response()
    assert extract_wire(bytearray(data)) == extract_wire(memoryview(data)) == extract_wire(data)
    with pytest.raises(MalformedDNSMessage):
        extract_wire("not bytes")  # type: ignore[arg-type]


def test_extract_message_skips_deleting_rrsets_of_dynamic_updates() -> None:
    update = dns.message.from_wire(
        Wire()
        .header(0x2800, 1, 1, 0, 0)
        .question(labels_of("example"), 6)
        .rr(labels_of("a.example"), A, b"", rclass=255)  # prerequisite: name has an A RRset
        .bytes()
    )
    assert extract_message(update).records == ()


@pytest.mark.parametrize(
    "parent",
    [
        [b"Team7", b"Example", b"com"],
        [b"caf\xc3\xa9", b"example"],  # bytes above 127: the whole name goes to _read_name
        [b"a\\b", b"example"],  # a backslash in a label: the same
    ],
    ids=["plain", "non-ASCII", "backslash"],
)
@pytest.mark.parametrize("first", [b"www", b"WWW-Api", b"x" * 63, b"a"])
def test_a_name_under_a_parent_read_before_reads_as_dnspython_reads_it(
    parent: list[bytes], first: bytes
) -> None:
    # A name written out in full whose labels after the first were read before (as a name of
    # their own, as the tail of another name, or before a compression pointer) takes only its
    # first label from the bytes: it must still read exactly as dnspython reads it.
    parent_run = b"".join(bytes([len(label)]) + label for label in parent)

    def forget() -> None:  # neither a run nor a whole message read before
        wirenames._RUN_TEXT.clear()
        layouts._TEMPLATES.clear()

    def read_the_name() -> None:
        if all(label.isascii() and b"." not in label and b"\\" not in label for label in parent):
            assert parent_run in wirenames._RUN_TEXT  # what the name's reading starts from
        data = Wire().header(0x8180, 1, 0, 0, 0).question([first, *parent]).bytes()
        assert fast_and_full(data) == reference(data)

    for seen_before in (
        parent,  # the parent itself
        [b"other", *parent],  # the parent as the tail of a name walked label by label
    ):
        forget()
        fast_and_full(Wire().header(0x8180, 1, 0, 0, 0).question(seen_before).bytes())
        read_the_name()
    forget()
    w = Wire().header(0x8180, 1, 1, 0, 0).question([b"net"])
    w.rr_name([b"net"], CNAME, [*parent, b"net"])  # the parent's labels, then a pointer
    fast_and_full(w.bytes())
    read_the_name()


def test_label_run_cache_stays_bounded() -> None:
    for i in range(wirenames._RUN_TEXT_MAX + 10):
        label = f"n{i}".encode()
        data = Wire().header(0x8180, 1, 0, 0, 0).question([label]).bytes()
        assert fast_and_full(data).qname == f"n{i}"
    assert len(wirenames._RUN_TEXT) <= wirenames._RUN_TEXT_MAX


def test_a_repeat_with_new_ttls_and_id_gets_its_own_ttls() -> None:
    data = typical_response()
    for _ in range(3):  # the layout is remembered from the second sighting on
        fast_and_full(data)
    repeat = bytearray(data)
    repeat[0:2] = b"\xbe\xef"
    # TTLs of the CNAME and of the second A record (offsets in typical_response's layout)
    cname_ttl = 12 + 21 + 2 + 4
    repeat[cname_ttl : cname_ttl + 4] = struct.pack("!I", 299)
    second_a_ttl = len(data) - 4 - 2 - 4
    repeat[second_a_ttl : second_a_ttl + 4] = struct.pack("!I", 2**31)  # reads as 0
    got = fast_and_full(bytes(repeat))
    assert [r.ttl for r in got.records] == [299, 0, 0]
    first = fast_path_result(bytes(repeat))
    assert fast_path_result(bytes(repeat)) is first  # from the layout, not parsed again


def test_remembered_layouts_stay_bounded() -> None:
    for i in range(layouts._TEMPLATES_MAX + 10):
        name = [f"m{i}".encode(), b"example"]
        data = Wire().header(0x8180, 1, 1, 0, 0).question(name).rr(name, A, b"\n\0\0\1").bytes()
        fast_and_full(data)
        fast_and_full(data)
    assert len(layouts._TEMPLATES) <= layouts._TEMPLATES_MAX
    assert all(len(t) <= layouts._TEMPLATES_PER_KEY for t in layouts._TEMPLATES.values())


def test_a_unique_message_leaves_nothing_for_the_garbage_collector() -> None:
    # Its key is only marked, with an object the collector does not track: a flood of unique
    # messages must not make it scan the process again and again.
    owner = labels_of("once.example")
    data = Wire().header(0x8180, 1, 1, 0, 0).question(owner).rr(owner, A, b"\n\0\0\1").bytes()
    key = data[2 : 12 + len(b"\x04once\x07example\x00") + 4]
    assert key not in layouts._TEMPLATES
    assert extract_wire_fast(data) == reference(data)
    assert not gc.is_tracked(layouts._TEMPLATES[key])
    assert extract_wire_fast(data) == reference(data)  # the second sighting remembers it
    assert len(layouts._TEMPLATES[key]) == 1
    assert fast_and_full(data).records[0].value == "10.0.0.1"


def test_messages_over_512_bytes_are_extracted_but_not_remembered() -> None:
    owner = labels_of("big.example")
    w = Wire().header(0x8180, 1, 40, 0, 0).question(owner)
    for i in range(40):
        w.rr(owner, A, bytes([10, 0, 1, i]))
    data = w.bytes()
    assert len(data) > 512
    for _ in range(3):
        assert len(fast_and_full(data).records) == 40
    question_end = 12 + len(b"\x03big\x07example\x00") + 4
    assert data[2:question_end] not in layouts._TEMPLATES
    small = Wire().header(0x8180, 1, 1, 0, 0).question(owner).rr(owner, A, b"\n\0\0\1").bytes()
    fast_and_full(small)
    assert small[2:question_end] in layouts._TEMPLATES  # the key is right: small ones are kept


def _ipv6_with_zero_groups(mask: int, fill: int) -> bytes:
    return b"".join(struct.pack("!H", 0 if mask >> i & 1 else fill) for i in range(8))


def test_format_ipv6_equals_ipaddress_for_every_pattern_of_zero_groups() -> None:
    for mask, fill in itertools.product(range(256), (1, 0xFFFF, 0x0DB8)):
        packed = _ipv6_with_zero_groups(mask, fill)
        assert format_ipv6(packed) == str(ipaddress.IPv6Address(packed))
    mapped = bytes(10) + b"\xff\xff" + bytes([1, 2, 3, 4])
    assert format_ipv6(mapped) == str(ipaddress.IPv6Address(mapped))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xFFFE, 0x1234]), min_size=8, max_size=8))
def test_format_ipv6_equals_ipaddress(groups: list[int]) -> None:
    packed = struct.pack("!8H", *groups)
    assert format_ipv6(packed) == str(ipaddress.IPv6Address(packed))
