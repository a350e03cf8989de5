"""``fqdnpolicy-cni``: a chained CNI plugin registering pods with the node agent.

CNI spec 1.0. It runs after the plugin that made the pod's interface (``ptp``, ``bridge``,
Calico...), reads that plugin's result (``prevResult``) for the pod's addresses and the
host-side interface, and registers the endpoint with ``fqdnpolicy agent --cni-socket`` over
a unix socket; the agent adds labels from its cluster source and enforces the pod's policy.

* ``ADD``: register; print ``prevResult`` unchanged.
* ``DEL``: unregister; succeeds when the agent is gone (nothing left to remove there).
* ``CHECK``: the agent must hold the registration.
* ``VERSION``: the versions supported.

The pod is named by ``K8S_POD_NAMESPACE`` and ``K8S_POD_NAME`` in ``CNI_ARGS``. The network
configuration may set ``agentSocket`` (default :data:`DEFAULT_SOCKET`). Errors are printed as
the spec's error object with its codes, exit status 1.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["DEFAULT_SOCKET", "SUPPORTED_VERSIONS", "CniError", "main", "run"]

DEFAULT_SOCKET = "/run/fqdnpolicy/cni.sock"
SUPPORTED_VERSIONS = ("0.4.0", "1.0.0")
# The spec's well-known error codes.
INCOMPATIBLE_VERSION, UNSUPPORTED_FIELD, INVALID_ENV, IO_FAILURE, DECODE_FAILURE = 1, 2, 4, 5, 6
INVALID_CONFIG, TRY_AGAIN_LATER = 7, 11
_TIMEOUT = 5.0


class CniError(Exception):
    """A failure reported as the CNI error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def as_json(self, version: str) -> dict[str, Any]:
        """The spec's error object."""
        found: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            found["details"] = self.details
        return found


def _cni_args(text: str) -> dict[str, str]:
    found = {}
    for part in filter(None, text.split(";")):
        key, sep, value = part.partition("=")
        if not sep:
            raise CniError(INVALID_ENV, f"CNI_ARGS: not KEY=VALUE: {part!r}")
        found[key] = value
    return found


def _pod(env: Mapping[str, str]) -> tuple[str, str]:
    args = _cni_args(env.get("CNI_ARGS", ""))
    namespace, name = args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")
    if not namespace or not name:
        raise CniError(INVALID_ENV, "CNI_ARGS must name K8S_POD_NAMESPACE and K8S_POD_NAME")
    return namespace, name


def _from_result(result: Any) -> tuple[list[str], str]:
    """The pod's addresses and the host-side interface, from a previous plugin's result."""
    if not isinstance(result, dict):
        raise CniError(INVALID_CONFIG, "prevResult is missing: chain this plugin after one")
    interfaces = result.get("interfaces") or []
    ips = []
    for entry in result.get("ips") or []:
        address = entry.get("address", "") if isinstance(entry, dict) else ""
        if "/" not in address:
            raise CniError(INVALID_CONFIG, f"prevResult: an ips entry without address: {entry!r}")
        ips.append(address.split("/")[0])
    host = [i.get("name") for i in interfaces if isinstance(i, dict) and not i.get("sandbox")]
    if not ips or not host or not isinstance(host[0], str):
        raise CniError(INVALID_CONFIG, "prevResult: no pod address or no host-side interface")
    return ips, host[0]


def _ask(path: str, request: dict[str, Any]) -> dict[str, Any]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(_TIMEOUT)
            sock.connect(path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        unreachable = f"the fqdnpolicy agent is unreachable at {path}"
        raise CniError(TRY_AGAIN_LATER, unreachable, str(exc)) from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise CniError(IO_FAILURE, "the fqdnpolicy agent's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise CniError(IO_FAILURE, "the fqdnpolicy agent's answer is not an object")
    return answer


def run(env: Mapping[str, str], stdin: str) -> dict[str, Any] | None:
    """Run one CNI command; return the JSON to print (None: nothing).

    Raises:
        CniError: the failure to report.
    """
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        return {"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED_VERSIONS)}
    if command not in ("ADD", "DEL", "CHECK"):
        raise CniError(INVALID_ENV, f"CNI_COMMAND must be ADD, DEL, CHECK or VERSION: {command!r}")
    try:
        config = json.loads(stdin)
    except ValueError as exc:
        raise CniError(DECODE_FAILURE, "the network configuration is not JSON", str(exc)) from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "the network configuration is not a JSON object")
    version = config.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported")
    path = config.get("agentSocket", DEFAULT_SOCKET)
    if not isinstance(path, str):
        raise CniError(INVALID_CONFIG, "agentSocket must be a path")
    container = env.get("CNI_CONTAINERID", "")
    if not container:
        raise CniError(INVALID_ENV, "CNI_CONTAINERID is empty")
    namespace, name = _pod(env)
    base = {"namespace": namespace, "name": name, "container_id": container}
    if command == "DEL":
        try:
            _ask(path, {"op": "del", **base})
        except CniError as exc:
            if exc.code != TRY_AGAIN_LATER:
                raise
        return None
    previous = config.get("prevResult")
    ips, interface = _from_result(previous)
    op = "add" if command == "ADD" else "check"
    request = {"op": op, **base, "ips": ips, "interface": interface}
    request["netns"] = env.get("CNI_NETNS", "")  # lets a restarted agent tell the pod is gone
    answer = _ask(path, request)
    if not answer.get("ok"):
        raise CniError(100, f"the fqdnpolicy agent refused {op}", str(answer.get("error", "")))
    if command == "CHECK":
        return None
    assert isinstance(previous, dict)
    return {**previous, "cniVersion": version}


def main(
    env: Mapping[str, str] | None = None, stdin: TextIO | None = None, out: TextIO | None = None
) -> int:
    """The ``fqdnpolicy-cni`` executable; returns the exit status."""
    env = os.environ if env is None else env
    out = sys.stdout if out is None else out
    text = (
        (sys.stdin if stdin is None else stdin).read()
        if env.get("CNI_COMMAND") != "VERSION"
        else ""
    )
    try:
        result = run(env, text)
    except CniError as exc:
        try:
            version = json.loads(text).get("cniVersion", "1.0.0")
        except (ValueError, AttributeError):
            version = "1.0.0"
        json.dump(exc.as_json(str(version)), out)
        out.write("\n")
        return 1
    if result is not None:
        json.dump(result, out)
        out.write("\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
