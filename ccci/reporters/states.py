"""State changes in the event log: an ordinary builtin plugin (``states``).

At the end of every tick (``ccci_tick_end``) it reads each agent's state from the
read-only agent views and emits one ``state_changed`` event per agent whose state
differs from what this watcher last logged (``data``: ``state``, ``previous``; the first
tick of a watcher logs every agent, with ``previous`` ``None``). ``ccci report`` (and
anything else that reads the log) rebuilds the time each agent spent in each state from
these events: a state holds from its event until the agent's next ``state_changed``.

A state is one of :data:`AGENT_STATES`: the screen's :class:`ccci.model.AgentState`
value, or the runner's own ``restarting`` (a (re)start in flight), ``stopped``
(``ccci stop``) or ``given_up`` (an escalation) - the same values as the
``ccci_agent_state`` metric. The log grows by one event per state change: a busy/idle
pair per agent turn, a few more per fault.
"""
from __future__ import annotations

from ccci.hookspecs import hookimpl
from ccci.model import AgentState
from ccci.stash import StashKey

#: every state a ``state_changed`` event may name
AGENT_STATES: tuple[str, ...] = tuple(s.value for s in AgentState) + ("restarting", "stopped", "given_up")

LAST = StashKey[str]("last_state")  #: the state this watcher last logged for the agent (in memory)


def agent_state(view) -> str:
    """The state of one agent view (:class:`ccci.services.AgentView`): ``given_up``,
    ``stopped``, ``restarting`` (``pending_since_mono`` set), else the screen state."""
    if view.given_up:
        return "given_up"
    if view.stopped:
        return "stopped"
    if view.pending_since_mono is not None:
        return "restarting"
    return getattr(view.analysis.state, "value", str(view.analysis.state))


@hookimpl
def ccci_tick_end(services):
    for name in services.agents():
        state = agent_state(services.agent(name))
        stash = services.stash(name)
        prev = stash.get(LAST)
        if state != prev:
            stash[LAST] = state
            services.emit("state_changed", f"{prev or 'not logged'} -> {state}", agent=name, state=state,
                          previous=prev)
