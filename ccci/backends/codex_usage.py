"""Token usage and context use of a Codex CLI session, from its rollout file, read
incrementally by byte offset.

Codex CLI 0.171.0 appends to ``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl``
(recorded against ccci's model server: ``tests/golden/codex-0.171.0/rollout/usage_turns.jsonl``,
the usage the server sent beside it):

* ``{"type": "turn_context", "payload": {"model": ...}}`` at every turn: the model;
* ``{"type": "event_msg", "timestamp", "payload": {"type": "token_count", "info":
  {"total_token_usage": {...}, "last_token_usage": {...}, "model_context_window": N}}}``
  after each model call (``info`` is ``null`` before the first): usage objects
  ``{"input_tokens", "cached_input_tokens", "cache_write_input_tokens", "output_tokens",
  "reasoning_output_tokens", "total_tokens"}`` in OpenAI's sense (``input_tokens``
  includes the cached ones, ``output_tokens`` the reasoning ones). ``total_token_usage`` is the session's running
  total; the same total can be reported twice.

Each increase of the running total is counted once, on the UTC day of its event:
``input_tokens`` = input - cached - cache writes, ``cache_read_tokens`` = cached,
``cache_write_tokens`` = ``cache_write_input_tokens`` (taken to be inside ``input_tokens``
like the cached ones: not measured, the model server's Responses API has no cache
writes), ``output_tokens`` = output. Context use: ``last_token_usage.total_tokens``
of the newest event; the window is the ``model_context_window`` Codex recorded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccci.usage import DaySums, JsonlCursor, UsageReading, add_counts, reading_of
from ccci.usage import nonneg_int as _int


def _counts(u: Any) -> dict[str, int]:
    u = u if isinstance(u, dict) else {}
    cached, written = _int(u.get("cached_input_tokens")), _int(u.get("cache_write_input_tokens"))
    return {"input_tokens": max(0, _int(u.get("input_tokens")) - cached - written),
            "output_tokens": _int(u.get("output_tokens")), "cache_read_tokens": cached, "cache_write_tokens": written}


@dataclass
class RolloutCursor(JsonlCursor):
    """An incremental reader of one rollout file (:meth:`read` folds the complete lines
    appended since the last call; :class:`ccci.usage.JsonlCursor`)."""

    model: str = ""
    total: dict[str, int] = field(default_factory=dict)  #: the newest running total (ccci counters)
    days: DaySums = field(default_factory=dict)  #: (day, model) -> counts
    context_tokens: int | None = None
    window: int | None = None

    def fold_line(self, line: bytes | str) -> None:
        try:
            rec = json.loads(line)
        except ValueError:
            return
        if not isinstance(rec, dict) or not isinstance(rec.get("payload"), dict):
            return
        p = rec["payload"]
        if rec.get("type") == "turn_context" and p.get("model"):
            self.model = str(p["model"])
            return
        if rec.get("type") != "event_msg" or p.get("type") != "token_count" or not isinstance(p.get("info"), dict):
            return
        info = p["info"]
        total = _counts(info.get("total_token_usage"))
        prev = self.total or dict.fromkeys(total, 0)
        delta = {k: max(0, total[k] - prev.get(k, 0)) for k in total}
        self.total = {k: max(total[k], prev.get(k, 0)) for k in total}
        if any(delta.values()):
            add_counts(self.days, str(rec.get("timestamp") or "")[:10], self.model, delta)
        last = info.get("last_token_usage")
        if isinstance(last, dict):
            self.context_tokens = _int(last.get("total_tokens")) or None
        if info.get("model_context_window"):
            self.window = _int(info["model_context_window"]) or None

    def reading(self, source: str, since_day: str | None = None) -> UsageReading:
        return reading_of(((day, model, counts) for (day, model), counts in self.days.items()), source, since_day,
                          context_tokens=self.context_tokens, model=self.model, window=self.window)


def read_file(path: Path, source: str | None = None) -> UsageReading:
    """The whole rollout file at once. :raises OSError: when it cannot be read."""
    return RolloutCursor(Path(path)).read_all(source)


__all__ = ["RolloutCursor", "read_file"]
