"""Builtin health checks: one module per signal, each an ordinary plugin implementing
``ccci_check_agent`` or ``ccci_check_fleet`` (see :mod:`ccci.hookspecs`)."""
from __future__ import annotations

from typing import Any

from ccci.model import AgentState, Finding, ScreenAnalysis


def screen_finding(check: str, agent: Any, analysis: ScreenAnalysis, state: AgentState, summary: str,
                   **data: Any) -> Finding | None:
    """A finding when the backend read the screen as ``state``, with the matching line
    as evidence and the pattern rule's id in ``data["rule"]``; else ``None``."""
    if analysis.state != state:
        return None
    m = analysis.first(state)
    return Finding(check, agent.name, summary, evidence=m.line if m else "", data={"rule": m.rule if m else "", **data})
