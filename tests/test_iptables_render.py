"""The iptables renderer without a kernel: names, escaping, members, timeouts, the document.

What the rendered rules *mean* is held against the engine in ``test_iptables_meaning.py``;
here are the properties of the text itself: every name within the tools' limits, nothing a
policy says reaching a rule as syntax, lifetimes within ipset's range, set sizes, and the
transactions apply builds from what the kernel holds.
"""

from __future__ import annotations

import re
import shlex

import pytest
from fqdnpolicy_iptables import IptablesBackend, RenderOptions
from fqdnpolicy_iptables.apply import Applier
from fqdnpolicy_iptables.kernel import Saved, ToolRunner
from fqdnpolicy_iptables.names import CHAIN_MAX, SET_MAX, Names, log_prefix
from fqdnpolicy_iptables.render import Document, declared_chains
from fqdnpolicy_iptables.rules import jump_rule
from fqdnpolicy_iptables.sets import MAX_TIMEOUT, sizes, timeout_seconds
from hypothesis import given, settings
from hypothesis import strategies as st

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
from fqdnpolicy.errors import InvalidPolicy

NOW = 1000.0
SET_ID = "d:AAAAAAAAAAAAAAAAAAAAAA"
_BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# What comments and log prefixes may hold: the safe alphabet, and '#' before a hash we add.
_SAFE = r"[A-Za-z0-9 ._:/=,()\[\]+-]*"
_SAFE_VALUE = re.compile(rf"{_SAFE}(#[0-9a-f]{{8}}{_SAFE})?")


def _state(
    sets: tuple[SetState, ...] = (),
    rules: tuple[RuleState, ...] = (),
    tier_name: str = "default",
    named_ports: dict[str, tuple[tuple[str, int, int], ...]] | None = None,
) -> DatapathState:
    tiers = (TierState(tier_name, rules, "Deny"),) if rules else ()
    endpoint = EndpointState("ns/pod", "cali0123456789a", ("198.51.100.10",), tiers, tiers)
    return DatapathState(sets, (endpoint,), named_ports or {})


def _set(kind: str, members: dict[str, float | None], definition: str = "test") -> SetState:
    letter = {"domains": "d", "nets": "n", "selector": "s"}[kind]
    return SetState(f"{letter}:AAAAAAAAAAAAAAAAAAAAAA", kind, definition, members)  # type: ignore[arg-type]


def _adds(text: str, family: int = 4) -> list[str]:
    """The elements added to the (only) set of a family, as written after its name."""
    name = ".AAAAAAAAAAAAAAAAAAAAAA "
    return [
        line.split(name, 1)[1]
        for line in text.splitlines()
        if line.startswith("add ") and f"{family}{name}" in line
    ]


# ------------------------------------------------------------------------------- names


@settings(max_examples=200)
@given(
    st.sampled_from(["f", "fqp", "ab12"]),
    st.text(alphabet=_BASE64URL, min_size=1, max_size=22),
    st.text(max_size=300),
    st.sampled_from([4, 6]),
)
def test_every_set_name_fits_ipset_and_its_temporary_name_is_its_own(
    prefix: str, engine_id: str, other_id: str, family: int
) -> None:
    names = Names(prefix)
    for live in (
        names.set_name(f"d:{engine_id}", family),
        names.set_name(other_id, family),
        names.named_port_set(other_id, family),
    ):
        temporary = Names.temporary(live)
        assert len(live) <= SET_MAX
        assert len(temporary) <= SET_MAX
        assert temporary != live
        assert names.owns_set(live)
        assert names.owns_set(temporary)
        assert not Names("zz").owns_set(live)


@settings(max_examples=100)
@given(st.sampled_from(["f", "fqp", "ab12"]), st.text(max_size=2000))
def test_every_chain_name_fits_iptables_and_is_recognised_as_ours(
    prefix: str, content: str
) -> None:
    names = Names(prefix)
    chains = [
        names.root,
        names.reject,
        names.hold,
        names.dispatch("egress"),
        names.dispatch("ingress"),
        names.dispatch_branch("egress", content[:15]),
        names.dispatch_branch("ingress", content[:15]),
        names.policy_chain("egress", content),
        names.policy_chain("ingress", content),
    ]
    for chain in chains:
        assert len(chain) <= CHAIN_MAX, chain
        assert names.owns_chain(chain)


