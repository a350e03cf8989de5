"""Endpoints registered by the CNI plugin, over a unix socket.

Protocol: the plugin connects, sends one JSON object on a line, reads one back, closes.

* ``{"op": "add", "namespace", "name", "ips": [...], "interface", "container_id", "netns"}``
  (``netns``, the pod's ``CNI_NETNS``, may be left out)
* ``{"op": "del", "namespace", "name", "container_id"}``
* ``{"op": "check", "namespace", "name", "container_id"}``
* ``{"op": "verdict", "src", "dst", "protocol", "port", "direction"}``: the engine's verdict
  now (:mod:`fqdnpolicy.agent.verdicts`), answered with ``action``, ``policy``, ``tier``,
  ``rule_index`` and ``default``

Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. Labels come from the
agent's cluster source (the pod of that namespace and name), else none; the endpoint is
applied to the engine at once and kept across reloads of the cluster files. With a
:class:`~fqdnpolicy.agent.registrations.RegistrationStore`, every change is written to its
file before it is answered, so a restarted agent restores them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fqdnpolicy.agent.registrations import Registration, RegistrationStore
from fqdnpolicy.errors import InvalidPolicy

if TYPE_CHECKING:
    from fqdnpolicy.agent.sources import WatchedState
    from fqdnpolicy.agent.verdicts import CountingVerdicts
    from fqdnpolicy.engine import PolicyEngine
    from fqdnpolicy.sync import DatapathSync

__all__ = ["EndpointRegistry"]

log = logging.getLogger(__name__)
_MAX_REQUEST = 65536
_APPLY_WAIT = 10.0  # seconds an ADD waits for its endpoint's rules


class EndpointRegistry:
    """Serve CNI registrations on ``path`` (a unix socket created here, removed at close).

    Args:
        path: Socket path.
        engine: Engine the endpoints go to.
        watched: Cluster source for labels; registered endpoints override its own.
        sync: When given, an ADD is answered once the endpoint's rules are applied, so the
            pod starts under its policy.
        on_interface: Called with a host-side interface and True when an endpoint is added,
            False when removed (the agent's ``--snoop-endpoints``).
        store: Where registrations are kept across restarts (None: in memory only).
        restored: Registrations restored from ``store``, already applied to the engine.
        verdicts: Answers ``verdict`` requests (None: they are refused).
    """

    def __init__(
        self,
        path: str,
        engine: PolicyEngine,
        watched: WatchedState,
        sync: DatapathSync | None = None,
        on_interface: Callable[[str, bool], None] | None = None,
        store: RegistrationStore | None = None,
        restored: Sequence[Registration] = (),
        verdicts: CountingVerdicts | None = None,
    ) -> None:
        self.path, self.engine, self.watched, self.sync = path, engine, watched, sync
        self.on_interface, self.store, self.verdicts = on_interface, store, verdicts
        self._lock = threading.Lock()
        self._containers = {r.container_id: r for r in restored}
        if store is not None:
            self._save()  # what was dropped at restore is forgotten on disk too
        registry = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(_MAX_REQUEST)
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("not a JSON object")
                    answer: dict[str, Any] = {"ok": True, **registry.handle(request)}
                except (ValueError, KeyError, TypeError, InvalidPolicy) as exc:
                    answer = {"ok": False, "error": str(exc)}
                self.wfile.write(json.dumps(answer).encode() + b"\n")

        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by an agent that did not stop cleanly
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._server = socketserver.ThreadingUnixStreamServer(path, Handler)
        os.chmod(path, 0o600)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fqdnpolicy-cni", daemon=True
        )
        self._thread.start()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply one request (see the module docstring); the answer's fields beyond ``ok``.

        Raises:
            ValueError: a bad request, or CHECK of an endpoint not registered.
            InvalidPolicy: the endpoint (or the flow of a verdict) is not valid.
        """
        op = request.get("op")
        if op == "verdict":  # a reader: no registration lock
            if self.verdicts is None:
                raise ValueError("this agent answers no verdict requests")
            return self.verdicts.answer(request)
        key = f"{request['namespace']}/{request['name']}"
        container = str(request.get("container_id", ""))
        with self._lock:
            if op == "add":
                netns = request.get("netns", "")
                registration = Registration(
                    container,
                    request["namespace"],
                    request["name"],
                    request["ips"],
                    request["interface"],
                    netns if isinstance(netns, str) else "",
                )
                endpoint = registration.endpoint(self.watched.cluster)
                self.engine.upsert_endpoint(endpoint)  # an invalid endpoint stops here
                self.watched.registered[key] = endpoint
                self._containers[container] = registration
                log.info("endpoint %s registered on %s", key, endpoint.interface)
                try:
                    self._save()
                except OSError as exc:  # enforced now, but a restart would forget it
                    raise ValueError(f"registration of {key} not stored: {exc}") from None
                self._interface(endpoint.interface, True)
                if self.sync is not None and not self.sync.sync(_APPLY_WAIT):
                    raise ValueError(f"the rules of {key} are not applied yet")
            elif op == "del":
                # The endpoint goes, so every registration of that pod goes with it.
                self._containers.pop(container, None)
                for other in [c for c, r in self._containers.items() if r.key == key]:
                    del self._containers[other]
                self._save_or_log()
                removed = self.watched.registered.pop(key, None)
                if removed is not None:
                    self.engine.remove_endpoint(key)
                    log.info("endpoint %s removed", key)
                    self._interface(removed.interface, False)
            elif op == "check":
                found = self._containers.get(container)
                if found is None or found.key != key:
                    raise ValueError(f"endpoint {key} is not registered for this container")
            else:
                raise ValueError(f"unknown op {op!r}; one of add, del, check, verdict")
        return {}

    def _save(self) -> None:
        if self.store is not None:
            self.store.save(self._containers.values())

    def _save_or_log(self) -> None:
        try:
            self._save()
        except OSError as exc:  # the pod is gone either way; a restart may restore it
            log.error("CNI registrations not stored: %s", exc)

    def _interface(self, interface: str, added: bool) -> None:
        if self.on_interface is None:
            return
        try:
            self.on_interface(interface, added)
        except (InvalidPolicy, OSError) as exc:  # the pod is enforced; only snooping failed
            log.error("snooping on %s not %s: %s", interface, "started" if added else "ended", exc)

    def close(self) -> None:
        """Stop serving and remove the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
