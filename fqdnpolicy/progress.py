"""Progress on a terminal for work that can take a while.

:class:`Status` tells, on standard error when it is a terminal, which step of a command is
running and for how long, once the step has taken longer than a moment; it stays silent for
quick steps and for output that is not a terminal (logs, pipes, CI). Steps such as "building
the engine" report no intermediate counts, so a progress-bar library (which redraws on each
count) has nothing to draw: a line redrawn by a timer with the elapsed time is what fits,
and it is a few lines of our own.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Status"]


class Status:
    """Shows the running step of a long command on a terminal.

    Args:
        stream: Where to draw (standard error when None); nothing is drawn unless it is a
            terminal.
        after: Seconds a step runs before it is shown.
        every: Seconds between redraws.
    """

    def __init__(
        self, stream: TextIO | None = None, *, after: float = 2.0, every: float = 0.2
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._after = after
        self._every = every
        self.live = self._stream.isatty()

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Run the body as one step called ``label``."""
        if not self.live:
            yield
            return
        start = time.monotonic()
        done = threading.Event()
        shown: list[bool] = []

        def draw() -> None:
            if done.wait(self._after):
                return
            while not done.is_set():
                self._stream.write(f"\r{label}... {time.monotonic() - start:.1f} s")
                self._stream.flush()
                shown.append(True)
                done.wait(self._every)

        drawer = threading.Thread(target=draw, daemon=True)
        drawer.start()
        try:
            yield
        finally:
            done.set()
            drawer.join()
            if shown:
                self._stream.write(f"\r{label}: {time.monotonic() - start:.1f} s\n")
                self._stream.flush()
