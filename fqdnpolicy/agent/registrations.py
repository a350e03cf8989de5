"""CNI registrations kept on disk, so an agent restart does not forget its pods.

The CNI plugin tells the agent about a pod once, at ``ADD``; a restarted agent would
otherwise know only the cluster files' pods, and the pods the runtime added meanwhile would
lose their rules. :class:`RegistrationStore` writes every registration to one JSON file
(written to a temporary file, flushed and renamed over the old one, so a crash leaves either
the old or the new file whole) and reads it back at start. :func:`still_there` tells which
restored registrations still have a pod: one whose host-side interface or network namespace
is gone was deleted while the agent was away, and is dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from fqdnpolicy.cluster import Cluster, Endpoint
from fqdnpolicy.dns.snoop import in_netns

__all__ = [
    "STATE_FILE",
    "Registration",
    "RegistrationStore",
    "StateFileError",
    "restore",
    "still_there",
]

log = logging.getLogger(__name__)

#: The file's name in the state directory.
STATE_FILE = "cni-endpoints.json"
_VERSION = 1


class StateFileError(ValueError):
    """The state file is not one this agent wrote; the message names the file and the fault."""


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"a list of strings, not {value!r}")
    return tuple(value)


@attrs.frozen
class Registration:
    """One pod the CNI plugin registered.

    Attributes:
        container_id: The runtime's container id (``CNI_CONTAINERID``).
        namespace: The pod's Kubernetes namespace.
        name: The pod's name.
        ips: The pod's addresses.
        interface: The host-side interface.
        netns: The pod's network namespace path (``CNI_NETNS``); empty when not given.
    """

    container_id: str
    namespace: str
    name: str
    ips: tuple[str, ...] = attrs.field(converter=_strings)
    interface: str
    netns: str = ""

    @property
    def key(self) -> str:
        """The endpoint key, ``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def endpoint(self, cluster: Cluster) -> Endpoint:
        """The endpoint, labelled as the cluster's pod of the same key (else unlabelled).

        Raises:
            InvalidPolicy: bad addresses or interface.
        """
        labels = next((e.labels for e in cluster.endpoints if e.key == self.key), {})
        return Endpoint(
            self.name, self.namespace, labels, ips=list(self.ips), interface=self.interface
        )

    def as_json(self) -> dict[str, Any]:
        """The JSON object stored for it."""
        return {
            "container_id": self.container_id,
            "namespace": self.namespace,
            "name": self.name,
            "ips": list(self.ips),
            "interface": self.interface,
            "netns": self.netns,
        }

    @classmethod
    def from_json(cls, data: Any) -> Registration:
        """Read one stored object.

        Raises:
            ValueError: a field is missing or of the wrong type.
        """
        if not isinstance(data, dict):
            raise ValueError(f"an object, not {data!r}")
        required = ("container_id", "namespace", "name", "interface")
        for name in (*required, "netns"):
            value = data.get(name, None if name in required else "")
            if not isinstance(value, str):
                raise ValueError(f"{name}: a string, not {value!r}")
        return cls(
            data["container_id"],
            data["namespace"],
            data["name"],
            data.get("ips"),
            data["interface"],
            data.get("netns", ""),
        )


class RegistrationStore:
    """The registrations file: :meth:`load` at start, :meth:`save` after every change.

    Args:
        path: The file (its directory is created when missing).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> list[Registration]:
        """Read the registrations; none when the file does not exist.

        Raises:
            StateFileError: the file is unreadable or not what :meth:`save` writes.
        """
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise StateFileError(f"{self.path}: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            raise StateFileError(f"{self.path}: not a version {_VERSION} registrations file")
        found = []
        for index, item in enumerate(data.get("registrations") or []):
            try:
                found.append(Registration.from_json(item))
            except ValueError as exc:
                raise StateFileError(f"{self.path}: registrations[{index}]: {exc}") from None
        return found

    def save(self, registrations: Iterable[Registration]) -> None:
        """Replace the file with these registrations, whole or not at all.

        Raises:
            OSError: the file could not be written (the old one stays).
        """
        body = {"version": _VERSION, "registrations": [r.as_json() for r in registrations]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(body, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def _has_interface(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def still_there(registration: Registration, netns: str | None = None) -> bool:
    """Tell whether a registration's pod still exists.

    It does while its network namespace path (when recorded) and its host-side interface
    (in ``netns``, the agent's namespace) both exist.

    Raises:
        InvalidPolicy: ``netns`` names no namespace.
    """
    if registration.netns and not os.path.exists(registration.netns):
        return False
    try:
        return in_netns(netns, lambda: _has_interface(registration.interface))
    except OSError as exc:  # cannot look: keep it rather than drop a live pod's rules
        log.warning("cannot check interface %s: %s", registration.interface, exc)
        return True


def restore(
    store: RegistrationStore, netns: str | None
) -> tuple[list[Registration], list[Registration]]:
    """The stored registrations whose pods exist, and those dropped.

    A file that cannot be read is reported and treated as empty (it is rewritten at the
    next registration); the agent starts either way.

    Raises:
        InvalidPolicy: ``netns`` names no namespace.
    """
    try:
        stored = store.load()
    except StateFileError as exc:
        log.error("CNI registrations not restored: %s", exc)
        return [], []
    kept: list[Registration] = []
    dropped: list[Registration] = []
    for registration in stored:
        (kept if still_there(registration, netns) else dropped).append(registration)
    return kept, dropped
