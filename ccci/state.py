"""Durable fleet state in SQLite (WAL mode), in ``<state_dir>/state.db``.

Tables: ``agents`` (tmux session, pane, pid, conversation id, counters), ``usage`` (token
totals per agent, UTC day, source and model, as the CLIs record them), ``restarts``
(history of every restart/resume), ``kv`` (handoff baselines, phase, misc), ``messages``
(the send queue, with delivery status) and ``events`` (append-only log).

SQLite (stdlib ``sqlite3``) is used because it is transactional: a ``kill -9`` of the
watcher between two statements of one transaction loses neither. All times stored are
UTC ISO-8601 strings. The state directory is created 0700 and the database 0600.

A full disk or a read-only state directory does not stop the watcher: when a write
fails with a storage error (SQLite ``FULL``, ``IOERR``, ``READONLY``, ``CANTOPEN``),
:class:`StateDB` copies the database into memory and goes on there, journalling every
write; :meth:`StateStore.try_flush` (the runner calls it every
:data:`ccci.supervisor.STATE_RETRY_S` seconds) replays the journal onto the disk in one
transaction once the disk accepts writes again. While it is in memory, other processes
(``ccci status``, ``ccci events``) see the database as it was when the writes failed.
A ``state.db`` deleted under a running watcher is written back from the open connection
(:meth:`StateDB.reattach_if_missing`, checked every tick).
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
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
CREATE TABLE IF NOT EXISTS usage (
    agent TEXT NOT NULL,
    day TEXT NOT NULL,
    source TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (agent, day, source, model)
);
"""

#: event kinds that do not become an agent's ``last_event`` (``ccci status``): a state
#: change per turn would hide what happened
QUIET_KINDS = frozenset({"state_changed"})

#: the token counters of a ``usage`` row, in the order the CLIs' usage fields name them
USAGE_COUNTERS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


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


#: SQLite primary result codes that mean "the disk does not take writes" (sqlite.org/rescode.html)
STORAGE_ERRORS = {8: "READONLY", 10: "IOERR", 13: "FULL", 14: "CANTOPEN"}
_READS = ("SELECT", "WITH", "EXPLAIN")