@pytest.mark.parametrize(
    "foreign", ["FORWARD", "DOCKER", "fqp-mine", "fqpx-FORWARD", "cali-FORWARD", "fqp-po-xyz"]
)
def test_a_chain_or_set_merely_starting_with_the_prefix_is_not_ours(foreign: str) -> None:
    names = Names("fqp")
    assert not names.owns_chain(foreign)
    assert not names.owns_set(foreign)


def test_engine_set_ids_keep_their_id_in_the_set_name() -> None:
    names = Names()
    assert names.set_name(SET_ID, 4) == "fqp-d4-AAAAAAAAAAAAAAAAAAAAAA"
    assert names.set_name(SET_ID, 6) == "fqp-d6-AAAAAAAAAAAAAAAAAAAAAA"
    assert Names.temporary("fqp-d4-A-b") == "fqp-d4.A-b"


@pytest.mark.parametrize("limit", [29, 63])
def test_a_log_prefix_names_policy_and_rule_within_its_limit(limit: int) -> None:
    long_name = "GlobalNetworkPolicy " + "a-very-long-policy-name" * 4
    prefix = log_prefix(long_name, "egress", 12, limit)
    assert len(prefix) <= limit
    assert prefix.startswith("fp gnp a-very")
    assert prefix.endswith(" e12 ")
    assert log_prefix("NetworkPolicy ns/p1", "ingress", 0, limit) == "fp np ns/p1 i0 "


@pytest.mark.parametrize(
    "options",
    [
        {"prefix": ""},
        {"prefix": "FQP"},
        {"prefix": "fqpxy"},
        {"prefix": "f-p"},
        {"log": "ULOG"},
        {"nflog_group": 65536},
        {"maxelem": 0},
        {"hold_queue": 65536},
        {"hold_queue": -1},
    ],
)
def test_invalid_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(InvalidPolicy):
        RenderOptions(**options)  # type: ignore[arg-type]


def test_the_hold_rule_is_rendered_once_asked_for_and_only_then() -> None:
    backend = IptablesBackend()
    assert "NFQUEUE" not in backend.render(_state(), now=NOW).text
    assert backend.hold_dns(7) is True
    text = backend.render(_state(), now=NOW).text
    for family in (4, 6):
        section = Document.parse(text).rules[family]
        # Jumped to before the RETURN of established flows (a DNS response is one).
        root = [line for line in section.splitlines() if line.startswith("-A fqp-FORWARD ")]
        assert root[:2] == [
            "-A fqp-FORWARD -p udp --sport 53 -j fqp-hold",
            "-A fqp-FORWARD -p tcp --sport 53 -j fqp-hold",
        ]
        hold = [line for line in section.splitlines() if line.startswith("-A fqp-hold ")]
        assert hold == ["-A fqp-hold -o cali0123456789a -j NFQUEUE --queue-num 7 --queue-bypass"]
    backend.hold_dns(None)
    assert "fqp-hold" not in backend.render(_state(), now=NOW).text


def test_an_unknown_variant_is_refused() -> None:
    with pytest.raises(BackendError, match="variant"):
        IptablesBackend(variant="xtables")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- hostile strings

# Quotes, backslashes, newlines, an option, a target, spaces, unicode, a comment sign.
HOSTILE = st.text(
    alphabet=st.sampled_from(list("\"'\\\n\r\t #;-$`a Zé€ --jACCEPT")), min_size=1, max_size=80
)


