"""Pure rendering of one address family's rules as ``iptables-restore --noflush`` input.

Layout (filter table; every chain is ours, see :class:`~fqdnpolicy_iptables.names.Names`)::

    FORWARD      -I FORWARD 1 -j fqp-FORWARD      (the only rule outside our chains)
    fqp-FORWARD  ctstate RELATED,ESTABLISHED: RETURN; ctstate INVALID: DROP;
                 -j fqp-from-wl; -j fqp-to-wl
    fqp-from-wl  -i <interface> -g <the endpoint's egress program>   (fqp-fd-* below it
                 when there are many interfaces: -i <common prefix>+ -g fqp-fd-<hash>)
    fqp-to-wl    the same with -o, for ingress
    fqp-hold     (hold mode only, jumped to first for UDP and TCP from port 53)
                 -o <interface> -j NFQUEUE --queue-num N --queue-bypass, each workload
    fqp-po-<h>   a policy's rules in a tier, then -g the tier's next policy chain, or the
    fqp-pi-<h>   end of the tier (egress / ingress)

Our chains only ever DROP or RETURN: they never ACCEPT on behalf of rules they do not own.
Everything after the dispatch jumps is reached by ``-g`` (goto), so a RETURN anywhere lands
back in ``fqp-FORWARD`` after the dispatch it came from. That gives Calico's semantics
without mark bits:

* Allow = ``RETURN``: the egress side is done, ``fqp-FORWARD`` goes on to the receiver's
  ingress; after ingress the packet leaves our chains for the rest of ``FORWARD``;
* Deny = ``DROP``; Log = ``LOG``/``NFLOG`` and go on;
* Pass = ``-g`` the first chain of the next tier that applies (``RETURN`` after the last:
  Calico's profile allows);
* end of tier = ``DROP`` after the tier's last policy when its default action is Deny, else
  ``-g`` to the next tier as for Pass;
* no policy for an endpoint and direction: no dispatch rule, the packet is not ours to judge.

A policy chain's content includes where it goes next, and its name is a hash of that
content, so endpoints with the same tiers (replicas) share every chain.
"""

from __future__ import annotations

from collections.abc import Sequence

from fqdnpolicy.backend_tools import disjoint_cases, merge_ranges, safe_text
from fqdnpolicy.datapath import Direction, EndpointState, PortSpec, RuleState, TierState
from fqdnpolicy.protocols import ICMP, ICMPV6, PORTED_PROTOCOLS, PROTOCOL_FAMILY
from fqdnpolicy_iptables.names import (
    COMMENT_MAX,
    LOG_PREFIX_MAX,
    NFLOG_PREFIX_MAX,
    Names,
    log_prefix,
)
from fqdnpolicy_iptables.options import RenderOptions

__all__ = ["JUMP_COMMENT", "FamilyRules", "jump_rule", "render_rules"]

#: Comment of our rule in ``FORWARD``.
JUMP_COMMENT = "fqdnpolicy"
#: Most ports one ``multiport`` match takes (a range counts twice).
MULTIPORT_SLOTS = 15
#: Most interfaces a dispatch chain tests one by one before it branches by name prefix.
DISPATCH_FANOUT = 16

_PROTOCOL_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}
_PORTED = tuple(sorted(PORTED_PROTOCOLS))

# A match alternative and its negation ("-m multiport --dports 80" / "... ! --dports 80").
_Alternative = tuple[str, str]


def jump_rule(names: Names) -> str:
    """Our rule in ``FORWARD``, as an ``iptables-restore`` line."""
    return f'-I FORWARD 1 -m comment --comment "{JUMP_COMMENT}" -j {names.root}'


def _protocol(number: int) -> str:
    return _PROTOCOL_NAMES.get(number, str(number))


def _multiport(ranges: list[tuple[int, int]], side: str) -> list[_Alternative]:
    """``multiport`` matches covering ``ranges`` (disjoint), at most 15 slots each.

    The chunks are disjoint, so a packet matches at most one of them (a Log rule logs once).
    """
    chunks: list[list[str]] = [[]]
    slots = 0
    for first, last in ranges:
        cost = 1 if first == last else 2
        if slots + cost > MULTIPORT_SLOTS:
            chunks.append([])
            slots = 0
        chunks[-1].append(str(first) if first == last else f"{first}:{last}")
        slots += cost
    option = "--dports" if side == "dst" else "--sports"
    return [
        (f"-m multiport {option} {','.join(c)}", f"-m multiport ! {option} {','.join(c)}")
        for c in chunks
        if c
    ]


