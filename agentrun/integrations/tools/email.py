"""`email.send`: one message over SMTP; header injection refused before anything is sent.

Config (`tools: {email.send: {...}}`):
  host: smtp.example.com     (required)
  port: 587
  starttls: true             # upgrade with STARTTLS (default: true unless port is 25 or tls is set)
  tls: false                 # implicit TLS (SMTPS, port 465)
  username: agentrun
  password_secret: SMTP_PASSWORD   # from the secret store
  from: agentrun@example.com       # default sender
  timeout: 30s

Every header value (to, cc, from, subject) is refused when it holds CR, LF or another line
break, a NUL, or an encoded newline (`%0a`, `%0d`, `\\n`, `&#10;`, an RFC 2047 encoded word):
`invalid_args` naming the field. The Message-ID is derived from the call's idempotency key, so
a repeated call sends a message a receiver can recognise as the same. The tool is
`irreversible`: the engine never retries it automatically.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import re
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure
from agentrun.integrations.util import parse_seconds

_ADDRESSES = {
    "oneOf": [
        {"type": "string", "minLength": 3},
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
    ]
}

# Line breaks in any spelling a header parser, a URL decoder, a template or an HTML/MIME
# decoder downstream could turn into a real one.
_INJECTION = re.compile(
    r"[\r\n\x00\x0b\x0c\x85\u2028\u2029]"
    r"|%0[ad]|%00|%e2%80%a[89]|%c2%85"
    r"|\\[rnu]|&#(?:x0*[ad]|0*1[03]);?|&(?:newline|NewLine);"
    r"|=\?[^?]*\?[bq]\?",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\Z")


def check_header(field: str, value: str) -> str:
    """Refuses a header value that could smuggle a line break."""
    if _INJECTION.search(value):
        raise ToolFailure(
            "invalid_args",
            f"args.{field}: line breaks and encoded newlines are not allowed in headers",
            details={"field": f"args.{field}"},
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ToolFailure(
            "invalid_args",
            f"args.{field}: control characters are not allowed",
            details={"field": f"args.{field}"},
        )
    return value


def _addresses(field: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    out = []
    for i, item in enumerate(items):
        where = field if isinstance(value, str) else f"{field}[{i}]"
        check_header(where, item)
        parsed = email.utils.getaddresses([item])
        name, addr = parsed[0] if len(parsed) == 1 else ("", "")
        if not addr or not _ADDRESS.match(addr):
            raise ToolFailure(
                "invalid_args",
                f"args.{where}: not one email address: {item!r}",
                details={"field": f"args.{where}"},
            )
        out.append(email.utils.formataddr((name, addr)) if name else addr)
    return out


class EmailSend(Tool):
    name = "email.send"
    description = "Sends an email over SMTP; returns {message_id}."
    args_schema = {
        "type": "object",
        "required": ["to", "subject"],
        "additionalProperties": False,
        "properties": {
            "to": _ADDRESSES,
            "cc": _ADDRESSES,
            "from": {"type": "string"},
            "subject": {"type": "string", "maxLength": 998},
            "body": {"type": "string"},
        },
    }
    result_schema = {
        "type": "object",
        "required": ["message_id"],
        "properties": {"message_id": {"type": "string"}},
    }
    effect = Effect.IRREVERSIBLE

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        unknown = set(config) - {
            "host",
            "port",
            "starttls",
            "tls",
            "username",
            "password_secret",
            "from",
            "timeout",
        }
        if unknown:
            raise ValueError(f"tools.email.send: unknown keys {', '.join(sorted(unknown))}")
        self.host: str | None = config.get("host")
        self.tls = bool(config.get("tls", False))
        self.port = int(config.get("port") or (465 if self.tls else 587))
        self.starttls = bool(config.get("starttls", not self.tls and self.port != 25))
        self.username = config.get("username")
        self.password_secret = config.get("password_secret")
        self.sender = config.get("from")
        self.timeout = parse_seconds(config.get("timeout", 30))

    def build(self, args: Mapping[str, Any], ctx: CallContext) -> tuple[EmailMessage, list[str]]:
        """The message and its envelope recipients; raises ToolFailure(invalid_args)."""
        sender = args.get("from") or self.sender
        if not sender:
            raise ToolFailure(
                "invalid_args",
                "args.from: no sender given and none configured",
                details={"field": "args.from"},
            )
        from_ = _addresses("from", sender)
        to = _addresses("to", args["to"])
        cc = _addresses("cc", args["cc"]) if args.get("cc") else []
        subject = check_header("subject", args["subject"])
        domain = email.utils.parseaddr(from_[0])[1].rpartition("@")[2] or "agentrun"
        digest = hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:32]
        msg = EmailMessage(policy=SMTP)
        msg["From"] = from_[0]
        msg["To"] = ", ".join(to)
        if cc:
            msg["Cc"] = ", ".join(cc)
        msg["Subject"] = subject
        msg["Date"] = email.utils.formatdate(localtime=False)
        msg["Message-ID"] = f"<{digest}@{domain}>"
        msg.set_content(args.get("body") or "")
        rcpts = [email.utils.parseaddr(a)[1] for a in to + cc]
        return msg, rcpts

    async def call(self, args: Any, ctx: CallContext) -> Any:
        msg, rcpts = self.build(args, ctx)
        host = self.host
        if not host:
            raise ToolFailure(
                "tool_error", "email.send: no SMTP host configured (tools.email.send.host)"
            )
        password = None
        if self.password_secret:
            password = ctx.secrets.get(self.password_secret)
            if password is None:
                raise ToolFailure("tool_error", f"secret {self.password_secret!r} is not set")
        try:
            await asyncio.to_thread(self._send, host, msg, rcpts, password)
        except smtplib.SMTPRecipientsRefused as exc:
            raise ToolFailure(
                "email.rejected", f"recipients refused: {', '.join(exc.recipients)}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            kind = "tool_error" if 400 <= exc.smtp_code < 500 else "email.rejected"
            raise ToolFailure(kind, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ToolFailure("tool_error", f"SMTP failed: {type(exc).__name__}: {exc}") from None
        return {"message_id": msg["Message-ID"]}

    def _send(self, host: str, msg: EmailMessage, rcpts: list[str], password: str | None) -> None:
        context = ssl.create_default_context()
        cls = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
        kwargs: dict[str, Any] = {"timeout": self.timeout}
        if self.tls:
            kwargs["context"] = context
        with cls(host, self.port, **kwargs) as smtp:
            smtp.ehlo()
            if self.starttls and not self.tls:
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, password or "")
            smtp.send_message(msg, to_addrs=rcpts)