@settings(max_examples=150, deadline=None)
@given(HOSTILE, HOSTILE, HOSTILE, st.sampled_from(["LOG", "NFLOG"]))
def test_no_string_from_a_policy_reaches_a_rule_or_a_comment_as_syntax(
    policy_name: str, tier_name: str, definition: str, log: str
) -> None:
    rules = tuple(
        RuleState(policy_name, tier_name, i, action, (4, 6), protocol=6, peer_in=(SET_ID,))  # type: ignore[arg-type]
        for i, action in enumerate(("Log", "Allow", "Deny", "Pass"))
    )
    state = _state((_set("domains", {"198.51.100.1": NOW + 30}, definition),), rules, tier_name)
    backend = IptablesBackend(log=log)  # type: ignore[arg-type]
    text = backend.render(state, now=NOW).text
    plain_state = _state((_set("domains", {"198.51.100.1": NOW + 30}),), rules_named(rules), "t")
    plain = backend.render(plain_state, now=NOW).text
    # No newline got in: the same lines as with plain names.
    assert len(text.splitlines()) == len(plain.splitlines())
    for line in text.splitlines():
        if line.startswith("#"):
            assert _SAFE_VALUE.fullmatch(line.partition(": ")[2].partition(" ")[2]), line
            continue
        words = shlex.split(line)  # balanced quotes
        assert "ACCEPT" not in words
        for option in ("--comment", "--log-prefix", "--nflog-prefix"):
            if option in words:
                value = words[words.index(option) + 1]
                assert _SAFE_VALUE.fullmatch(value.strip()), line
        if "--log-prefix" in words:
            assert len(words[words.index("--log-prefix") + 1]) <= 29


def rules_named(rules: tuple[RuleState, ...]) -> tuple[RuleState, ...]:
    return tuple(
        RuleState("plain", "t", r.index, r.action, r.families, r.protocol, peer_in=r.peer_in)
        for r in rules
    )


# ------------------------------------------------------------------- members and sets


@pytest.mark.parametrize(
    ("member", "kind"),
    [
        ("localhost", "domains"),  # ipset would resolve a name
        ("dead.beef", "domains"),
        ("1.2.3", "domains"),  # inet_aton's shorthand
        ("01.2.3.4", "nets"),  # a leading zero (octal to inet_aton)
        ("fe80::1%eth0", "domains"),  # scoped
        ("198.51.100.1 timeout 5", "domains"),
        ("198.51.100.0/24", "domains"),  # a network in a set of addresses
        ("198.51.100.0/33", "nets"),
        ("203.0.113.0/24\ncreate x hash:ip", "nets"),
    ],
)
def test_a_member_no_set_can_hold_is_skipped_and_reported(member: str, kind: str) -> None:
    state = _state((_set(kind, {member: None, "198.51.100.7": None}),))
    rendering = IptablesBackend().render(state, now=NOW)
    assert [p.code for p in rendering.skipped] == ["bad-member"]
    assert _adds(rendering.text) == ["198.51.100.7"]
    assert member.split()[0] not in rendering.text.replace("198.51.100.7", "")


@pytest.mark.parametrize(
    ("kind", "member", "written"),
    [
        ("domains", "198.51.100.7/32", ["198.51.100.7 timeout 60"]),
        ("nets", "0.0.0.0/0", ["0.0.0.0/1", "128.0.0.0/1"]),  # hash:net holds no /0
        ("nets", "198.51.100.7/24", ["198.51.100.0/24"]),
        ("selector", "198.51.100.0/25", ["198.51.100.0/25 timeout 60"]),
    ],
)
def test_members_are_written_as_their_set_type_holds_them(
    kind: str, member: str, written: list[str]
) -> None:
    text = IptablesBackend().render(_state((_set(kind, {member: NOW + 60}),)), now=NOW).text
    assert _adds(text) == written


def test_an_ipv6_catch_all_is_written_as_its_two_halves() -> None:
    text = IptablesBackend().render(_state((_set("nets", {"::/0": None}),)), now=NOW).text
    assert _adds(text, 6) == ["::/1", "8000::/1"]


def test_set_types_follow_the_kind_and_families_are_apart() -> None:
    state = _state(
        (
            SetState("d:D", "domains", "a", {"198.51.100.1": NOW + 5, "2001:db8::1": NOW + 5}),
            SetState("n:N", "nets", "b", {"203.0.113.0/24": None}),
            SetState("s:S", "selector", "c", {"198.51.100.2": None}),
        ),
        named_ports={"http": (("198.51.100.3", 6, 8080), ("2001:db8::3", 17, 53))},
    )
    text = IptablesBackend().render(state, now=NOW).text
    creates = {line.split()[1]: line.split()[2:] for line in text.splitlines() if "create " in line}
    assert creates["fqp-d4.D"][:3] == ["hash:ip", "family", "inet"]
    assert creates["fqp-d6.D"][:3] == ["hash:ip", "family", "inet6"]
    assert creates["fqp-d4.D"][-2:] == ["timeout", "0"]
    assert creates["fqp-n4.N"][0] == "hash:net"
    assert "timeout" not in creates["fqp-n4.N"]
    assert creates["fqp-s4.S"][0] == "hash:net"
    assert creates["fqp-s4.S"][-2:] == ["timeout", "0"]
    port_sets = [n for n in creates if "-np" in n]
    assert all(creates[n][0] == "hash:ip,port" for n in port_sets)
    assert "198.51.100.3,tcp:8080" in text
    assert "2001:db8::3,udp:53" in text
    assert "2001:db8::1 timeout 5" in text
    assert "198.51.100.2 timeout" not in text  # a member without expiry never times out