class _Family:
    """Renders one family's chains; per-render caches, output a pure function of the input.

    Caches key on object identity first (``datapath()`` shares ``TierState``s and
    ``RuleState``s between alike endpoints), then on content.
    """

    def __init__(self, family: int, options: RenderOptions, names: Names) -> None:
        self.family = family
        self.options = options
        self.names = names
        self.chains: dict[str, list[str]] = {}  # name -> rule bodies (after "-A name ")
        self.deny = f"-j {names.reject}" if options.reject else "-j DROP"
        self._rule_ids: dict[tuple[Direction, int], tuple[RuleState, list[str]]] = {}
        self._targets = {"Allow": "-j RETURN", "Deny": self.deny}
        self._templates: dict[tuple[object, ...], list[tuple[str, str, str]]] = {}
        self._policy_safe: dict[str, bool] = {}
        self._programs: dict[tuple[Direction, tuple[int, ...]], tuple[object, str | None]] = {}
        self._sets: dict[tuple[str, bool, str], str] = {}
        self._ports: dict[tuple[PortSpec, int, str], list[_Alternative]] = {}

    # ------------------------------------------------------------------------ matches

    def _set_match(self, set_id: str, negate: bool, side: str) -> str:
        key = (set_id, negate, side)
        found = self._sets.get(key)
        if found is None:
            name = self.names.set_name(set_id, self.family)
            found = f"-m set {'! ' if negate else ''}--match-set {name} {side}"
            self._sets[key] = found
        return found

    def _port_alternatives(self, spec: PortSpec, protocol: int, side: str) -> list[_Alternative]:
        """The tests of a port spec for one protocol; the spec is their OR (none: never)."""
        key = (spec, protocol, side)
        found = self._ports.get(key)
        if found is not None:
            return found
        own = list(spec.ranges) + [(p, p) for proto, p in spec.named if proto == protocol]
        found = _multiport(merge_ranges(own), side)
        for port_name in spec.peer_named:
            name = self.names.named_port_set(port_name, self.family)
            found.append(
                (
                    f"-m set --match-set {name} {side},{side}",
                    f"-m set ! --match-set {name} {side},{side}",
                )
            )
        self._ports[key] = found
        return found

    def _icmp(self, protocol: int, spec: tuple[int | None, int | None], negate: bool) -> str:
        icmp_type, code = spec
        value = f"{icmp_type}" if code is None else f"{icmp_type}/{code}"
        neg = "! " if negate else ""
        if protocol == ICMPV6:
            return f"-m icmp6 {neg}--icmpv6-type {value}"
        return f"-m icmp {neg}--icmp-type {value}"

    def matches(self, rule: RuleState, direction: Direction) -> list[str]:
        """The match parts of a rule's lines in this family, each ending in a space.

        [] never matches; [""] matches every packet.
        """
        by_id = self._rule_ids.get((direction, id(rule)))
        if by_id is not None and by_id[0] is rule:
            return by_id[1]
        found = self._render_matches(rule, direction)
        self._rule_ids[(direction, id(rule))] = (rule, found)
        return found

    def _render_matches(self, rule: RuleState, direction: Direction) -> list[str]:
        # Port specs enter by their fields: plain tuples hash and compare in C, the attrs
        # classes' methods are Python calls.
        dst, src, not_dst, not_src = (
            rule.dst_ports,
            rule.src_ports,
            rule.not_dst_ports,
            rule.not_src_ports,
        )
        shape = (
            rule.families, rule.protocol, rule.not_protocol, rule.icmp, rule.not_icmp,
            dst.ranges, dst.named, dst.peer_named, src.ranges, src.named, src.peer_named,
            not_dst.ranges, not_dst.named, not_dst.peer_named,
            not_src.ranges, not_src.named, not_src.peer_named,
        )  # fmt: skip
        template = self._templates.get(shape)
        if template is None:
            template = self._templates[shape] = self._template(rule)
        if not (rule.peer_in or rule.peer_not_in):
            return [whole for _, _, whole in template]
        peer = "dst" if direction == "egress" else "src"
        sets = [self._set_match(s, False, peer) for s in rule.peer_in]
        sets += [self._set_match(s, True, peer) for s in rule.peer_not_in]
        middle = " ".join(sets)
        return [f"{before}{middle}{after} " for before, after, _ in template]

    def _template(self, rule: RuleState) -> list[tuple[str, str, str]]:
        """The lines of every rule of this rule's shape: text before and after the set matches.

        The peer set matches are all that differ between rules of one shape. A shape is
        everything but the policy, index, action and sets: a workload of a hundred thousand
        rules has a handful of shapes.
        """
        family = self.family
        if family not in rule.families:
            return []
        if rule.protocol is not None and PROTOCOL_FAMILY.get(rule.protocol, family) != family:
            return []
        sides = [
            (spec, side, negate)
            for spec, side, negate in (
                (rule.dst_ports, "dst", False),
                (rule.src_ports, "src", False),
                (rule.not_dst_ports, "dst", True),
                (rule.not_src_ports, "src", True),
            )
            if not spec.empty
        ]
        not_protocol = None
        protocols: Sequence[int | None]
        if rule.protocol is not None:
            if rule.not_protocol == rule.protocol:
                return []
            protocols = (rule.protocol,)
        elif sides:
            # Only a packet with ports can match a port test, negated or not (the engine's
            # rule): one line per protocol that has ports.
            protocols = [p for p in _PORTED if p != rule.not_protocol]
        else:
            protocols = (None,)
            not_protocol = rule.not_protocol
        lines: list[tuple[str, str, str]] = []
        for protocol in protocols:
            before: list[str] = []
            if protocol is not None:
                before.append(f"-p {_protocol(protocol)}")
            elif not_protocol is not None:
                before.append(f"! -p {_protocol(not_protocol)}")
            if protocol in (ICMP, ICMPV6):
                if rule.not_icmp is not None and rule.not_icmp[0] is None:
                    continue  # notICMP without a type excludes every ICMP packet
                for icmp, negate in ((rule.icmp, False), (rule.not_icmp, True)):
                    if icmp is not None and icmp[0] is not None:
                        before.append(self._icmp(protocol, icmp, negate))
            if sides and protocol not in PORTED_PROTOCOLS:
                continue  # a port test on a packet without ports never matches
            after: list[str] = []
            positive: list[list[_Alternative]] = []
            never = False
            for spec, side, negate in sides:
                assert protocol is not None
                alternatives = self._port_alternatives(spec, protocol, side)
                if negate:
                    after.extend(neg for _, neg in alternatives)
                elif not alternatives:
                    never = True
                else:
                    positive.append(alternatives)
            if never:
                continue
            head = " ".join(before)
            for case in disjoint_cases(positive):
                tail = " ".join(after + case)
                whole = " ".join(filter(None, (head, tail)))
                # (text before the set matches, after them, the line without any)
                lines.append(
                    (f"{head} " if head else "", f" {tail}" if tail else "", whole and f"{whole} ")
                )
        return lines

    # ------------------------------------------------------------------------- chains

    def _goto(self, target: str | None) -> str:
        return "-j RETURN" if target is None else f"-g {target}"

    def _target(self, rule: RuleState, direction: Direction, following: str | None) -> str:
        action = rule.action
        if action == "Allow":
            return "-j RETURN"
        if action == "Deny":
            return self.deny
        if action == "Pass":
            return self._goto(following)
        if self.options.log == "NFLOG":
            prefix = log_prefix(rule.policy, direction, rule.index, NFLOG_PREFIX_MAX)
            return f'-j NFLOG --nflog-prefix "{prefix}" --nflog-group {self.options.nflog_group}'
        prefix = log_prefix(rule.policy, direction, rule.index, LOG_PREFIX_MAX)
        return f'-j LOG --log-prefix "{prefix}"'

    def _safe(self, policy: str) -> bool:
        """Whether a policy name is plain text already (checked once per policy)."""
        safe = self._policy_safe.get(policy)
        if safe is None:
            safe = self._policy_safe[policy] = safe_text(policy, COMMENT_MAX) == policy
        return safe

    def add_chain(self, direction: Direction, bodies: list[str]) -> str:
        name = self.names.policy_chain(direction, "\n".join(bodies))
        self.chains.setdefault(name, bodies)
        return name

    def _tier(self, tier: TierState, direction: Direction, following: str | None) -> str | None:
        """The first chain of a tier followed by ``following`` (None: allow)."""
        groups: list[list[RuleState]] = []
        for rule in tier.rules:
            if groups and groups[-1][0].policy == rule.policy:
                groups[-1].append(rule)
            else:
                groups.append([rule])
        if tier.default_action == "Deny":
            comment = safe_text(f"end of tier {tier.name}", COMMENT_MAX)
            tail: str | None = f'-m comment --comment "{comment}" {self.deny}'
        else:
            tail = None  # go on to what follows the tier
        nxt = following
        for group in reversed(groups):
            bodies: list[str] = []
            for rule in group:
                matches = self.matches(rule, direction)
                if not matches:
                    continue
                text = f"{rule.policy} {direction}[{rule.index}] {rule.action}"
                if len(text) > COMMENT_MAX or not self._safe(rule.policy):
                    text = safe_text(text, COMMENT_MAX)
                target = self._targets.get(rule.action) or self._target(rule, direction, following)
                end = f'-m comment --comment "{text}" {target}'
                bodies.extend([m + end for m in matches])
            if tail is not None:
                bodies.append(tail)
                tail = None
            elif not bodies:
                continue  # nothing of this policy in this family: straight on
            else:
                bodies.append(self._goto(nxt))
            nxt = self.add_chain(direction, bodies)
        if tail is not None:  # a tier of no rules (here) that denies
            nxt = self.add_chain(direction, [tail])
        return nxt

    def program(self, tiers: tuple[TierState, ...], direction: Direction) -> str | None:
        """The entry chain of an endpoint's tiers in one direction (None: allowed)."""
        key = (direction, tuple(map(id, tiers)))
        found = self._programs.get(key)
        if found is not None:
            return found[1]
        following = self.program(tiers[1:], direction) if len(tiers) > 1 else None
        entry = self._tier(tiers[0], direction, following) if tiers else None
        self._programs[key] = (tiers, entry)  # the tiers are kept: their ids stay theirs
        return entry

    def dispatch(
        self, direction: Direction, entries: list[tuple[str, str]], chain: str, depth: int = 0
    ) -> None:
        """Fill dispatch chain ``chain``: interface -> program, branching by name prefix."""
        key = "-i" if direction == "egress" else "-o"
        bodies: list[str] = []
        if len(entries) <= DISPATCH_FANOUT:
            bodies = [f"{key} {iface} -g {target}" for iface, target in entries]
        else:
            groups: dict[str, list[tuple[str, str]]] = {}
            for iface, target in entries:
                groups.setdefault(iface[: depth + 1], []).append((iface, target))
            if len(groups) == 1:  # a common prefix: look one character further
                self.dispatch(direction, entries, chain, depth + 1)
                return
            for head, members in groups.items():
                if len(members) == 1:
                    iface, target = members[0]
                    bodies.append(f"{key} {iface} -g {target}")
                else:
                    branch = self.names.dispatch_branch(direction, head)
                    bodies.append(f"{key} {head}+ -g {branch}")
                    self.dispatch(direction, members, branch, depth + 1)
        self.chains[chain] = bodies


