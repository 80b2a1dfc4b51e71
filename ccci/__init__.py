"""ccci: a supervisor that keeps autonomous AI coding agents working unattended in tmux.

Plugin authors import :data:`hookimpl` from here::

    from ccci import hookimpl

    @hookimpl
    def ccci_check_agent(agent, analysis):
        ...
"""
from ccci.hookspecs import hookimpl, hookspec
from ccci.model import AgentState, Event, Finding, Remedy, RemedyResult
from ccci.services import Services
from ccci.stash import Stash, StashKey

__all__ = ["hookimpl", "hookspec", "AgentState", "Event", "Finding", "Remedy", "RemedyResult", "Services", "Stash",
           "StashKey"]
__version__ = "0.1.0"
