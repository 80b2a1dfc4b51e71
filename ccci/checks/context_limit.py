"""Context limit: ``Context limit reached · /compact or /clear to continue`` (Claude Code
2.1.197). Remedy: the backend's compact command once per session (the generation it was
sent in is kept in the plugin's stash, so a watcher restart does not compact twice); if
the limit shows again, or is still there :data:`COMPACT_WAIT_S` after the command, a
fresh session. The request the limit cut off is not lost: when ``/compact`` is sent, the
message of ccci's that started the failed turn is queued again once (else ``continue``),
and the outbox types it as soon as the compaction has finished (the agent idle again);
if a fresh session follows instead, a queued ``continue`` is dropped (the new session
starts from its own prompt) and a queued request goes to it (issue 14).
"""
from __future__ import annotations

from ccci.checks import resubmit_interrupted, screen_finding
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Remedy
from ccci.stash import StashKey

CHECK = "context_limit"
COMPACT_WAIT_S = 60.0  #: s the compact command gets before the runner acts on the same screen again
COMPACTED = StashKey[int]("compacted_generation", persist=True)  #: generation /compact was sent in


@hookimpl
def ccci_check_agent(agent, analysis):
    return screen_finding(CHECK, agent, analysis, AgentState.CONTEXT_LIMIT, "context window full")


#: what the agent is told after a compaction when its failed turn was its own
CONTINUE_AFTER_COMPACT = "continue"


@hookimpl
def ccci_choose_remedy(finding, agent, stash, services, now):
    if finding.check != CHECK or agent is None:
        return None
    if stash.get(COMPACTED) == agent.generation or not agent.backend.compact_command:
        dropped = services.fail_queued_messages(f"resubmit:{agent.name}:", "a fresh session follows; not continuing")
        return Remedy("fresh", agent.name, finding, data={"dropped_continue": dropped})
    stash[COMPACTED] = agent.generation
    follow_up = resubmit_interrupted(agent, services, now, CHECK, otherwise=CONTINUE_AFTER_COMPACT)
    return Remedy("send", agent.name, finding, text=agent.backend.compact_command, data={"now": True,
                  "follow_up": follow_up}, retry_after_s=COMPACT_WAIT_S)
