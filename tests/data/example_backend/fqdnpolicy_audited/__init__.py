"""fqdnpolicy_audited: nftables enforcement, with a journal of every change applied."""

from __future__ import annotations

import time
from typing import Any

from fqdnpolicy_nftables import NftablesBackend

from fqdnpolicy.backends import Rendering


class AuditedNftables(NftablesBackend):
    """The nftables backend, appending a line to a journal for each rendering it applied."""

    name = "audited-nftables"

    def __init__(self, journal: str = "fqdnpolicy-audit.log", **options: Any) -> None:
        super().__init__(**options)
        self.journal = journal

    def apply(self, rendering: Rendering, *, netns: str | None = None) -> None:
        super().apply(rendering, netns=netns)
        with open(self.journal, "a", encoding="utf-8") as out:
            out.write(f"{time.time():.3f} {rendering.kind} netns={netns or '-'}\n")
