"""Token usage and context use, as the agent CLIs record them: the shared types.

A backend reads its CLI's own records (:meth:`ccci.backends.base.Backend.read_usage`:
Claude Code's transcript, opencode's session data, Codex's rollout file) into a
:class:`UsageReading`; the builtin plugin :mod:`ccci.usage_watch` stores the totals with
``StateStore.set_usage`` and the context use in the fleet's named values
(:data:`CONTEXT_KEY`), which ``ccci status``, the metrics and the
``compact_before_limit`` check read.

Counters use the state store's names (:data:`ccci.state.USAGE_COUNTERS`):
``input_tokens`` (not read from a cache), ``output_tokens`` (reasoning included),
``cache_read_tokens``, ``cache_write_tokens``.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from ccci.state import USAGE_COUNTERS

#: the context windows shipped with ccci (model pattern -> tokens, with their sources)
WINDOWS_FILE = Path(__file__).resolve().parent / "data" / "context_windows.toml"
#: named value (``services.state``) holding an agent's newest context use, JSON
#: ``{"tokens": int, "window": int | null, "fraction": float | null, "model": str, "at": ISO-8601 UTC}``
CONTEXT_KEY = "usage.context.{agent}"


@dataclass
class UsageReading:
    """What a CLI's records say about one conversation.

    Attributes:
        totals: ``{(day, source, model): {counter: tokens}}``: absolute totals per UTC day
            (``YYYY-MM-DD``), source (a conversation id or session file name) and model,
            counters named as :data:`ccci.state.USAGE_COUNTERS`.
        context_tokens: tokens the conversation's newest model call used (its input,
            cache reads and writes and its output: what the next call starts from);
            ``None`` when unknown (no call yet, or just compacted).
        model: the model of the newest call (``""`` when unknown).
        window: the context window the CLI itself recorded (Codex), else ``None`` (the
            caller looks it up with :func:`context_window`).
    """

    totals: dict[tuple[str, str, str], dict[str, int]] = field(default_factory=dict)
    context_tokens: int | None = None
    model: str = ""
    window: int | None = None

    def add(self, day: str, source: str, model: str, counts: dict[str, int]) -> None:
        """Add ``counts`` (counters of :data:`USAGE_COUNTERS`) to the key's totals."""
        cur = self.totals.setdefault((day, source, model), dict.fromkeys(USAGE_COUNTERS, 0))
        for k in USAGE_COUNTERS:
            cur[k] += int(counts.get(k, 0) or 0)


def nonneg_int(v: Any) -> int:
    """``v`` as a token count: an ``int`` >= 0; ``0`` for ``None``, negatives and
    anything that is not a number (CLI records are read as they come)."""
    try:
        return max(0, int(v or 0))
    except (TypeError, ValueError):
        return 0


#: per-(day, model) sums a cursor keeps as it folds lines: ``{(day, model): {counter: tokens}}``
DaySums = dict[tuple[str, str], dict[str, int]]


def add_counts(sums: DaySums, day: str, model: str, counts: dict[str, int], sign: int = 1) -> None:
    """Add ``sign`` * ``counts`` to ``sums[(day, model)]`` (``sign=-1`` takes back a
    reading that a newer one of the same message replaces)."""
    cur = sums.setdefault((day, model), dict.fromkeys(counts, 0))
    for k, v in counts.items():
        cur[k] = cur.get(k, 0) + sign * v


def reading_of(rows: Iterable[tuple[str, str, dict[str, int]]], source: str, since_day: str | None = None, *,
               context_tokens: int | None = None, model: str = "", window: int | None = None) -> UsageReading:
    """A :class:`UsageReading` of ``rows`` (``(day, model, counts)``, several rows of
    one day and model are summed) stored under ``source``; only days ``>= since_day``
    (``YYYY-MM-DD``) when it is given."""
    out = UsageReading(context_tokens=context_tokens, model=model, window=window)
    for day, row_model, counts in rows:
        if since_day is None or day >= since_day:
            out.add(day, source, row_model, counts)
    return out


#: bytes a :class:`JsonlCursor` reads per call at most (a larger backlog takes several calls)
READ_MAX = 8 << 20


