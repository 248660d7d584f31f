"""Built-in tools beyond `core.*`: `http.request`, `sql.query`, `email.send`."""

from __future__ import annotations

from agentrun.integrations.tools.email import EmailSend
from agentrun.integrations.tools.http import HttpRequest
from agentrun.integrations.tools.sql import SqlQuery
from agentrun.integrations.tools.ssrf import Blocked, Guard

__all__ = ["Blocked", "EmailSend", "Guard", "HttpRequest", "SqlQuery"]
