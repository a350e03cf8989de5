"""Cache files: save the DNS cache atomically, restore it after a restart.

Losing the cache on restart drops traffic until every name is looked up again (a common
complaint about FQDN policy agents), so the cache is saved and restored.

Format (UTF-8, one JSON object per line)::

    {"format":"fqdnpolicy-dns-cache","version":1,"epoch":0,"features":["cname"]}
    {"name":"api.example.com","cname":"lb.example.net","expires":1767225600.0}
    {"name":"lb.example.net","ip":"192.0.2.7","expires":1767225600.0}

The header names the format version, the cache *epoch* (bump it to discard old files, e.g.
after a change of meaning) and the *features* a reader must understand. Entries are links (not
the effective mapping), so chains are rebuilt on load; ``expires`` is wall-clock seconds, since
a monotonic clock does not survive a restart.

Loading never raises, never waits and never reads without bound: only a regular file of at
most :data:`MAX_FILE_BYTES` is read, one line of at most :data:`MAX_LINE_BYTES` at a time. A
file with another epoch, an unknown version or an unknown feature is ignored as a whole (its
entries may mean something else); a damaged file keeps every valid line and reports each other
line with its reason (an address the datapath cannot hold is such a line). Only links with
more than 1 s left are restored, each cut to the longest lifetime the cache's options give at
load time: stored state never keeps a pair longer than a fresh answer could.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO, Protocol

import attrs

from fqdnpolicy.dns.addresses import address_problem
from fqdnpolicy.dns.model import CacheSnapshot, DNSChange, DNSLink
from fqdnpolicy.domains import canonical_dns_name

__all__ = [
    "FEATURES",
    "FORMAT",
    "VERSION",
    "LoadReport",
    "PeriodicSaver",
    "SavedCache",
    "SkippedLine",
    "load",
    "save",
]

FORMAT = "fqdnpolicy-dns-cache"
VERSION = 1
FEATURES = frozenset({"cname"})
MIN_REMAINING = 1.0  # seconds a link must have left to be worth restoring
MAX_FILE_BYTES = 128 * 2**20
"""The largest cache file :func:`load` reads: well above a million links (docs/dns-cache.md)."""
MAX_LINE_BYTES = 4096
"""The longest line :func:`load` parses: a valid entry (two names of at most 253 octets, each
written as at most five characters of escaped JSON text, and a number) is shorter."""
_HEADER_KEYS = frozenset({"format", "version", "epoch", "features"})
_ADDR_KEYS = frozenset({"name", "ip", "expires"})
_CNAME_KEYS = frozenset({"name", "cname", "expires"})
_SHOWN = 80  # characters of a bad line kept in the report


class SavedCache(Protocol):
    """What this module needs of a cache: what :class:`fqdnpolicy.dns.DNSCache` offers.

    Only public methods, so cache files never reach into the cache's lock or state.
    """

    @property
    def epoch(self) -> int:
        """The cache-file epoch."""

    def clock(self) -> float:
        """Monotonic seconds; every deadline is on this clock."""

    def wall_clock(self) -> float:
        """Wall-clock seconds, for the expiries written to files."""

    def snapshot(self) -> CacheSnapshot:
        """Every link and both clocks, read together."""

    def restore(self, links: Iterable[DNSLink]) -> Sequence[DNSChange]:
        """Merge links with deadlines on :meth:`clock`."""

    def save(self, path: str) -> int:
        """Write the cache to ``path``."""


@attrs.frozen
class SkippedLine:
    """A line of a cache file that was not restored.

    Attributes:
        line: 1-based line number.
        reason: Why it was skipped.
        text: The start of the line, for the operator.
    """

    line: int
    reason: str
    text: str = ""


@attrs.frozen
class LoadReport:
    """What :func:`load` restored from a cache file and what it skipped.

    Attributes:
        path: The file.
        restored: Links restored.
        expired: Valid links skipped because they had 1 s or less left.
        skipped: Damaged or invalid lines, with reasons.
        ignored: Why the whole file was ignored (missing, another epoch, unknown version or
            feature, bad header), or None when its entries were read.
    """

    path: str
    restored: int = 0
    expired: int = 0
    skipped: tuple[SkippedLine, ...] = ()
    ignored: str | None = None

    @property
    def ok(self) -> bool:
        """True when the file was read and no line was damaged."""
        return self.ignored is None and not self.skipped


def _header(epoch: int) -> str:
    return json.dumps(
        {"format": FORMAT, "version": VERSION, "epoch": epoch, "features": sorted(FEATURES)},
        separators=(",", ":"),
    )


def save(cache: SavedCache, path: str) -> int:
    """Write ``cache`` to ``path`` atomically: temp file in the same directory, fsync, rename.

    A reader (or a crash) sees the old file or the new one, never a partial one.

    Args:
        cache: The cache to save.
        path: Destination file.

    Returns:
        The number of links written (links already due are left out).

    Raises:
        OSError: The file could not be written (the old file is then left as it was).
    """
    cut = cache.snapshot()
    now, wall = cut.now, cut.wall
    lines = [_header(cut.epoch)]
    for link in cut.links:
        if link.expiry <= now:
            continue
        key = "cname" if link.is_cname else "ip"
        lines.append(
            json.dumps(
                {"name": link.name, key: link.target, "expires": wall + (link.expiry - now)},
                separators=(",", ":"),
            )
        )
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable; not every platform allows opening a directory
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        pass
    else:
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
    return len(lines) - 1


def _check_header(text: str, epoch: int) -> str | None:
    """Return why the header line makes the file unusable, or None when it is fine."""
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):
        return "the first line is not a JSON header"
    if not isinstance(header, dict):
        return "the first line is not a JSON object header"
    if header.get("format") != FORMAT:
        return f"not a {FORMAT} file (format {header.get('format')!r})"
    extra = set(header) - _HEADER_KEYS
    if extra:
        return f"unknown header fields {sorted(extra)}"
    version = header.get("version")
    if version != VERSION or isinstance(version, bool):
        return f"unknown version {version!r} (this reader knows {VERSION})"
    if header.get("epoch") != epoch or isinstance(header.get("epoch"), bool):
        return f"epoch {header.get('epoch')!r} differs from the cache's epoch {epoch}"
    features = header.get("features")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        return "header 'features' is not a list of strings"
    unknown = set(features) - FEATURES
    if unknown:
        return f"unknown required features {sorted(unknown)}"
    return None


def _parse_entry(text: str, *, wall: float, now: float) -> DNSLink | str | None:
    """Parse an entry line: a link, a reason to skip it, or None when it has expired."""
    try:
        entry = json.loads(text)
    except ValueError:
        return "not JSON"
    except RecursionError:
        return "JSON nested too deeply (an entry is one flat object)"
    if not isinstance(entry, dict):
        return "not a JSON object"
    keys = set(entry)
    if keys not in (_ADDR_KEYS, _CNAME_KEYS):
        return f"fields {sorted(keys)}; expected name, ip or cname, expires"
    name = entry["name"]
    if not isinstance(name, str) or not name or canonical_dns_name(name) != name:
        return f"name {name!r} is not a canonical domain name"
    expires = entry["expires"]
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        return f"expires {expires!r} is not a number"
    try:
        expires = float(expires)
    except OverflowError:
        return "expires is out of range (a number of seconds since 1970 is wanted)"
    if not math.isfinite(expires):
        return f"expires {expires!r} is not finite"
    if "ip" in entry:
        target = entry["ip"]
        problem = address_problem(target)
        if problem is not None:
            return f"ip {target!r:.80} {problem}"
        is_cname = False
    else:
        target = entry["cname"]
        if not isinstance(target, str) or not target or canonical_dns_name(target) != target:
            return f"cname {target!r} is not a canonical domain name"
        is_cname = True
    remaining = expires - wall
    if remaining <= MIN_REMAINING:
        return None
    return DNSLink(name, target, is_cname, now + remaining)


def load(cache: SavedCache, path: str) -> LoadReport:
    """Restore the links of a cache file into ``cache``; never raises.

    Only a regular file of at most :data:`MAX_FILE_BYTES` is read (a FIFO, a device or a
    link to one is ignored rather than waited on or read forever), one line of at most
    :data:`MAX_LINE_BYTES` at a time. Restored deadlines are cut to what the cache's options
    allow now (:meth:`fqdnpolicy.dns.DNSCache.restore`).

    Args:
        cache: The cache to fill (its ``epoch`` must match the file's).
        path: A file written by :func:`save`.

    Returns:
        The report: links restored, expired links left out, damaged lines with reasons, or
        why the whole file was ignored.
    """
    try:
        # Non-blocking, so that opening a FIFO returns at once instead of waiting for a
        # writer; the type is checked on the open descriptor, after links are followed.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return LoadReport(path, ignored=f"cannot read the file: {exc.strerror or exc}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return LoadReport(path, ignored="not a regular file (a FIFO, device or directory)")
        if info.st_size > MAX_FILE_BYTES:
            return LoadReport(
                path,
                ignored=f"{info.st_size} bytes; a cache file is at most {MAX_FILE_BYTES} bytes",
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            return _read(cache, path, f)
    except OSError as exc:
        return LoadReport(path, ignored=f"cannot read the file: {exc.strerror or exc}")
    finally:
        os.close(fd)


def _lines(f: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """Yield each line of ``f`` without its newline, and whether it had one.

    A line longer than :data:`MAX_LINE_BYTES` comes out as its first ``MAX_LINE_BYTES + 1``
    bytes (the rest is read past, never held); at most :data:`MAX_FILE_BYTES` are read in
    all, should the file grow while it is read.
    """
    budget = MAX_FILE_BYTES
    while budget > 0:
        raw = f.readline(min(MAX_LINE_BYTES + 1, budget))
        if not raw:
            return
        budget -= len(raw)
        if raw.endswith(b"\n"):
            yield raw[:-1], True
            continue
        ended = False
        if len(raw) > MAX_LINE_BYTES:
            while budget > 0:
                rest = f.readline(min(1 << 16, budget))
                budget -= len(rest)
                if not rest or rest.endswith(b"\n"):
                    ended = bool(rest)
                    break
        yield raw, ended


def _read(cache: SavedCache, path: str, f: BinaryIO) -> LoadReport:
    """Load the open cache file ``f`` (see :func:`load`)."""
    lines = _lines(f)
    header: tuple[bytes, bool] | None = None
    blank_lines = 0
    for line in lines:
        if line[0].strip():
            header = line
            break
        blank_lines += 1
    if header is None:
        return LoadReport(path, ignored="the file is empty")
    if blank_lines:
        return LoadReport(path, ignored="the first line is not a JSON header")
    if len(header[0]) > MAX_LINE_BYTES:
        return LoadReport(path, ignored=f"the first line is longer than {MAX_LINE_BYTES} bytes")
    try:
        header_text = header[0].decode("utf-8")
    except UnicodeDecodeError:
        return LoadReport(path, ignored="the first line is not UTF-8 text")
    reason = _check_header(header_text, cache.epoch)
    if reason is not None:
        return LoadReport(path, ignored=reason)

    # Every entry is read against one moment of both clocks.
    wall = cache.wall_clock()
    now = cache.clock()
    links: list[DNSLink] = []
    skipped: list[SkippedLine] = []
    expired = 0
    for number, (raw, ended) in enumerate(lines, start=2):
        if not raw.strip():
            skipped.append(SkippedLine(number, "blank line"))
            continue
        parsed: DNSLink | str | None
        if len(raw) > MAX_LINE_BYTES:
            parsed = f"longer than {MAX_LINE_BYTES} bytes (no valid entry is)"
        else:
            try:
                parsed = _parse_entry(raw.decode("utf-8"), wall=wall, now=now)
            except UnicodeDecodeError:
                parsed = "not UTF-8 text"
        if parsed is None:
            expired += 1
        elif isinstance(parsed, str):
            if not ended:
                parsed += " (last line, no newline: the file was cut short)"
            skipped.append(SkippedLine(number, parsed, _show(raw)))
        else:
            links.append(parsed)
    cache.restore(links)
    return LoadReport(path, restored=len(links), expired=expired, skipped=tuple(skipped))


def _show(raw: bytes) -> str:
    return raw[:_SHOWN].decode("utf-8", "replace")


class PeriodicSaver:
    """Save a cache every ``interval`` seconds (Calico's default is 60 s).

    Drive it yourself with :meth:`save_if_due` (from an event loop, with the cache's clock),
    or let :meth:`start` run a daemon thread; :meth:`stop` ends the thread and saves once more.

    Args:
        cache: The cache to save.
        path: The cache file.
        interval: Seconds between saves.
        on_error: Called with the exception when a save fails (the saver keeps going); by
            default failures are only remembered in :attr:`last_error`.
    """

    def __init__(
        self,
        cache: SavedCache,
        path: str,
        interval: float = 60.0,
        on_error: Callable[[OSError], None] | None = None,
    ) -> None:
        self.cache = cache
        self.path = path
        self.interval = interval
        self.on_error = on_error
        self.last_error: OSError | None = None
        self.saves = 0
        self._next = cache.clock() + interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def save_now(self) -> bool:
        """Save at once; return whether it worked (errors go to ``on_error``)."""
        self._next = self.cache.clock() + self.interval
        try:
            self.cache.save(self.path)
        except OSError as exc:
            self.last_error = exc
            if self.on_error is not None:
                self.on_error(exc)
            return False
        self.saves += 1
        return True

    def save_if_due(self) -> bool:
        """Save when ``interval`` has passed on the cache's clock since the last save.

        Returns:
            Whether a save was made and worked.
        """
        if self.cache.clock() < self._next:
            return False
        return self.save_now()

    def start(self) -> None:
        """Save every ``interval`` seconds in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dns-cache-saver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.save_now()

    def stop(self, *, final_save: bool = True) -> None:
        """Stop the thread (if running) and, unless told not to, save one last time."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
        if final_save:
            self.save_now()
