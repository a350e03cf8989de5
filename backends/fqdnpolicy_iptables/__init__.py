"""iptables+ipset backend of fqdnpolicy (a plugin: public ``fqdnpolicy`` API only).

Registered under the entry-point group ``fqdnpolicy.backends`` as ``iptables``::

    from fqdnpolicy.backends import get
    backend = get("iptables", variant="nft")   # or "legacy"
    backend.apply(backend.render(engine.datapath(), now=cache.clock()), netns="node")

* :mod:`fqdnpolicy_iptables.sets` - ipset types, members, timeouts (``ipset restore``).
* :mod:`fqdnpolicy_iptables.rules` - chains and rules of one family (``iptables-restore``).
* :mod:`fqdnpolicy_iptables.render` - the document holding the three tools' inputs.
* :mod:`fqdnpolicy_iptables.apply` - applying, with the previous state put back on refusal.
* :mod:`fqdnpolicy_iptables.kernel` - running the tools of one variant.
* :mod:`fqdnpolicy_iptables.names` - derived names and sanitised strings.
"""

from __future__ import annotations

from fqdnpolicy_iptables.backend import IptablesBackend
from fqdnpolicy_iptables.options import RenderOptions

__all__ = ["IptablesBackend", "RenderOptions"]
