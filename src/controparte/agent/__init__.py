"""The installation-side agent: heartbeats that keep `<label>.<zone>` pointing at the
installation's public address and port.

Depends only on the model and the wire schema (`wire.py`), never on the store or the
service layer: it runs on the installation's host, not the service's.
"""

from controparte.agent.client import HeartbeatClient
from controparte.agent.runner import Agent, AgentConfig
from controparte.agent.token import read_token

__all__ = ["Agent", "AgentConfig", "HeartbeatClient", "read_token"]
