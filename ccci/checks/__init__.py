"""Builtin health checks: one module per signal, each an ordinary plugin implementing
``ccci_check_agent`` or ``ccci_check_fleet`` (see :mod:`ccci.hookspecs`)."""
from __future__ import annotations

import re
from typing import Any

from ccci.model import AgentState, Finding, ScreenAnalysis

#: a request is resubmitted once (its dedup key), and a resubmission never again
RESUBMIT_KEY = "resubmit:{id}"
#: how far back the message that started a failed turn may have been delivered (s)
RESUBMIT_WINDOW_S = 6 * 3600
#: what the input box's prompt marker and a collapsed paste look like at a turn's start
#: (Claude Code "❯ text" / "[Pasted text #1 +29 lines]", Codex "› text", Gemini " > text")
_TURN_MARK = re.compile(r"^[^\w\[]*")
_COLLAPSED = re.compile(r"^\[Pasted (?:text|Text|Content)\b")


def screen_finding(check: str, agent: Any, analysis: ScreenAnalysis, state: AgentState, summary: str,
                   **data: Any) -> Finding | None:
    """A finding when the backend read the screen as ``state``, with the matching line
    as evidence and the pattern rule's id in ``data["rule"]``; else ``None``.

    The finding is ``structured`` (no second tick of hysteresis) when a match for
    ``state`` came from the CLI's own structured report (:attr:`ccci.model.Match.structured`:
    a Claude Code hook payload merged into the reading); ``data["source"]`` is then
    ``"structured"``, else ``"screen"``."""
    if analysis.state != state:
        return None
    m = analysis.first(state)
    structured = any(x.structured for x in analysis.matches if x.state == state)
    return Finding(check, agent.name, summary, evidence=m.line if m else "", structured=structured,
                   data={"rule": m.rule if m else "", "source": "structured" if structured else "screen", **data})


def _norm(text: str) -> str:
    return " ".join(text.split())


def interrupted_request(agent: Any, services: Any, now: Any) -> dict[str, Any] | None:
    """The message ccci delivered that started the agent's current (failed) turn, or
    ``None`` when the turn was not started by one of ccci's messages (the agent's own loop,
    its initial prompt).

    The turn's first line is the newest block's (``analysis.block``: from the backend's
    ``block_start`` rule on); it is matched against the agent's delivered messages of the
    last :data:`RESUBMIT_WINDOW_S` seconds, newest first: the same text (whitespace
    folded, the screen may show only its start), or, for a paste the CLI collapsed to
    ``[Pasted text ...]``, the newest delivered message.

    :returns: a :meth:`ccci.services.Services.recent_messages` dict.
    """
    lines = [ln for ln in (agent.analysis.block or "").splitlines() if ln.strip()]
    if not lines:
        return None
    turn = _norm(_TURN_MARK.sub("", lines[0]))
    if not turn:
        return None
    from ccci.clock import parse_utc

    for m in services.recent_messages(agent.name, 20):
        if m["status"] != "delivered" or not m["done_at"]:
            continue
        if (now - parse_utc(m["done_at"])).total_seconds() > RESUBMIT_WINDOW_S:
            break
        text = _norm(m["text"])
        if _COLLAPSED.match(turn) or text.startswith(turn[:80]) or turn.startswith(text[:80]):
            return m
    return None


def resubmit_interrupted(agent: Any, services: Any, now: Any, cause: str, otherwise: str | None) -> str:
    """Queue again, once, the request a failed turn cut off (a context limit being
    compacted, a fatal error before a fresh session): the outbox types it when the agent
    is next ready for input, i.e. as soon as the compaction (or the new session's first
    turn) finished. A message that was itself a resubmission is not queued a third time.

    :param cause: the check that cut the turn off (for the event).
    :param otherwise: text to queue when no message of ccci's started the turn (e.g.
        "continue" after a compaction), or ``None`` for nothing.
    :returns: one line for the remedy's log: what was queued (a ``work_resubmitted``
        event says the same), or why nothing was.
    """
    m = interrupted_request(agent, services, now)
    if m is not None and not (m["dedup_key"] or "").startswith("resubmit:"):
        mid = services.queue_message(agent.name, m["text"], dedup_key=RESUBMIT_KEY.format(id=m["id"]))
        what = f"message {m['id']} queued again as {mid}" if mid is not None else f"message {m['id']} already queued again"
        if mid is not None:
            services.emit("work_resubmitted", f"after {cause}: the interrupted request (message {m['id']}) is sent "
                          f"again once: {m['text'][:80]!r}", agent=agent.name, cause=cause, message_id=m["id"],
                          resubmitted_id=mid, what="request")
        return what
    if otherwise is None:
        return "no request of ccci's to send again"
    key = f"resubmit:{agent.name}:{agent.generation}:{cause}"
    mid = services.queue_message(agent.name, otherwise, dedup_key=key)
    if mid is not None:
        services.emit("work_resubmitted", f"after {cause}: the agent is told to {otherwise!r} (its turn was not "
                      f"started by a message of ccci's)", agent=agent.name, cause=cause, resubmitted_id=mid,
                      what="continue")
    return f"{otherwise!r} queued" if mid is not None else f"{otherwise!r} already queued"