@pytest.mark.parametrize(
    ("count", "floor", "hashsize", "maxelem"),
    [
        (0, 1_048_576, 1024, 1_048_576),
        (10, 100, 1024, 100),
        (100_000, 65_536, 65_536, 262_144),  # ipset's default maxelem would refuse this set
        (1_500_000, 1_048_576, 1_048_576, 4_194_304),
    ],
)
def test_set_sizes_hold_the_members_with_room_to_grow(
    count: int, floor: int, hashsize: int, maxelem: int
) -> None:
    assert sizes(count, floor) == (hashsize, maxelem)


def test_the_maxelem_option_is_every_sets_floor() -> None:
    text = IptablesBackend(maxelem=5_000_000).render(_state((_set("nets", {}),)), now=NOW).text
    assert "maxelem 5000000" in text


# ---------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize(
    ("left", "seconds"),
    [
        (30.0, 30),
        (0.2, 1),  # rounded up: the kernel never forgets before the cache
        (29.01, 30),
        (0.0, 0),
        (-5.0, 0),
        (40 * 86400.0, MAX_TIMEOUT),  # ipset's maximum
        (float("inf"), MAX_TIMEOUT),
        (float("nan"), 0),
    ],
)
def test_a_timeout_is_the_lifetime_left_in_whole_seconds_within_ipsets_range(
    left: float, seconds: int
) -> None:
    assert timeout_seconds(NOW + left, NOW) == seconds
    assert timeout_seconds(None, NOW) is None


def test_a_full_render_writes_each_member_with_its_lifetime_and_leaves_expired_ones_out() -> None:
    members: dict[str, float | None] = {
        "198.51.100.1": NOW + 30,
        "198.51.100.2": NOW - 1,
        "198.51.100.3": NOW + 40 * 86400,
    }
    text = IptablesBackend().render(_state((_set("domains", members),)), now=NOW).text
    assert _adds(text) == ["198.51.100.1 timeout 30", f"198.51.100.3 timeout {MAX_TIMEOUT}"]


def test_a_delta_refreshes_adds_and_deletes_with_exist_and_the_last_change_wins() -> None:
    backend = IptablesBackend()
    backend.render(_state((_set("domains", {"198.51.100.1": NOW + 30}),)), now=NOW)
    delta = backend.render_delta(
        [
            MemberChanged(SET_ID, "198.51.100.1", True, NOW + 90),  # answered again
            MemberChanged(SET_ID, "198.51.100.2", True, NOW + 10),
            MemberChanged(SET_ID, "198.51.100.2", False),  # gone again in the same batch
            MemberChanged(SET_ID, "2001:db8::5", True, NOW - 1),  # its lifetime is over
            MemberChanged("d:unknown", "198.51.100.9", True, NOW + 10),
        ],
        now=NOW,
    )
    assert delta.kind == "delta"
    assert delta.text.splitlines() == [
        "# fqdnpolicy: ipset restore",
        "-exist add fqp-d4-AAAAAAAAAAAAAAAAAAAAAA 198.51.100.1 timeout 90",
        "-exist del fqp-d4-AAAAAAAAAAAAAAAAAAAAAA 198.51.100.2",
        "-exist del fqp-d6-AAAAAAAAAAAAAAAAAAAAAA 2001:db8::5",
    ]
    assert backend.needs_full([MemberChanged("d:unknown", "198.51.100.9", True)])
    assert not backend.needs_full([MemberChanged(SET_ID, "198.51.100.9", True)])


def test_an_empty_delta_renders_nothing() -> None:
    backend = IptablesBackend()
    backend.render(_state(), now=NOW)
    assert backend.render_delta([], now=NOW).text == ""


