"""Cache files: atomic save, restore after a restart, and every form of damaged file."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fqdnpolicy.dns import DNSCache, DNSChange, DNSLink, PeriodicSaver, persist
from fqdnpolicy.dns.persist import FORMAT, VERSION
from tests.dns.helpers import CNAME, A, FakeClock, answer

WALL = 1_700_000_000.0


def make_cache(clock: FakeClock, epoch: int = 0) -> DNSCache:
    # The wall clock runs with the monotonic one, offset, as on a real machine.
    return DNSCache(clock=clock, wall_clock=lambda: clock.now + WALL, epoch=epoch)


def header(**overrides: object) -> str:
    fields: dict[str, object] = {"format": FORMAT, "version": VERSION, "epoch": 0}
    fields["features"] = ["cname"]
    fields.update(overrides)
    return json.dumps(fields)


def entry(name: str, ip: str, expires: float) -> str:
    return json.dumps({"name": name, "ip": ip, "expires": expires})


@pytest.fixture
def saved(tmp_path: Path) -> tuple[FakeClock, str]:
    """A cache file with a chain q.com -> t.com -> 10.0.0.1 and an extra name, saved at 1000."""
    clock = FakeClock(1000)
    cache = make_cache(clock)
    cache.ingest(answer("q.com", ("q.com", CNAME, 60, "t.com"), ("t.com", A, 300, "10.0.0.1")))
    cache.ingest(answer("soon.com", ("soon.com", A, 5, "10.0.0.2")))
    path = str(tmp_path / "dns-cache.jsonl")
    assert cache.save(path) == 3
    return clock, path


def test_restart_restores_chains_with_their_remaining_time(saved: tuple[FakeClock, str]) -> None:
    old_clock, path = saved
    # After a restart the monotonic clock starts elsewhere; 30 s of wall time have passed.
    clock = FakeClock(7)
    restarted = DNSCache(clock=clock, wall_clock=lambda: old_clock.now + WALL + 30)
    changes: list[DNSChange] = []
    restarted.subscribe(changes.extend)
    report = restarted.load(path)
    assert report.ignored is None
    assert report.skipped == ()
    assert report.restored == 2
    assert report.expired == 1  # soon.com had 5 s, 30 s ago
    assert restarted.expiries("q.com") == {"10.0.0.1": 7 + 60 - 30}
    assert restarted.expiries("t.com") == {"10.0.0.1": 7 + 300 - 30}
    assert {(c.name, c.ip) for c in changes} == {("q.com", "10.0.0.1"), ("t.com", "10.0.0.1")}


def test_only_links_with_more_than_one_second_left_are_restored(tmp_path: Path) -> None:
    path = tmp_path / "c"
    lines = [header(), entry("a.com", "10.0.0.1", WALL + 1), entry("b.com", "10.0.0.2", WALL + 1.5)]
    path.write_text("\n".join(lines) + "\n")
    cache = make_cache(FakeClock(0))
    report = cache.load(str(path))
    assert (report.restored, report.expired) == (1, 1)
    assert cache.names() == {"b.com"}


def test_save_is_atomic_and_leaves_no_temporary_files(saved: tuple[FakeClock, str]) -> None:
    clock, path = saved
    cache = make_cache(clock)
    cache.save(path)  # replaces the file saved by the fixture
    directory = os.path.dirname(path)
    assert os.listdir(directory) == [os.path.basename(path)]
    text = Path(path).read_text()
    assert text.endswith("\n")
    assert json.loads(text.splitlines()[0]) == {
        "format": FORMAT,
        "version": VERSION,
        "epoch": 0,
        "features": ["cname"],
    }


def test_failed_save_keeps_the_old_file_and_removes_its_temporary(
    saved: tuple[FakeClock, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock, path = saved
    before = Path(path).read_text()
    cache = make_cache(clock)
    cache.ingest(answer("new.com", ("new.com", A, 60, "10.0.0.9")))

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fqdnpolicy.dns.persist.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        cache.save(path)
    assert Path(path).read_text() == before
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def test_file_of_another_epoch_is_ignored(saved: tuple[FakeClock, str]) -> None:
    clock, path = saved
    cache = make_cache(clock, epoch=2)
    report = cache.load(path)
    assert report.ignored is not None
    assert "epoch" in report.ignored
    assert report.restored == 0
    assert cache.names() == set()


VALID_1 = entry("a.com", "10.0.0.1", WALL + 100)
VALID_2 = entry("b.com", "10.0.0.2", WALL + 100)


@pytest.mark.parametrize(
    ("content", "restored", "skipped_lines", "ignored"),
    [
        pytest.param(b"", 0, [], "empty", id="empty"),
        pytest.param(b"  \n\t\n", 0, [], "empty", id="whitespace-only"),
        pytest.param(
            (header(version=99) + "\n" + VALID_1 + "\n").encode(),
            0,
            [],
            "version",
            id="unknown-version",
        ),
        pytest.param(header().encode(), 0, [], None, id="version-with-no-newline"),
        pytest.param(
            b"not json at all\n" + VALID_1.encode() + b"\n", 0, [], "header", id="non-json-header"
        ),
        pytest.param(
            (header() + "\n" + VALID_1 + "\nthis is not json\n" + VALID_2 + "\n").encode(),
            2,
            [3],
            None,
            id="non-json-line",
        ),
        pytest.param(
            (header() + "\n" + VALID_1 + "\n" + VALID_2[:20]).encode(),
            1,
            [3],
            None,
            id="truncated",
        ),
        pytest.param(
            (
                header()
                + "\n"
                + VALID_1
                + "\n"
                + json.dumps({"name": "b.com", "ip": "10.0.0.2", "expires": WALL + 100, "x": 1})
                + "\n"
            ).encode(),
            1,
            [3],
            None,
            id="extra-fields",
        ),
        pytest.param(
            (
                header() + "\n" + VALID_1 + "\n\x00\x01garbage}{\n[1,2]\n\n" + VALID_2 + "\n"
            ).encode(),
            2,
            [3, 4, 5],
            None,
            id="garbage-between-lines",
        ),
        pytest.param(
            (header() + "\n" + VALID_1 + "\n").encode() + b"\xff\xfe\n" + (VALID_2 + "\n").encode(),
            2,
            [3],
            None,
            id="not-utf8",
        ),
        pytest.param(
            (header(features=["cname", "from-the-future"]) + "\n" + VALID_1 + "\n").encode(),
            0,
            [],
            "feature",
            id="unknown-feature",
        ),
        pytest.param(
            (header(extra=True) + "\n" + VALID_1 + "\n").encode(),
            0,
            [],
            "header",
            id="header-extra-field",
        ),
    ],
)
def test_damaged_files_keep_every_valid_line_and_never_raise(
    tmp_path: Path, content: bytes, restored: int, skipped_lines: list[int], ignored: str | None
) -> None:
    path = tmp_path / "cache"
    path.write_bytes(content)
    cache = make_cache(FakeClock(0))
    report = cache.load(str(path))
    assert report.restored == restored
    assert [s.line for s in report.skipped] == skipped_lines
    if ignored is None:
        assert report.ignored is None
    else:
        assert report.ignored is not None
        assert ignored in report.ignored
    assert len(cache.names()) == restored


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"name": "A.com", "ip": "10.0.0.1", "expires": WALL + 99}, "canonical"),
        ({"name": "a.com", "ip": "10.0.0.256", "expires": WALL + 99}, "not an IP"),
        ({"name": "a.com", "ip": "2001:DB8::1", "expires": WALL + 99}, "canonical"),
        ({"name": "a.com", "ip": "0.0.0.0", "expires": WALL + 99}, "zero"),
        ({"name": "a.com", "ip": "10.0.0.1", "expires": "soon"}, "number"),
        ({"name": "a.com", "ip": "10.0.0.1", "expires": True}, "number"),
        ({"name": "a.com", "cname": "", "expires": WALL + 99}, "cname"),
        ({"name": "a.com", "ip": "10.0.0.1"}, "fields"),
        ({"name": 7, "ip": "10.0.0.1", "expires": WALL + 99}, "name"),
    ],
)
def test_invalid_entries_are_reported_with_their_reason(
    tmp_path: Path, bad: dict[str, object], reason: str
) -> None:
    path = tmp_path / "cache"
    path.write_text(header() + "\n" + json.dumps(bad) + "\n" + VALID_1 + "\n")
    report = make_cache(FakeClock(0)).load(str(path))
    assert report.restored == 1
    assert len(report.skipped) == 1
    assert report.skipped[0].line == 2
    assert reason in report.skipped[0].reason


def test_missing_file_is_reported_not_raised(tmp_path: Path) -> None:
    report = make_cache(FakeClock(0)).load(str(tmp_path / "nope"))
    assert report.ignored is not None
    assert report.restored == 0


@settings(max_examples=150, deadline=None)
@given(
    tail=st.lists(
        st.one_of(st.binary(max_size=40), st.sampled_from([VALID_1.encode()])), max_size=8
    )
)
def test_load_never_raises_and_restores_exactly_the_valid_lines(tail: list[bytes]) -> None:
    import tempfile

    content = header().encode() + b"\n" + b"\n".join(tail) + b"\n"
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "cache")
        Path(path).write_bytes(content)
        report = make_cache(FakeClock(0)).load(path)
    lines = content.split(b"\n")[1:-1]
    valid = sum(1 for line in lines if line == VALID_1.encode())
    assert report.ignored is None
    assert report.restored == valid
    assert report.restored + len(report.skipped) == len(lines)


def test_periodic_saver_saves_when_due_and_reports_failures(tmp_path: Path) -> None:
    clock = FakeClock(0)
    cache = make_cache(clock)
    cache.ingest(answer("a.com", ("a.com", A, 600, "10.0.0.1")))
    path = str(tmp_path / "cache")
    saver = PeriodicSaver(cache, path, interval=60)
    assert not saver.save_if_due()
    assert not os.path.exists(path)
    clock.advance(60)
    assert saver.save_if_due()
    assert saver.saves == 1
    assert not saver.save_if_due()  # the next save is 60 s later
    errors: list[OSError] = []
    broken = PeriodicSaver(cache, str(tmp_path / "no" / "dir"), interval=1, on_error=errors.append)
    clock.advance(1)
    assert not broken.save_if_due()
    assert len(errors) == 1
    assert broken.last_error is errors[0]


def test_periodic_saver_thread_saves_and_stops(tmp_path: Path) -> None:
    cache = make_cache(FakeClock(0))
    cache.ingest(answer("a.com", ("a.com", A, 600, "10.0.0.1")))
    path = str(tmp_path / "cache")
    saver = PeriodicSaver(cache, path, interval=3600)
    saver.start()
    saver.stop()  # the final save happens on stop
    assert saver.saves == 1
    assert make_cache(FakeClock(0)).load(path).restored == 1


# Hostile or broken files: each is read, or refused, without raising, waiting or filling memory.


def write(tmp_path: Path, *lines: str | bytes) -> str:
    path = tmp_path / "cache"
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return str(path)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "longer than", id="100k-deep"),
        pytest.param(b"[" * 2000 + b"]" * 2000, "nested too deeply", id="2k-deep-short-line"),
        pytest.param(
            b'{"name":' + b"[" * 2000 + b"]" * 2000 + b"}", "nested too deeply", id="deep-field"
        ),
        pytest.param(
            json.dumps({"name": "a.com", "ip": "10.0.0.9", "expires": 10**400}).encode(),
            "out of range",
            id="400-digit-expiry",
        ),
        pytest.param(
            b'{"name":"a.com","ip":"10.0.0.9","expires":' + b"9" * 5000 + b"}",
            "longer than",
            id="5000-digit-expiry",
        ),
        pytest.param(
            json.dumps({"name": "a.com", "ip": "10.0.0.9", "expires": 1e400}).encode(),
            "not finite",
            id="infinite-expiry",
        ),
        pytest.param(b"x" * 10_000_000, "longer than", id="10-MB-line"),
    ],
)
def test_one_hostile_line_is_skipped_with_its_reason_and_every_valid_line_kept(
    tmp_path: Path, bad: bytes, reason: str
) -> None:
    path = write(tmp_path, header(), VALID_1, bad, VALID_2)
    cache = make_cache(FakeClock(0))
    report = cache.load(path)
    assert report.ignored is None
    assert report.restored == 2
    assert [s.line for s in report.skipped] == [3]
    assert reason in report.skipped[0].reason
    assert len(report.skipped[0].text) <= 80
    assert cache.names() == {"a.com", "b.com"}


def test_a_deeply_nested_header_ignores_the_file_without_raising(tmp_path: Path) -> None:
    path = write(tmp_path, b"[" * 2000 + b"]" * 2000, VALID_1)
    report = make_cache(FakeClock(0)).load(path)
    assert report.ignored is not None
    assert "header" in report.ignored


def test_a_hostile_last_line_without_newline_is_reported_as_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    path.write_bytes((header() + "\n" + VALID_1 + "\n").encode() + b"[" * 50_000)
    report = make_cache(FakeClock(0)).load(str(path))
    assert report.restored == 1
    assert [s.line for s in report.skipped] == [3]
    assert "cut short" in report.skipped[0].reason


def load_in_time(cache: DNSCache, path: str) -> persist.LoadReport:
    """Load in a thread and fail, rather than hang the suite, if it does not return."""
    result: list[persist.LoadReport] = []
    thread = threading.Thread(target=lambda: result.append(cache.load(path)), daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert result, "load() did not return"
    return result[0]


def test_a_fifo_is_ignored_without_waiting_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    os.mkfifo(path)
    report = load_in_time(make_cache(FakeClock(0)), str(path))
    assert report.ignored is not None
    assert "not a regular file" in report.ignored


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_link_to_a_device_is_ignored_without_reading_it(tmp_path: Path, device: str) -> None:
    path = tmp_path / "cache"
    path.symlink_to(device)
    report = load_in_time(make_cache(FakeClock(0)), str(path))
    assert report.ignored is not None
    assert "not a regular file" in report.ignored


def test_a_directory_is_ignored(tmp_path: Path) -> None:
    report = make_cache(FakeClock(0)).load(str(tmp_path))
    assert report.ignored is not None


def test_a_link_to_a_regular_file_is_read_like_the_file(tmp_path: Path) -> None:
    target = write(tmp_path, header(), VALID_1)
    link = tmp_path / "link"
    link.symlink_to(target)  # as a Kubernetes volume mounts its files
    report = make_cache(FakeClock(0)).load(str(link))
    assert report.ok
    assert report.restored == 1


def test_a_file_over_the_size_bound_is_ignored_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(persist, "MAX_FILE_BYTES", 1000)
    path = write(tmp_path, header(), *[VALID_1] * 20)
    cache = make_cache(FakeClock(0))
    report = cache.load(path)
    assert report.ignored is not None
    assert "1000" in report.ignored
    assert cache.names() == set()


def test_a_link_between_the_longest_names_fits_the_line_bound(tmp_path: Path) -> None:
    label = "\\255" * 63  # each octet written as \DDD, then escaped again by JSON
    longest = ".".join([label, label, label, "\\255" * 61])
    clock = FakeClock(0)
    cache = make_cache(clock)
    cache.restore([DNSLink(longest, longest.replace("255", "254"), True, 1e9)])
    path = str(tmp_path / "cache")
    assert cache.save(path) == 1
    assert max(len(line) for line in Path(path).read_bytes().split(b"\n")) > 2000
    report = make_cache(clock).load(path)
    assert report.ok
    assert report.restored == 1


# Restored lifetimes: a file never keeps a pair longer than a fresh answer could.


@pytest.mark.parametrize("expires", [WALL + 1e9, 1e300, 10**300])
def test_restored_lifetimes_are_cut_to_what_the_options_allow_at_load(
    tmp_path: Path, expires: float
) -> None:
    line = json.dumps({"name": "a.com", "ip": "10.0.0.1", "expires": expires})
    path = write(tmp_path, header(), line)
    clock = FakeClock(500)
    cache = DNSCache(
        clock=clock, wall_clock=lambda: clock.now + WALL, max_ttl=3600, grace_period=30
    )
    assert cache.load(path).restored == 1
    assert cache.expiries("a.com") == {"10.0.0.1": 500 + 3600 + 30}
    clock.advance(3631)
    cache.expire()
    assert cache.names() == set()


def test_restored_lifetimes_within_the_options_are_kept_as_saved(tmp_path: Path) -> None:
    line = json.dumps({"name": "a.com", "ip": "10.0.0.1", "expires": WALL + 100})
    path = write(tmp_path, header(), line)
    clock = FakeClock(0)
    cache = DNSCache(clock=clock, wall_clock=lambda: clock.now + WALL, max_ttl=3600)
    cache.load(path)
    assert cache.expiries("a.com") == {"10.0.0.1": 100}


def test_restore_cuts_deadlines_and_skips_ones_that_are_no_number() -> None:
    cache = DNSCache(clock=FakeClock(10), max_ttl=60)
    cache.restore(
        [
            DNSLink("a.com", "10.0.0.1", False, math.inf),
            DNSLink("b.com", "c.com", True, 1e300),
            DNSLink("c.com", "10.0.0.2", False, 40.0),
            DNSLink("d.com", "10.0.0.3", False, math.nan),
        ]
    )
    assert cache.expiries("a.com") == {"10.0.0.1": 70}
    assert cache.expiries("b.com") == {"10.0.0.2": 40}
    assert {link.name: link.expiry for link in cache.links()} == {
        "a.com": 70,
        "b.com": 70,
        "c.com": 40,
    }
