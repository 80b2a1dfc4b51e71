"""Durable fleet state in SQLite (WAL mode), in ``<state_dir>/state.db``.

Tables: ``agents`` (tmux session, pane, pid, conversation id, counters), ``restarts``
(history of every restart/resume), ``kv`` (handoff baselines, phase, misc), ``messages``
(the send queue, with delivery status) and ``events`` (append-only log).

SQLite (stdlib ``sqlite3``) is used because it is transactional: a ``kill -9`` of the
watcher between two statements of one transaction loses neither. All times stored are
UTC ISO-8601 strings. The state directory is created 0700 and the database 0600.
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from ccci.clock import UTC, iso, iso_ms, parse_utc
from ccci.model import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    session TEXT NOT NULL DEFAULT '',
    pane_id TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    conversation_id TEXT NOT NULL DEFAULT '',
    started_at TEXT,
    generation INTEGER NOT NULL DEFAULT 0,
    restarts INTEGER NOT NULL DEFAULT 0,
    resumes INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'unknown',
    given_up INTEGER NOT NULL DEFAULT 0,
    stopped INTEGER NOT NULL DEFAULT 0,
    last_event TEXT NOT NULL DEFAULT '',
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS restarts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    text TEXT NOT NULL,
    dedup_key TEXT UNIQUE,
    queued_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    done_at TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    agent TEXT,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_agent ON events(agent, id);
"""


@dataclass
class AgentRecord:
    """A row of ``agents``; times are UTC."""

    name: str
    session: str = ""
    pane_id: str = ""
    pid: int | None = None
    conversation_id: str = ""
    started_at: datetime | None = None
    generation: int = 0
    restarts: int = 0
    resumes: int = 0
    state: str = "unknown"
    given_up: bool = False
    stopped: bool = False
    last_event: str = ""


@dataclass
class Message:
    """A row of ``messages`` (the send queue)."""

    id: int
    agent: str
    text: str
    status: str
    attempts: int
    queued_at: datetime


