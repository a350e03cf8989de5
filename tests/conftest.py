"""Shared pytest configuration (helpers live in :mod:`tests.support`).

Hypothesis profiles: ``dev`` (the default) explores new examples on every run; ``ci`` (chosen
when the ``CI`` environment variable is set, as .ci/run's machine does) is derandomized, so CI
checks the same examples every time and a red CI always means a change broke something.
``HYPOTHESIS_PROFILE`` picks one explicitly. No profile has a deadline: these machines are
shared, and timing belongs in ``benchmarks/``.
"""

from __future__ import annotations

import os

from hypothesis import settings

from tests.support import root

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

__all__ = ["root"]
