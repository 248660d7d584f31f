"""open_store turns the URLs users write into an opened store."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentrun.storage.factory import DEFAULT_URL, ENV_VAR, open_store, resolve_url
from agentrun.storage.sql import SqlStore


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgres://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("postgresql+asyncpg://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("sqlite:///data/a.db", "sqlite+aiosqlite:///data/a.db"),
        (
            "sqlite:////abs/a.db?synchronous=NORMAL",
            "sqlite+aiosqlite:////abs/a.db?synchronous=NORMAL",
        ),
        ("memory", "memory"),
        ("", DEFAULT_URL),
    ],
)
def test_resolve_url(given: str, expected: str) -> None:
    assert resolve_url(given) == expected


def test_resolve_url_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "postgresql://db/app")
    assert resolve_url() == "postgresql+asyncpg://db/app"
    assert resolve_url("memory") == "memory"  # an explicit URL wins
    monkeypatch.delenv(ENV_VAR)
    assert resolve_url() == DEFAULT_URL


async def test_default_is_a_sqlite_file_under_dot_agentrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    store = await open_store()
    try:
        assert isinstance(store, SqlStore)
        assert await store.get_execution("x") is None
    finally:
        await store.close()
    assert (tmp_path / ".agentrun" / "agentrun.db").is_file()


async def test_plain_sqlite_url_with_synchronous_option(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/db/a.db?synchronous=normal")
    try:
        assert isinstance(store, SqlStore)
        async with store.database.connect() as conn:
            level = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        assert (level, mode) == (1, "wal")  # 1 = NORMAL
    finally:
        await store.close()


async def test_memory_store() -> None:
    memory = pytest.importorskip("agentrun.storage.memory")
    store = await open_store("memory")
    assert isinstance(store, memory.MemoryStore)