class StateStore:
    """Access to ``state.db``. One instance per process; not thread-safe.

    :param state_dir: the fleet's state directory (created 0700 if missing).
    :raises sqlite3.OperationalError: when the database cannot be opened.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.state_dir, 0o700)
        except OSError:
            pass
        self.path = self.state_dir / "state.db"
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
        old_umask = os.umask(0o077)  # the -wal and -shm files SQLite creates: 0600 too
        try:
            self.db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        finally:
            os.umask(old_umask)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ transactions
    def transaction(self) -> "_Tx":
        """``with store.transaction(): ...`` runs statements atomically (BEGIN IMMEDIATE)."""
        return _Tx(self.db)

    # ------------------------------------------------------------------ agents
    def agent(self, name: str) -> AgentRecord:
        """The agent's record (a blank one when never seen)."""
        row = self.db.execute("SELECT * FROM agents WHERE name=?", (name,)).fetchone()
        if row is None:
            return AgentRecord(name=name)
        return AgentRecord(
            name=row["name"], session=row["session"], pane_id=row["pane_id"], pid=row["pid"],
            conversation_id=row["conversation_id"],
            started_at=parse_utc(row["started_at"]) if row["started_at"] else None,
            generation=row["generation"], restarts=row["restarts"], resumes=row["resumes"],
            state=row["state"], given_up=bool(row["given_up"]), stopped=bool(row["stopped"]),
            last_event=row["last_event"],
        )

    def agents(self) -> list[AgentRecord]:
        return [self.agent(r["name"]) for r in self.db.execute("SELECT name FROM agents ORDER BY name")]

    def update_agent(self, name: str, **fields: Any) -> None:
        """Insert or update columns of ``agents`` for ``name``.

        :raises KeyError: for an unknown column.
        """
        allowed = set(AgentRecord.__dataclass_fields__) - {"name"}
        for k in fields:
            if k not in allowed:
                raise KeyError(k)
        vals = {k: (iso(v) if isinstance(v, datetime) else v) for k, v in fields.items()}
        vals["updated_at"] = iso(datetime.now(UTC))
        self.db.execute("INSERT OR IGNORE INTO agents(name) VALUES (?)", (name,))
        cols = ", ".join(f"{k}=?" for k in vals)
        self.db.execute(f"UPDATE agents SET {cols} WHERE name=?", (*vals.values(), name))

    def record_restart(self, name: str, kind: str, reason: str, at: datetime) -> None:
        """Append to ``restarts`` (kind: ``start`` | ``restart`` | ``resume`` | ``fresh``)."""
        self.db.execute("INSERT INTO restarts(agent, at, kind, reason) VALUES (?,?,?,?)", (name, iso(at), kind, reason))

    def restart_history(self, name: str, limit: int = 50) -> list[tuple[datetime, str, str]]:
        rows = self.db.execute(
            "SELECT at, kind, reason FROM restarts WHERE agent=? ORDER BY id DESC LIMIT ?", (name, limit)
        ).fetchall()
        return [(parse_utc(r["at"]), r["kind"], r["reason"]) for r in rows]

    # ------------------------------------------------------------------ kv
    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return row["value"] if row else default

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO kv(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    # ------------------------------------------------------------------ messages
    def queue_message(self, agent: str, text: str, at: datetime, dedup_key: str | None = None) -> int | None:
        """Queue ``text`` for ``agent``. With ``dedup_key``, a second queueing of the same
        key is ignored (returns ``None``): this is what makes a ping happen once.
        """
        cur = self.db.execute(
            "INSERT OR IGNORE INTO messages(agent, text, dedup_key, queued_at) VALUES (?,?,?,?)",
            (agent, text, dedup_key, iso(at)),
        )
        return cur.lastrowid if cur.rowcount else None

    def pending_messages(self, agent: str | None = None) -> list[Message]:
        q = "SELECT * FROM messages WHERE status='queued'"
        args: tuple = ()
        if agent:
            q += " AND agent=?"
            args = (agent,)
        rows = self.db.execute(q + " ORDER BY id", args).fetchall()
        return [Message(r["id"], r["agent"], r["text"], r["status"], r["attempts"], parse_utc(r["queued_at"])) for r in rows]

    def finish_message(self, msg_id: int, status: str, detail: str, at: datetime, attempts: int) -> None:
        """Mark a message ``delivered`` or ``failed``."""
        self.db.execute(
            "UPDATE messages SET status=?, detail=?, done_at=?, attempts=? WHERE id=?",
            (status, detail, iso(at), attempts, msg_id),
        )

    def messages(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM messages ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ events
    def append_event(self, event: Event) -> int:
        """Append to the event log; returns the event id."""
        at = event.at or datetime.now(UTC)
        cur = self.db.execute(
            "INSERT INTO events(at, agent, kind, message, data) VALUES (?,?,?,?,?)",
            (iso_ms(at), event.agent, event.kind, event.message, json.dumps(event.data, default=str)),
        )
        if event.agent:
            self.db.execute("UPDATE agents SET last_event=? WHERE name=?", (f"{event.kind}: {event.message}"[:200], event.agent))
        return int(cur.lastrowid)

    def events(self, after_id: int = 0, limit: int = 1000, agent: str | None = None) -> list[dict[str, Any]]:
        """Events with id > ``after_id``, oldest first, as dicts (``data`` parsed)."""
        q = "SELECT * FROM events WHERE id>?"
        args: list[Any] = [after_id]
        if agent:
            q += " AND agent=?"
            args.append(agent)
        q += " ORDER BY id LIMIT ?"
        args.append(limit)
        out = []
        for r in self.db.execute(q, args).fetchall():
            d = dict(r)
            d["data"] = json.loads(d["data"] or "{}")
            out.append(d)
        return out

    def last_event_id(self) -> int:
        row = self.db.execute("SELECT MAX(id) AS m FROM events").fetchone()
        return int(row["m"] or 0)

    def iter_events(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        for e in self.events(limit=10**9):
            if kind is None or e["kind"] == kind:
                yield e


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
