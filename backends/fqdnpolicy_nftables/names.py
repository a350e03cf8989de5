"""Names and strings that reach an nftables ruleset: always derived, hashed or sanitised.

Nothing a policy author wrote (policy names, selector values, set definitions, annotations)
reaches the ruleset as it is. Identifiers (set and chain names) are derived from engine ids or
hashed; free text (comments, log prefixes) is reduced to a small safe alphabet, bounded in
length, and marked with a short hash of the original whenever that changed it, so that two
different originals never print the same.
"""

from __future__ import annotations

import re

from fqdnpolicy.backend_tools import (
    IFNAME_MAX,
    check_interface,
    check_netns,
    digest,
    safe_text,
)
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "COMMENT_MAX",
    "IFNAME_MAX",
    "LOG_PREFIX_MAX",
    "check_interface",
    "check_netns",
    "check_table",
    "digest",
    "named_port_set_name",
    "safe_text",
    "set_name",
    "set_names",
]

#: Longest comment the kernel stores (``NFT_USERDATA_MAXLEN`` is 256 bytes; nft's own limit
#: for comments is 128 characters).
COMMENT_MAX = 120
#: Longest log prefix (``NF_LOG_PREFIXLEN`` is 128 including the terminating NUL).
LOG_PREFIX_MAX = 100
# Engine set ids and our table names.
_SET_ID = re.compile(r"([a-z]):([A-Za-z0-9_-]{1,40})")
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,30}")


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
