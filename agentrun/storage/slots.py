"""Scheduler slots shared by the replicas of one PostgreSQL database.

Every call that waits for a slot, or holds one, is a row of `slot_tickets`, under the
replica (one scheduler of one process) that asked; `slot_replicas` holds each replica's
lease. A *round* is one transaction that locks the single `slot_state` row (so rounds run
one at a time across the fleet), applies the replica's new and finished tickets, counts the
granted rows, reads the first waiting rows of every lane (tenant, target), lets the
caller's `Dispatcher` decide (the same round robin and priorities as one process's
scheduler), marks its grants and tells the replicas that got some (`pg_notify`, kind
`slots`). A replica that stops renewing its lease loses its rows to the next renewal of
another: the slots of a killed replica come back within its lease and a third of it.

The store knows no scheduler: the decision is the caller's; this module only keeps the
rows. Times are the database's clock, so replicas with skewed clocks share one bucket.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.notifications import CHANNEL, chunks
from agentrun.storage.slot_rows import (
    Decision,
    Dispatcher,
    FleetView,
    RoundResult,
    SlotRow,
)
from agentrun.storage.sqldb import SqlDatabase

__all__ = ["Decision", "Dispatcher", "FleetView", "RoundResult", "SlotRow", "SlotTable"]

_t = db.slot_tickets

# The first waiting rows of every lane (tenant, target), found with a loose index scan:
# one index probe per lane, however many rows wait behind them.
_CANDIDATES = sa.text(
    """
    WITH RECURSIVE lanes(tenant, target) AS (
        (SELECT tenant, target FROM slot_tickets WHERE granted = false ORDER BY tenant, target LIMIT 1)
        UNION ALL
        SELECT nxt.tenant, nxt.target FROM lanes l CROSS JOIN LATERAL (
            SELECT t.tenant, t.target FROM slot_tickets t
            WHERE t.granted = false AND (t.tenant, t.target) > (l.tenant, l.target)
            ORDER BY t.tenant, t.target LIMIT 1
        ) nxt
    )
    SELECT c.replica, c.n, c.tenant, c.workflow, c.target, c.bucket, c.exec_rank, c.node_rank,
           c.seq, c.throttled
    FROM lanes l CROSS JOIN LATERAL (
        SELECT * FROM slot_tickets t
        WHERE t.granted = false AND t.tenant = l.tenant AND t.target = l.target
        ORDER BY t.exec_rank, t.node_rank, t.seq LIMIT :depth
    ) c
    """
)


# Sets of rows travel as arrays: one statement, one bind parameter per column.
_INSERT_COLUMNS = {
    "replica": "text",
    "n": "bigint",
    "tenant": "text",
    "workflow": "text",
    "target": "text",
    "bucket": "text",
    "exec_rank": "integer",
    "node_rank": "integer",
    "seq": "bigint",
    "granted": "boolean",
    "throttled": "boolean",
}
# (Array parameters are named a_COLUMN: the insert shares its statement with other parts.)
_INSERT_SQL = (
    "INSERT INTO slot_tickets ("
    + ", ".join(_INSERT_COLUMNS)
    + ", news) SELECT *, false FROM unnest("
    + ", ".join(f"CAST(:a_{name} AS {kind}[])" for name, kind in _INSERT_COLUMNS.items())
    + ") ON CONFLICT (replica, n) DO NOTHING"
)
_INSERT = sa.text(_INSERT_SQL)
# The first statement of every transaction here. Its commit need not wait for the disk
# (synchronous_commit off, for this transaction only): the rows are how the fleet counts
# running calls, not a record; a database crash loses at most its last fraction of a second
# of them, as it ends every replica's session anyway. That wait was most of a round's time.
_LOCK = sa.text(
    "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS float8), cursor, next_seq,"
    " set_config('synchronous_commit', 'off', true) FROM slot_state WHERE id = 1 FOR UPDATE"
)


class SlotTable:
    """The shared slot rows of one PostgreSQL database (see the module docstring)."""

    def __init__(self, database: SqlDatabase) -> None:
        if database.sqlite:
            raise ValueError("shared scheduler slots need PostgreSQL")
        self.database = database

    async def round(
        self,
        replica: str,
        *,
        adds: Sequence[SlotRow],
        removes: Sequence[int],
        dispatcher: Dispatcher,
        news: bool = False,
        resync: bool = False,
    ) -> RoundResult:
        """One round for `replica`: its new rows (`adds`) and finished ones (`removes`), then
        a decision for the whole fleet. Grants of other replicas' rows reach them in the
        notification; `news` also reads this replica's rows granted by others since it last
        looked (a notification may be lost), and `resync` (after a round whose outcome the
        replica did not learn) all its granted rows."""
        return await self.database.transaction(
            lambda conn: self._round(conn, replica, adds, removes, dispatcher, news, resync)
        )

    def _round(
        self,
        conn: sa.Connection,
        replica: str,
        adds: Sequence[SlotRow],
        removes: Sequence[int],
        dispatcher: Dispatcher,
        news: bool,
        resync: bool,
    ) -> RoundResult:
        now, cursor, seq = _lock(conn)
        running, next_seq = _apply_and_count(conn, replica, adds, removes, seq)
        result = RoundResult()
        if news:
            result.granted.extend(
                (int(n), bool(throttled))
                for n, throttled in conn.execute(
                    _t.update()
                    .where(_t.c.replica == replica, _t.c.news == sa.true())
                    .values(news=False)
                    .returning(_t.c.n, _t.c.throttled)
                )
            )
        if resync:
            result.granted.extend(
                (int(n), bool(throttled))
                for n, throttled in conn.execute(
                    sa.select(_t.c.n, _t.c.throttled).where(
                        _t.c.replica == replica, _t.c.granted == sa.true()
                    )
                )
            )
        depth = dispatcher.lane_depth(running)
        candidates: list[SlotRow] = []
        buckets: dict[str, tuple[float, float]] = {}
        if depth > 0:
            candidates = [
                SlotRow(
                    replica=r,
                    n=int(n),
                    tenant=tn,
                    workflow=w,
                    target=tg,
                    bucket=b,
                    exec_rank=er,
                    node_rank=nr,
                    seq=int(s),
                    throttled=bool(th),
                )
                for r, n, tn, w, tg, b, er, nr, s, th in conn.execute(_CANDIDATES, {"depth": depth})
            ]
            names = sorted({c.bucket for c in candidates if c.bucket})
            if names:
                b = db.slot_buckets
                buckets = {
                    name: (float(tokens), float(updated))
                    for name, tokens, updated in conn.execute(
                        sa.select(b.c.name, b.c.tokens, b.c.updated_at).where(b.c.name.in_(names))
                    )
                }
        decision = dispatcher.decide(FleetView(now, cursor, running, candidates, buckets))
        result.wake_in, result.more = decision.wake_in, decision.more
        result.granted.extend((g.n, g.throttled) for g in decision.grants if g.replica == replica)
        state = (
            (decision.cursor, next_seq) if (decision.cursor, next_seq) != (cursor, seq) else None
        )
        _write_decision(conn, replica, decision, state)
        return result

    async def renew(self, replica: str, *, ttl: float, held: Callable[[], list[SlotRow]]) -> int:
        """Renews `replica`'s lease (writing its rows back if they were taken) and takes
        back the rows of replicas whose lease expired; returns how many it took back (the
        replicas waiting are told their slots may have come free)."""
        return await self.database.transaction(
            lambda conn: self._renew_and_reap(conn, replica, ttl, held), leases=True
        )

    def _renew_and_reap(
        self, conn: sa.Connection, replica: str, ttl: float, held: Callable[[], list[SlotRow]]
    ) -> int:
        now, _cursor, next_seq = _lock(conn)
        if not _renew(conn, replica, now + ttl):
            next_seq = _insert(conn, held(), next_seq)
            s = db.slot_state
            conn.execute(s.update().where(s.c.id == 1).values(next_seq=next_seq))
        r = db.slot_replicas
        conn.execute(r.delete().where(r.c.expires_at < now))
        live = sa.select(r.c.replica)
        taken = conn.execute(_t.delete().where(_t.c.replica.not_in(live))).rowcount or 0
        if taken:
            _notify(conn, ["*"])
        return taken

    async def leave(self, replica: str) -> None:
        """Gives back every row of `replica` (a replica that stops)."""

        def work(conn: sa.Connection) -> None:
            _lock(conn)
            conn.execute(_t.delete().where(_t.c.replica == replica))
            conn.execute(db.slot_replicas.delete().where(db.slot_replicas.c.replica == replica))
            _notify(conn, ["*"])

        await self.database.transaction(work, leases=True)


def _lock(conn: sa.Connection) -> tuple[float, str, int]:
    """Locks the state row (rounds, renewals and departures run one at a time); the
    database's time, the turn cursor and the next arrival number."""
    row = conn.execute(_LOCK).one()
    return float(row[0]), row[1], int(row[2])


