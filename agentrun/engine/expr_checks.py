"""Checks on where expressions appear, shared by the DAG and state machine compilers.

The compilers decide which names each field may use; this module holds the rules that look at
a field's expressions as a whole: templates that build SQL text (a warning: parameters belong in
`params`).
"""

from __future__ import annotations

from typing import Any

from agentrun.engine.errors import Diagnostic


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
