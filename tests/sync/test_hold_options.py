"""The hold mode refuses bad options before touching the kernel."""

from __future__ import annotations

from typing import Any

import pytest

import fqdnpolicy
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.hold import DnsHold
from fqdnpolicy.engine import PolicyEngine
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.sync import DatapathSync
from tests.sync.memory import MemoryBackend


@pytest.mark.parametrize(
    ("option", "field"),
    [({"bound": 0}, "bound"), ({"bound": 60}, "bound"), ({"fail": "maybe"}, "fail"),
     ({"queue": 70000}, "queue")],
)  # fmt: skip
def test_bad_options_are_refused_naming_the_option(option: dict[str, Any], field: str) -> None:
    cache = DNSCache()
    engine = PolicyEngine(fqdnpolicy.loads(""), fqdnpolicy.Cluster([], []), cache)
    with DatapathSync(engine, MemoryBackend(), dns=cache) as sync:
        with pytest.raises(InvalidPolicy) as raised:
            DnsHold(cache, sync, **option)
        assert field in str(raised.value)