@dataclass
class JsonlCursor:
    """An incremental reader of one JSON-lines file that an agent CLI appends to (Claude
    Code's transcript, Codex's rollout file, Gemini CLI's session file): :meth:`read`
    hands each complete line appended since the last call to :meth:`fold_line` (a
    partial last line waits for its newline). A subclass adds its fields (all with
    defaults) and implements :meth:`fold_line` and :meth:`reading`.

    Attributes:
        path: the file.
        offset: bytes consumed (up to the last complete line).
        inode: the file's inode when it was last read (another one means it was replaced).
    """

    path: Path
    offset: int = 0
    inode: int = 0

    def read(self) -> bool:
        """Fold in the complete lines appended since the last call (at most
        :data:`READ_MAX` bytes).

        :returns: whether anything new was read. A file that shrank or was replaced
            (e.g. rewritten on resume) is read again from the start, every field back
            to its default.
        :raises OSError: when the file cannot be read.
        """
        st = self.path.stat()
        if st.st_ino != self.inode or st.st_size < self.offset:
            self.__init__(self.path)  # type: ignore[misc]
            self.inode = st.st_ino
        if st.st_size == self.offset:
            return False
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(READ_MAX)
        end = data.rfind(b"\n")
        if end < 0:
            return False
        for line in data[:end].splitlines():
            self.fold_line(line)
        self.offset += end + 1
        return True

    def read_all(self, source: str | None = None) -> UsageReading:
        """Read the whole file, then :meth:`reading` under ``source`` (default: the
        file's name without ``.jsonl``). :raises OSError: when it cannot be read."""
        while self.read():
            pass
        return self.reading(source or self.path.stem)

    def fold_line(self, line: bytes | str) -> None:
        """Fold one line (bad JSON and records of no interest are skipped)."""
        raise NotImplementedError

    def reading(self, source: str, since_day: str | None = None) -> UsageReading:
        """The totals so far (``since_day``: only days ``>=`` it)."""
        raise NotImplementedError


@lru_cache(maxsize=4)
def _shipped(path: str) -> tuple[tuple[str, int], ...]:
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    return tuple((str(k), int(v)) for k, v in (data.get("windows") or {}).items())


def shipped_windows() -> tuple[tuple[str, int], ...]:
    """``(pattern, tokens)`` pairs of :data:`WINDOWS_FILE`, in file order."""
    return _shipped(str(WINDOWS_FILE))


def context_window(model: str, overrides: dict[str, int] | None = None) -> int | None:
    """The context window (tokens) of ``model``: the first matching pattern of
    ``overrides`` (``[context_windows]`` in ccci.toml), then of :data:`WINDOWS_FILE`
    (case-insensitive; ``*`` matches any run of characters, everything else itself, so
    ``"*[1m]"`` means the suffix ``[1m]``); ``None`` when none matches or ``model`` is ``""``."""
    if not model:
        return None
    for pattern, tokens in [*(overrides or {}).items(), *shipped_windows()]:
        if _pattern(pattern).fullmatch(model):
            return int(tokens)
    return None


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> "re.Pattern[str]":
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.IGNORECASE)


def context_record(tokens: int | None, window: int | None, model: str, at: datetime) -> dict[str, Any]:
    """The JSON object stored under :data:`CONTEXT_KEY` (``fraction`` = tokens/window,
    rounded to 4 places; ``None`` when either is unknown)."""
    from ccci.clock import iso

    fraction = round(tokens / window, 4) if tokens is not None and window else None
    return {"tokens": tokens, "window": window, "fraction": fraction, "model": model, "at": iso(at)}


def read_context(kv: Any, agent: str) -> dict[str, Any] | None:
    """The newest context record of ``agent`` from the fleet's named values (``kv``:
    :class:`ccci.services.KeyValue` or the state store), ``None`` when none or unreadable."""
    raw = kv.get(CONTEXT_KEY.format(agent=agent))
    if not raw:
        return None
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def day_totals(rows: list[dict[str, Any]], agent: str, day: str) -> dict[str, int]:
    """``{"input", "output", "cache_read", "cache_write"}`` tokens of ``agent`` on
    ``day`` from :meth:`ccci.state.StateStore.usage_rows` rows (all models summed)."""
    out = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
    for r in rows:
        if r["agent"] == agent and r["day"] == day:
            for k in USAGE_COUNTERS:
                out[k.removesuffix("_tokens")] += int(r[k] or 0)
    return out


__all__ = ["CONTEXT_KEY", "DaySums", "JsonlCursor", "READ_MAX", "UsageReading", "add_counts", "nonneg_int",
           "reading_of", "WINDOWS_FILE", "context_record", "context_window", "day_totals",
           "read_context", "shipped_windows"]