def is_storage_error(exc: BaseException) -> bool:
    """True for a SQLite error meaning the disk refuses writes (full, read-only, I/O)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in STORAGE_ERRORS
    text = str(exc).lower()
    return any(w in text for w in ("disk is full", "readonly", "disk i/o", "unable to open"))


class StateDB:
    """The store's connection: ``execute``/``executescript``/``close`` like
    :class:`sqlite3.Connection`, with the in-memory fallback described in the module doc.

    Attributes:
        error: the one-line storage error while in memory (``""`` on disk).
        failed_at: ``time.time()`` of the failure (``None`` on disk).
        journal: the writes made in memory, in order, as ``(sql, params)``.
        new_failure: set when the fallback starts; the runner reports and clears it.
    """

    def __init__(self, disk: sqlite3.Connection, path: Path) -> None:
        self.disk = disk
        self.path = path
        self.mem: sqlite3.Connection | None = None
        self.journal: list[tuple[str, Any]] = []
        self.error = ""
        self.failed_at: float | None = None
        self.new_failure = False
        st = os.stat(path)
        self._ident = (st.st_ino, st.st_dev)  # the file we have open (see reattach_if_missing)
        self._tx: list[tuple[str, Any]] | None = None  # writes of the open transaction (on disk)
        self._tx_mark: int | None = None  # journal length at BEGIN (in memory)

    @property
    def in_memory(self) -> bool:
        return self.mem is not None

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        write = verb not in _READS
        if self.mem is not None:
            cur = self.mem.execute(sql, params)
            self._journal(verb, sql, params)
            return cur
        try:
            cur = self.disk.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if not write or not is_storage_error(exc):
                raise
            self._fail_over(exc)
            cur = self.mem.execute(sql, params)  # type: ignore[union-attr]
            self._journal(verb, sql, params)
            return cur
        if verb == "BEGIN":
            self._tx = []
        elif verb in ("COMMIT", "END", "ROLLBACK"):
            self._tx = None
        elif write and self._tx is not None:
            self._tx.append((sql, params))
        return cur

    def executescript(self, script: str) -> None:
        (self.mem or self.disk).executescript(script)

    def close(self) -> None:
        if self.mem is not None:
            self.try_flush()
        if self.mem is not None:
            self.mem.close()
        self.disk.close()

    def _journal(self, verb: str, sql: str, params: Any) -> None:
        if verb == "BEGIN":
            self._tx_mark = len(self.journal)
        elif verb in ("COMMIT", "END"):
            self._tx_mark = None
        elif verb == "ROLLBACK":
            if self._tx_mark is not None:
                del self.journal[self._tx_mark:]
            self._tx_mark = None
        elif verb not in _READS:
            self.journal.append((sql, params))

    def _fail_over(self, exc: BaseException) -> None:
        pending, self._tx = self._tx, None
        if pending is not None:
            try:
                self.disk.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        mem = sqlite3.connect(":memory:", isolation_level=None)
        mem.row_factory = sqlite3.Row
        self.disk.backup(mem)  # reads only: works on a full or read-only disk
        self.mem, self.journal = mem, []
        self.error = f"{self.path}: {' '.join(str(exc).split())[:160]}"
        self.failed_at, self.new_failure = time.time(), True
        if pending is not None:  # the transaction that failed goes on in memory
            self.execute("BEGIN IMMEDIATE")
            for sql, params in pending:
                self.execute(sql, params)

    def reattach_if_missing(self) -> bool:
        """If ``state.db`` was deleted or replaced under us, write the open database
        back to its path (0600, atomically) and reopen it there.

        :returns: ``True`` when the file was restored.
        """
        if self.mem is not None or self.disk.in_transaction:
            return False
        try:
            st = os.stat(self.path)
            if (st.st_ino, st.st_dev) == self._ident:
                return False
        except FileNotFoundError:
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.restore")
        tmp.unlink(missing_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_RDWR, 0o600))
        copy = sqlite3.connect(str(tmp))
        try:
            self.disk.backup(copy)
        finally:
            copy.close()
        os.replace(tmp, self.path)
        for suffix in ("-wal", "-shm"):  # of a database someone created meanwhile
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.disk.close()
        self.disk = _open_disk(self.path)
        st = os.stat(self.path)
        self._ident = (st.st_ino, st.st_dev)
        return True

    def try_flush(self) -> int | None:
        """Write the in-memory journal to disk in one transaction and go back to disk.

        :returns: the number of writes saved, or ``None`` when still in memory (the
            disk still refuses, or a transaction is open) or when not in memory.
        """
        if self.mem is None or self.mem.in_transaction:
            return None
        try:
            self.disk.execute("BEGIN IMMEDIATE")
            for sql, params in self.journal:
                self.disk.execute(sql, params)
            self.disk.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self.disk.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self.error = f"{self.path}: {' '.join(str(exc).split())[:160]}"
            return None
        n = len(self.journal)
        self.mem.close()
        self.mem, self.journal, self.error, self.failed_at = None, [], "", None
        return n


def _open_disk(path: Path) -> sqlite3.Connection:
    old_umask = os.umask(0o077)  # the -wal and -shm files SQLite creates: 0600 too
    try:
        disk = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
        disk.row_factory = sqlite3.Row
        disk.execute("PRAGMA journal_mode=WAL")
        disk.execute("PRAGMA synchronous=NORMAL")
        disk.executescript(SCHEMA)
        return disk
    finally:
        os.umask(old_umask)


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
        self.db = StateDB(_open_disk(self.path), self.path)
        self._agent_writes = 0  # update_agent calls (agents_version)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ storage faults
    @property
    def in_memory(self) -> bool:
        """True while writes go to memory because the disk refused them."""
        return self.db.in_memory

    def try_flush(self) -> int | None:
        """See :meth:`StateDB.try_flush`."""
        return self.db.try_flush()

    # ------------------------------------------------------------------ transactions
    def transaction(self) -> "_Tx":
        """``with store.transaction(): ...`` runs statements atomically (BEGIN IMMEDIATE)."""
        return _Tx(self.db)

    # ------------------------------------------------------------------ agents
    def agent(self, name: str) -> AgentRecord:
        """The agent's record (a blank one when never seen)."""
        row = self.db.execute("SELECT * FROM agents WHERE name=?", (name,)).fetchone()
        return AgentRecord(name=name) if row is None else _agent_record(row)

    def agents(self) -> list[AgentRecord]:
        """Every agent's record, by name, from one query (the runner reads them every
        tick for the flags ``ccci stop``/``start`` set: one query per agent was 0.8 ms of
        a 50-agent tick and 3.4 ms of a 200-agent one in bench/)."""
        return [_agent_record(r) for r in self.db.execute("SELECT * FROM agents ORDER BY name")]

    def agents_version(self) -> tuple | None:
        """A token that changes whenever the ``agents`` table may have changed: another
        connection committed anything (SQLite's ``PRAGMA data_version``, which this
        connection's own commits do not move: a ``ccci stop``/``start`` from the CLI) or
        this store ran :meth:`update_agent`. ``None`` while the store is in memory (the
        fallback) or the pragma fails: then nothing is known, read the table. The
        runner reads :meth:`agents` only when it changed (bench/: 2 ms of a 200-agent
        tick)."""
        version = self.data_version()
        return None if version is None else (*version, self._agent_writes)

    def data_version(self) -> tuple | None:
        """A token that changes when another connection (another process: ``ccci
        send``, ``stop``, ``start``, ``job``) committed to the database: the database
        file's identity and SQLite's ``PRAGMA data_version``; this connection's own
        commits do not move it. ``None`` in memory (the fallback) or when the pragma
        fails. One query, ~10-30 us."""
        if self.db.in_memory:
            return None
        try:
            version = self.db.disk.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return None
        return (self.db._ident, version)

    def update_agent(self, name: str, **fields: Any) -> None:
        """Insert or update columns of ``agents`` for ``name``.

        :raises KeyError: for an unknown column.
        """
        self._agent_writes += 1
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

    # ------------------------------------------------------------------ token usage
    def set_usage(self, agent: str, day: str, source: str, model: str, counts: dict[str, int], at: datetime) -> None:
        """Record the token totals the CLI reports for ``agent`` on UTC ``day``
        (``YYYY-MM-DD``) from one ``source`` (a conversation id or session file) and one
        ``model``. The counts are absolute totals for that key, not increments, so
        reading the same transcript twice changes nothing.

        :param counts: any of :data:`USAGE_COUNTERS` (tokens); missing ones are 0.
        :raises KeyError: for a counter not in :data:`USAGE_COUNTERS`.
        """
        for k in counts:
            if k not in USAGE_COUNTERS:
                raise KeyError(k)
        vals = [int(counts.get(k, 0)) for k in USAGE_COUNTERS]
        self.db.execute(
            "INSERT INTO usage(agent, day, source, model, " + ", ".join(USAGE_COUNTERS) + ", updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(agent, day, source, model) DO UPDATE SET "
            + ", ".join(f"{k}=excluded.{k}" for k in USAGE_COUNTERS) + ", updated_at=excluded.updated_at",
            (agent, day, source, model, *vals, iso(at)))

    def usage_rows(self, agent: str | None = None, since_day: str | None = None) -> list[dict[str, Any]]:
        """Token totals per agent, UTC day and model, summed over sources: dicts with
        ``agent``, ``day``, ``model`` and the :data:`USAGE_COUNTERS` (tokens), oldest day first.

        :param since_day: only days ``>=`` this ``YYYY-MM-DD``.
        """
        where, params = [], []
        if agent is not None:
            where.append("agent=?")
            params.append(agent)
        if since_day is not None:
            where.append("day>=?")
            params.append(since_day)
        sql = ("SELECT agent, day, model, " + ", ".join(f"SUM({k}) AS {k}" for k in USAGE_COUNTERS)
               + " FROM usage" + (" WHERE " + " AND ".join(where) if where else "")
               + " GROUP BY agent, day, model ORDER BY day, agent, model")
        return [dict(r) for r in self.db.execute(sql, params).fetchall()]

    # ------------------------------------------------------------------ kv
    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return row["value"] if row else default

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO kv(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    def items(self, prefix: str) -> dict[str, str]:
        """Every ``kv`` entry whose key starts with ``prefix``."""
        rows = self.db.execute("SELECT key, value FROM kv WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)).fetchall()
        return {r["key"]: r["value"] for r in rows}

    def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` when it existed."""
        return self.db.execute("DELETE FROM kv WHERE key=?", (key,)).rowcount > 0

    def restart_count(self, name: str, kind: str) -> int:
        """How many (re)starts of ``kind`` the agent had (``restarts`` table)."""
        row = self.db.execute("SELECT COUNT(*) AS n FROM restarts WHERE agent=? AND kind=?", (name, kind)).fetchone()
        return int(row["n"])

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
        """Messages waiting to be typed (``queued``), oldest first."""
        return self._messages(("queued",), agent)

    def unfinished_messages(self, agent: str | None = None) -> list[Message]:
        """Messages not yet delivered or failed: ``queued`` and ``sending`` (typed into a
        pane, submission not yet verified), oldest first."""
        return self._messages(("queued", "sending"), agent)

    def _messages(self, statuses: tuple[str, ...], agent: str | None) -> list[Message]:
        q = f"SELECT * FROM messages WHERE status IN ({', '.join('?' * len(statuses))})"
        args: tuple = statuses
        if agent:
            q += " AND agent=?"
            args = (*statuses, agent)
        rows = self.db.execute(q + " ORDER BY id", args).fetchall()
        return [Message(r["id"], r["agent"], r["text"], r["status"], r["attempts"], parse_utc(r["queued_at"])) for r in rows]

    def dedup_keys(self, prefix: str) -> set[str]:
        """Every message dedup key starting with ``prefix`` (e.g. ``"ping:"``), any status."""
        rows = self.db.execute("SELECT dedup_key FROM messages WHERE substr(dedup_key, 1, ?) = ?",
                               (len(prefix), prefix)).fetchall()
        return {r["dedup_key"] for r in rows}

    def message(self, msg_id: int) -> dict[str, Any] | None:
        """One message row as a dict (``id``, ``agent``, ``text``, ``status``, ``detail``,
        ``attempts``, ``dedup_key``, ``queued_at``, ``done_at``), or ``None``."""
        row = self.db.execute("SELECT * FROM messages WHERE id=?", (msg_id,)).fetchone()
        return dict(row) if row else None

    def message_by_key(self, dedup_key: str) -> list[dict[str, Any]]:
        """The message rows with this dedup key (at most one while keys are unique)."""
        return [dict(r) for r in self.db.execute("SELECT * FROM messages WHERE dedup_key=?", (dedup_key,)).fetchall()]

    def sending_messages(self) -> list[dict[str, Any]]:
        """Messages left ``sending`` (typed, not verified): ``id``, ``agent``, ``text``, ``detail``."""
        return [dict(r) for r in self.db.execute("SELECT id, agent, text, detail FROM messages WHERE status='sending'")]

    def mark_sending(self, msg_id: int, detail: str) -> bool:
        """Claim a ``queued`` message for typing now; ``detail`` records where the pane
        log ended. Atomic: of several processes delivering (a watcher and concurrent
        ``ccci send``), exactly one gets ``True``; the others must not type it.

        :returns: ``False`` when the message was no longer ``queued``.
        """
        cur = self.db.execute("UPDATE messages SET status='sending', detail=? WHERE id=? AND status='queued'",
                              (detail, msg_id))
        return cur.rowcount == 1

    def requeue_message(self, msg_id: int, count_attempt: bool = False) -> None:
        """Back to ``queued`` (to be delivered on a later tick)."""
        self.db.execute("UPDATE messages SET status='queued', attempts=attempts+? WHERE id=?",
                        (1 if count_attempt else 0, msg_id))

    def fail_queued(self, key_prefix: str, detail: str, at: datetime) -> int:
        """Mark queued messages whose dedup key starts with ``key_prefix`` failed."""
        cur = self.db.execute(
            "UPDATE messages SET status='failed', detail=?, done_at=? "
            "WHERE status='queued' AND substr(dedup_key, 1, ?) = ?", (detail, iso(at), len(key_prefix), key_prefix))
        return cur.rowcount

    def event_counts(self) -> dict[str, int]:
        """``{kind: number of events}`` over the whole log."""
        return {r["kind"]: r["n"] for r in self.db.execute("SELECT kind, COUNT(*) AS n FROM events GROUP BY kind")}

    def finish_message(self, msg_id: int, status: str, detail: str, at: datetime, attempts: int) -> None:
        """Mark a message ``delivered`` or ``failed``."""
        self.db.execute(
            "UPDATE messages SET status=?, detail=?, done_at=?, attempts=? WHERE id=?",
            (status, detail, iso(at), attempts, msg_id),
        )

    def messages_for(self, agent: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` messages of ``agent``, newest first, as dicts."""
        rows = self.db.execute("SELECT * FROM messages WHERE agent=? ORDER BY id DESC LIMIT ?", (agent, limit)).fetchall()
        return [dict(r) for r in rows]

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
        if event.agent and event.kind not in QUIET_KINDS:
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

    def latest_events(self, agent: str, kinds: tuple[str, ...], limit: int = 5) -> list[dict[str, Any]]:
        """The newest ``limit`` events of ``agent`` whose kind is one of ``kinds``, oldest
        first, as dicts (``data`` parsed)."""
        marks = ",".join("?" * len(kinds))
        rows = self.db.execute(f"SELECT * FROM events WHERE agent=? AND kind IN ({marks}) ORDER BY id DESC LIMIT ?",
                               [agent, *kinds, limit]).fetchall()
        out = []
        for r in reversed(rows):
            d = dict(r)
            d["data"] = json.loads(d["data"] or "{}")
            out.append(d)
        return out

    def events_between(self, since: datetime, until: datetime | None = None,
                       kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Events with ``since <= at < until`` (UTC; ``until`` ``None``: no end), oldest
        first, as dicts (``data`` parsed); only ``kinds`` when given."""
        q, args = "SELECT * FROM events WHERE at>=?", [iso_ms(since)]
        if until is not None:
            q += " AND at<?"
            args.append(iso_ms(until))
        if kinds:
            q += f" AND kind IN ({','.join('?' * len(kinds))})"
            args.extend(kinds)
        return [self._event_dict(r) for r in self.db.execute(q + " ORDER BY id", args).fetchall()]

    def last_events_before(self, at: datetime, kind: str) -> dict[str, dict[str, Any]]:
        """``{agent: the newest event of kind`` ``kind`` ``of that agent before at (UTC)}``
        (e.g. each agent's state when a report's period begins)."""
        rows = self.db.execute(
            "SELECT e.* FROM events e JOIN (SELECT agent, MAX(id) AS id FROM events WHERE kind=? AND at<? "
            "AND agent IS NOT NULL GROUP BY agent) m ON e.id=m.id", (kind, iso_ms(at))).fetchall()
        return {r["agent"]: self._event_dict(r) for r in rows}

    def last_event_before(self, at: datetime, kinds: tuple[str, ...]) -> dict[str, Any] | None:
        """The newest event (any agent) whose kind is one of ``kinds`` before ``at`` (UTC), or ``None``."""
        row = self.db.execute(f"SELECT * FROM events WHERE at<? AND kind IN ({','.join('?' * len(kinds))}) "
                              "ORDER BY id DESC LIMIT 1", (iso_ms(at), *kinds)).fetchone()
        return self._event_dict(row) if row else None

    @staticmethod
    def _event_dict(r: sqlite3.Row) -> dict[str, Any]:
        d = dict(r)
        d["data"] = json.loads(d["data"] or "{}")
        return d

    def last_event_id(self) -> int:
        row = self.db.execute("SELECT MAX(id) AS m FROM events").fetchone()
        return int(row["m"] or 0)

    def iter_events(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        for e in self.events(limit=10**9):
            if kind is None or e["kind"] == kind:
                yield e


class _Tx:
    def __init__(self, db: StateDB) -> None:
        self.db = db

    def __enter__(self) -> StateDB:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


STATE_RETRY_S = 5.0  #: seconds between attempts to write an in-memory state database back to disk


class StorageMonitor:
    """Keeps the watcher's state database on disk: writes back a ``state.db`` deleted
    under the watcher (``state_restored``); reports a database that fell back to memory
    (``state_degraded``, once, also as one line on stderr) and every
    :data:`STATE_RETRY_S` seconds tries to write it back (``state_recovered``).

    :param store: the :class:`StateStore`.
    :param emit: ``emit(kind, message, **data)``.
    """

    def __init__(self, store: "StateStore", emit) -> None:
        self.store = store
        self.emit = emit
        self._retry_mono = 0.0  # no restore of a deleted state.db before this
        self._flush_mono = 0.0  # last attempt to write an in-memory state back

    def check(self, mono: float) -> None:
        """Run once per tick (``mono``: monotonic seconds)."""
        import sys
        import time

        db = getattr(self.store, "db", None)
        if db is not None and hasattr(db, "reattach_if_missing") and mono >= self._retry_mono:
            try:
                if db.reattach_if_missing():
                    msg = f"{db.path} was deleted or replaced under the watcher; written back from the open database"
                    sys.stderr.write(f"ccci: {msg}\n")
                    self.emit("state_restored", msg)
            except Exception as exc:  # noqa: BLE001 - retried after STATE_RETRY_S
                self._retry_mono = mono + STATE_RETRY_S
                self.emit("state_degraded", f"cannot restore {db.path}: {' '.join(str(exc).split())[:160]}")
        if not getattr(db, "in_memory", False):
            return
        if db.new_failure:
            db.new_failure = False
            self._flush_mono = mono
            msg = (f"cannot write the state database ({db.error}); supervising on with the state in memory, "
                   f"it is written back when the disk takes writes again")
            sys.stderr.write(f"ccci: {msg}\n")
            sys.stderr.flush()
            self.emit("state_degraded", msg, error=db.error)
            return
        if mono - self._flush_mono < STATE_RETRY_S:
            return
        self._flush_mono = mono
        since = db.failed_at
        saved = db.try_flush()
        if saved is not None:
            took = f" after {time.time() - since:.0f}s" if since else ""
            sys.stderr.write(f"ccci: state database writable again{took}; {saved} pending writes saved\n")
            sys.stderr.flush()
            self.emit("state_recovered", f"state database writable again{took}; {saved} pending writes saved",
                      writes=saved)


def _agent_record(row: Any) -> AgentRecord:
    """An :class:`AgentRecord` from a full ``agents`` row."""
    return AgentRecord(
        name=row["name"], session=row["session"], pane_id=row["pane_id"], pid=row["pid"],
        conversation_id=row["conversation_id"],
        started_at=parse_utc(row["started_at"]) if row["started_at"] else None,
        generation=row["generation"], restarts=row["restarts"], resumes=row["resumes"],
        state=row["state"], given_up=bool(row["given_up"]), stopped=bool(row["stopped"]),
        last_event=row["last_event"],
    )
