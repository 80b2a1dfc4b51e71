"""Context limit: ``Context limit reached · /compact or /clear to continue`` (Claude Code
2.1.197). Remedy: the backend's compact command once per session (the generation it was
sent in is kept in the plugin's stash, so a watcher restart does not compact twice); if
the limit shows again, or is still there :data:`COMPACT_WAIT_S` after the command, a
fresh session.
"""
from __future__ import annotations

from ccci.checks import screen_finding
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Remedy
from ccci.stash import StashKey

CHECK = "context_limit"
COMPACT_WAIT_S = 60.0  #: s the compact command gets before the runner acts on the same screen again
COMPACTED = StashKey[int]("compacted_generation", persist=True)  #: generation /compact was sent in


@hookimpl
def ccci_check_agent(agent, analysis):
    return screen_finding(CHECK, agent, analysis, AgentState.CONTEXT_LIMIT, "context window full")


@hookimpl
def ccci_choose_remedy(finding, agent, stash):
    if finding.check != CHECK or agent is None:
        return None
    if stash.get(COMPACTED) == agent.generation or not agent.backend.compact_command:
        return Remedy("fresh", agent.name, finding)
    stash[COMPACTED] = agent.generation
    return Remedy("send", agent.name, finding, text=agent.backend.compact_command, data={"now": True},
                  retry_after_s=COMPACT_WAIT_S)
