"""Keeping a datapath in step with the engine: :class:`DatapathSync`.

The engine hands its subscribers deltas on the writer side (``docs/engine.md``, thread
contract); a kernel apply is far slower than a verdict, so the subscriber here only queues the
batch and returns. A thread of its own then:

* applies a full rendering at start (retrying until it succeeds);
* applies a batch that finds it idle at once; while a burst lasts (a batch arriving within
  the window after the last apply), it waits a short window first, so the rest of the burst
  joins one transaction. Batches are applied in order: as a delta when the backend says it can
  (:meth:`~fqdnpolicy.backends.Backend.needs_full`), else as a full rendering of the
  engine's state at that moment;
* on a failed apply keeps what is installed, records the error, and retries the same work
  with exponential backoff (a batch is never dropped: later batches queue behind it);
* periodically, and on :meth:`DatapathSync.reconcile`, reads back what the backend installed
  (:meth:`~fqdnpolicy.backends.Backend.installed`) and repairs drift: a chain gone brings a
  full apply, a member gone (or one the engine does not hold) a delta; each counted.

Lifetimes: element timeouts come from the DNS cache's expiries. A cache that does not report
refreshes (``report_refresh=False``, the default) never tells the engine that a name answered
again lives longer, and the kernel element would time out while the cache still holds the
name; given the cache (``dns=``), the sync turns refresh reporting on, so every extension
reaches the kernel as a delta stating the new lifetime.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

import attrs

from fqdnpolicy.backends import Backend, BackendError, Rendering
from fqdnpolicy.datapath import Delta, MemberChanged
from fqdnpolicy.errors import InvalidPolicy, Problem

if TYPE_CHECKING:
    from fqdnpolicy.dns import DNSCache
    from fqdnpolicy.engine import PolicyEngine

__all__ = ["DatapathSync", "SyncStats"]

log = logging.getLogger(__name__)

#: How many recent lags (change to kernel) are kept for :meth:`DatapathSync.lags`.
LAG_WINDOW = 4096


@attrs.frozen
class SyncStats:
    """What a :class:`DatapathSync` has done so far.

    Attributes:
        applies: Successful applies, full and delta.
        full_applies: Of those, full renderings.
        deltas: Engine deltas applied (each change of a set member, set or endpoint).
        failures: Applies (or read-backs) that failed; each was retried.
        repairs: Drifted items repaired (a chain or set brought back counts one, a member one).
        pending: Batches received and not yet applied.
        last_error: The last failure's message, or None once an apply succeeded after it.
        lag_last: Seconds from the last applied batch's arrival to its apply ending.
        lag_max: The largest such lag so far.
        ready: True once the first full apply succeeded.
    """

    applies: int
    full_applies: int
    deltas: int
    failures: int
    repairs: int
    pending: int
    last_error: str | None
    lag_last: float
    lag_max: float
    ready: bool


def _positive(name: str, value: float) -> Problem | None:
    if isinstance(value, int | float) and value > 0:
        return None
    return Problem(f"must be a number > 0, not {value!r}", path=name, code="bad-sync-option")


class DatapathSync:
    """Apply an engine's state through a backend and keep it applied.

    Args:
        engine: The engine to follow (the sync subscribes to it).
        backend: The backend rendering and applying.
        netns: Apply inside this named network namespace.
        dns: The engine's DNS cache: its clock times element lifetimes, and its refreshes
            are turned on (see the module docstring). Without it the clock is
            :func:`time.monotonic` and refreshes reach the kernel only if the cache reports
            them.
        batch_window: Seconds a batch arriving during a burst waits for more to join it.
        reconcile_interval: Seconds between read-backs; None: only on :meth:`reconcile`.
        retry_initial: First delay after a failure, doubled each time up to ``retry_max``.
        retry_max: Longest delay between retries.
        remove_on_close: :meth:`close` removes the rules (else leaves them enforced).
        clock: Seconds on the DNS cache's clock, for rendering timeouts (default: the cache's).

    Raises:
        InvalidPolicy: a non-positive interval or delay.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        backend: Backend,
        *,
        netns: str | None = None,
        dns: DNSCache | None = None,
        batch_window: float = 0.003,
        reconcile_interval: float | None = 30.0,
        retry_initial: float = 0.05,
        retry_max: float = 5.0,
        remove_on_close: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        problems = [
            p
            for p in (
                _positive("batch_window", batch_window),
                _positive("retry_initial", retry_initial),
                _positive("retry_max", retry_max),
                None
                if reconcile_interval is None
                else _positive("reconcile_interval", reconcile_interval),
            )
            if p is not None
        ]
        if problems:
            raise InvalidPolicy(problems)
        self.engine = engine
        self.backend = backend
        self.netns = netns
        self.batch_window = float(batch_window)
        self.reconcile_interval = reconcile_interval
        self.retry_initial = float(retry_initial)
        self.retry_max = float(retry_max)
        self.remove_on_close = remove_on_close
        if dns is not None and not dns.report_refresh:
            dns.report_refresh = True
        self.clock: Callable[[], float] = clock or (
            dns.clock if dns is not None else time.monotonic
        )
        self._cond = threading.Condition()
        # (arrival on time.monotonic, sequence number, deltas), oldest first.
        self._queue: collections.deque[tuple[float, int, list[Delta]]] = collections.deque()
        self._received = 0  # sequence number of the last batch queued
        self._applied = 0  # every batch up to this sequence number is in the kernel
        # Full applies asked for and done; one asked while another runs is done after it.
        self._full_asked = 1
        self._full_done = 0
        self._reconcile_wanted = False
        self._reconciled = 0  # reconciliations finished (for reconcile()'s wait)
        self._stopping = False
        self._idle = False  # the sync thread waits for work: arrivals must wake it
        self._last_apply = float("-inf")  # when the last apply ended (time.monotonic)
        self._baseline: tuple[frozenset[str], frozenset[str]] | None = None  # chains, sets
        self._lags: collections.deque[float] = collections.deque(maxlen=LAG_WINDOW)
        self._applies = self._full = self._deltas = self._failures = self._repairs = 0
        self._last_error: str | None = None
        self._lag_last = self._lag_max = 0.0
        self._ready = False
        self._unsubscribe = engine.subscribe(self._on_deltas)
        self._thread = threading.Thread(target=self._run, name="fqdnpolicy-sync", daemon=True)
        self._thread.start()

    # -- what other threads call ---------------------------------------------------------

    def _on_deltas(self, deltas: list[Delta]) -> None:
        # Runs on the engine's writer side: queue and return, never apply here.
        with self._cond:
            self._received += 1
            self._queue.append((time.monotonic(), self._received, list(deltas)))
            if self._idle:  # else the sync thread is busy and takes the queue next round
                self._cond.notify_all()

    def mark(self) -> int:
        """Return a mark covering every change the engine delivered so far.

        The engine is flushed first, so DNS changes another thread delivered are included.
        """
        self.engine.flush()
        with self._cond:
            return self._received

    def wait(self, mark: int, timeout: float | None = None) -> bool:
        """Wait until everything up to ``mark`` (:meth:`mark`) is in the kernel.

        Returns:
            True when it is, False on timeout or after :meth:`close`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._applied < mark or not self._ready:
                if self._stopping:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait for the first full apply; True once it succeeded."""
        return self.wait(0, timeout)

    def sync(self, timeout: float | None = None) -> bool:
        """Wait until every change delivered so far is applied (:meth:`mark` then :meth:`wait`)."""
        return self.wait(self.mark(), timeout)

    def resync(self) -> None:
        """Ask for a full apply of the engine's state (after a policy reload, say)."""
        with self._cond:
            self._full_asked += 1
            self._cond.notify_all()

    def reconcile(self, timeout: float | None = None) -> bool:
        """Read back what is installed and repair drift now; True once done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._reconciled + 1
            self._reconcile_wanted = True
            self._cond.notify_all()
            while self._reconciled < target and not self._stopping:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return self._reconciled >= target

    def stats(self) -> SyncStats:
        """Return the counters so far."""
        with self._cond:
            return SyncStats(
                applies=self._applies,
                full_applies=self._full,
                deltas=self._deltas,
                failures=self._failures,
                repairs=self._repairs,
                pending=len(self._queue),
                last_error=self._last_error,
                lag_last=self._lag_last,
                lag_max=self._lag_max,
                ready=self._ready,
            )

    def lags(self) -> list[float]:
        """Return the recent lags, change arrival to kernel, in seconds (oldest first)."""
        with self._cond:
            return list(self._lags)

    def close(self, *, remove: bool | None = None) -> None:
        """Stop following the engine; remove the rules if configured (or ``remove`` says so).

        Batches still queued are applied first when the backend accepts them promptly.

        Raises:
            BackendError: removing was asked and failed.
        """
        self._unsubscribe()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        if self.remove_on_close if remove is None else remove:
            self.backend.remove(netns=self.netns)

    def __enter__(self) -> DatapathSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the sync thread ----------------------------------------------------------------------

    def _run(self) -> None:
        next_reconcile = self._next_reconcile()
        retry_at: float | None = None
        backoff = 0.0
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    if next_reconcile is not None and now >= next_reconcile:
                        self._reconcile_wanted = True
                        next_reconcile = self._next_reconcile()
                    if retry_at is not None and now < retry_at:
                        self._cond.wait(retry_at - now)
                        continue
                    if self._queue or self._full_wanted() or self._reconcile_wanted:
                        break
                    self._idle = True
                    self._cond.wait(None if next_reconcile is None else next_reconcile - now)
                    self._idle = False
                if self._stopping:
                    break
                coalesce = bool(self._queue) and not self._full_wanted()
                # A burst: the last apply ended a moment ago, more is likely on its way.
                coalesce = coalesce and time.monotonic() - self._last_apply < self.batch_window
            if coalesce:
                time.sleep(self.batch_window)  # let the rest of a burst join this batch
            try:
                self._step()
            except BackendError as exc:
                backoff = min(self.retry_max, max(self.retry_initial, backoff * 2))
                retry_at = time.monotonic() + backoff
                with self._cond:
                    self._failures += 1
                    self._last_error = str(exc)
                log.warning("datapath apply failed (retrying in %.2fs): %s", backoff, exc)
            else:
                backoff, retry_at = 0.0, None
        self._drain_on_close()

    def _full_wanted(self) -> bool:
        return self._full_asked > self._full_done

    def _next_reconcile(self) -> float | None:
        if self.reconcile_interval is None:
            return None
        return time.monotonic() + self.reconcile_interval

    def _drain_on_close(self) -> None:
        if self._queue and self._ready:
            try:
                self._step()
            except BackendError as exc:
                log.warning("datapath changes left unapplied at close: %s", exc)

    def _step(self) -> None:
        """One round of work; raises BackendError with the work still queued."""
        with self._cond:
            batches = list(self._queue)
            full = self._full_wanted()
            asked = self._full_asked  # a resync() from here on brings another full apply
        deltas = [d for _, _, batch in batches for d in batch]
        if full or (deltas and self.backend.needs_full(deltas)):
            self.engine.flush()
            with self._cond:  # batches queued by now are covered by this rendering
                batches = list(self._queue)
            deltas = [d for _, _, batch in batches for d in batch]
            self._apply_full()
            with self._cond:
                self._full_done = max(self._full_done, asked)
                self._ready = True
        elif deltas:
            self._apply(self.backend.render_delta(deltas, now=self.clock()))
        self._done(batches, len(deltas))
        if self._reconcile_wanted and self._ready:
            self._reconcile_now()

    def _apply_full(self) -> None:
        self._apply(self.backend.render(self.engine.datapath(), now=self.clock()))
        # What a full apply makes is what later read-backs must find.
        try:
            installed = self.backend.installed(netns=self.netns)
        except BackendError:
            installed = None
        if installed is not None:
            self._baseline = (installed.chains, frozenset(installed.members))
        with self._cond:
            self._full += 1

    def _apply(self, rendering: Rendering) -> None:
        self.backend.apply(rendering, netns=self.netns)
        with self._cond:
            self._applies += 1
            self._last_error = None

    def _done(self, batches: Sequence[tuple[float, int, list[Delta]]], count: int) -> None:
        end = time.monotonic()
        with self._cond:
            if batches:
                self._last_apply = end
            for _ in batches:
                self._queue.popleft()
            if batches:
                self._applied = batches[-1][1]
                self._deltas += count
                for arrived, _, _ in batches:
                    self._lags.append(end - arrived)
                self._lag_last = end - batches[-1][0]
                self._lag_max = max(self._lag_max, end - batches[0][0])
            self._cond.notify_all()

    def _reconcile_now(self) -> None:
        """Compare the kernel with the engine and repair the difference."""
        repaired = 0
        try:
            installed = self.backend.installed(netns=self.netns)
        except BackendError as exc:
            # Nothing to read back (the table was deleted by hand): install it again.
            log.warning("datapath read-back failed, applying in full: %s", exc)
            self._apply_full()
            installed, repaired = None, 1
        if installed is not None:
            if self._baseline is None:
                self._baseline = (installed.chains, frozenset(installed.members))
            chains, sets = self._baseline
            missing_chains = chains - installed.chains
            missing_sets = sets - installed.members.keys()
            known = {info.set_id for info in self.engine.sets()}
            common = sets & installed.members.keys() & known
            expected = {s: self.engine.members(s) for s in common}
            if missing_chains or missing_sets:
                self._apply_full()
                repaired = len(missing_chains) + len(missing_sets)
            else:
                fixes = self._member_fixes(expected, installed.members)
                if fixes:
                    fixes = self._confirmed(fixes, common)
                if fixes:
                    self._apply(self.backend.render_delta(fixes, now=self.clock()))
                    repaired = len(fixes)
        with self._cond:
            self._repairs += repaired
            self._reconcile_wanted = False
            self._reconciled += 1
            self._cond.notify_all()
        if repaired:
            log.warning("datapath drift repaired: %d item(s)", repaired)

    def _confirmed(self, fixes: list[Delta], sets: AbstractSet[str]) -> list[Delta]:
        """The ``fixes`` that a second read-back calls for too.

        A kernel listing taken while a set's hash table is resized can skip elements (the
        kernel walks the table as it moves), so a difference is read again before it is
        repaired; one that was only the listing's is left alone.
        """
        try:
            again = self.backend.installed(netns=self.netns)
        except BackendError:
            return fixes  # the next reconcile finds out what is wrong
        if again is None or not sets <= again.members.keys():
            return fixes
        expected = {s: self.engine.members(s) for s in sets}
        seen = set(self._member_fixes(expected, again.members))
        return [fix for fix in fixes if fix in seen]

    def _member_fixes(
        self, expected: dict[str, dict[str, float | None]], kernel: dict[str, frozenset[str]]
    ) -> list[Delta]:
        now = self.clock()
        fixes: list[Delta] = []
        for set_id, members in expected.items():
            plain = {m: e for m, e in members.items() if "/" not in m}
            if len(plain) != len(members):
                continue  # CIDRs live in interval sets, listed as ranges: not compared
            there = kernel[set_id]
            for member, expiry in plain.items():
                # An element about to time out may be gone already: not drift.
                if member not in there and (expiry is None or expiry > now + 1.0):
                    fixes.append(MemberChanged(set_id, member, True, expiry))
            for member in there - plain.keys():
                fixes.append(MemberChanged(set_id, member, False))
        return fixes
