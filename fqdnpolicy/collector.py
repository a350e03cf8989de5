"""The cyclic garbage collector around bursts of allocation.

:func:`paused` pauses it while something allocates many objects that hold no cycles or
outlive the burst (a datapath rendering, a build): each young generation pass would rescan
the growing heap for nothing.

:func:`building` is for a build of long-lived state (the engine's first build). Paused, the
build's objects all sit in the youngest generation when the collector resumes: the first
allocation after that scans them all, then the middle generation's next pass scans them
again. They are long-lived by construction, so :func:`building` hands them to the oldest
generation directly, which CPython's ``gc.freeze()`` followed by ``gc.unfreeze()`` does
without scanning anything.

That move also ages whatever else was young at that moment (collected at the next full
collection instead of a young one: later, never lost), and ``gc.unfreeze()`` would release
objects the embedding process froze itself (a pre-fork server keeps them out of the
collector's writes that way): when anything is frozen, the build's objects are left where
they are.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["building", "paused"]


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Pause the collector for a burst of allocations; resume it after if it was on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def building() -> Iterator[None]:
    """Pause the collector for a build; then make what it allocated old, and resume.

    With the collector off on entry, it stays off and nothing moves: the caller manages it.
    """
    enabled = gc.isenabled()
    with paused():
        try:
            yield
        finally:
            # Before the collector resumes: its first pass would otherwise scan them all.
            if enabled and gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
