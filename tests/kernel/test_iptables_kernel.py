"""The iptables backend on a real kernel, with both iptables variants.

What gets through is proven by the conformance kit (``test_iptables_conformance.py``); here
is what the backend does to the kernel's state: what it installs, that re-applying replaces
it, that what it does not own survives, that a refused rendering leaves the previous state,
that element lifetimes run out in the kernel and deltas change them, and that ``remove``
takes exactly what it installed. Every test works in a namespace of its own (``fqi-...``),
deleted afterwards.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator

import pytest
from fqdnpolicy_iptables import IptablesBackend
from fqdnpolicy_iptables.sets import MAX_TIMEOUT

from fqdnpolicy.backends import BackendError, Rendering
from fqdnpolicy.datapath import (
    DatapathState,
    EndpointState,
    MemberChanged,
    PortSpec,
    RuleState,
    SetState,
    TierState,
)
from tests.support import require_root, require_tool

pytestmark = pytest.mark.kernel

DOMAINS = "d:AAAAAAAAAAAAAAAAAAAAAA"
NETS = "n:BBBBBBBBBBBBBBBBBBBBBB"
D4, D6 = "fqp-d4-AAAAAAAAAAAAAAAAAAAAAA", "fqp-d6-AAAAAAAAAAAAAAAAAAAAAA"
N4 = "fqp-n4-BBBBBBBBBBBBBBBBBBBBBB"


@pytest.fixture(params=["nft", "legacy"])
def variant(request: pytest.FixtureRequest) -> str:
    """Each test runs with both iptables variants."""
    require_root()
    for tool in ("ip", "ipset", f"iptables-{request.param}-restore"):
        require_tool(tool)
    return str(request.param)


@pytest.fixture
def ns(variant: str) -> Iterator[str]:
    """A fresh namespace of our own, deleted afterwards (exactly this one)."""
    name = f"fqi-t-{os.getpid() % 100000}{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)


def run(ns: str, *argv: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        input=stdin, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip


def filter_table(ns: str, variant: str, family: int = 4) -> list[str]:
    """The filter table's chains and rules, without counters and comment lines."""
    tool = f"{'iptables' if family == 4 else 'ip6tables'}-{variant}-save"
    lines = run(ns, tool, "-t", "filter").splitlines()
    return [re.sub(r" \[\d+:\d+\]$", "", line) for line in lines if not line.startswith("#")]


def members(ns: str, name: str) -> dict[str, int | None]:
    """A set's members and their seconds left (None: no timeout)."""
    listed = run(ns, "ipset", "list", name).split("Members:\n", 1)[1]
    found: dict[str, int | None] = {}
    for line in listed.splitlines():
        element, _, timeout = line.partition(" timeout ")
        found[element] = int(timeout) if timeout else None
    return found


def ours(ns: str, variant: str) -> tuple[list[str], list[str], dict[str, dict[str, int | None]]]:
    """Everything of ours: v4 and v6 lines naming fqp-, and our sets' members."""
    v4 = [line for line in filter_table(ns, variant, 4) if "fqp-" in line]
    v6 = [line for line in filter_table(ns, variant, 6) if "fqp-" in line]
    sets = {n: members(ns, n) for n in run(ns, "ipset", "list", "-n").split() if "fqp-" in n}
    return v4, v6, sets


def state(
    domain_members: dict[str, float | None], port: int = 443, with_nets: bool = True
) -> DatapathState:
    rules = (
        RuleState("gnp log", "default", 0, "Log", (4, 6), protocol=6),
        RuleState(
            "gnp web", "default", 1, "Allow", (4, 6), protocol=6, peer_in=(DOMAINS,),
            dst_ports=PortSpec(ranges=((port, port),)),
        ),
        RuleState("gnp web", "default", 2, "Deny", (4,), peer_in=(NETS,)),
    )  # fmt: skip
    tiers = (TierState("default", rules if with_nets else rules[:2], "Deny"),)
    sets = [SetState(DOMAINS, "domains", "*.example.test", domain_members)]
    if with_nets:
        sets.append(SetState(NETS, "nets", "203.0.113.0/28", {"203.0.113.0/28": None}))
    endpoint = EndpointState("ns/web", "cali0000000001", ("198.51.100.10",), tiers, ())
    return DatapathState(tuple(sets), (endpoint,), {})


# ------------------------------------------------------------------- install, replace


