"""Checks on where expressions appear, shared by the DAG and state machine compilers.

The compilers decide which names each field may use; this module holds the rules that look at
a field's expressions as a whole: where secrets may be read, and templates that build SQL text
(a warning: parameters belong in `params`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agentrun.engine.errors import Diagnostic
from agentrun.engine.expr_cost import Unparsed, parse
from agentrun.engine.expressions import Expression


def sql_query_warnings(tool: str, args: Any, path: str) -> list[Diagnostic]:
    """A `${{ }}` inside `sql.query`'s `query` formats data into SQL text: injection-prone.

    Only a warning, since a trusted expression (a table name chosen by a switch) is legitimate;
    values belong in `params`, which the tool binds."""
    if tool != "sql.query" or not isinstance(args, dict):
        return []
    query = args.get("query")
    if isinstance(query, str) and "${{" in query:
        return [
            Diagnostic(
                f"{path}.query",
                "an expression inside the SQL text formats data into the query: pass values "
                "in params (bound by the database, never formatted into the SQL)",
            )
        ]
    return []


def _mentions_secrets(node: Any) -> bool:
    if isinstance(node, tuple):
        if node[:2] == ("id", "secrets"):
            return True
        return any(_mentions_secrets(part) for part in node[1:])
    if isinstance(node, list):
        return any(_mentions_secrets(part) for part in node)
    return False


def _is_secret(node: Any) -> bool:
    """`secrets.NAME` or `secrets['NAME']`."""
    return (
        node[0] in ("sel", "idx")
        and node[1] == ("id", "secrets")
        and (node[0] == "sel" or node[2][0] == "lit")
    )


def _uses_secrets_verbatim(source: str) -> bool:
    """True when every secret in `source` is kept whole: the expression is a `+` chain whose
    operands are either a plain secret reference or mention no secret (`'Bearer ' + secrets.t`)."""
    try:
        node = parse(source)
    except Unparsed:
        return False
    operands, stack = [], [node]
    while stack:
        item = stack.pop()
        if item[0] == "op" and item[1] == "+":
            stack.extend(item[2])
        else:
            operands.append(item)
    return all(_is_secret(o) or not _mentions_secrets(o) for o in operands)


SECRETS_WHERE = "a tool's args or an agent's prompt or system"


def secret_diagnostics(expressions: Iterable[Expression], allowed_here: bool) -> list[Diagnostic]:
    """Where `secrets.*` may appear, and how (issue 13, item 6).

    Redacting a secret after the fact only works for its verbatim value: `bytes(secrets.tok)`
    would store it in base64, `size(...)` or a `when` would leak it bit by bit. So a secret may
    be read only where it is sent somewhere (a tool's args, an agent's prompt or system), and only
    as it is (`${{ secrets.NAME }}`, alone, inside text or joined with `+`): every copy of it the
    engine can see then holds the verbatim value, which redaction removes before anything is
    stored."""
    out: list[Diagnostic] = []
    for expr in expressions:
        if "secrets" not in expr.names:
            continue
        if not allowed_here:
            out.append(
                Diagnostic(
                    expr.path,
                    f"secrets.* may be used only in {SECRETS_WHERE}: here its value, in any "
                    "encoding, would be stored in outputs, variables or events",
                )
            )
        elif not _uses_secrets_verbatim(expr.source):
            out.append(
                Diagnostic(
                    expr.path,
                    "use a secret as it is: ${{ secrets.NAME }}, alone, inside text or joined "
                    "with +; a transformed secret (bytes, base64, slices, sizes, comparisons) "
                    "would escape redaction",
                )
            )
    return out
