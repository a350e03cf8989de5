"""How the iptables backend renders: :class:`RenderOptions`."""

from __future__ import annotations

from typing import Literal

import attrs

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy_iptables.names import check_prefix

__all__ = ["DEFAULT_MAXELEM", "RenderOptions"]

#: Smallest ``maxelem`` a set gets (Calico's default set size). ipset's own default, 65,536,
#: is smaller than one wildcard domain can learn; ``maxelem`` only bounds, it allocates nothing.
DEFAULT_MAXELEM = 1_048_576


def _problem(field: str, message: str, hint: str) -> InvalidPolicy:
    return InvalidPolicy(Problem(message, path=field, hint=hint, code=f"bad-{field}"))


@attrs.frozen
class RenderOptions:
    """How the sets and chains are rendered.

    Attributes:
        prefix: What every set and chain name starts with (``fqp``: ``fqp-FORWARD``,
            ``fqp-d4-...``); 1-4 lower-case letters or digits, a letter first.
        reject: Deny with a TCP reset / ICMP admin-prohibited instead of a silent drop, so
            blocked probes fail at once. For tests; off by default.
        log: The target of Log rules: ``LOG`` (kernel log, as Calico's Log action) or
            ``NFLOG`` (to a netlink group, for a logging daemon).
        nflog_group: The NFLOG group (0-65535) when ``log`` is ``NFLOG``.
        maxelem: Smallest ``maxelem`` of a set; a set with more than half as many members
            gets the next power of two above twice its members.
        hold_queue: The hold mode's NFQUEUE number: DNS responses going to a workload's
            interface are sent there (None: no hold rule).
    """

    prefix: str = attrs.field(default="fqp")
    reject: bool = False
    log: Literal["LOG", "NFLOG"] = attrs.field(default="LOG")
    nflog_group: int = attrs.field(default=0)
    maxelem: int = attrs.field(default=DEFAULT_MAXELEM)
    hold_queue: int | None = attrs.field(default=None)

    @prefix.validator
    def _check_prefix(self, _: object, value: str) -> None:
        check_prefix(value)

    @log.validator
    def _check_log(self, _: object, value: str) -> None:
        if value not in ("LOG", "NFLOG"):
            raise _problem("log", f"log target {value!r} is not LOG or NFLOG", "LOG or NFLOG")

    @nflog_group.validator
    def _check_group(self, _: object, value: int) -> None:
        if not 0 <= value <= 65535:
            raise _problem("nflog_group", f"NFLOG group {value} is out of range", "0-65535")

    @maxelem.validator
    def _check_maxelem(self, _: object, value: int) -> None:
        if not 1 <= value <= 2**31 - 1:
            raise _problem("maxelem", f"maxelem {value} is out of range", "1 to 2147483647")

    @hold_queue.validator
    def _check_queue(self, _: object, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not 0 <= value <= 65535):
            raise _problem("hold_queue", f"NFQUEUE number {value!r} is out of range", "0-65535")
