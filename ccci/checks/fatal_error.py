"""Fatal API error: the 400 "`thinking` or `redacted_thinking` blocks ... cannot be
modified" (Claude Code 2.1.197 renders it as ``● API Error: 400 messages.N.content.N: ...``).
It repeats every turn while the session lives: only a fresh session fixes it, never a
resume. The pattern lives in the backend's pattern data (state ``fatal_error``). The
message of ccci's that started the failed turn (a handoff ping, a ``ccci send``) is queued
again once, for the fresh session (issue 14).
"""
from __future__ import annotations

from ccci.checks import resubmit_interrupted, screen_finding
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Remedy

CHECK = "fatal_error"


@hookimpl
def ccci_check_agent(agent, analysis):
    return screen_finding(CHECK, agent, analysis, AgentState.FATAL_ERROR, "fatal API error on screen; a resume would repeat it")


@hookimpl
def ccci_choose_remedy(finding, agent, services, now):
    if finding.check != CHECK or agent is None:
        return None
    follow_up = resubmit_interrupted(agent, services, now, CHECK, otherwise=None)
    return Remedy("fresh", agent.name, finding, data={"follow_up": follow_up})
