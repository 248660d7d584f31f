"""The gRPC server: thin grpc.aio servicers over the engine, interceptors, health, reflection."""

from agentrun.server.app import AgentrunServer, serve
from agentrun.server.config import ConfigError, ServerConfig

__all__ = ["AgentrunServer", "ConfigError", "ServerConfig", "serve"]
