"""Load policy resources from YAML/JSON; dump them. The code lives in :mod:`fqdnpolicy.loading`.

This module keeps ``fqdnpolicy.loader`` importable with the names it has always had.
"""

from __future__ import annotations

from fqdnpolicy.loading import (
    MAX_DEPTH,
    MAX_INPUT_BYTES,
    MAX_NODES,
    convert_k8s_policy,
    dump,
    load,
    loads,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT_BYTES",
    "MAX_NODES",
    "convert_k8s_policy",
    "dump",
    "load",
    "loads",
]
