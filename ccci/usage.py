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
from typing import Any

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


__all__ = ["CONTEXT_KEY", "UsageReading", "WINDOWS_FILE", "context_record", "context_window", "day_totals",
           "read_context", "shipped_windows"]
