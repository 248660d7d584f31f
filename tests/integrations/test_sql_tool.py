"""`sql.query` against the real PostgreSQL and SQLite: bound parameters, read-only, timeouts,
row limits, and the SQL injection corpus (0 successes)."""

from __future__ import annotations

import secrets as _secrets
import sqlite3
from typing import Any

import asyncpg
import pytest

from agentrun.engine.ports import CallContext, ToolFailure
from agentrun.integrations.tools import SqlQuery
from agentrun.storage.records import ExecutionState

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
CTX = CallContext(execution_id="ex", node_id="q", attempt=1, idempotency_key="ex/q")

PEOPLE = [(1, "alice", "user"), (2, "bob", "user"), (3, "carol", "admin")]


@pytest.fixture(params=["postgresql", "sqlite"])
async def db(request, tmp_path):
    """(dialect, url, table names) with a people table and a private table, removed after."""
    suffix = _secrets.token_hex(4)
    people, private = f"people_{suffix}", f"private_{suffix}"
    if request.param == "postgresql":
        try:
            conn = await asyncpg.connect(PG_URL, timeout=3)
        except (OSError, asyncpg.PostgresError) as exc:
            pytest.skip(f"PostgreSQL not reachable: {exc}")
        await conn.execute(f"CREATE TABLE {people} (id int primary key, name text, role text)")
        await conn.execute(f"CREATE TABLE {private} (id int, token text)")
        await conn.executemany(f"INSERT INTO {people} VALUES ($1, $2, $3)", PEOPLE)
        await conn.execute(f"INSERT INTO {private} VALUES (1, 'tok-private')")
        yield "postgresql", PG_URL, people, private
        await conn.execute(f"DROP TABLE IF EXISTS {people}")
        await conn.execute(f"DROP TABLE IF EXISTS {private}")
        await conn.close()
    else:
        path = tmp_path / "t.db"
        conn = sqlite3.connect(path)
        conn.execute(f"CREATE TABLE {people} (id int primary key, name text, role text)")
        conn.execute(f"CREATE TABLE {private} (id int, token text)")
        conn.executemany(f"INSERT INTO {people} VALUES (?, ?, ?)", PEOPLE)
        conn.execute(f"INSERT INTO {private} VALUES (1, 'tok-private')")
        conn.commit()
        conn.close()
        yield "sqlite", f"sqlite:///{path}", people, private


def make(url: str, **options: Any) -> SqlQuery:
    return SqlQuery({"databases": {"main": {"url": url, **options}}})


async def snapshot(tool: SqlQuery, people: str, private: str) -> Any:
    a = await tool.call({"query": f"SELECT id, name, role FROM {people} ORDER BY id"}, CTX)
    b = await tool.call({"query": f"SELECT id, token FROM {private} ORDER BY id"}, CTX)
    return a["rows"], b["rows"]


async def test_select_with_bound_params(db) -> None:
    _, url, people, _ = db
    tool = make(url)
    try:
        result = await tool.call(
            {
                "query": f"SELECT id, name FROM {people} WHERE role = :role ORDER BY id",
                "params": {"role": "user"},
            },
            CTX,
        )
        assert result == {
            "rows": [{"id": 1, "name": "alice"}, {"id": 2, "name": "bob"}],
            "rowcount": 2,
        }
        with pytest.raises(ToolFailure) as err:
            await tool.call({"query": f"SELECT * FROM {people} WHERE id = :id"}, CTX)
        assert err.value.type == "invalid_args" and "id" in err.value.message
    finally:
        await tool.aclose()


async def test_row_limit(db) -> None:
    _, url, people, _ = db
    tool = make(url, max_rows=2)
    try:
        result = await tool.call({"query": f"SELECT id FROM {people} ORDER BY id"}, CTX)
        assert result == {"rows": [{"id": 1}, {"id": 2}], "rowcount": 2, "truncated": True}
    finally:
        await tool.aclose()


async def test_read_only_by_default_and_writable_when_configured(db) -> None:
    _, url, people, _ = db
    ro, rw = make(url), make(url, read_only=False)
    try:
        with pytest.raises(ToolFailure) as err:
            await ro.call({"query": f"UPDATE {people} SET role = 'admin'"}, CTX)
        assert err.value.type == "sql.read_only"
        changed = await rw.call(
            {
                "query": f"UPDATE {people} SET role = :r WHERE id = :id",
                "params": {"r": "admin", "id": 1},
            },
            CTX,
        )
        assert changed == {"rows": [], "rowcount": 1}
        rows = await ro.call({"query": f"SELECT role FROM {people} WHERE id = 1"}, CTX)
        assert rows["rows"] == [{"role": "admin"}]
    finally:
        await ro.aclose()
        await rw.aclose()


