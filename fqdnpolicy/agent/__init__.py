"""The node agent (``fqdnpolicy agent``): watched policies, DNS in, datapath kept in step.

See ``docs/agent.md``. :class:`Agent` wires the parts; :class:`AgentConfig` holds its
options.
"""

from fqdnpolicy.agent.agent import Agent
from fqdnpolicy.agent.config import AgentConfig, ConfigError

__all__ = ["Agent", "AgentConfig", "ConfigError"]
