"""eBPF backend of fqdnpolicy (a plugin: public ``fqdnpolicy`` API only).

Registered under the entry-point group ``fqdnpolicy.backends`` as ``ebpf``::

    from fqdnpolicy.backends import get
    backend = get("ebpf", pin_root="/sys/fs/bpf/fqdnpolicy")
    backend.apply(backend.render(engine.datapath(), now=cache.clock()), netns="node")

* ``fqe.bpf.c`` - the TC program (C, compiled with clang on first use).
* :mod:`fqdnpolicy_ebpf.build` - compiling and caching it by source hash.
* :mod:`fqdnpolicy_ebpf.plan` - pure rendering into map contents; :mod:`fqdnpolicy_ebpf.text`
  prints them.
* :mod:`fqdnpolicy_ebpf.layout` - the maps' binary layouts and the merged LPM entries.
* :mod:`fqdnpolicy_ebpf.libbpf` - libbpf through ctypes.
* :mod:`fqdnpolicy_ebpf.kernel` - loading, pinning, attaching, writing maps.
"""

from __future__ import annotations

from fqdnpolicy_ebpf.backend import DeltaPlan, EbpfBackend

__all__ = ["DeltaPlan", "EbpfBackend"]
