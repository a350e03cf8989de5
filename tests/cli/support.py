"""Running the command in-process."""

from __future__ import annotations

import io

from fqdnpolicy.cli import main


def run(*argv: str) -> tuple[int, str]:
    """Run ``fqdnpolicy ARGV``; return the exit code and what it printed on stdout."""
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()
