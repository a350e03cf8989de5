"""A --cache that is ignored, damaged or expired is reported, on stderr and in JSON notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.sources import load_zone
from tests.cli.support import run

DATA = Path(__file__).parents[2] / "fqdnpolicy" / "data"
SAVED_AT = 1_800_000_000
FLOW = "default/backend -> api.github.com:443/tcp"  # its addresses live 60 s in the zone


@pytest.fixture
def cache_file(tmp_path: Path) -> Path:
    """The demo zone saved as a cache file at SAVED_AT."""
    cache = DNSCache(clock=lambda: SAVED_AT, wall_clock=lambda: SAVED_AT)
    load_zone(cache, DATA / "demo" / "zone.db")
    path = tmp_path / "dns.cache"
    cache.save(str(path))
    return path


def check(cache: Path, at: float, *extra: str) -> tuple[int, str]:
    """``fqdnpolicy check FLOW`` on the demo policies and cluster with ``cache`` at ``at``."""
    return run(
        "check",
        "--policies",
        str(DATA / "seed"),
        "--cluster",
        str(DATA / "demo" / "cluster.yaml"),
        "--cache",
        str(cache),
        "--at",
        str(at),
        *extra,
        FLOW,
    )


def test_a_cache_judged_when_it_was_saved_gives_no_note(
    cache_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = check(cache_file, SAVED_AT, "--format", "json")
    assert code == 0
    assert json.loads(out)["notes"] == []
    assert capsys.readouterr().err == ""


def test_expired_entries_are_counted_and_point_at_at(
    cache_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = check(cache_file, SAVED_AT + 10, "--format", "json")
    assert code == 0  # the flow's own addresses are still live
    (note,) = json.loads(out)["notes"]
    assert note == (
        f"{cache_file}: 2 entries had expired (use --at to judge at the time the cache was saved)"
    )
    assert capsys.readouterr().err == f"warning: {note}\n"


def test_a_cache_with_every_entry_expired_says_every_name_is_unresolved(
    cache_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = check(cache_file, SAVED_AT + 86400)
    assert code == 1
    assert " unresolved " in out
    err = capsys.readouterr().err
    assert "entries had expired" in err
    assert f"warning: {cache_file}: no entry left: every name is unresolved" in err


def test_a_damaged_line_is_skipped_with_its_line_number(
    cache_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = cache_file.read_text().splitlines(keepends=True)
    cache_file.write_text("".join([*lines, "{not json\n"]))
    code, out = check(cache_file, SAVED_AT, "--format", "json")
    assert code == 0  # the other lines still count
    (note,) = json.loads(out)["notes"]
    assert note.startswith(f"{cache_file}:{len(lines) + 1}: skipped: ")
    assert f"warning: {note}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "the file is empty"),
        ("not a header\n", "the first line is not a JSON header"),
    ],
)
def test_an_ignored_cache_file_says_why_and_every_name_is_unresolved(
    tmp_path: Path, content: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dns.cache"
    path.write_text(content)
    code, out = check(path, SAVED_AT, "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert report["notes"] == [f"{path}: ignored: {reason}"]
    assert report["flows"][0]["unresolved"] is True
    assert capsys.readouterr().err == f"warning: {path}: ignored: {reason}\n"
