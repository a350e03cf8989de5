"""Names and strings that reach an nftables ruleset: always derived, hashed or sanitised.

Nothing a policy author wrote (policy names, selector values, set definitions, annotations)
reaches the ruleset as it is. Identifiers (set and chain names) are derived from engine ids or
hashed; free text (comments, log prefixes) is reduced to a small safe alphabet, bounded in
length, and marked with a short hash of the original whenever that changed it, so that two
different originals never print the same.
"""

from __future__ import annotations

import hashlib
import re

from fqdnpolicy.errors import InvalidPolicy, Problem

#: Longest comment the kernel stores (``NFT_USERDATA_MAXLEN`` is 256 bytes; nft's own limit
#: for comments is 128 characters).
COMMENT_MAX = 120
#: Longest log prefix (``NF_LOG_PREFIXLEN`` is 128 including the terminating NUL).
LOG_PREFIX_MAX = 100
#: Longest interface name (``IFNAMSIZ`` is 16 including the NUL).
IFNAME_MAX = 15

# Characters that mean nothing to nft's scanner inside a quoted string: no quote, no
# backslash, no newline, no ``$`` (variables), no ``;`` or ``#`` (statement separators and
# comments if a quote were ever lost).
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:/=,()\[\]+-]")
_SET_ID = re.compile(r"([a-z]):([A-Za-z0-9_-]{1,40})")
_IFNAME = re.compile(rf"[A-Za-z0-9_.-]{{1,{IFNAME_MAX}}}")
_NETNS = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,30}")


def digest(text: str, size: int = 10) -> str:
    """Return ``2 * size`` hex characters of BLAKE2b of ``text`` (deterministic names)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).hexdigest()


def safe_text(text: str, limit: int) -> str:
    """Return ``text`` reduced to characters nft treats as plain inside a quoted string.

    Unsafe characters become ``_``. When anything was replaced or cut, a ``#`` plus eight hex
    characters of the original's hash end the result (``#`` is added by us after the
    sanitising, so it cannot come from the input), keeping distinct originals distinct.
    The result is at most ``limit`` characters.
    """
    if len(text) <= limit and _UNSAFE.search(text) is None:
        return text  # the common case, without building a copy
    cleaned = _UNSAFE.sub("_", text)
    mark = "#" + digest(text, 4)
    return cleaned[: max(0, limit - len(mark))] + mark


def set_name(set_id: str, family: int) -> str:
    """Return the nft set name of one family of an engine IP set.

    Engine ids (``d:AbC...``) map to ``d4_AbC...``: readable and within nft's identifier
    grammar. Any other id is hashed.
    """
    found = _SET_ID.fullmatch(set_id)
    if found is not None:
        return f"{found.group(1)}{family}_{found.group(2)}"
    return f"x{family}_{digest(set_id)}"


def set_names(set_id: str) -> tuple[str, str]:
    """Return the nft set names of both families (4, 6) of an engine IP set (see set_name)."""
    found = _SET_ID.fullmatch(set_id)
    if found is not None:
        letter, rest = found.groups()
        return f"{letter}4_{rest}", f"{letter}6_{rest}"
    hashed = digest(set_id)
    return f"x4_{hashed}", f"x6_{hashed}"


def named_port_set_name(name: str, family: int) -> str:
    """Return the nft set name holding ``address . protocol . port`` of a peer named port."""
    return f"np{family}_{digest(name)}"


def check_interface(name: str, endpoint: str) -> str:
    """Return ``name`` if it is a safe interface name, else raise.

    Raises:
        InvalidPolicy: not 1-15 characters of letters, digits, ``_``, ``.`` and ``-``.
    """
    if _IFNAME.fullmatch(name) is None:
        raise InvalidPolicy(
            Problem(
                f"interface name {safe_text(name, 40)!r} cannot be used in a ruleset",
                resource=endpoint,
                path="interface",
                hint="1-15 characters: letters, digits, '_', '.', '-' (e.g. cali0123456789a)",
                code="bad-interface",
            )
        )
    return name


def check_netns(name: str) -> str:
    """Return ``name`` if it is a plausible network namespace name, else raise.

    Raises:
        InvalidPolicy: not 1-64 characters of letters, digits, ``_``, ``.`` and ``-``.
    """
    if _NETNS.fullmatch(name) is None:
        raise InvalidPolicy(
            Problem(
                f"network namespace name {safe_text(name, 40)!r} is not valid",
                path="netns",
                hint="1-64 characters: letters, digits, '_', '.', '-'",
                code="bad-netns",
            )
        )
    return name


def check_table(name: str) -> str:
    """Return ``name`` if it is a valid table name for us, else raise.

    Raises:
        InvalidPolicy: not a letter followed by up to 30 letters, digits or ``_``.
    """
    if _TABLE.fullmatch(name) is None:
        raise InvalidPolicy(
            Problem(
                f"table name {safe_text(name, 40)!r} is not valid",
                path="table",
                hint="a letter, then up to 30 letters, digits or '_' (e.g. fqdnpolicy)",
                code="bad-table",
            )
        )
    return name
