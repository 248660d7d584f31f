"""The runtime core under both interpreters (DAG runs and state machine instances).

What both need is defined here once: the default tenant, the error dict every failure is
recorded as, the redaction of a batch before it is stored, the cross-replica announcement
of commits (`Notifier`), and the retry decision (`next_retry`). The interpreters keep only
their rules (docs/architecture.md, "Two interpreters"; issue 14).
"""

from agentrun.engine.runtime.common import DEFAULT_TENANT, error_dict

__all__ = ["DEFAULT_TENANT", "error_dict"]
