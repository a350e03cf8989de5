"""Whole-cluster questions: the exact connectivity map, policy diffs and flow replays.

* :func:`connectivity` - every connection allowed between endpoints, and between endpoints and
  the outside world (:mod:`fqdnpolicy.connectivity.mapping`; its rows in
  :mod:`fqdnpolicy.connectivity.rows`), exact: protocol x destination-port
  intervals, ICMP type and code (:mod:`fqdnpolicy.connectivity.spaces`), computed per distinct
  (program, peer view) with the engine's own rules run on sets of flows
  (:mod:`fqdnpolicy.connectivity.symbolic`).

Results are plain data (attrs classes) with ``as_dict``/``from_dict`` JSON round-trips.
"""

from fqdnpolicy.connectivity.mapping import ConnectivityMap, connectivity
from fqdnpolicy.connectivity.rows import MapData, MapRow, PeerInfo, minimise
from fqdnpolicy.connectivity.spaces import Connections
from fqdnpolicy.connectivity.state import Piece, State, read_state

__all__ = [
    "Connections",
    "ConnectivityMap",
    "MapData",
    "MapRow",
    "PeerInfo",
    "Piece",
    "State",
    "connectivity",
    "minimise",
    "read_state",
]
