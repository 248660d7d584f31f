"""For SQLite tests that count what the store's write connection runs."""

from __future__ import annotations

from agentrun.storage.sql import SqlStore
from agentrun.storage.sqldb_sqlite import SqliteDatabase


def statements(store: SqlStore, prefix: str) -> list[str]:
    """The statements starting with `prefix` that the store's write connection runs from now
    on, appended as they run (sqlite3's trace callback)."""
    database = store.database
    assert isinstance(database, SqliteDatabase) and database._sync_conn is not None
    driver = database._sync_conn.connection.driver_connection
    assert driver is not None
    seen: list[str] = []
    driver.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith(prefix) else None)
    return seen
