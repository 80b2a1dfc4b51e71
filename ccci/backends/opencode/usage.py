"""Token usage and context use of an opencode session, from the server's session data.

opencode 1.18.33 (``GET /session/<id>/message``; a recorded answer is
``tests/golden/opencode-1.18.33/api/last_message_clean_turn.json``): an assistant message
is ``{"info": {"id", "role": "assistant", "modelID", "providerID", "time": {"created":
<epoch ms>, "completed"}, "tokens": {...}}, "parts": [...]}``. Each model call of the
turn (a *step*) ends with a ``"type": "step-finish"`` part carrying that call's
``tokens``: ``{"input", "output", "reasoning", "cache": {"read", "write"}}``;
``info.tokens`` is the newest step's only, so the totals sum the step-finish parts (each
counted once, by part id), and the context use is the newest step's input + output +
reasoning + cache read + cache write (opencode's own context figure).

Counters (:data:`ccci.state.USAGE_COUNTERS`): ``input_tokens`` = ``input`` (opencode
already leaves the cached tokens out of it), ``output_tokens`` = ``output`` +
``reasoning``, ``cache_read_tokens``, ``cache_write_tokens``. The model is
``<providerID>/<modelID>``; the day is the UTC day of the message's ``time.created``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ccci.usage import UsageReading, reading_of
from ccci.usage import nonneg_int as _int

#: messages asked for on a later read (an earlier read asked for all of them)
RECENT = 20
#: "all messages" on the first read (opencode's ``limit`` query parameter)
ALL = 1_000_000


def step_counts(tokens: Any) -> dict[str, int]:
    """ccci counters of one opencode ``tokens`` object."""
    t = tokens if isinstance(tokens, dict) else {}
    cache = t.get("cache") if isinstance(t.get("cache"), dict) else {}
    return {"input_tokens": _int(t.get("input")), "output_tokens": _int(t.get("output")) + _int(t.get("reasoning")),
            "cache_read_tokens": _int(cache.get("read")), "cache_write_tokens": _int(cache.get("write"))}


@dataclass
class SessionUsage:
    """What the messages of one session seen so far say (fold pages of ``/message``
    answers with :meth:`fold`; a message seen again replaces its earlier reading).

    Attributes:
        steps: step-finish part id -> ``(day, model, counts)``.
        message_ids: every message id seen (to tell whether a page of recent messages
            overlaps what was read before).
        context_tokens, model: of the newest step seen (messages are oldest first).
    """

    steps: dict[str, tuple[str, str, dict[str, int]]] = field(default_factory=dict)
    message_ids: set[str] = field(default_factory=set)
    context_tokens: int | None = None
    model: str = ""
    newest: tuple[float, str] = (0.0, "")

    def fold(self, messages: list[dict]) -> None:
        """Fold ``messages`` (oldest first, as the server returns them)."""
        for msg in messages or []:
            info = msg.get("info") if isinstance(msg, dict) else None
            if not isinstance(info, dict):
                continue
            mid = str(info.get("id") or "")
            if mid:
                self.message_ids.add(mid)
            if info.get("role") != "assistant":
                continue
            created = _int((info.get("time") or {}).get("created")) / 1000.0
            day = datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d") if created else ""
            model = "/".join(x for x in (str(info.get("providerID") or ""), str(info.get("modelID") or "")) if x)
            last = None
            for part in msg.get("parts") or []:
                if isinstance(part, dict) and part.get("type") == "step-finish":
                    counts = step_counts(part.get("tokens"))
                    self.steps[str(part.get("id") or f"{mid}:{len(self.steps)}")] = (day, model, counts)
                    last = counts
            if last is not None and (created, mid) >= self.newest:
                self.newest = (created, mid)
                self.context_tokens = sum(last.values())
                self.model = model

    def reading(self, source: str, since_day: str | None = None) -> UsageReading:
        return reading_of(self.steps.values(), source, since_day, context_tokens=self.context_tokens, model=self.model)


def read_session(client: Any, session_id: str, seen: SessionUsage) -> SessionUsage:
    """Fold the session's messages into ``seen``: its newest :data:`RECENT` messages, or
    all of them on the first read and whenever the recent page shares no message with
    what was read before (more than :data:`RECENT` new messages since).

    :raises ccci.backends.opencode.ServerError: when the server does not answer.
    """
    if seen.message_ids:
        page = client.messages(session_id, RECENT)
        ids = {str((m.get("info") or {}).get("id") or "") for m in page if isinstance(m, dict)}
        if ids & seen.message_ids or not page:
            seen.fold(page)
            return seen
    seen.fold(client.messages(session_id, ALL))
    return seen


__all__ = ["SessionUsage", "read_session", "step_counts"]
