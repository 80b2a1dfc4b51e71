"""Usage limit: the plan's usage limit is reached. Never restart (it cannot help): wait
until the reset time the screen gives (Claude Code 2.1.197: ``Claude AI usage limit
reached|<unix seconds>``), then send ``continue``; if the limit shows again, wait again.
Without a reset time on screen, wait ``api_error_backoff`` seconds.
"""
from __future__ import annotations

from datetime import timedelta

from ccci.clock import iso
from ccci.checks import screen_finding
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Remedy

CHECK = "usage_limit"
RESET_SLACK_S = 5  # resume a little after the announced reset


@hookimpl
def ccci_check_agent(agent, analysis):
    return screen_finding(CHECK, agent, analysis, AgentState.USAGE_LIMIT,
                          f"usage limit reached; resets {iso(analysis.reset_at) or 'at an unknown time'}",
                          reset_at=iso(analysis.reset_at))


@hookimpl
def ccci_choose_remedy(finding, agent, settings, now):
    if finding.check != CHECK or agent is None:
        return None
    from ccci.clock import parse_utc

    reset = finding.data.get("reset_at")
    at = parse_utc(reset) + timedelta(seconds=RESET_SLACK_S) if reset else now + timedelta(seconds=float(settings["api_error_backoff"]))
    if at <= now:
        at = now + timedelta(seconds=RESET_SLACK_S)
    return Remedy("wait", agent.name, finding, not_before=at,
                  data={"then": "send", "text": "continue"})
