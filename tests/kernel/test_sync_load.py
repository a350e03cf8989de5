"""The agent under a steady stream of DNS responses (the issue's load run, shortened for CI).

``fqdnpolicy agent`` runs in a node namespace, snooping a veth on which a generator sends
5,000 responses a second, each a new name with its own address (``tests/kernel/load.py``).
The full minute is ``test_agent_under_load`` in ``benchmarks/bench_sync.py``, with figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel import load
from tests.support import require_root, require_tool

pytestmark = pytest.mark.kernel
RATE = 5000


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    require_root()
    require_tool("nft")
    with load.pair() as namespaces:
        yield namespaces


def test_every_answer_of_a_steady_stream_reaches_the_kernel(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    node, other = pair
    run = load.agent_load(node, other, tmp_path, rate=RATE, seconds=8, ttl=3600)
    assert run.learned == run.sent  # none lost on the wire or in the reading
    assert (run.checked, run.missing) == (run.sent, 0)
    assert run.failures == 0


def test_memory_levels_off_once_answers_expire_as_fast_as_they_come(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    # Names live two seconds: after the first seconds as many expire as arrive, so the
    # agent's memory must stop growing with the number of answers seen.
    node, other = pair
    run = load.agent_load(node, other, tmp_path, rate=RATE, seconds=12, ttl=2, recent=0)
    assert run.learned == run.sent
    first, second = run.rss_at(0.5) - run.rss_at(0), run.rss_at(1) - run.rss_at(0.5)
    assert second < first / 2, run.rss_kib
