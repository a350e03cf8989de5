r"""Names read out of DNS wire bytes, in the canonical form, as dnspython would read them.

Labels, compression pointers and their limits (pointers strictly backwards, no overlap, at
most 16 followed, at most 255 octets), and the text of a name in the canonical form of
:func:`fqdnpolicy.domains.canonical_dns_name`: lowercase ASCII, no trailing dot, ``\DDD``
escapes. Traffic repeats its names, so label runs already read are remembered (``_RUN_TEXT``,
bounded). Used by the fast parser, :mod:`fqdnpolicy.dns.fastwire`.
"""

from __future__ import annotations

from fqdnpolicy.dns.wireformat import MalformedDNSMessage

# dnspython follows at most this many compression pointers in one name
# (dns.name.MAX_COMPRESSION_POINTER_CHAIN); a longer chain is malformed.
_MAX_POINTER_HOPS = 16
# RFC 1035 3.1: a name is at most 255 octets in uncompressed wire form, root octet included.
_MAX_NAME_WIRE = 255


# Bytes that a canonical name shows as themselves (after ASCII lowercasing): every ASCII byte
# except "." and "\" (which would change how the name splits into labels). Anything else is
# written as \DDD, as canonical_dns_name does.
_PLAIN = bytes(b for b in range(128) if b not in (0x2E, 0x5C))
_BYTE_TEXT = tuple(
    chr(b).lower() if b < 128 and b not in (0x2E, 0x5C) else f"\\{b:03d}" for b in range(256)
)


def _label_text(label: bytes) -> str:
    if label.translate(None, _PLAIN):
        return "".join([_BYTE_TEXT[b] for b in label])
    return label.decode("ascii").lower()


# Raw label runs (length octets included) -> their text. Traffic repeats the same names over
# and over; a hit costs one dict lookup instead of splitting, checking and decoding each label.
# Cleared when full, so memory stays bounded.
_RUN_TEXT: dict[bytes, str] = {}
_RUN_TEXT_MAX = 8192


def _run_text(run: bytes) -> str:
    """The text of a label run that ``_RUN_TEXT`` does not hold yet; remembered there."""
    # Every byte in _PLAIN: what run.translate(None, _PLAIN) tells, faster (_plain_run_text).
    if run.isascii() and 0x2E not in run and 0x5C not in run:
        # Plain labels (and no length octet that is "." itself): lowercase (length octets are
        # below "A"), overwrite each length octet after the first with a dot and decode once,
        # rather than slicing and decoding label by label.
        buf = bytearray(run.lower())
        i, n = run[0] + 1, len(run)
        while i < n:
            buf[i] = 0x2E
            i += run[i] + 1
        del buf[0]
        text = buf.decode()
    else:
        labels: list[str] = []
        i = 0
        while i < len(run):
            j = i + 1 + run[i]
            labels.append(_label_text(run[i + 1 : j]))
            i = j
        text = ".".join(labels)
    if len(_RUN_TEXT) >= _RUN_TEXT_MAX:
        _RUN_TEXT.clear()
    _RUN_TEXT[run] = text
    return text


