"""``fqdnpolicy demo``: the main job on built-in example data.

It loads the policies of the article this project started from (bundled under
``fqdnpolicy/data/seed``), lints them, learns names from a bundled zone file
(``fqdnpolicy/data/demo/zone.db``, documentation addresses only) into a :class:`DNSCache`, and
shows, for every domain pattern in the policies, which cached names it matches and the IPs
they lead to: the IP sets a datapath would be programmed with. No network and no root needed.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from typing import TextIO

from fqdnpolicy.errors import InvalidPolicy


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render rows as a plain-text table with aligned columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    return "\n".join(lines)


def run_demo(out: TextIO) -> int:
    """Run the demo, writing to ``out``; return the exit code (0 when everything loaded)."""
    from fqdnpolicy.dns import DNSCache
    from fqdnpolicy.dns.sources import load_zone
    from fqdnpolicy.lint import lint
    from fqdnpolicy.loader import load

    data = importlib.resources.files("fqdnpolicy") / "data"
    with importlib.resources.as_file(data / "seed") as seed_dir:
        try:
            resources = load(seed_dir)
        except InvalidPolicy as exc:
            print(exc, file=out)
            return 1
        files = sorted(p.name for p in seed_dir.iterdir() if p.suffix in {".yaml", ".yml"})
    print(f"Loaded {len(resources)} resources from {len(files)} seed files:", file=out)
    for name in files:
        print(f"  {name}", file=out)

    warnings = lint(resources)
    print(f"\nLinter: {len(warnings)} warning(s)", file=out)
    for warning in warnings:
        print(f"  {warning}", file=out)

    # The demo's clock stands still at 0: every record is fresh, the output is reproducible.
    cache = DNSCache(clock=lambda: 0.0)
    zone_text = (data / "demo" / "zone.db").read_text(encoding="utf-8")
    load_zone(cache, zone_text)
    print(f"\nDNS cache: {len(cache.names())} names learned from the bundled zone file", file=out)

    rows: list[list[str]] = []
    for ref in resources.domain_references():
        names = sorted(cache.names_matching(ref.pattern))
        if not names:
            rows.append([ref.resource, ref.path, str(ref.pattern), "-", "-"])
        for name in names:
            ips = ", ".join(sorted(cache.ips(name))) or "-"
            rows.append([ref.resource, ref.path, str(ref.pattern), name, ips])
    print("\nWhat each policy's domains resolve to (the IP sets a datapath would hold):", file=out)
    print(format_table(["policy", "field", "pattern", "cached name", "IPs"], rows), file=out)
    return 0
