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

from ccci.usage import UsageReading

READ_MAX = 8 << 20  #: bytes read per call at most


def _int(v: Any) -> int:
    try:
        return max(0, int(v or 0))
    except (TypeError, ValueError):
        return 0


def counts_of(tokens: Any) -> dict[str, int]:
    """ccci counters of one Gemini CLI ``tokens`` object."""
    t = tokens if isinstance(tokens, dict) else {}
    cached = _int(t.get("cached"))
    return {"input_tokens": max(0, _int(t.get("input")) - cached) + _int(t.get("tool")),
            "output_tokens": _int(t.get("output")) + _int(t.get("thoughts")),
            "cache_read_tokens": cached, "cache_write_tokens": 0}


@dataclass
class SessionCursor:
    """An incremental reader of one session file (:meth:`read` folds the complete lines
    appended since the last call; a message seen again replaces its earlier reading)."""

    path: Path
    offset: int = 0
    inode: int = 0
    messages: dict[str, tuple[str, str, dict[str, int]]] = field(default_factory=dict)
    context_tokens: int | None = None
    model: str = ""

    def read(self) -> bool:
        """:returns: whether anything new was read (a replaced or shorter file, e.g.
        rewritten on resume, is read again from the start). :raises OSError: when the
        file cannot be read."""
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
        out = UsageReading(context_tokens=self.context_tokens, model=self.model)
        for day, model, counts in self.messages.values():
            if since_day is None or day >= since_day:
                out.add(day, source, model, counts)
        return out


def read_file(path: Path, source: str | None = None) -> UsageReading:
    """The whole session file at once. :raises OSError: when it cannot be read."""
    cur = SessionCursor(Path(path))
    while cur.read():
        pass
    return cur.reading(source or Path(path).stem)


__all__ = ["SessionCursor", "counts_of", "read_file"]
