"""The readers' shortcut: :meth:`PolicyEngine.verdict`'s common case in C, where built.

The common question (egress, a protocol and an int port, no source port or ICMP field) is
answered by three lookups: the sender's program, the address's identity, the program's kept
verdict. In Python the interpreter's dispatch costs more than the lookups themselves, so the
package ships those three lookups as an optional C extension (``_shortcut.c``), built at
install time where a C compiler and Python's headers are found. It serves only what the
Python shortcut would serve, from the same published objects, and hands every other call to
the Python method unchanged; without it the Python method answers everything, the same way.

The shortcut is installed per engine as the instance's ``verdict`` attribute (so a call costs
one C call, no bound method), and only when the class has not overridden ``verdict``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from fqdnpolicy.engine.identities import OUTSIDE_LIMIT

try:
    from fqdnpolicy.engine._shortcut import Shortcut
except ImportError:  # built without a C compiler: the Python method answers everything
    Shortcut = None  # type: ignore[assignment,misc]

__all__ = ["NATIVE", "Shortcut", "install"]

#: Whether the C shortcut was built and is used (``FQDNPOLICY_PURE_PYTHON=1`` turns it off).
NATIVE = Shortcut is not None and not os.environ.get("FQDNPOLICY_PURE_PYTHON")


def install(engine: Any, general: Callable[..., Any], snapshot: object) -> Shortcut | None:
    """Put the C shortcut in front of ``engine.verdict``; returns it, or None without one.

    Args:
        engine: The engine; its ``_hosts``, ``_records`` and ``_owners`` dicts must be the
            ones it publishes for its life.
        general: The class's Python ``verdict`` function, which the shortcut's misses call.
        snapshot: The snapshot published now (the writer then calls ``publish`` on each).
    """
    if not NATIVE or type(engine).verdict is not general:
        return None
    shortcut = Shortcut(
        snapshot,
        engine._hosts,
        engine._records,
        engine._owners,
        general.__get__(engine),
        OUTSIDE_LIMIT,
    )
    engine.__dict__["verdict"] = shortcut
    return shortcut
