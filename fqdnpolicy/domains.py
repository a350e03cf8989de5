"""Domain names, wildcard domain patterns and an index that matches names against many patterns.

The rules (this project's, see ``docs``):

* A pattern is a dot-separated list of labels. A label that is exactly ``*`` matches **one or
  more whole labels**; a pattern may hold several ``*`` labels (``*.s3.*.amazonaws.com``), but
  ``*`` may not be the last label, may not be part of a label (``www.g*.com``, ``**``) and may
  not stand alone.
* Names are compared in lowercase; one trailing dot (the DNS root) is accepted and dropped.
* Internationalised names are converted to their ASCII (punycode, ``xn--``) form with IDNA 2008
  and the UTS #46 mapping (non-transitional), via the ``idna`` package. Python's built-in
  ``idna`` codec implements IDNA 2003, which maps e.g. ``faß.de`` to ``fass.de`` - a different
  domain, often with a different owner - whereas resolvers, browsers and curl today send
  ``xn--fa-hia.de``; a policy must name what actually goes on the wire.
* Labels are 1-63 characters of letters, digits, ``-`` (not first or last) and ``_`` (service
  labels such as ``_srv._tcp``); a whole name is at most 253 characters.

There are two ways in for names. :func:`normalize_name` and :func:`parse_domain_pattern` are
strict, for text written in policies, and raise :class:`~fqdnpolicy.errors.InvalidPolicy` with
located problems. :func:`canonical_dns_name` is lenient and fast, for names seen in DNS traffic:
it never raises, whatever bytes the name carries.

:class:`PatternIndex` answers "which patterns match this name" without looping over patterns:
exact names through one dictionary lookup, wildcards through a trie over reversed labels.

Each is a module of its own: names in :mod:`fqdnpolicy.domain_names`, patterns in
:mod:`fqdnpolicy.domain_patterns`, the index in :mod:`fqdnpolicy.pattern_index`; this module
gathers their public names.
"""

from __future__ import annotations

from fqdnpolicy.domain_names import (
    MAX_LABEL_LENGTH,
    MAX_NAME_LENGTH,
    canonical_dns_name,
    normalize_name,
)
from fqdnpolicy.domain_patterns import DomainPattern, parse_domain_pattern, public_suffix_covered
from fqdnpolicy.pattern_index import PatternIndex

__all__ = [
    "MAX_LABEL_LENGTH",
    "MAX_NAME_LENGTH",
    "DomainPattern",
    "PatternIndex",
    "canonical_dns_name",
    "normalize_name",
    "parse_domain_pattern",
    "public_suffix_covered",
]
