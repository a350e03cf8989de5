"""Fixtures of the command-line tests: the bundled demo data as state options."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator

import pytest

DATA = importlib.resources.files("fqdnpolicy") / "data"


@pytest.fixture(scope="session")
def demo_state() -> Iterator[list[str]]:
    """``--policies``, ``--cluster`` and ``--zone`` of the bundled demo data."""
    with (
        importlib.resources.as_file(DATA / "seed") as seed,
        importlib.resources.as_file(DATA / "demo") as demo,
    ):
        yield [
            "--policies",
            str(seed),
            "--cluster",
            str(demo / "cluster.yaml"),
            "--zone",
            str(demo / "zone.db"),
        ]
