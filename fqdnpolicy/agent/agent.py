"""The node agent: every part wired in one place, and its main loop.

:class:`Agent` builds, in order: the DNS cache (trusted servers, the cache file), the
watched policies and cluster, the engine, the backend and the :class:`DatapathSync`, then the
DNS readers (:class:`~fqdnpolicy.dns.snoop.Snooper`, :class:`~fqdnpolicy.dns.hold.DnsHold`)
and the metrics endpoint. :meth:`Agent.run` then polls the watched files, expires DNS
entries when due and saves the cache file now and then, until :meth:`Agent.stop`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from fqdnpolicy import backends
from fqdnpolicy.agent.config import NODELOCAL_DNS, AgentConfig, parse_listen
from fqdnpolicy.agent.registrations import Registration, RegistrationStore, restore
from fqdnpolicy.agent.registry import EndpointRegistry
from fqdnpolicy.agent.sources import WatchedState, dns_servers_in
from fqdnpolicy.agent.verdicts import CountingVerdicts
from fqdnpolicy.datapath import Direction
from fqdnpolicy.dns import DNSCache
from fqdnpolicy.dns.hold import DnsHold
from fqdnpolicy.dns.snoop import Snooper
from fqdnpolicy.engine import PolicyEngine, Verdict
from fqdnpolicy.errors import InvalidPolicy
from fqdnpolicy.sync import DatapathSync

__all__ = ["Agent"]

log = logging.getLogger(__name__)


class Agent:
    """One node's enforcement: build with a config, :meth:`run`, :meth:`stop`.

    Raises:
        InvalidPolicy: the first load of policies or cluster is invalid, or a bad backend.
        HoldError: hold mode asked for and unavailable.
        OSError: a socket could not be opened (snooping, metrics).
    """

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.watched = WatchedState(config.policies, config.cluster)
        trusted = list(config.trusted_dns) or [
            *dns_servers_in(self.watched.cluster, config.cluster),
            NODELOCAL_DNS,
        ]
        log.info("trusting DNS responses from %s", ", ".join(trusted))
        self.cache = DNSCache(trusted_servers=trusted, report_refresh=True)
        if config.cache:
            try:
                report = self.cache.load(config.cache)
                log.info("cache file %s: %s", config.cache, report)
            except OSError as exc:
                log.warning("cache file %s not loaded: %s", config.cache, exc)
        # What can fail on bad input comes first, before any rule is applied.
        self.backend = backends.get(config.backend)
        self.snooper: Snooper | None = None
        self.hold: DnsHold | None = None
        self.metrics: Any = None  # a MetricsServer with --metrics
        self.registry: EndpointRegistry | None = None
        if config.snoop or config.snoop_endpoints:  # endpoints registered later join it
            self.snooper = Snooper(self.cache, config.snoop, netns=config.netns)
        # Pods the CNI plugin registered before a restart, unless deleted meanwhile.
        store: RegistrationStore | None = None
        restored: list[Registration] = []
        if config.state_file is not None:
            store = RegistrationStore(config.state_file)
            restored, dropped = restore(store, config.netns)
            for gone in dropped:
                log.info("registration of %s dropped: its pod is gone", gone.key)
        if config.snoop_endpoints:
            # The files' pods whose interfaces are on this node; the others are not ours.
            interfaces = [e.interface for e in self.watched.cluster.endpoints]
            for interface in [*interfaces, *(r.interface for r in restored)]:
                with contextlib.suppress(InvalidPolicy):
                    self._snoop_endpoint(interface, True)
        try:
            self.engine = PolicyEngine(self.watched.resources, self.watched.cluster, self.cache)
            # Before the sync's first apply, so a restart never renders without them.
            restored = [r for r in restored if self._register(r)]
            self.verdicts = CountingVerdicts(self.engine)
            self.sync = DatapathSync(
                self.engine,
                self.backend,
                netns=config.netns,
                dns=self.cache,
                reconcile_interval=config.reconcile_interval,
            )
        except BaseException:
            if self.snooper is not None:
                self.snooper.close()
            self._close_backend()
            raise
        try:
            if config.metrics:
                from fqdnpolicy.agent.metrics import MetricsServer  # prometheus_client

                self.metrics = MetricsServer(self, *parse_listen(config.metrics))
            if config.hold_dns:
                self.hold = DnsHold(
                    self.cache,
                    self.sync,
                    netns=config.netns,
                    bound=config.hold_bound,
                    fail=config.hold_fail,
                )
            if config.cni_socket:
                self.registry = EndpointRegistry(
                    config.cni_socket,
                    self.engine,
                    self.watched,
                    self.sync,
                    self._snoop_endpoint if config.snoop_endpoints else None,
                    store,
                    restored,
                    self.verdicts,
                )
        except BaseException:
            self.close()
            raise

    def verdict(
        self,
        src: str,
        dst: str,
        protocol: str | int = "TCP",
        port: int | None = None,
        direction: Direction = "egress",
    ) -> Verdict:
        """Judge one flow with the agent's engine (counted in ``fqdnpolicy_verdicts_total``).

        Raises:
            InvalidPolicy: the flow is not valid.
        """
        return self.verdicts.verdict(src, dst, protocol, port, direction)

    def _register(self, registration: Registration) -> bool:
        try:
            endpoint = registration.endpoint(self.watched.cluster)
            self.engine.upsert_endpoint(endpoint)
        except InvalidPolicy as exc:
            log.error("registration of %s not restored: %s", registration.key, exc)
            return False
        self.watched.registered[endpoint.key] = endpoint
        log.info("endpoint %s restored on %s", endpoint.key, endpoint.interface)
        return True

    def _snoop_endpoint(self, interface: str, added: bool) -> None:
        if self.snooper is not None:
            if added:
                self.snooper.add_interface(interface)
            else:
                self.snooper.remove_interface(interface)

    def run(self) -> None:
        """Work until :meth:`stop`; then close everything (rules stay enforced)."""
        next_save = time.monotonic() + self.config.cache_save_interval
        try:
            while not self._stop.wait(self.config.watch_interval):
                if self._reload.is_set():
                    self._reload.clear()
                    self.watched.poll(self.engine, force=True)
                    self.sync.resync()
                else:
                    self.watched.poll(self.engine)
                due = self.cache.next_expiry()
                if due is not None and due <= self.cache.clock():
                    self.cache.expire()
                if self.config.cache and time.monotonic() >= next_save:
                    self._save()
                    next_save = time.monotonic() + self.config.cache_save_interval
        finally:
            self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to end (safe from a signal handler)."""
        self._stop.set()

    def reload(self) -> None:
        """Ask :meth:`run` to read the watched files again and apply everything in full."""
        self._reload.set()

    def _save(self) -> None:
        if self.config.cache:
            try:
                self.cache.save(self.config.cache)
            except OSError as exc:
                log.error("cache file %s not saved: %s", self.config.cache, exc)

    def close(self) -> None:
        """Stop reading DNS, save the cache file, stop the sync (leaving the rules).

        The backend is closed too (``Backend.close``): what it holds (the nftables
        backend's libnftables worker in ``--netns``, which keeps that namespace alive) goes.
        """
        if self.registry is not None:
            self.registry.close()
            self.registry = None
        if self.hold is not None:
            self.hold.close()
            self.hold = None
        if self.snooper is not None:
            self.snooper.close()
            self.snooper = None
        self._save()
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        self.sync.close(remove=False)
        self.engine.close()
        self._close_backend()

    def _close_backend(self) -> None:
        self.backend.close()
