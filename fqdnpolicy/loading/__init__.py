"""Load policy resources from YAML/JSON strictly, with located and collected errors; dump them.

What is accepted:

* ``projectcalico.org/v3`` NetworkPolicy, GlobalNetworkPolicy, NetworkSet, GlobalNetworkSet,
  Tier; ``networking.k8s.io/v1`` NetworkPolicy, converted to a Calico NetworkPolicy as
  Calico's own converter does (see :func:`convert_k8s_policy`).
* Multi-document YAML, JSON, ``kind: List`` and ``kind: <Kind>List`` wrappers (items may omit
  ``apiVersion``/``kind``, which then come from the wrapper), and directories (recursively,
  ``*.yaml``, ``*.yml``, ``*.json``, in sorted order so results never depend on the file
  system).

Every problem is collected; loading returns everything or raises one :class:`InvalidPolicy`
with all problems, sorted by file and line. One module per concern:

* :mod:`~fqdnpolicy.loading.reading` - bounded YAML/JSON readers that map field paths to lines.
* :mod:`~fqdnpolicy.loading.converter` - the cattrs converter and its error tree.
* :mod:`~fqdnpolicy.loading.calico` - Calico's validation rules for specs.
* :mod:`~fqdnpolicy.loading.metadata` - Calico's rules for names, labels and annotations.
* :mod:`~fqdnpolicy.loading.kubernetes` - Kubernetes NetworkPolicy schema and conversion.
* :mod:`~fqdnpolicy.loading.documents` - documents to resources (kinds, lists, duplicates).
* :mod:`~fqdnpolicy.loading.api` - :func:`load`, :func:`loads` and :func:`dump`.
"""

from __future__ import annotations

from fqdnpolicy.loading.api import dump, load, loads
from fqdnpolicy.loading.kubernetes import convert_k8s_policy
from fqdnpolicy.loading.reading import MAX_DEPTH, MAX_INPUT_BYTES, MAX_NODES

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT_BYTES",
    "MAX_NODES",
    "convert_k8s_policy",
    "dump",
    "load",
    "loads",
]
