"""The audited backend enforces exactly what fqdnpolicy's engine decides."""

from pathlib import Path

import pytest

from fqdnpolicy.testing import SEEDS
from fqdnpolicy.testing.plugin import ConformanceRunner


@pytest.mark.parametrize("seed", SEEDS)
def test_audited_nftables_passes_the_kit(
    backend_conformance: ConformanceRunner, seed: int, tmp_path: Path
) -> None:
    journal = tmp_path / "audit.log"
    backend_conformance(
        "audited-nftables", seed=seed, options={"journal": str(journal)}, tools=("nft",)
    )
    kinds = [line.split()[1] for line in journal.read_text().splitlines()]
    assert "full" in kinds
    assert "delta" in kinds
