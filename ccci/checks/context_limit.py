"""Context limit: ``Context limit reached · /compact or /clear to continue`` (Claude Code
2.1.197). Remedy: the backend's compact command once; if the limit shows again, a fresh
session.
"""
from __future__ import annotations

from ccci.checks import screen_finding
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Remedy

CHECK = "context_limit"


@hookimpl
def ccci_check_agent(agent, analysis):
    return screen_finding(CHECK, agent, analysis, AgentState.CONTEXT_LIMIT, "context window full")


@hookimpl
def ccci_choose_remedy(finding, agent):
    if finding.check != CHECK or agent is None:
        return None
    compacted = getattr(agent, "compacted_generation", None) == agent.generation
    if compacted or not agent.backend.compact_command:
        return Remedy("fresh", agent.name, finding)
    agent.compacted_generation = agent.generation
    return Remedy("send", agent.name, finding, text=agent.backend.compact_command, data={"now": True})
