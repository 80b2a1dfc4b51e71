"""Usage-limit resets as Claude Code records them (structured), before any screen text.

Claude Code 2.1.332 writes the failed turn's assistant message to the session's
transcript ``$HOME/.claude/projects/<project>/<session id>.jsonl`` with the limit in
structured form (recorded against ccci's model server with a claude.ai login and the 429
+ unified rate-limit headers, ``tests/golden/claude-2.1.332-recorded/transcripts/``)::

    {"type": "assistant", "apiError": "usage_limit_reached",
     "apiErrorParams": {"rate_limit_info": {"status": "rejected", "resetsAt": 1796604279,
                                            "rateLimitType": "five_hour", ...}},
     "quotaLimits": {"status": "rejected", "resetsAt": 1796604279, ...},
     "message": {"content": [{"type": "text", "text": "You've hit your 5-hour limit · resets 12:44am (UTC)"}]}}

``resetsAt`` is unix seconds: the full reset instant, where the ``StopFailure`` hook's text
(and the screen) give only a clock time (``resets 12:44am (UTC)``). With an API key the
hook's text carries the instant itself (``Claude AI usage limit reached|<unix seconds>``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ccci.clock import UTC

TAIL_BYTES = 256 * 1024  #: bytes read from the end of a transcript at most


def transcript_path(home: Path, session_id: str) -> Path | None:
    """``home/.claude/projects/*/<session_id>.jsonl`` (the newest when several), or ``None``."""
    if not session_id or "/" in session_id or session_id.startswith("."):
        return None
    found = sorted(Path(home).glob(f".claude/projects/*/{session_id}.jsonl"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def reset_from_entry(entry: dict) -> datetime | None:
    """The reset (UTC) of one transcript entry: ``apiErrorParams.rate_limit_info.resetsAt``,
    else ``quotaLimits.resetsAt`` when its ``status`` is ``rejected``; ``None`` otherwise."""
    if not isinstance(entry, dict):
        return None
    params = entry.get("apiErrorParams")
    info = params.get("rate_limit_info") if isinstance(params, dict) else None
    candidates = [info] if isinstance(info, dict) else []
    quota = entry.get("quotaLimits")
    if isinstance(quota, dict) and quota.get("status") == "rejected":
        candidates.append(quota)
    for c in candidates:
        at = c.get("resetsAt")
        if isinstance(at, (int, float)) and 1e9 < at < 1e11:
            return datetime.fromtimestamp(float(at), UTC)
    return None


@dataclass(frozen=True)
class LastTurn:
    """What a transcript's tail says about the session's last turn (:func:`last_turn`).

    Attributes:
        ended: the turn's end is recorded: its newest main-chain ``user``/``assistant``
            entry is an answer with a final ``stop_reason`` (``end_turn``,
            ``stop_sequence``, ...; not ``tool_use``), or a ``system`` ``turn_duration``
            entry follows it (Claude Code 2.1.332 writes one at every turn's end,
            tests/golden/claude-2.1.332-recorded/transcripts/usage_turns.jsonl). The answer's
            entry carries the turn's final usage.
        reset: the reset (UTC) of the usage limit that ended the turn, else ``None``.
    """

    ended: bool = False
    reset: datetime | None = None


def last_turn(path: Path) -> LastTurn | None:
    """Read the last :data:`TAIL_BYTES` of a transcript for :class:`LastTurn`.

    The newest main-chain ``user`` or ``assistant`` entry decides: an ``assistant`` entry
    with a usage limit (:func:`reset_from_entry`) gives its reset; anything else (an
    answer, the ``continue`` typed after a limit; a subagent's ``isSidechain`` entry is
    skipped) has none, so an older limit entry (one already waited for) is never taken for
    a new one. ``system`` entries other than ``turn_duration`` (2.1.332 writes ``Usage limit
    reached · set to continue automatically at 12:44am`` after a limit) are skipped.
    :returns: ``None`` when the file is unreadable.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except OSError:
        return None
    turn_end_seen = False
    for raw in reversed(tail.splitlines()):
        if b'"assistant"' not in raw and b'"user"' not in raw and b"turn_duration" not in raw:
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            continue  # a partial line (the CLI is appending) or the tail's cut first line
        if not isinstance(entry, dict) or entry.get("isSidechain"):
            continue
        kind = entry.get("type")
        if kind == "system" and entry.get("subtype") == "turn_duration":
            turn_end_seen = True
        elif kind == "user":
            return LastTurn(ended=turn_end_seen)
        elif kind == "assistant":
            msg = entry.get("message")
            stop = msg.get("stop_reason") if isinstance(msg, dict) else None
            return LastTurn(ended=turn_end_seen or stop not in (None, "tool_use"), reset=reset_from_entry(entry))
    return LastTurn()


def last_turn_usage_reset(path: Path) -> datetime | None:
    """The reset (UTC) of the usage limit that ended the transcript's last turn
    (:func:`last_turn`), or ``None``."""
    turn = last_turn(path)
    return turn.reset if turn is not None else None


def transcript_usage_reset(home: Path, session_id: str) -> datetime | None:
    """:func:`last_turn_usage_reset` of the session's transcript under ``home``, or
    ``None`` (no transcript, its last turn did not end at a usage limit, unreadable)."""
    path = transcript_path(home, session_id)
    return last_turn_usage_reset(path) if path is not None else None
