"""The ``fqdnpolicy dns`` command: show, resolve (zone file and a local nameserver), match."""

from __future__ import annotations

import argparse
import io
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rrset
import pytest

import fqdnpolicy
from fqdnpolicy.dns import DNSCache, cli
from tests.dns.helpers import CNAME, A, answer

DATA = Path(fqdnpolicy.__file__).parent / "data"
SEED = DATA / "seed"
ZONE = DATA / "demo" / "zone.db"
MULTI = SEED / "fqdn-multi-service-policy.yaml"


def run(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = io.StringIO()
    code = cli.run(parser.parse_args(list(argv)), out)
    return code, out.getvalue()


@pytest.fixture
def cache_file(tmp_path: Path) -> str:
    cache = DNSCache()
    cache.ingest(
        answer(
            "myaccount.blob.core.windows.net",
            ("myaccount.blob.core.windows.net", CNAME, 600, "blob.x.store.core.windows.net"),
            ("blob.x.store.core.windows.net", A, 600, "198.51.100.32"),
        )
    )
    cache.ingest(answer("api.stripe.com", ("api.stripe.com", A, 600, "198.51.100.30")))
    cache.ingest(answer("unrelated.example", ("unrelated.example", A, 600, "192.0.2.1")))
    path = str(tmp_path / "cache.jsonl")
    cache.save(path)
    return path


def test_show_lists_names_ips_and_cname_targets(cache_file: str) -> None:
    code, text = run("show", cache_file)
    assert code == 0
    lines = text.splitlines()
    assert any(
        line.startswith("myaccount.blob.core.windows.net  198.51.100.32 (")
        and "-> blob.x.store.core.windows.net" in line
        for line in lines
    )
    assert lines[-1].startswith("4 name(s), 4 link(s) restored")


def test_show_json_reports_damaged_lines_and_exits_1(cache_file: str) -> None:
    with open(cache_file, "a") as f:
        f.write("garbage\n")
    code, text = run("show", cache_file, "--format", "json")
    assert code == 1
    report = json.loads(text)
    assert report["file"]["skipped"] == [{"line": 6, "reason": "not JSON"}]
    assert set(report["names"]["api.stripe.com"]["ips"]) == {"198.51.100.30"}


@pytest.mark.parametrize(
    "bad",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * 2000 + b"]" * 2000,
        b'{"name":"a.example","ip":"10.0.0.9","expires":1' + b"0" * 400 + b"}",
        b'{"name":"a.example","ip":"fe80::1%eth0","expires":1e12}',
    ],
    ids=["100k-deep", "2k-deep", "400-digit-expiry", "scoped-address"],
)
def test_show_skips_a_hostile_line_and_shows_the_rest(cache_file: str, bad: bytes) -> None:
    with open(cache_file, "ab") as f:
        f.write(bad + b"\n")
    code, text = run("show", cache_file)
    assert code == 1
    lines = text.splitlines()
    assert lines[0].startswith(f"{cache_file}:6: skipped: ")
    assert len(lines[0]) < 200
    assert lines[-1].startswith("4 name(s), 4 link(s) restored, 0 expired, 1 damaged line(s)")


def test_show_of_another_epoch_shows_nothing_and_exits_1(cache_file: str) -> None:
    code, text = run("show", cache_file, "--epoch", "3")
    assert code == 1
    assert "ignored: epoch" in text


def test_show_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    assert run("show", str(tmp_path / "nope"))[0] == 2


def test_match_shows_which_patterns_match_each_name(cache_file: str) -> None:
    code, text = run("match", cache_file, str(MULTI), "--format", "json")
    assert code == 0
    report = json.loads(text)
    names = report["names"]
    blob = names["myaccount.blob.core.windows.net"]["matches"]
    assert [m["pattern"] for m in blob] == ["*.blob.core.windows.net"]
    assert blob[0]["path"].endswith(".destination.domains[0]")
    assert [m["pattern"] for m in names["api.stripe.com"]["matches"]] == ["api.stripe.com"]
    assert "unrelated.example" in report["unmatched"]


def test_match_text_names_the_resource(cache_file: str) -> None:
    code, text = run("match", cache_file, str(MULTI))
    assert code == 0
    assert "api.stripe.com  198.51.100.30" in text
    assert text.rstrip().endswith("2 of 4 cached name(s) match a policy pattern")


def test_resolve_from_a_zone_file_fills_the_cache_file(tmp_path: Path) -> None:
    out = str(tmp_path / "c.jsonl")
    code, text = run("resolve", str(SEED), "--zone", str(ZONE), "--out", out, "--format", "json")
    assert code == 0, text
    report = json.loads(text)
    assert "api.stripe.com" in report["resolved"]
    assert "*.blob.core.windows.net" in report["wildcards"]
    restored = DNSCache()
    assert restored.load(out).restored == report["links"]
    assert restored.ips("api.stripe.com") == {"198.51.100.30"}


def test_resolve_with_invalid_policies_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {}\n")
    code, text = run("resolve", str(bad), "--zone", str(ZONE), "--out", str(tmp_path / "c"))
    assert code == 1
    assert text


@pytest.fixture
def nameserver() -> Iterator[str]:
    """A nameserver on 127.0.0.1 answering A queries for api.stripe.com (via a CNAME)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            qname = query.question[0].name
            if qname.to_text() == "api.stripe.com." and query.question[0].rdtype == 1:
                response.answer.append(
                    dns.rrset.from_text(qname, 300, "IN", "CNAME", "edge.stripe.net.")
                )
                response.answer.append(
                    dns.rrset.from_text("edge.stripe.net.", 60, "IN", "A", "192.0.2.30")
                )
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    sock.close()


def test_resolve_asks_a_nameserver_for_the_exact_names(tmp_path: Path, nameserver: str) -> None:
    out = str(tmp_path / "c.jsonl")
    code, text = run(
        "resolve", str(MULTI), "--nameserver", nameserver, "--out", out, "--timeout", "1"
    )
    assert code == 0, text
    assert "no address for api.sendgrid.com" in text
    cache = DNSCache()
    cache.load(out)
    assert cache.ips("api.stripe.com") == {"192.0.2.30"}
    assert cache.ips("edge.stripe.net") == {"192.0.2.30"}


def test_the_main_command_exposes_dns(cache_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    from fqdnpolicy.cli import main

    code = main(["dns", "show", cache_file])
    printed = capsys.readouterr().out
    assert code == 0
    assert "api.stripe.com  198.51.100.30" in printed
