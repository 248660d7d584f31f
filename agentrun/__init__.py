"""agentrun: a durable runtime for agent workflows, served over gRPC."""

__version__ = "0.1.0"
