"""The cyclic garbage collector around a build of long-lived state.

A build allocates about a million small objects and frees almost none. Run with the collector
on, each young generation pass rescans the growing heap for nothing; paused, the build's
objects all sit in the youngest generation when it resumes, and the first allocation after
that scans them all, then the middle generation's next pass scans them again. They are
long-lived by construction, so :func:`building` hands them to the oldest generation directly,
which CPython's ``gc.freeze()`` followed by ``gc.unfreeze()`` does without scanning anything.

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

__all__ = ["building"]


@contextlib.contextmanager
def building() -> Iterator[None]:
    """Pause the collector for a build; then make what it allocated old, and resume.

    With the collector off on entry, it stays off and nothing moves: the caller manages it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()
