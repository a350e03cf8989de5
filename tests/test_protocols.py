"""Protocols: Calico's names and IP protocol numbers, one table for the whole library."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.protocols import (
    PORT_RULE_PROTOCOLS,
    PORTED_PROTOCOLS,
    PROTOCOL_FAMILY,
    PROTOCOL_NAMES,
    PROTOCOL_NUMBERS,
    protocol_name,
    protocol_number,
    protocol_number_or_none,
)

CALICO = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}


def test_calicos_six_names_in_calicos_spelling() -> None:
    assert tuple(CALICO) == PROTOCOL_NAMES
    assert dict(PROTOCOL_NUMBERS) == {name.upper(): number for name, number in CALICO.items()}


@pytest.mark.parametrize(("name", "number"), CALICO.items())
def test_a_name_is_read_in_any_letter_case(name: str, number: int) -> None:
    for written in (name, name.upper(), name.lower(), name.swapcase()):
        assert protocol_number(written) == number


@pytest.mark.parametrize(("name", "number"), CALICO.items())
def test_the_six_numbers_are_written_as_calico_spells_them(name: str, number: int) -> None:
    assert protocol_name(number) == name


@given(st.integers(1, 255).filter(lambda n: n not in CALICO.values()))
def test_other_numbers_are_written_as_numbers(number: int) -> None:
    assert protocol_name(number) == str(number)
    assert protocol_number(protocol_name(number)) == number


@given(st.integers(1, 255))
def test_a_number_or_its_digits_is_itself(number: int) -> None:
    assert protocol_number(number) == number
    assert protocol_number(str(number)) == number


@pytest.mark.parametrize("bad", [0, 256, -6, "0", "256", "", "tcpx", "ICMP6", "6a", " 6"])
def test_anything_else_is_refused_with_the_valid_choices(bad: str | int) -> None:
    with pytest.raises(InvalidPolicy) as info:
        protocol_number(bad)
    (problem,) = info.value.problems
    assert problem.message in (f"unknown protocol {bad!r}", f"unknown protocol {bad}")
    assert problem.hint == "TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255"


def test_or_none_gives_none_for_no_protocol_and_for_one_that_is_refused() -> None:
    assert protocol_number_or_none(None) is None
    assert protocol_number_or_none("bogus") is None
    assert protocol_number_or_none("udplite") == 136


def test_ports_are_carried_by_four_protocols_and_allowed_in_rules_for_three() -> None:
    assert {6, 17, 132, 136} == PORTED_PROTOCOLS
    assert PORTED_PROTOCOLS - {136} == PORT_RULE_PROTOCOLS  # Calico refuses ports with UDPLite


def test_icmp_is_ipv4s_and_icmpv6_ipv6s() -> None:
    assert dict(PROTOCOL_FAMILY) == {1: 4, 58: 6}