def test_apply_installs_sets_chains_and_one_jump_and_a_new_state_replaces_them(
    ns: str, variant: str
) -> None:
    now = time.monotonic()
    backend = IptablesBackend(variant)  # type: ignore[arg-type]
    first = backend.render(state({"203.0.113.10": now + 60, "2001:db8::10": now + 60}), now=now)
    backend.apply(first, netns=ns)
    backend.apply(first, netns=ns)
    v4, v6, sets = ours(ns, variant)
    assert [line for line in v4 if line.startswith("-A FORWARD")] == [
        "-A FORWARD -m comment --comment fqdnpolicy -j fqp-FORWARD"
    ]
    assert sum(line.startswith("-A FORWARD") for line in v6) == 1
    assert set(members(ns, D4)) == {"203.0.113.10"}
    assert 55 <= (members(ns, D4)["203.0.113.10"] or 0) <= 60
    assert set(members(ns, D6)) == {"2001:db8::10"}
    assert set(members(ns, N4)) == {"203.0.113.0/28"}
    policy_chains = {line.split()[0] for line in v4 if line.startswith(":fqp-po-")}

    second = backend.render(state({"203.0.113.11": now + 60}, port=8443, with_nets=False), now=now)
    backend.apply(second, netns=ns)
    v4, _, sets = ours(ns, variant)
    assert not policy_chains & {line.split()[0] for line in v4 if line.startswith(":")}
    assert any("--dports 8443" in line for line in v4)
    assert set(sets) == {D4, D6}  # the nets sets went with the rule that used them
    assert set(members(ns, D4)) == {"203.0.113.11"}  # swapped in whole


def test_what_is_not_ours_survives_apply_and_remove(ns: str, variant: str) -> None:
    for tool in (f"iptables-{variant}-restore", f"ip6tables-{variant}-restore"):
        run(
            ns, tool, "--noflush",
            stdin="*filter\n:FOREIGN - [0:0]\n:fqp-mine - [0:0]\n-A FOREIGN -j ACCEPT\n"
            '-A FORWARD -m comment --comment "not ours" -j FOREIGN\nCOMMIT\n',
        )  # fmt: skip
    run(ns, "ipset", "restore", stdin="create foreign hash:ip\ncreate fqp-mine hash:net\n")
    before = (filter_table(ns, variant, 4), filter_table(ns, variant, 6))
    now = time.monotonic()
    backend = IptablesBackend(variant)  # type: ignore[arg-type]
    backend.apply(backend.render(state({"203.0.113.10": now + 60}), now=now), netns=ns)
    backend.apply(backend.render(state({}, port=80, with_nets=False), now=now), netns=ns)
    during = filter_table(ns, variant, 4)
    assert during[
        during.index("-A FORWARD -m comment --comment fqdnpolicy -j fqp-FORWARD") + 1
    ] == (
        '-A FORWARD -m comment --comment "not ours" -j FOREIGN'
    )  # ours first, theirs after it, untouched
    backend.remove(netns=ns)
    backend.remove(netns=ns)
    assert (filter_table(ns, variant, 4), filter_table(ns, variant, 6)) == before
    assert sorted(run(ns, "ipset", "list", "-n").split()) == ["foreign", "fqp-mine"]


# ------------------------------------------------------------------- refused renderings


def _break_ipset(text: str) -> str:
    return text.replace("add fqp-d4.", "add fqp-d4.", 1).replace(
        "\nrename ", "\nadd fqp-d4.AAAAAAAAAAAAAAAAAAAAAA 1.2.3.4.5\nrename ", 1
    )


def _break_rules(family: int) -> object:
    header = "# fqdnpolicy: iptables-restore" if family == 4 else "# fqdnpolicy: ip6tables-restore"

    def breaks(text: str) -> str:
        head, _, tail = text.partition(header)
        return head + header + tail.replace(" -j RETURN", " --bogus-option -j RETURN", 1)

    return breaks


@pytest.mark.parametrize(
    ("tamper", "tool"),
    [
        (_break_ipset, "ipset"),
        (_break_rules(4), "iptables"),
        (_break_rules(6), "ip6tables"),  # after the IPv4 rules were committed
    ],
    ids=["ipset", "iptables", "ip6tables"],
)
def test_a_refused_rendering_names_the_tool_and_line_and_leaves_the_previous_state(
    ns: str, variant: str, tamper: object, tool: str
) -> None:
    now = time.monotonic()
    backend = IptablesBackend(variant)  # type: ignore[arg-type]
    backend.apply(backend.render(state({"203.0.113.10": now + 600}), now=now), netns=ns)
    before = ours(ns, variant)
    # Different sets and rules: had anything been applied, it would show.
    good = backend.render(state({"203.0.113.99": now + 600}, port=22, with_nets=False), now=now)
    broken = Rendering("iptables", "full", tamper(good.text))  # type: ignore[operator]
    with pytest.raises(BackendError) as raised:
        backend.apply(broken, netns=ns)
    message = str(raised.value)
    assert f"{tool}" in message
    assert "offending line" in message
    assert ("1.2.3.4.5" if tool == "ipset" else "--bogus-option") in message
    after = ours(ns, variant)
    assert after[:2] == before[:2]
    assert set(after[2]) == set(before[2])
    assert all(set(after[2][s]) == set(before[2][s]) for s in before[2])
    assert not [s for s in run(ns, "ipset", "list", "-n").split() if "." in s]  # no temporaries


# ---------------------------------------------------------------------------- lifetimes


