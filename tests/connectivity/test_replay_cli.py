"""``replay`` against ``verdict()`` flow by flow, JSON round-trips, and the three commands."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fqdnpolicy.cli import main
from fqdnpolicy.connectivity import MapData, connectivity
from fqdnpolicy.connectivity.replay import Replay, decided_by, flows_of, read_flows, replay
from tests.connectivity.support import build
from tests.engine.strategies import WorldSpec, worlds

DATA = Path(__file__).resolve().parents[2] / "fqdnpolicy" / "data"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(max_flows=1), st.data())
def test_replay_counts_what_verdict_says(world: WorldSpec, data: st.DataObject) -> None:
    engine = build(world)
    other = build(world, attrs.evolve(world.resources, policies=world.resources.policies[:-1]))
    eps = world.cluster.endpoints
    targets = [ip for ep in eps for ip in ep.ips if ":" not in ip] + ["192.0.2.7", "198.51.100.1"]
    records: list[dict[str, Any]] = [
        {
            "src": data.draw(st.sampled_from([ep.key for ep in eps])),
            "dst": data.draw(st.sampled_from(targets)),
            "protocol": data.draw(st.sampled_from(["TCP", "UDP", 6])),
            "port": data.draw(st.sampled_from([53, 80, 443, 8080])),
        }
        for _ in range(data.draw(st.integers(1, 20)))
    ]
    flows = flows_of(records)
    result = replay(engine, flows, other)
    verdicts = [engine.verdict(r["src"], r["dst"], r["protocol"], r["port"]) for r in records]
    theirs = [other.verdict(r["src"], r["dst"], r["protocol"], r["port"]) for r in records]
    assert result.allowed == sum(v.allowed for v in verdicts)
    tally: dict[tuple[str, str], int] = {}
    for v in verdicts:
        tally[(v.action, decided_by(v))] = tally.get((v.action, decided_by(v)), 0) + 1
    assert {(c.action, c.decided_by): c.count for c in result.counts} == tally
    assert [d.index for d in result.differences] == [
        i for i, (a, b) in enumerate(zip(verdicts, theirs, strict=True)) if a.allowed != b.allowed
    ]
    assert Replay.from_dict(json.loads(json.dumps(result.as_dict()))) == result


def test_flows_read_from_csv_and_json_lines() -> None:
    csv_flows = read_flows("src,dst,protocol,port,time\nns/a,10.0.0.1,TCP,443,t1\n")
    jsonl = read_flows(
        '{"src": "ns/a", "dst": "10.0.0.1", "protocol": "TCP", "port": 443, "time": "t1"}\n'
    )
    assert csv_flows == jsonl


def run(*words: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(words), out), out.getvalue()


def test_commands(tmp_path: Path) -> None:
    state = [
        "--cluster",
        str(DATA / "demo" / "cluster.yaml"),
        "--zone",
        str(DATA / "demo" / "zone.db"),
    ]
    code, text = run("map", "--policies", str(DATA / "seed"), *state, "--format", "json")
    assert code == 0
    back = MapData.from_dict(json.loads(text))
    assert back.rows
    code, text = run("map", "--policies", str(DATA / "seed"), *state, "--format", "dot")
    assert code == 0
    assert text.startswith("digraph")
    assert run("diff", str(DATA / "seed"), str(DATA / "seed"), *state)[0] == 0
    narrower = tmp_path / "new"
    narrower.mkdir()
    for path in (DATA / "seed").iterdir():
        (narrower / path.name).write_text(path.read_text().replace("- 443", "- 22"))
    code, text = run("diff", str(DATA / "seed"), str(narrower), *state)
    assert code == 1
    assert "+ " in text
    assert "- " in text
    assert run("diff", str(DATA / "seed"), str(narrower), *state, "--contains")[0] == 1
    flows = tmp_path / "flows.csv"
    flows.write_text("src,dst,protocol,port\ndefault/backend,198.51.100.10,TCP,443\n")
    code, text = run(
        "replay", str(flows), "--policies", str(DATA / "seed"), *state, "--format", "json"
    )
    assert code == 0
    assert json.loads(text)["total"] == 1


def test_map_json_round_trips() -> None:
    from fqdnpolicy.cluster import Cluster
    from fqdnpolicy.dns import DNSCache
    from fqdnpolicy.engine import PolicyEngine
    from fqdnpolicy.model import ResourceSet
    from tests.engine.strategies import entity, pod, policy, rule

    eps = (pod("a/x", "10.0.0.10", labels={"app": "x"}), pod("a/y", "10.0.0.11", "fd00::11"))
    pols = (
        policy(
            "p",
            namespace="a",
            egress=[rule("Allow", protocol="TCP", destination=entity(ports=[80]))],
        ),
    )
    cmap = connectivity(PolicyEngine(ResourceSet(pols), Cluster(eps), DNSCache()))
    data = json.loads(json.dumps(cmap.as_dict()))
    back = MapData.from_dict(data)
    assert back.rows == tuple(cmap.rows)
    assert back.as_dict() == data
