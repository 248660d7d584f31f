"""Workflow definitions in a SQL database: versions per (tenant, name), deleted softly."""

from __future__ import annotations

import time
from dataclasses import replace

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.base import StoreError, WorkflowRepository
from agentrun.storage.records import WorkflowRecord
from agentrun.storage.sqldb import SqlDatabase

__all__ = ["SqlWorkflows"]


class SqlWorkflows(WorkflowRepository):
    def __init__(self, database: SqlDatabase) -> None:
        self.database = database

    async def create_workflow(self, record: WorkflowRecord) -> WorkflowRecord:
        self.database.require_open()

        def insert(conn: sa.Connection) -> int:
            latest = conn.scalar(
                sa.select(sa.func.coalesce(sa.func.max(db.workflows.c.version), 0)).where(
                    db.workflows.c.tenant == record.tenant, db.workflows.c.name == record.name
                )
            )
            version = int(latest or 0) + 1
            conn.execute(
                db.workflows.insert().values(
                    tenant=record.tenant,
                    name=record.name,
                    version=version,
                    spec=record.spec,
                    description=record.description or "",
                    created_at=record.created_at,
                )
            )
            return version

        try:
            version = await self.database.retry_unique(insert)
        except sa.exc.IntegrityError:
            raise StoreError("could not assign a version: too much contention") from None
        return replace(record, version=version)

    async def get_workflow(
        self, tenant: str, name: str, version: int | None = None, *, include_deleted: bool = False
    ) -> WorkflowRecord | None:
        query = sa.select(db.workflows).where(
            db.workflows.c.tenant == tenant, db.workflows.c.name == name
        )
        if not include_deleted:
            query = query.where(db.workflows.c.deleted_at.is_(None))
        if version is None:
            query = query.order_by(db.workflows.c.version.desc()).limit(1)
        else:
            query = query.where(db.workflows.c.version == version)
        rows = await self.database.read(query)
        return db.workflow_record(rows[0]) if rows else None

    async def workflow_version(
        self, tenant: str, name: str, version: int | None = None
    ) -> int | None:
        """`Store.workflow_version`: the live version's number, one column read on the
        loop's thread where the dialect can (SQLite: ~27 µs of CPU, against ~700 µs for
        `get_workflow` of a 100-node spec through the read pool)."""
        self.database.require_open()
        if version is None:
            rows = await self.database.read_now(_NEWEST, {"tenant": tenant, "name": name})
        else:
            rows = await self.database.read_now(
                _LIVE, {"tenant": tenant, "name": name, "version": version}
            )
        return int(rows[0][0]) if rows else None

    async def list_workflows(
        self, tenant: str, *, limit: int, after_name: str | None = None
    ) -> list[WorkflowRecord]:
        latest = sa.select(
            db.workflows.c.name, sa.func.max(db.workflows.c.version).label("version")
        ).where(db.workflows.c.tenant == tenant, db.workflows.c.deleted_at.is_(None))
        if after_name is not None:
            latest = latest.where(db.workflows.c.name > after_name)
        latest = latest.group_by(db.workflows.c.name).order_by(db.workflows.c.name).limit(limit)
        sub = latest.subquery()
        query = (
            sa.select(db.workflows)
            .join(
                sub,
                sa.and_(
                    db.workflows.c.tenant == tenant,
                    db.workflows.c.name == sub.c.name,
                    db.workflows.c.version == sub.c.version,
                ),
            )
            .order_by(db.workflows.c.name)
        )
        return [db.workflow_record(row) for row in await self.database.read(query)]

    async def delete_workflow(self, tenant: str, name: str) -> bool:
        self.database.require_open()

        def delete(conn: sa.Connection) -> bool:
            # Soft: executions running a deleted workflow still find their version, and
            # version numbers keep growing if the name is used again.
            result = conn.execute(
                db.workflows.update()
                .where(
                    db.workflows.c.tenant == tenant,
                    db.workflows.c.name == name,
                    db.workflows.c.deleted_at.is_(None),
                )
                .values(deleted_at=time.time())
            )
            return result.rowcount > 0

        return await self.database.transaction(delete)


# Built once: their cache keys are computed once, not per read.
_LIVE_ROWS = sa.select(db.workflows.c.version).where(
    db.workflows.c.tenant == sa.bindparam("tenant"),
    db.workflows.c.name == sa.bindparam("name"),
    db.workflows.c.deleted_at.is_(None),
)
_NEWEST = _LIVE_ROWS.order_by(db.workflows.c.version.desc()).limit(1)
_LIVE = _LIVE_ROWS.where(db.workflows.c.version == sa.bindparam("version"))