def test_element_timeouts_run_out_in_the_kernel_and_deltas_refresh_add_and_delete(
    ns: str, variant: str
) -> None:
    now = time.monotonic()
    backend = IptablesBackend(variant)  # type: ignore[arg-type]
    members_now: dict[str, float | None] = {"203.0.113.1": now + 1.5, "203.0.113.2": now + 60}
    backend.apply(backend.render(state(members_now), now=now), netns=ns)
    assert members(ns, D4)["203.0.113.1"] == 1  # two seconds, counted down
    delta = backend.render_delta(
        [
            MemberChanged(DOMAINS, "203.0.113.2", True, now + 300),  # answered again
            MemberChanged(DOMAINS, "203.0.113.3", True, now + 60),
        ],
        now=now,
    )
    backend.apply(delta, netns=ns)
    time.sleep(2.5)
    found = members(ns, D4)
    assert "203.0.113.1" not in found  # timed out by the kernel
    assert (found["203.0.113.2"] or 0) > 250
    assert "203.0.113.3" in found
    # Deleting a member the kernel already timed out is no error.
    later = time.monotonic()
    gone = [
        MemberChanged(DOMAINS, "203.0.113.1", False),
        MemberChanged(DOMAINS, "203.0.113.3", False),
    ]
    backend.apply(backend.render_delta(gone, now=later), netns=ns)
    assert set(members(ns, D4)) == {"203.0.113.2"}


def test_lifetimes_beyond_ipsets_maximum_are_clamped_and_accepted(ns: str, variant: str) -> None:
    now = time.monotonic()
    backend = IptablesBackend(variant)  # type: ignore[arg-type]
    backend.apply(backend.render(state({"203.0.113.1": now + 40 * 86400}), now=now), netns=ns)
    refresh = [MemberChanged(DOMAINS, "203.0.113.2", True, now + 90 * 86400)]
    backend.apply(backend.render_delta(refresh, now=now), netns=ns)
    found = members(ns, D4)
    assert MAX_TIMEOUT - 60 < (found["203.0.113.1"] or 0) <= MAX_TIMEOUT
    assert MAX_TIMEOUT - 60 < (found["203.0.113.2"] or 0) <= MAX_TIMEOUT


def test_a_set_larger_than_ipsets_default_maxelem_is_applied(ns: str, variant: str) -> None:
    now = time.monotonic()
    many: dict[str, float | None] = {
        f"2001:db8::{i >> 16:x}:{i & 0xFFFF:x}": now + 600 for i in range(70_000)
    }
    backend = IptablesBackend(variant)  # type: ignore[arg-type]
    backend.apply(backend.render(state(many), now=now), netns=ns)
    header = run(ns, "ipset", "list", "-t", D6)
    assert "Number of entries: 70000" in header


# ----------------------------------------------------------------- strings, logs, check


def test_hostile_names_apply_and_add_nothing_but_our_chains(ns: str, variant: str) -> None:
    hostile = 'gnp evil" -j ACCEPT\n-A FORWARD -j ACCEPT #\u00e9'
    rules = (
        RuleState(hostile, hostile, 0, "Log", (4, 6), peer_in=(DOMAINS,)),
        RuleState(hostile, hostile, 1, "Allow", (4, 6), protocol=6, peer_in=(DOMAINS,)),
    )
    tiers = (TierState(hostile, rules, "Deny"),)
    endpoint = EndpointState("ns/web", "cali0000000001", ("198.51.100.10",), tiers, tiers)
    datapath = DatapathState(
        (SetState(DOMAINS, "domains", hostile, {"203.0.113.1": None}),), (endpoint,), {}
    )
    backend = IptablesBackend(variant, log="NFLOG", nflog_group=3)  # type: ignore[arg-type]
    backend.apply(backend.render(datapath, now=0.0), netns=ns)
    for family in (4, 6):
        table = filter_table(ns, variant, family)
        lines = [shlex.split(line) for line in table if line.startswith("-A ")]
        assert not [w for w in lines if ("-j", "ACCEPT") in itertools.pairwise(w)]
        assert [line for line in table if line.startswith("-A FORWARD")] == [
            "-A FORWARD -m comment --comment fqdnpolicy -j fqp-FORWARD"
        ]
        assert any("--nflog-group 3" in line for line in table)


def test_log_rules_use_the_kernel_log_by_default(ns: str, variant: str) -> None:
    backend = IptablesBackend(variant, reject=True)  # type: ignore[arg-type]
    backend.apply(backend.render(state({}), now=0.0), netns=ns)
    table = filter_table(ns, variant, 4)
    assert any('--log-prefix "fp gnp log e0 "' in line for line in table)
    assert any("--reject-with tcp-reset" in line for line in table)


def test_check_accepts_a_valid_rendering_and_reports_a_broken_one(variant: str) -> None:
    now = time.monotonic()
    backend = IptablesBackend(variant)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="after a full render"):
        backend.check(backend.render_delta([], now=now))
    full = backend.render(state({"203.0.113.1": now + 60}), now=now)
    backend.check(full)
    backend.check(backend.render_delta([MemberChanged(DOMAINS, "203.0.113.2", True)], now=now))
    with pytest.raises(BackendError, match="offending line"):
        backend.check(Rendering("iptables", "full", _break_rules(6)(full.text)))  # type: ignore[operator]