def _renew(conn: sa.Connection, replica: str, expires_at: float) -> bool:
    """Extends the replica's lease; False when it had none (new, or taken back): then it
    is granted one here, and its rows must be written again."""
    r = db.slot_replicas
    if conn.execute(
        r.update().where(r.c.replica == replica).values(expires_at=expires_at)
    ).rowcount:
        return True
    conn.execute(r.insert().values(replica=replica, expires_at=expires_at))
    return False


def _insert(conn: sa.Connection, rows: Sequence[SlotRow], next_seq: int) -> int:
    """Writes `rows` in one statement (arrays, however many rows), numbered in arrival order."""
    if not rows:
        return next_seq
    columns, next_seq = _insert_params(rows, next_seq)
    conn.execute(_INSERT, columns)
    return next_seq


def _insert_params(rows: Sequence[SlotRow], next_seq: int) -> tuple[dict[str, list[object]], int]:
    columns: dict[str, list[object]] = {f"a_{name}": [] for name in _INSERT_COLUMNS}
    for row in rows:
        next_seq += 1
        row.seq = next_seq
        for name in _INSERT_COLUMNS:
            columns[f"a_{name}"].append(getattr(row, name))
    return columns, next_seq


def _by_replica(rows: Sequence[SlotRow]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for row in rows:
        grouped.setdefault(row.replica, []).append(row.n)
    return grouped


def _apply_and_count(
    conn: sa.Connection,
    replica: str,
    adds: Sequence[SlotRow],
    removes: Sequence[int],
    next_seq: int,
) -> tuple[list[tuple[str, str, str, int]], int]:
    """One statement: deletes `removes`, inserts `adds`, and counts the granted rows by
    tenant, workflow and target (its snapshot predates its own changes, so the granted rows
    it deleted are counted apart and taken off)."""
    ctes: list[str] = []
    params: dict[str, object] = {"replica": replica}
    if removes:
        ctes.append(
            "d AS (DELETE FROM slot_tickets WHERE replica = :replica AND n = ANY(CAST(:ns AS bigint[]))"
            " RETURNING tenant, workflow, target, granted)"
        )
        params["ns"] = list(removes)
    if adds:
        columns, next_seq = _insert_params(adds, next_seq)
        ctes.append(f"i AS ({_INSERT_SQL} RETURNING 1)")
        params.update(columns)
    sql = ("WITH " + ", ".join(ctes) + " " if ctes else "") + (
        "SELECT tenant, workflow, target, count(*), 0 FROM slot_tickets WHERE granted GROUP BY tenant, workflow, target"
    )
    if removes:
        sql += " UNION ALL SELECT tenant, workflow, target, 0, count(*) FROM d WHERE granted GROUP BY tenant, workflow, target"
    counts: dict[tuple[str, str, str], int] = {}
    for tenant, workflow, target, count, gone in conn.execute(sa.text(sql), params):
        key = (tenant, workflow, target)
        counts[key] = counts.get(key, 0) + int(count) - int(gone)
    return [(*key, count) for key, count in counts.items() if count > 0], next_seq


def _write_decision(
    conn: sa.Connection, replica: str, decision: Decision, state: tuple[str, int] | None
) -> None:
    """One statement: the grants (news for other replicas' rows), the rows a bucket held
    back, the buckets, the turn cursor and arrival number, and the notifications."""
    ctes: list[str] = []
    params: dict[str, object] = {}
    for i, (owner, ns) in enumerate(_by_replica(decision.grants).items()):
        ctes.append(
            f"g{i} AS (UPDATE slot_tickets SET granted = true, news = :gn{i}"
            f" WHERE replica = :gr{i} AND n = ANY(CAST(:gs{i} AS bigint[])))"
        )
        params.update({f"gn{i}": owner != replica, f"gr{i}": owner, f"gs{i}": ns})
    for i, (owner, ns) in enumerate(_by_replica(decision.throttled).items()):
        ctes.append(
            f"t{i} AS (UPDATE slot_tickets SET throttled = true"
            f" WHERE replica = :tr{i} AND n = ANY(CAST(:ts{i} AS bigint[])))"
        )
        params.update({f"tr{i}": owner, f"ts{i}": ns})
    if decision.buckets:
        names = sorted(decision.buckets)
        ctes.append(
            "b AS (INSERT INTO slot_buckets (name, tokens, updated_at) SELECT * FROM unnest("
            "CAST(:bn AS text[]), CAST(:bt AS float8[]), CAST(:bu AS float8[]))"
            " ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at)"
        )
        params.update(
            {
                "bn": names,
                "bt": [decision.buckets[n][0] for n in names],
                "bu": [decision.buckets[n][1] for n in names],
            }
        )
    if state is not None:
        ctes.append(
            "s AS (UPDATE slot_state SET cursor = :cursor, next_seq = :next_seq WHERE id = 1)"
        )
        params.update({"cursor": state[0], "next_seq": state[1]})
    others: dict[str, list[str]] = {}
    for g in decision.grants:
        if g.replica != replica:
            others.setdefault(g.replica, []).append(f"{g.n}t" if g.throttled else str(g.n))
    payloads = _payloads(["/".join([name, *ns]) for name, ns in sorted(others.items())])
    if not ctes and not payloads:
        return
    params["channel"] = CHANNEL
    params.update({f"p{i}": payload for i, payload in enumerate(payloads)})
    select = ", ".join(f"pg_notify(:channel, :p{i})" for i in range(len(payloads))) or "1"
    conn.execute(
        sa.text(("WITH " + ", ".join(ctes) + " " if ctes else "") + "SELECT " + select), params
    )


def _payloads(items: list[str]) -> list[str]:
    """`slots:ITEM,ITEM,...` chunked under NOTIFY's 8000-byte payload limit."""
    return ["slots:" + chunk for chunk in chunks(items)]


def _notify(conn: sa.Connection, items: list[str]) -> None:
    """`slots:A/12/13t,B/4`: rows 12 and 13 of replica A (13 held back by a bucket before)
    and row 4 of B are granted; `slots:*`: slots came free, every replica with waiting rows
    should look."""
    for payload in _payloads(items):
        conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))
