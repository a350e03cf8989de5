"""fqdnpolicy-cni's answers without an agent or a kernel: versions and the spec's errors."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from fqdnpolicy.cni import main

PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "veth1234"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
    "ips": [{"address": "198.51.100.130/26", "interface": 1}],
}


def call(command: str, config: Any, **env: str) -> tuple[int, dict[str, Any] | None]:
    out = io.StringIO()
    text = config if isinstance(config, str) else json.dumps(config)
    base = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c1",
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
    }
    code = main({**base, **env}, io.StringIO(text), out)
    return code, json.loads(out.getvalue()) if out.getvalue() else None


def config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    found = {"cniVersion": "1.0.0", "name": "n", "type": "fqdnpolicy-cni"}
    found["agentSocket"] = str(tmp_path / "absent.sock")
    return {**found, **extra}


def test_version_lists_the_supported_versions() -> None:
    assert call("VERSION", "") == (
        0,
        {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]},
    )


@pytest.mark.parametrize(
    ("command", "conf", "env", "code"),
    [
        ("ADD", "{not json", {}, 6),
        ("ADD", {"cniVersion": "9.9.9"}, {}, 1),
        ("ADD", None, {}, 7),  # no prevResult: not chained
        ("ADD", {"prevResult": PREV}, {"CNI_ARGS": ""}, 4),
        ("ADD", {"prevResult": PREV}, {}, 11),  # no agent listening
        ("BOGUS", {"prevResult": PREV}, {}, 4),
        ("ADD", {"prevResult": {"ips": [], "interfaces": []}}, {}, 7),
    ],
)
def test_failures_come_back_as_the_spec_error_object(
    tmp_path: Path, command: str, conf: Any, env: dict[str, str], code: int
) -> None:
    body = conf if isinstance(conf, str) else config(tmp_path, **(conf or {}))
    status, answer = call(command, body, **env)
    assert status == 1
    assert answer is not None
    assert answer["code"] == code
    assert answer["msg"]


def test_del_succeeds_when_the_agent_is_gone(tmp_path: Path) -> None:
    assert call("DEL", config(tmp_path, prevResult=PREV)) == (0, None)
