"""Shared pytest configuration (helpers live in :mod:`tests.support`)."""

from __future__ import annotations

from tests.support import root

__all__ = ["root"]
