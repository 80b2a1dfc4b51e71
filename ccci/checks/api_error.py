"""API error left on screen after the CLI's own retries (Claude Code 2.1.197 retries a
429/529 ten times over about 200 s, then prints ``● API Error: ...``). Remedy: back off
``api_error_backoff`` seconds, then send ``continue``.
"""
from __future__ import annotations

from datetime import timedelta

from ccci.checks import screen_finding
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Remedy

CHECK = "api_error"
VERIFY_S = 20.0  #: checks stay paused this long after 'continue' (the turn it starts must answer first)


@hookimpl
def ccci_check_agent(agent, analysis):
    return screen_finding(CHECK, agent, analysis, AgentState.API_ERROR, "API error after the CLI's retries")


@hookimpl
def ccci_choose_remedy(finding, agent, settings, now):
    if finding.check != CHECK or agent is None:
        return None
    return Remedy("wait", agent.name, finding, not_before=now + timedelta(seconds=float(settings["api_error_backoff"])),
                  data={"then": "send", "text": "continue", "verify_s": VERIFY_S})
