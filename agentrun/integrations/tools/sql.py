"""`sql.query`: one statement against a configured database, parameters bound, read-only by default.

Config (`tools: {sql.query: {databases: {NAME: {...}}}}`):
  url: postgresql://user@host/db | sqlite:///path/to.db     (required)
  read_only: true            # PostgreSQL: a READ ONLY transaction; SQLite: PRAGMA query_only
  statement_timeout: 5s      # PostgreSQL: SET LOCAL statement_timeout; SQLite: interrupted
  max_rows: 1000             # more rows are cut off and `truncated: true` is set
  password_secret: NAME      # the password from the secret store (not written in the URL)

Args: `{database, query, params}`. `query` is SQL with named placeholders (`:id`); `params`
binds their values. Values are never formatted into the text, and one call runs one statement.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # SQLAlchemy loads on first use: a process that never queries pays nothing
    import aiosqlite
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncEngine

from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure
from agentrun.integrations.util import parse_seconds


@dataclass(slots=True)
class Database:
    name: str
    url: sa.URL
    read_only: bool = True
    statement_timeout: float = 5.0
    max_rows: int = 1000
    password_secret: str | None = None

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()


def _database(name: str, raw: Mapping[str, Any]) -> Database:
    import sqlalchemy as sa

    unknown = set(raw) - {"url", "read_only", "statement_timeout", "max_rows", "password_secret"}
    if unknown:
        raise ValueError(
            f"tools.sql.query.databases.{name}: unknown keys {', '.join(sorted(unknown))}"
        )
    if not raw.get("url"):
        raise ValueError(f"tools.sql.query.databases.{name}: url is required")
    url = sa.make_url(str(raw["url"]))
    backend = url.get_backend_name()
    if backend == "postgresql":
        url = url.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(
            f"tools.sql.query.databases.{name}: only postgresql and sqlite are supported"
        )
    return Database(
        name=name,
        url=url,
        read_only=bool(raw.get("read_only", True)),
        statement_timeout=parse_seconds(raw.get("statement_timeout", 5)),
        max_rows=int(raw.get("max_rows", 1000)),
        password_secret=raw.get("password_secret"),
    )


class SqlQuery(Tool):
    name = "sql.query"
    description = (
        "Runs one SQL statement with named placeholders (:name) bound from `params` against a"
        " configured database; returns {rows, rowcount}."
    )
    args_schema = {
        "type": "object",
        "required": ["query"],
        "additionalProperties": False,
        "properties": {
            "database": {"type": "string"},
            "query": {"type": "string", "minLength": 1, "maxLength": 100_000},
            "params": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
            },
        },
    }
    result_schema = {
        "type": "object",
        "required": ["rows", "rowcount"],
        "properties": {
            "rows": {"type": "array"},
            "rowcount": {"type": "integer"},
            "truncated": {"type": "boolean"},
        },
    }
    effect = Effect.IDEMPOTENT

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        unknown = set(config) - {"databases"}
        if unknown:
            raise ValueError(f"tools.sql.query: unknown keys {', '.join(sorted(unknown))}")
        self.databases = {
            str(n): _database(str(n), d or {}) for n, d in (config.get("databases") or {}).items()
        }
        self._engines: dict[str, AsyncEngine] = {}

    def _pick(self, name: str | None) -> Database:
        if not self.databases:
            raise ToolFailure(
                "tool_error", "sql.query: no databases configured (tools.sql.query.databases)"
            )
        if name is None:
            if len(self.databases) == 1:
                return next(iter(self.databases.values()))
            raise ToolFailure(
                "invalid_args",
                "args.database: required when several databases are configured",
                details={"field": "args.database"},
            )
        db = self.databases.get(name)
        if db is None:
            known = ", ".join(sorted(self.databases)) or "none configured"
            raise ToolFailure(
                "invalid_args",
                f"args.database: unknown database {name!r} ({known})",
                details={"field": "args.database"},
            )
        return db

    def _engine(self, db: Database, ctx: CallContext) -> AsyncEngine:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = self._engines.get(db.name)
        if engine is None:
            url = db.url
            if db.password_secret:
                password = ctx.secrets.get(db.password_secret)
                if password is None:
                    raise ToolFailure("tool_error", f"secret {db.password_secret!r} is not set")
                url = url.set(password=password)
            engine = self._engines[db.name] = (
                create_async_engine(url, pool_size=4, max_overflow=4)
                if db.dialect == "postgresql"
                else create_async_engine(url)
            )
        return engine

    async def call(self, args: Any, ctx: CallContext) -> Any:
        import sqlalchemy as sa

        db = self._pick(args.get("database"))
        query = args["query"]
        params = dict(args.get("params") or {})
        engine = self._engine(db, ctx)
        try:
            stmt = sa.text(query)
            missing = set(stmt.compile().params) - set(params)
        except sa.exc.ArgumentError as exc:
            raise ToolFailure(
                "invalid_args", f"args.query: {exc}", details={"field": "args.query"}
            ) from None
        if missing:
            raise ToolFailure(
                "invalid_args",
                f"args.params: no value for {', '.join(sorted(missing))}",
                details={"field": "args.params"},
            )
        if db.read_only and _first_keyword(query) not in _READ_KEYWORDS:
            raise ToolFailure(
                "sql.read_only",
                f"database {db.name!r} is read-only: only queries may run",
                details={"database": db.name},
            )
        try:
            async with asyncio.timeout(db.statement_timeout + 1.0):
                return await self._run(engine, db, stmt, params)
        except TimeoutError:
            raise ToolFailure("timeout", f"statement exceeded {db.statement_timeout:g}s") from None
        except sa.exc.DBAPIError as exc:
            text = str(exc.orig) if exc.orig is not None else str(exc)
            if (
                "statement timeout" in text
                or "canceling statement" in text
                or "interrupted" in text
            ):
                raise ToolFailure(
                    "timeout", f"statement exceeded {db.statement_timeout:g}s"
                ) from None
            raise ToolFailure(
                "sql.error", _first_line(text), details={"database": db.name}
            ) from None
        except sa.exc.SQLAlchemyError as exc:
            raise ToolFailure(
                "sql.error", _first_line(str(exc)), details={"database": db.name}
            ) from None

    async def _run(
        self, engine: AsyncEngine, db: Database, stmt: Any, params: dict[str, Any]
    ) -> Any:
        async with engine.connect() as conn:
            if db.dialect == "postgresql":
                await conn.exec_driver_sql(
                    "SET TRANSACTION READ ONLY" if db.read_only else "SET TRANSACTION READ WRITE"
                )
                ms = max(1, int(db.statement_timeout * 1000))
                await conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
                result = await conn.execute(stmt, params)
                out = _collect(result, db.max_rows)
            else:
                await conn.exec_driver_sql(f"PRAGMA query_only = {'ON' if db.read_only else 'OFF'}")
                raw = await conn.get_raw_connection()
                # sqlite3's interrupt() is thread-safe: it stops the statement on the driver's thread.
                driver = cast("aiosqlite.Connection", raw.driver_connection)
                sqlite_conn = driver._conn
                timer = asyncio.get_running_loop().call_later(
                    db.statement_timeout, sqlite_conn.interrupt
                )
                try:
                    result = await conn.execute(stmt, params)
                    out = _collect(result, db.max_rows)
                finally:
                    timer.cancel()
            if db.read_only:
                await conn.rollback()
            else:
                await conn.commit()
            return out

    async def aclose(self) -> None:
        for engine in self._engines.values():
            await engine.dispose()
        self._engines.clear()


def _collect(result: Any, max_rows: int) -> dict[str, Any]:
    if not result.returns_rows:
        return {"rows": [], "rowcount": max(result.rowcount, 0)}
    keys = list(result.keys())
    rows = result.fetchmany(max_rows + 1)
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    out: dict[str, Any] = {
        "rows": [{k: _jsonable(v) for k, v in zip(keys, row, strict=True)} for row in rows],
        "rowcount": len(rows),
    }
    if truncated:
        out["truncated"] = True
    return out


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


_READ_KEYWORDS = frozenset({"select", "with", "values", "table", "explain", "show"})


def _first_keyword(query: str) -> str:
    """The first word of the statement, past whitespace, comments and opening parentheses."""
    text = query
    while True:
        text = text.lstrip().lstrip("(").lstrip()
        if text.startswith("--"):
            text = text.partition("\n")[2]
        elif text.startswith("/*"):
            text = text.partition("*/")[2]
        else:
            break
    word = ""
    for ch in text:
        if not (ch.isalpha() or ch == "_"):
            break
        word += ch
    return word.lower()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:500] if text.strip() else "database error"