def _plain_run_text(run: bytes) -> str | None:
    """The text of ``run`` if it is exactly a sequence of plain labels, else None.

    For a name written out in full, whose end the caller guesses from a zero byte: the run
    must split into labels (length octets 1-63) ending exactly at its end, be shorter than
    255 octets and need no escapes. Then the name is ``run`` and the root, as ``_read_name``
    would read it, in one walk instead of two and without its call. Anything else is left to
    ``_read_name``, which also says what is wrong.
    """
    n = len(run)
    # Every byte in _PLAIN, checked without the copy run.translate(None, _PLAIN) makes.
    if n >= _MAX_NAME_WIRE or not run.isascii() or 0x2E in run or 0x5C in run:
        return None
    c = run[0]
    if not 0 < c < 64:
        return None
    i = c + 1
    # Names come in families under a few parents (api1.example.com, api2.example.com): when
    # the labels after the first are a run read before, only the first label is new, about
    # half the walk below, which also leaves the parent. Every key of _RUN_TEXT is a sound
    # label sequence (each way of reading one
    # checks it), and the checks above cover the first label and the whole run's length and
    # bytes.
    if i < n:
        rest = _RUN_TEXT.get(run[i:])
        if rest is not None:
            text = f"{run[1:i].lower().decode()}.{rest}"
            if len(_RUN_TEXT) >= _RUN_TEXT_MAX:
                _RUN_TEXT.clear()
            _RUN_TEXT[run] = text
            return text
    buf = bytearray(run.lower())  # length octets are below "A": lower() leaves them alone
    while i < n:
        c = run[i]
        if not 0 < c < 64:
            return None
        buf[i] = 0x2E
        i += c + 1
    if i != n:
        return None
    del buf[0]
    text = buf.decode()
    if len(_RUN_TEXT) >= _RUN_TEXT_MAX - 1:
        _RUN_TEXT.clear()
    _RUN_TEXT[run] = text
    first = run[0] + 1
    if first < n:  # the parent, for the next name of the family
        _RUN_TEXT[run[first:]] = text[first:]
    return text


# A name read at an offset: (text, end of its sequential part, pointers followed, wire length)
_NameEntry = tuple[str, int, int, int]


def _read_name(
    data: bytes, start: int, limit: int, memo: dict[int, _NameEntry], hops: int
) -> _NameEntry:
    """Read the name at ``start``; bytes at ``limit`` and beyond are out of reach.

    Mirrors dnspython's rules: a pointer must point before the start of the label sequence it
    ends (so loops are impossible), the pointed-to labels must end before that start, and at
    most 16 pointers are followed. ``hops`` counts the pointers followed to get here. Each
    label sequence is read once per message: later pointers to it hit ``memo``.
    """
    p = start
    if p >= limit:
        raise MalformedDNSMessage("name runs past the end of its data", p)
    c = data[p]
    while 0 < c < 64:
        p += c + 1
        if p >= limit:
            raise MalformedDNSMessage("label runs past the end of its data", start)
        c = data[p]
    wire_len = p - start
    if wire_len:
        if wire_len >= _MAX_NAME_WIRE:  # the root octet or a pointer's target still follows
            raise MalformedDNSMessage("name longer than 255 octets", start)
        # The _RUN_TEXT lookup inlined: a known name costs one dict lookup and no call.
        run = data[start:p]
        text = _RUN_TEXT.get(run) or _run_text(run)
    else:
        text = ""
    if c == 0:
        entry = (text, p + 1, 0, wire_len + 1)
        memo[start] = entry
        return entry
    if c < 192:
        raise MalformedDNSMessage(f"unknown label type 0x{c & 0xC0:02x}", p)
    if p + 1 >= limit:
        raise MalformedDNSMessage("compression pointer cut short", p)
    target = ((c & 0x3F) << 8) | data[p + 1]
    if target >= start:
        raise MalformedDNSMessage("compression pointer does not point backwards", p)
    if hops >= _MAX_POINTER_HOPS:
        raise MalformedDNSMessage("too many compression pointers in one name", p)
    tail_entry = memo.get(target)
    if tail_entry is None:
        tail_entry = _read_name(data, target, start, memo, hops + 1)
    elif tail_entry[1] > start:
        raise MalformedDNSMessage("compressed name overlaps the name pointing to it", p)
    tail, _, tail_hops, tail_wire = tail_entry
    tail_hops += 1
    if hops + tail_hops > _MAX_POINTER_HOPS:
        raise MalformedDNSMessage("too many compression pointers in one name", p)
    wire_len += tail_wire
    if wire_len > _MAX_NAME_WIRE:
        raise MalformedDNSMessage("name longer than 255 octets", p)
    if text:
        if tail:
            text = f"{text}.{tail}"
    else:
        text = tail
    entry = (text, p + 2, tail_hops, wire_len)
    memo[start] = entry
    return entry
