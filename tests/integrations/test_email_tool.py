"""`email.send` against a local SMTP server (aiosmtpd): delivery, and the header-injection corpus."""

from __future__ import annotations

import asyncio
import email
from email.policy import default as default_policy
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from agentrun.engine.ports import CallContext, Effect, ToolFailure
from agentrun.integrations.tools import EmailSend
from agentrun.storage.records import ExecutionState


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=default_policy)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 Message accepted for delivery"


@pytest.fixture
async def smtp():
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(inbox, hostname="localhost"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield inbox, port
    server.close()
    await server.wait_closed()


def ctx(key: str = "ex1/mail") -> CallContext:
    return CallContext(execution_id="ex1", node_id="mail", attempt=1, idempotency_key=key)


def tool(port: int) -> EmailSend:
    return EmailSend(
        {
            "host": "127.0.0.1",
            "port": port,
            "starttls": False,
            "from": "bot@agentrun.test",
            "timeout": 5,
        }
    )


async def test_send(smtp) -> None:
    inbox, port = smtp
    t = tool(port)
    assert t.effect is Effect.IRREVERSIBLE
    result = await t.call(
        {
            "to": ["Ann <ann@example.com>", "bo@example.com"],
            "cc": "cc@example.com",
            "subject": "Grüße: your order",
            "body": "Line one\nLine two\n",
        },
        ctx("ex1/mail"),
    )
    again = t.build({"to": "x@example.com", "subject": "s"}, ctx("ex1/mail"))[0]
    assert result["message_id"] == again["Message-ID"]  # same key, same Message-ID
    assert (
        result["message_id"]
        != t.build({"to": "x@example.com", "subject": "s"}, ctx("ex1/other"))[0]["Message-ID"]
    )
    [(mail_from, rcpts, msg)] = inbox.messages
    assert mail_from == "bot@agentrun.test"
    assert rcpts == ["ann@example.com", "bo@example.com", "cc@example.com"]
    assert msg["Subject"] == "Grüße: your order"
    assert msg["To"] == "Ann <ann@example.com>, bo@example.com"
    assert msg.get_content().replace("\r\n", "\n") == "Line one\nLine two\n"
    assert msg["Message-ID"] == result["message_id"]


async def test_send_from_a_workflow(smtp, runner_factory) -> None:
    inbox, port = smtp
    runner = await runner_factory(
        {"tools": {"email.send": {"host": "127.0.0.1", "port": port, "starttls": False}}}
    )
    final, _ = await runner.run(
        "name: mail\nnodes:\n  - id: send\n    tool:\n      name: email.send\n      args:\n"
        '        {to: "${{ input.to }}", from: ops@agentrun.test, subject: "Order ${{ input.id }}", body: hi}\n',
        {"to": "ann@example.com", "id": 42},
    )
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert inbox.messages[0][2]["Subject"] == "Order 42"


async def test_smtp_down_is_a_tool_error() -> None:
    with pytest.raises(ToolFailure) as err:
        await tool(1).call({"to": "ann@example.com", "subject": "s"}, ctx())
    assert err.value.type == "tool_error"


INJECTIONS = [
    ("subject", "Hi\r\nBcc: evil@evil.test"),
    ("subject", "Hi\nBcc: evil@evil.test"),
    ("subject", "Hi\rBcc: evil@evil.test"),
    ("subject", "Hi\r\n\r\nInjected body"),
    ("subject", "Hi%0d%0aBcc: evil@evil.test"),
    ("subject", "Hi%0ABcc: evil@evil.test"),
    ("subject", "Hi%0D%0ABcc: evil@evil.test"),
    ("subject", "Hi\\r\\nBcc: evil@evil.test"),
    ("subject", "Hi\\nBcc: evil@evil.test"),
    ("subject", "Hi\\u000aBcc: evil@evil.test"),
    ("subject", "Hi&#13;&#10;Bcc: evil@evil.test"),
    ("subject", "Hi&#x0a;Bcc: evil@evil.test"),
    ("subject", "=?utf-8?q?Hi=0D=0ABcc:_evil@evil.test?="),
    ("subject", "=?utf-8?b?SGkNCkJjYzogZXZpbEBldmlsLnRlc3Q=?="),
    ("subject", "=?ISO-8859-1?Q?Hi=0ABcc=3A_evil=40evil.test?="),
    ("subject", "Hi\u2028Bcc: evil@evil.test"),
    ("subject", "Hi\u2029Bcc: evil@evil.test"),
    ("subject", "Hi\x85Bcc: evil@evil.test"),
    ("subject", "Hi\x00Bcc: evil@evil.test"),
    ("subject", "Hi\x0bBcc: evil@evil.test"),
    ("subject", "Hi\x0cBcc: evil@evil.test"),
    ("subject", "Hi%E2%80%A8Bcc: evil@evil.test"),
    ("subject", "Hi%00Bcc: evil@evil.test"),
    ("to", "victim@example.com\r\nBcc: evil@evil.test"),
    ("to", "victim@example.com\nBcc: evil@evil.test"),
    ("to", "victim@example.com%0aBcc:evil@evil.test"),
    ("to", "victim@example.com%0d%0aBcc:evil@evil.test"),
    ("to", "victim@example.com>\r\nBcc: <evil@evil.test"),
    ("to", "=?utf-8?q?victim=0A?= <victim@example.com>"),
    ("to", ["ok@example.com", "victim@example.com\r\nBcc: evil@evil.test"]),
    ("cc", "cc@example.com\nBcc: evil@evil.test"),
    ("cc", ["cc@example.com\rBcc: evil@evil.test"]),
    ("from", "me@example.com\r\nBcc: evil@evil.test"),
    ("from", "me@example.com%0ABcc: evil@evil.test"),
    ("from", '"Me\r\nBcc: evil@evil.test" <me@example.com>'),
]


async def test_header_injection_corpus_is_fully_rejected(smtp) -> None:
    inbox, port = smtp
    t = tool(port)
    rejected = []
    for field, value in INJECTIONS:
        args: dict[str, Any] = {
            "to": "ann@example.com",
            "subject": "Hello",
            "body": "b",
            field: value,
        }
        try:
            await t.call(args, ctx())
        except ToolFailure as exc:
            if exc.type == "invalid_args" and exc.details["field"].startswith(f"args.{field}"):
                rejected.append((field, value))
    print(f"header-injection corpus: {len(rejected)}/{len(INJECTIONS)} rejected")
    assert rejected == INJECTIONS
    assert inbox.messages == []
