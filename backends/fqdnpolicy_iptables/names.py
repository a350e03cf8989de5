"""Names and strings that reach ipset and iptables: always derived, hashed or sanitised.

Nothing a policy author wrote (policy names, selector values, set definitions) reaches
``ipset restore`` or ``iptables-restore`` as it is. Identifiers (set and chain names) are
derived from engine ids or hashed, within the tools' limits: 31 characters for a set name
(``IPSET_MAXNAMELEN`` is 32 with the NUL), 28 for a chain name (``XT_EXTENSION_MAXNAMELEN`` is
29). Free text (comments, log prefixes) goes through
:func:`fqdnpolicy.backend_tools.safe_text`: a small safe alphabet, bounded in length, marked
with a short hash of the original whenever that changed it.

Every object the backend owns is named ``<prefix>-...`` (``fqp-`` by default); that is how a
fresh backend finds what an earlier one installed, and leaves everything else alone.
"""

from __future__ import annotations

import re

from fqdnpolicy.backend_tools import digest, safe_text
from fqdnpolicy.errors import InvalidPolicy, Problem

__all__ = [
    "CHAIN_MAX",
    "COMMENT_MAX",
    "LOG_PREFIX_MAX",
    "NFLOG_PREFIX_MAX",
    "SET_MAX",
    "Names",
    "check_prefix",
    "log_prefix",
]

#: Longest set name ipset takes.
SET_MAX = 31
#: Longest chain name iptables takes.
CHAIN_MAX = 28
#: Longest comment we write (the comment match holds 255 characters).
COMMENT_MAX = 240
#: Longest ``LOG --log-prefix`` (the kernel's buffer is 30 bytes with the NUL).
LOG_PREFIX_MAX = 29
#: Longest ``NFLOG --nflog-prefix`` (64 bytes with the NUL).
NFLOG_PREFIX_MAX = 63
# Engine set ids: a kind letter, ':', 22 base64url characters (fqdnpolicy.engine.ipsets).
_SET_ID = re.compile(r"([a-z]):([A-Za-z0-9_-]{1,22})")
_PREFIX = re.compile(r"[a-z][a-z0-9]{0,3}")


# Policy kinds as the engine names them, shortened so that more of the name fits a prefix.
_KINDS = (("GlobalNetworkPolicy ", "gnp "), ("NetworkPolicy ", "np "))


def log_prefix(policy: str, direction: str, index: int, limit: int) -> str:
    """Return a log prefix naming the policy, the direction and the rule, within ``limit``.

    ``fp gnp allow-dns e3 `` for egress rule 3 of GlobalNetworkPolicy allow-dns; a policy
    name too long for the limit is cut and marked with its hash (see ``safe_text``). The
    rule's comment carries the whole name.
    """
    for kind, short in _KINDS:
        if policy.startswith(kind):
            policy = short + policy[len(kind) :]
            break
    tail = f" {direction[:1]}{index} "
    return "fp " + safe_text(policy, max(9, limit - 3 - len(tail))) + tail


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start our names, else raise.

    Raises:
        InvalidPolicy: not a lower-case letter followed by up to three letters or digits.
    """
    if _PREFIX.fullmatch(prefix) is None:
        raise InvalidPolicy(
            Problem(
                f"name prefix {safe_text(prefix, 40)!r} is not valid",
                path="prefix",
                hint="a lower-case letter, then up to 3 lower-case letters or digits (fqp)",
                code="bad-prefix",
            )
        )
    return prefix


class Names:
    """Every name the backend gives a set or chain, for one prefix.

    Sets: ``<p>-<k><family>-<id>`` for an engine set id ``k:<id>`` (``fqp-d4-AbC...``), or
    ``<p>-x<family>-<hash>`` for any other id; ``<p>-np<family>-<hash>`` for the sets of a
    peer named port. A set is built under its *temporary* name, the same with the ``-``
    before the id made a ``.`` (which no id holds), then swapped or renamed into place.

    Chains: ``<p>-FORWARD`` (the root, jumped to from ``FORWARD``), ``<p>-from-wl`` and
    ``<p>-to-wl`` (dispatch by interface, with ``<p>-fd-<hash>``/``<p>-td-<hash>`` below them
    when there are many), ``<p>-po-<hash>``/``<p>-pi-<hash>`` (policy chains, egress and
    ingress, named by a hash of their content), ``<p>-reject`` (test mode) and ``<p>-hold``
    (the hold mode's NFQUEUE rules).

    Args:
        prefix: What every name starts with (see :func:`check_prefix`).

    Raises:
        InvalidPolicy: an invalid prefix.
    """

    def __init__(self, prefix: str = "fqp") -> None:
        self.prefix = check_prefix(prefix)
        self.root = f"{prefix}-FORWARD"
        self.reject = f"{prefix}-reject"
        self.hold = f"{prefix}-hold"
        self._own_set = re.compile(rf"{prefix}-(?:[a-z]|np)[46][-.][A-Za-z0-9_-]{{1,22}}")
        self._own_chain = re.compile(
            rf"{prefix}-(?:FORWARD|from-wl|to-wl|reject|hold|(?:fd|td|po|pi)-[0-9a-f]{{16,20}})"
        )
        self._cache: dict[tuple[str, int], str] = {}

    def dispatch(self, direction: str) -> str:
        """The top dispatch chain of a direction."""
        return f"{self.prefix}-from-wl" if direction == "egress" else f"{self.prefix}-to-wl"

    def dispatch_branch(self, direction: str, interface_prefix: str) -> str:
        """A dispatch chain for the interfaces starting with ``interface_prefix``."""
        kind = "fd" if direction == "egress" else "td"
        return f"{self.prefix}-{kind}-{digest(interface_prefix, 8)}"

    def policy_chain(self, direction: str, content: str) -> str:
        """A policy chain, named by a hash of its content."""
        kind = "po" if direction == "egress" else "pi"
        return f"{self.prefix}-{kind}-{digest(content)}"

    def set_name(self, set_id: str, family: int) -> str:
        """The live ipset name of one family of an engine IP set."""
        key = (set_id, family)
        name = self._cache.get(key)
        if name is None:
            found = _SET_ID.fullmatch(set_id)
            if found is not None:
                name = f"{self.prefix}-{found.group(1)}{family}-{found.group(2)}"
            else:
                name = f"{self.prefix}-x{family}-{digest(set_id)}"
            self._cache[key] = name
        return name

    def named_port_set(self, port_name: str, family: int) -> str:
        """The ipset (``hash:ip,port``) of a peer named port."""
        return f"{self.prefix}-np{family}-{digest(port_name)}"

    @staticmethod
    def temporary(live: str) -> str:
        """The name a set is built under before it is swapped or renamed to ``live``."""
        prefix, tag, rest = live.split("-", 2)  # the prefix and the tag hold no "-"
        return f"{prefix}-{tag}.{rest}"

    def owns_set(self, name: str) -> bool:
        """Tell whether an ipset name (live or temporary) is one this prefix gives."""
        return self._own_set.fullmatch(name) is not None

    def owns_chain(self, name: str) -> bool:
        """Tell whether a chain name is one this prefix gives."""
        return self._own_chain.fullmatch(name) is not None