# ---------------------------------------------------------------------------- document


def _rules_state() -> DatapathState:
    rule = RuleState(
        "p", "default", 0, "Allow", (4, 6), protocol=6, peer_in=(SET_ID,),
        dst_ports=PortSpec(ranges=((443, 443),)),
    )  # fmt: skip
    return _state((_set("domains", {"198.51.100.1": NOW + 30, "2001:db8::1": NOW + 30}),), (rule,))


def test_the_document_reads_back_into_its_three_sections() -> None:
    rendering = IptablesBackend().render_structured(_rules_state(), now=NOW)
    doc = Document.parse(rendering.text)
    assert rendering.data is not None
    renames = [f"rename {t} {live}" for t, live in doc.commits]
    assert doc.ipset_build.splitlines() + renames == rendering.data["ipset"]
    assert doc.rules[4].splitlines() == rendering.data["iptables"]
    assert doc.rules[6].splitlines() == rendering.data["ip6tables"]
    assert doc.commits == (
        ("fqp-d4.AAAAAAAAAAAAAAAAAAAAAA", "fqp-d4-AAAAAAAAAAAAAAAAAAAAAA"),
        ("fqp-d6.AAAAAAAAAAAAAAAAAAAAAA", "fqp-d6-AAAAAAAAAAAAAAAAAAAAAA"),
    )
    chains = declared_chains(doc.rules[4])
    assert {"fqp-FORWARD", "fqp-from-wl", "fqp-to-wl"} < set(chains)
    assert all(f":{c} - [0:0]" in doc.rules[4] for c in chains)
    assert IptablesBackend().render(_rules_state(), now=NOW).data is None


def test_a_text_that_is_no_rendering_is_refused() -> None:
    with pytest.raises(BackendError, match="section header"):
        IptablesBackend().apply(Rendering("iptables", "full", "*filter\nCOMMIT\n"))
    with pytest.raises(BackendError, match="nftables"):
        IptablesBackend().apply(Rendering("nftables", "full", ""))


def test_rendering_is_deterministic() -> None:
    first = IptablesBackend().render(_rules_state(), now=NOW).text
    assert IptablesBackend().render(_rules_state(), now=NOW).text == first


# ------------------------------------------------------------------------ transactions


def _section() -> str:
    return Document.parse(IptablesBackend().render(_rules_state(), now=NOW).text).rules[4]


def test_a_transaction_deletes_our_stale_chains_and_touches_nothing_else() -> None:
    applier = Applier(ToolRunner("nft"), Names())
    saved = Saved(
        chains=("INPUT", "FORWARD", "OUTPUT", "fqp-FORWARD", "fqp-po-0123456789abcdef0123",
                "fqp-mine", "DOCKER"),
        rules=(
            "-A FORWARD -m comment --comment fqdnpolicy -j fqp-FORWARD",
            "-A FORWARD -j DOCKER",
            "-A DOCKER -j fqp-mine",
        ),
    )  # fmt: skip
    lines = applier.rules_transaction(_section(), saved).splitlines()
    assert lines[0] == "*filter"
    assert lines[-1] == "COMMIT"
    assert ":fqp-po-0123456789abcdef0123 - [0:0]" in lines
    assert "-X fqp-po-0123456789abcdef0123" in lines
    assert not [line for line in lines if "DOCKER" in line or "fqp-mine" in line]
    assert not [line for line in lines if "FORWARD -" in line and "fqp-FORWARD" not in line]
    assert jump_rule(Names()) not in lines  # the jump is there already


def test_a_transaction_inserts_the_jump_once_and_deletes_extra_copies() -> None:
    applier = Applier(ToolRunner("legacy"), Names())
    jump = "-A FORWARD -m comment --comment fqdnpolicy -j fqp-FORWARD"
    none = applier.rules_transaction(_section(), Saved(("FORWARD",), ()))
    assert none.count("-I FORWARD 1 ") == 1
    three = applier.rules_transaction(_section(), Saved(("FORWARD",), (jump, jump, jump)))
    assert "-I FORWARD" not in three
    assert three.count("-D FORWARD -m comment --comment fqdnpolicy -j fqp-FORWARD") == 2