async def test_statement_timeout(db) -> None:
    dialect, url, _, _ = db
    tool = make(url, statement_timeout="300ms")
    slow = (
        "SELECT pg_sleep(3)"
        if dialect == "postgresql"
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    try:
        with pytest.raises(ToolFailure) as err:
            await tool.call({"query": slow}, CTX)
        assert err.value.type == "timeout"
        # The connection is usable afterwards.
        assert (await tool.call({"query": "SELECT 1 AS one"}, CTX))["rows"] == [{"one": 1}]
    finally:
        await tool.aclose()


INJECTION_VALUES = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "alice' --",
    "alice'/*",
    "x'; DROP TABLE {people}; --",
    "x'; UPDATE {people} SET role='admin'; --",
    "' UNION SELECT id, token FROM {private} --",
    "' UNION ALL SELECT 1, token FROM {private} WHERE '1'='1",
    "1 OR 1=1",
    "alice\\' OR 1=1 --",
    "%' OR name LIKE '%",
    "$$ OR 1=1 $$",
    "'||(SELECT token FROM {private})||'",
    "alice'); DELETE FROM {people}; --",
    "\x00' OR 1=1 --",
    "' OR ''='",
    "admin'#",
    "') OR ('1'='1",
]

WRITE_QUERIES = [
    "DELETE FROM {people}",
    "UPDATE {people} SET role = 'admin'",
    "INSERT INTO {people} VALUES (9, 'mallory', 'admin')",
    "DROP TABLE {private}",
    "CREATE TABLE evil_{people} (x int)",
    "SELECT 1; DELETE FROM {people}",
    "SELECT * FROM {people}; DROP TABLE {private}",
    "WITH d AS (DELETE FROM {people} RETURNING *) SELECT * FROM d",
    "/* hi */ DELETE FROM {people}",
    "(SELECT 1); UPDATE {people} SET name = 'x'",
    "select 1 as a union all select 2; delete from {people}",
    "PRAGMA query_only = OFF",
    "ATTACH DATABASE 'evil.db' AS evil",
    "SET TRANSACTION READ WRITE",
    "COMMIT",
]


async def test_sql_injection_corpus_has_no_successes(db, runner_factory) -> None:
    dialect, url, people, private = db
    tool = make(url)
    successes: list[str] = []
    try:
        before = await snapshot(tool, people, private)
        for raw in INJECTION_VALUES:
            value = raw.format(people=people, private=private)
            try:
                result = await tool.call(
                    {
                        "query": f"SELECT id, name FROM {people} WHERE name = :name",
                        "params": {"name": value},
                    },
                    CTX,
                )
            except ToolFailure:
                continue  # refused: not a success
            if result["rows"]:
                successes.append(value)
        for raw in WRITE_QUERIES:
            query = raw.format(people=people, private=private)
            try:
                await tool.call({"query": query}, CTX)
            except ToolFailure:
                pass
            if await snapshot(tool, people, private) != before:
                successes.append(query)
                break
        assert await snapshot(tool, people, private) == before
    finally:
        await tool.aclose()
    # Through a workflow: the value comes from the input, the query text is constant.
    runner = await runner_factory({"tools": {"sql.query": {"databases": {"main": {"url": url}}}}})
    final, _ = await runner.run(
        "name: sqli\nnodes:\n  - id: q\n    tool:\n      name: sql.query\n      args:\n"
        f"        query: SELECT id FROM {people} WHERE name = :n\n"
        '        params: {n: "${{ input.name }}"}\n',
        {"name": "' OR '1'='1"},
    )
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert final.output == {"q": {"rows": [], "rowcount": 0}}
    print(
        f"SQL injection corpus ({dialect}): {len(successes)} successes of "
        f"{len(INJECTION_VALUES) + len(WRITE_QUERIES)}"
    )
    assert successes == []


async def test_password_from_the_secret_store() -> None:
    tool = make(PG_URL, password_secret="pg_password")
    try:
        with pytest.raises(ToolFailure, match="pg_password"):
            await tool.call({"query": "SELECT 1 AS one"}, CTX)
        ctx = CallContext(
            execution_id="ex",
            node_id="q",
            attempt=1,
            idempotency_key="ex/q",
            secrets={"pg_password": "s3cret-pw"},
        )
        try:
            result = await tool.call({"query": "SELECT current_user AS u"}, ctx)
        except ToolFailure as exc:  # PostgreSQL down: the secret was still used
            pytest.skip(f"PostgreSQL not reachable: {exc.message}")
        assert result["rows"] == [{"u": "postgres"}]
        assert tool._engines["main"].url.password == "s3cret-pw"
    finally:
        await tool.aclose()