class FamilyRules:
    """One family's rendered rules.

    Attributes:
        family: 4 or 6.
        text: The ``iptables-restore --noflush`` input (``*filter`` ... ``COMMIT``).
        chains: Every chain the text declares.
    """

    def __init__(self, family: int, text: str, chains: tuple[str, ...]) -> None:
        self.family = family
        self.text = text
        self.chains = chains


def render_rules(
    endpoints: Sequence[tuple[EndpointState, str]],
    family: int,
    options: RenderOptions,
    names: Names,
) -> FamilyRules:
    """Render one family's chains for ``(endpoint, checked interface)`` pairs."""
    r = _Family(family, options, names)
    from_wl, to_wl = names.dispatch("egress"), names.dispatch("ingress")
    # DNS responses are established flows: the hold rules come before the RETURN of those.
    hold = [f"-p {p} --sport 53 -j {names.hold}" for p in ("udp", "tcp")]
    r.chains[names.root] = [
        *(hold if options.hold_queue is not None else []),
        "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-m conntrack --ctstate INVALID -j DROP",
        f"-j {from_wl}",
        f"-j {to_wl}",
    ]
    if options.hold_queue is not None:
        target = f"-j NFQUEUE --queue-num {options.hold_queue} --queue-bypass"
        interfaces = sorted({iface for _, iface in endpoints})
        r.chains[names.hold] = [f"-o {iface} {target}" for iface in interfaces]
    directions: tuple[Direction, Direction] = ("egress", "ingress")
    for direction, chain in zip(directions, (from_wl, to_wl), strict=True):
        r.chains[chain] = []  # declared first, filled below
        entries = []
        for endpoint, iface in endpoints:
            entry = r.program(endpoint.tiers(direction), direction)
            if entry is not None:
                entries.append((iface, entry))
        r.dispatch(direction, sorted(entries), chain)
    if options.reject:
        icmp = "icmp-admin-prohibited" if family == 4 else "icmp6-adm-prohibited"
        r.chains[names.reject] = [
            "-p tcp -j REJECT --reject-with tcp-reset",
            f"-j REJECT --reject-with {icmp}",
        ]
    pieces = ["*filter\n"]
    pieces.extend(f":{name} - [0:0]\n" for name in r.chains)
    for name, bodies in r.chains.items():
        if bodies:
            head = f"-A {name} "
            pieces.append(head + ("\n" + head).join(bodies) + "\n")
    pieces.append(jump_rule(names) + "\nCOMMIT\n")
    return FamilyRules(family, "".join(pieces), tuple(r.chains))
