"""The backend conformance kit: prove on a real kernel that a backend enforces the engine.

:mod:`fqdnpolicy.testing.lab` builds the network lab (namespaces, veth pairs, echo servers,
dnsmasq) the kit runs its flows in. Importing this package imports neither pytest nor any
backend package.
"""
