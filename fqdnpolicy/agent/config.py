"""The agent's options: :class:`AgentConfig`, from the command line and a YAML file.

Every option has one name, used as ``--name`` on the command line and as ``name`` (or
``name`` with ``_`` for ``-``) in the ``--config`` file; the command line wins. A bad option
raises :class:`ConfigError` naming it and what would be valid; nothing starts.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml

from fqdnpolicy.agent.registrations import STATE_FILE
from fqdnpolicy.dns.addresses import parse_server

__all__ = ["NODELOCAL_DNS", "AgentConfig", "ConfigError", "parse_listen"]

#: NodeLocal DNSCache's link-local listen address: pods' DNS goes there when it is deployed.
NODELOCAL_DNS = "169.254.20.10"


class ConfigError(ValueError):
    """An agent option is not valid; the message names it and what would be."""


@attrs.frozen
class AgentConfig:
    """What the agent runs with (see ``docs/agent.md`` for each option).

    Attributes:
        policies: Policy files or directories (watched).
        cluster: Cluster files or directories (watched).
        backend: Installed backend name.
        netns: Apply (and snoop, and hold) inside this named network namespace.
        snoop: Interfaces to snoop DNS responses on.
        snoop_endpoints: Also snoop on every endpoint's host-side interface.
        hold_dns: Hold DNS responses until their addresses are programmed.
        hold_fail: ``open`` or ``closed``: what happens to a response still held at the bound.
        hold_bound: Most seconds a response is held.
        trusted_dns: Servers whose responses are learned; empty: the defaults.
        cache: DNS cache file, loaded at start and saved periodically and at exit.
        cache_save_interval: Seconds between saves of the cache file.
        metrics: ``HOST:PORT`` to serve ``/metrics``, ``/healthz`` and ``/readyz`` on.
        log_format: ``text`` or ``json``.
        watch_interval: Seconds between checks of the watched files.
        reconcile_interval: Seconds between read-backs of the installed rules.
        cni_socket: Unix socket the CNI plugin registers endpoints on (None: no plugin).
        state_dir: Directory of the registrations file kept across restarts (None: the
            CNI socket's directory).
    """

    policies: tuple[str, ...] = ()
    cluster: tuple[str, ...] = ()
    backend: str = "nftables"
    netns: str | None = None
    snoop: tuple[str, ...] = ()
    snoop_endpoints: bool = False
    hold_dns: bool = False
    hold_fail: Literal["open", "closed"] = "open"
    hold_bound: float = 1.0
    trusted_dns: tuple[str, ...] = ()
    cache: str | None = None
    cache_save_interval: float = 60.0
    metrics: str | None = None
    log_format: Literal["text", "json"] = "text"
    watch_interval: float = 0.25
    reconcile_interval: float = 30.0
    cni_socket: str | None = None
    state_dir: str | None = None

    @property
    def state_file(self) -> str | None:
        """The CNI registrations file (None without ``cni_socket``)."""
        if self.cni_socket is None:
            return None
        directory = self.state_dir or os.path.dirname(os.path.abspath(self.cni_socket))
        return os.path.join(directory, STATE_FILE)

    @classmethod
    def build(cls, values: Mapping[str, Any]) -> AgentConfig:
        """Check and build a config from option values (``None``: not given).

        Raises:
            ConfigError: an unknown or invalid option.
        """
        fields = {f.name: f for f in attrs.fields(cls)}
        given: dict[str, Any] = {}
        for raw, value in values.items():
            name = raw.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"unknown option {raw!r}; known: {', '.join(sorted(fields))}")
            if value is not None:
                given[name] = value
        for name in ("policies", "cluster", "snoop", "trusted_dns"):
            if name in given:
                value = given[name]
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise ConfigError(f"{name}: a list of strings, not {value!r}")
                given[name] = tuple(value)
        _check(given)
        return cls(**given)

    @classmethod
    def from_file(cls, path: str) -> dict[str, Any]:
        """Read a ``--config`` YAML file as option values.

        Raises:
            ConfigError: the file cannot be read or is not a mapping of options.
        """
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--config {path}: {exc}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"--config {path}: a mapping of options, not {type(data).__name__}")
        return {str(k): v for k, v in data.items()}


def parse_listen(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT``).

    Raises:
        ConfigError: not that form.
    """
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not 0 < number < 65536:
        raise ConfigError(f"metrics: HOST:PORT such as 127.0.0.1:9402, not {text!r}")
    return host, number


def _check(given: dict[str, Any]) -> None:
    def number(name: str, low: float, high: float) -> None:
        value = given.get(name)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
            raise ConfigError(f"{name}: a number of seconds in ({low}, {high}], not {value!r}")

    number("hold_bound", 0, 30)
    number("cache_save_interval", 0, 86400)
    number("watch_interval", 0, 60)
    number("reconcile_interval", 0, 86400)
    for name, allowed in (("hold_fail", ("open", "closed")), ("log_format", ("text", "json"))):
        if name in given and given[name] not in allowed:
            raise ConfigError(f"{name}: one of {', '.join(allowed)}, not {given[name]!r}")
    for name in ("snoop_endpoints", "hold_dns"):
        if name in given and not isinstance(given[name], bool):
            raise ConfigError(f"{name}: true or false, not {given[name]!r}")
    for name in ("cni_socket", "state_dir", "cache", "netns"):
        if name in given and not isinstance(given[name], str):
            raise ConfigError(f"{name}: a path or name, not {given[name]!r}")
    for server in given.get("trusted_dns", ()):
        if parse_server(server) is None:
            raise ConfigError(f"trusted_dns: ADDR or ADDR:PORT such as 10.96.0.10, not {server!r}")
    if "metrics" in given:
        parse_listen(given["metrics"])
    if not given.get("policies"):
        raise ConfigError("policies: at least one policy file or directory is needed")
