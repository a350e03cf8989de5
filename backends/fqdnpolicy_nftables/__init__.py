"""nftables backend of fqdnpolicy (a plugin: public ``fqdnpolicy`` API only).

Registered under the entry-point group ``fqdnpolicy.backends`` as ``nftables``::

    from fqdnpolicy.backends import get
    backend = get("nftables", table="fqdnpolicy")
    backend.apply(backend.render(engine.datapath(), now=cache.clock()), netns="node")

* :mod:`fqdnpolicy_nftables.render` - pure rendering (nft text and libnftables JSON), built
  from :mod:`~fqdnpolicy_nftables.exprs` (matches), :mod:`~fqdnpolicy_nftables.chains`
  (rules and chains), :mod:`~fqdnpolicy_nftables.elements` (set elements) and
  :mod:`~fqdnpolicy_nftables.delta` (element changes).
* :mod:`fqdnpolicy_nftables.apply` - running transactions (libnftables or ``nft``).
* :mod:`fqdnpolicy_nftables.names` - derived names and sanitised strings.
"""

from __future__ import annotations

from fqdnpolicy_nftables.backend import NftablesBackend
from fqdnpolicy_nftables.render import RenderOptions

__all__ = ["NftablesBackend", "RenderOptions"]
