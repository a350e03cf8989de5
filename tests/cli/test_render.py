"""``render`` and ``remove``: reproducible output, and refusals that protect an installed table."""

from __future__ import annotations

import pytest

from tests.cli.support import run

AT = "2026-12-04T10:00:00Z"


def test_render_is_byte_for_byte_the_same_for_the_same_inputs_and_time(
    demo_state: list[str],
) -> None:
    first = run("render", "--backend", "nftables", "--at", AT, *demo_state)
    second = run("render", "--backend", "nftables", "--at", AT, *demo_state)
    assert first == second
    assert first[0] == 0


def test_netns_without_apply_is_a_usage_error(
    demo_state: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run("render", "--backend", "nftables", "--netns", "x", *demo_state)
    assert code == 2
    assert "--netns names where --apply installs" in capsys.readouterr().err


def test_applying_an_empty_state_is_refused_without_allow_empty(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _ = run("render", "--backend", "nftables", "--apply", "--netns", "x")
    assert code == 1
    assert "refusing to apply an empty state" in capsys.readouterr().err


def test_an_unknown_backend_is_a_usage_error_for_render_and_remove() -> None:
    assert run("render", "--backend", "no-such-backend")[0] == 2
    assert run("remove", "--backend", "no-such-backend")[0] == 2


@pytest.mark.parametrize("at", ["yesterday", "nan", "-1", "1e300"])
def test_at_must_be_a_time(at: str) -> None:
    assert run("check", "--at", at, "a/b -> 198.51.100.1:443")[0] == 2
