"""Token usage and context use of a Gemini CLI session, from its session file, read
incrementally by byte offset.

Gemini CLI 0.61.0 (its ``ChatRecordingService``, bundle ``chunk-5FZXKDXH.js``) appends one
JSON object per line to ``$HOME/.gemini/tmp/<project>/chats/session-<time>-<id8>.jsonl``:
a header (``sessionId``, ``startTime``...), then every message each time it changes (the
same ``id`` again, the newest line wins), ``{"$set": {...}}`` metadata updates and
``{"$rewindTo": ...}``. A model answer is ``{"id", "timestamp", "type": "gemini", "model",
"tokens": {"input", "output", "cached", "thoughts", "tool", "total"}}`` where ``tokens``
are the API's ``usageMetadata`` (``promptTokenCount``, ``candidatesTokenCount``,
``cachedContentTokenCount``, ``thoughtsTokenCount``, ``toolUsePromptTokenCount``,
``totalTokenCount``). Recorded against ccci's model server:
``tests/golden/gemini-0.61.0/session/usage_turns.jsonl``.

Counters: ``input_tokens`` = input - cached + tool (Gemini counts cached tokens inside
the prompt), ``cache_read_tokens`` = cached, ``output_tokens`` = output + thoughts,
no cache writes. Context use: ``total`` of the newest answer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccci.usage import JsonlCursor, UsageReading, reading_of
from ccci.usage import nonneg_int as _int


def counts_of(tokens: Any) -> dict[str, int]:
    """ccci counters of one Gemini CLI ``tokens`` object."""
    t = tokens if isinstance(tokens, dict) else {}
    cached = _int(t.get("cached"))
    return {"input_tokens": max(0, _int(t.get("input")) - cached) + _int(t.get("tool")),
            "output_tokens": _int(t.get("output")) + _int(t.get("thoughts")),
            "cache_read_tokens": cached, "cache_write_tokens": 0}


@dataclass
class SessionCursor(JsonlCursor):
    """An incremental reader of one session file (:meth:`read` folds the complete lines
    appended since the last call, and reads a replaced or shorter file, e.g. rewritten
    on resume, again from the start: :class:`ccci.usage.JsonlCursor`; a message seen
    again replaces its earlier reading)."""

    messages: dict[str, tuple[str, str, dict[str, int]]] = field(default_factory=dict)
    context_tokens: int | None = None
    model: str = ""

    def fold_line(self, line: bytes | str) -> None:
        try:
            rec = json.loads(line)
        except ValueError:
            return
        if not isinstance(rec, dict) or rec.get("type") != "gemini" or not isinstance(rec.get("tokens"), dict):
            return
        mid = str(rec.get("id") or "")
        if not mid:
            return
        model = str(rec.get("model") or "")
        self.messages[mid] = (str(rec.get("timestamp") or "")[:10], model, counts_of(rec["tokens"]))
        self.context_tokens = _int(rec["tokens"].get("total")) or None
        self.model = model or self.model

    def reading(self, source: str, since_day: str | None = None) -> UsageReading:
        return reading_of(self.messages.values(), source, since_day,
                          context_tokens=self.context_tokens, model=self.model)


def read_file(path: Path, source: str | None = None) -> UsageReading:
    """The whole session file at once. :raises OSError: when it cannot be read."""
    return SessionCursor(Path(path)).read_all(source)


__all__ = ["SessionCursor", "counts_of", "read_file"]
