"""``render`` and ``remove``: reproducible output, and refusals that protect an installed table."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import yaml

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


def _reversed_inputs(demo_state: list[str], tmp_path: Path) -> list[str]:
    """The demo state with policy files, pods and DNS records each in the opposite order."""
    seed, cluster, zone = (Path(demo_state[i]) for i in (1, 3, 5))
    kubectl_list = yaml.safe_load(cluster.read_text())
    kubectl_list["items"].reverse()
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(kubectl_list))
    lines = zone.read_text().splitlines()
    directives = [line for line in lines if line.startswith(("$", ";"))]
    records = [line for line in lines if line and not line.startswith(("$", ";"))]
    (tmp_path / "zone.db").write_text("\n".join([*directives, *reversed(records)]) + "\n")
    policies = [
        arg
        for path in sorted(seed.glob("*.yaml"), reverse=True)
        for arg in ("--policies", str(path))
    ]
    return [
        *policies,
        "--cluster",
        str(tmp_path / "cluster.yaml"),
        "--zone",
        str(tmp_path / "zone.db"),
    ]


@pytest.mark.parametrize("form", ["text", "json"])
def test_render_does_not_depend_on_the_order_of_files_pods_or_records(
    demo_state: list[str], tmp_path: Path, form: str
) -> None:
    render = ("render", "--backend", "nftables", "--format", form, "--at", AT)
    forward = run(*render, *demo_state)
    backward = run(*render, *_reversed_inputs(demo_state, tmp_path))
    assert forward[0] == 0
    assert forward == backward


def test_set_members_are_rendered_in_address_order(demo_state: list[str]) -> None:
    code, out = run("render", "--backend", "nftables", "--format", "json", "--at", AT, *demo_state)
    assert code == 0
    elements = [
        command["add"]["set"]["elem"]
        for command in json.loads(out)["nftables"]
        if "elem" in command.get("add", {}).get("set", {})
    ]
    assert elements
    for members in elements:
        addresses = [_address(member) for member in members]
        assert addresses == sorted(addresses)


def _address(element: object) -> tuple[int, int]:
    """The address of an nftables JSON set element (an address, a prefix, a timed element)."""
    if isinstance(element, dict) and "elem" in element:
        element = element["elem"]["val"]
    if isinstance(element, dict):
        element = element["prefix"]["addr"]
    address = ipaddress.ip_address(str(element))
    return address.version, int(address)
