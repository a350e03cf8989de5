"""The agent's HTTP endpoint: Prometheus metrics, ``/healthz`` and ``/readyz``.

Metrics are collected when scraped, from the counters the parts keep (the sync, the DNS
cache, the snooper, the hold), so nothing on the hot paths touches Prometheus objects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from fqdnpolicy.agent.agent import Agent

__all__ = ["LAG_BUCKETS", "MetricsServer"]

#: Upper bounds (seconds) of the apply-latency histogram's buckets.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Collector:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        sync = agent.sync.stats()
        for name, value, text in (
            ("applies", sync.applies, "Successful datapath applies"),
            ("full_applies", sync.full_applies, "Full datapath applies"),
            ("apply_failures", sync.failures, "Failed datapath applies (retried)"),
            ("deltas", sync.deltas, "Engine deltas applied"),
            ("repairs", sync.repairs, "Drifted datapath items repaired"),
            ("watch_errors", agent.watched.errors, "Invalid policy or cluster loads ignored"),
        ):
            yield CounterMetricFamily(f"fqdnpolicy_{name}", text, value=value)
        verdicts = CounterMetricFamily(
            "fqdnpolicy_verdicts", "Verdicts the agent's engine answered", labels=["action"]
        )
        for action, count in agent.verdicts.counts().items():
            verdicts.add_metric([action], count)
        yield verdicts
        dns = agent.cache.stats
        seen = CounterMetricFamily("fqdnpolicy_dns_responses", "DNS responses", labels=["result"])
        seen.add_metric(["learned"], dns.answers)
        seen.add_metric(["untrusted"], dns.untrusted)
        seen.add_metric(["malformed"], dns.malformed)
        seen.add_metric(["rejected"], dns.not_response + dns.wrong_opcode + dns.wrong_rcode)
        yield seen
        yield GaugeMetricFamily(
            "fqdnpolicy_dns_names", "Names in the DNS cache", value=len(agent.cache)
        )
        snooper = agent.snooper  # None once the agent closed
        if snooper is not None:
            snoop = snooper.stats()
            yield CounterMetricFamily(
                "fqdnpolicy_dns_responses_dropped",
                "DNS responses the kernel dropped before snooping read them (buffer full)",
                value=snoop.dropped,
            )
            yield CounterMetricFamily(
                "fqdnpolicy_snoop_interfaces_lost",
                "Interfaces no longer snooped: they went down or away without a CNI DEL",
                value=snoop.lost,
            )
        lags = agent.sync.lags()
        buckets: list[tuple[str, float]] = [
            (str(b), sum(1 for lag in lags if lag <= b)) for b in LAG_BUCKETS
        ]
        buckets.append(("+Inf", len(lags)))
        yield HistogramMetricFamily(
            "fqdnpolicy_apply_latency_seconds",
            "Change to kernel, recent applies",
            buckets=buckets,
            sum_value=sum(lags),
        )
        sizes = GaugeMetricFamily("fqdnpolicy_set_members", "Members of IP sets", labels=["kind"])
        totals: dict[str, int] = {}
        for info in agent.engine.sets():
            totals[info.kind] = totals.get(info.kind, 0) + len(agent.engine.members(info.set_id))
        for kind, total in sorted(totals.items()):
            sizes.add_metric([kind], total)
        yield sizes
        if agent.hold is not None:
            hold = agent.hold.stats()
            held = CounterMetricFamily(
                "fqdnpolicy_dns_held", "Held DNS responses", labels=["outcome"]
            )
            held.add_metric(["released"], hold.released)
            held.add_metric(["timed_out"], hold.timed_out)
            held.add_metric(["dropped"], hold.dropped)
            yield held


class MetricsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on a thread of its own.

    Args:
        agent: The running agent.
        host: Address to listen on.
        port: Port (0: any free one; see :attr:`port`).
    """

    def __init__(self, agent: Agent, host: str, port: int) -> None:
        registry = CollectorRegistry()
        registry.register(_Collector(agent))
        ready: Callable[[], bool] = lambda: agent.sync.stats().ready  # noqa: E731

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._send(200, b"ok\n")
                elif self.path == "/readyz":
                    ok = ready()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the agent's own log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fqdnpolicy-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
