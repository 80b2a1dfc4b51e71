"""ccci: a supervisor that keeps autonomous AI coding agents working unattended in tmux.

Plugin authors import :data:`hookimpl` from here::

    from ccci import hookimpl

    @hookimpl
    def ccci_check_agent(agent, analysis):
        ...
"""
from ccci.hookspecs import hookimpl, hookspec
from ccci.model import AgentState, Finding, Remedy, RemedyResult

__all__ = ["hookimpl", "hookspec", "AgentState", "Finding", "Remedy", "RemedyResult"]
__version__ = "0.1.0"
