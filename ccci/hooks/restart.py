"""Restart remedies: ``restart`` (resume the conversation where the backend can, else
fresh), ``resume`` (same conversation; counts toward ``max_resumes``), ``fresh`` (new
conversation: the only cure for the thinking-block 400), ``start``.

Essential (``CCCI_ESSENTIAL``): cannot be disabled, is never disabled by the runner, and
is asked before any other ``ccci_run_remedy`` implementation. Restart intensity, backoff
and the resume cap are enforced by the runner before this runs.
"""
from __future__ import annotations

from ccci.hookspecs import hookimpl

CCCI_ESSENTIAL = True
ACTIONS = ("restart", "resume", "fresh", "start")


@hookimpl
def ccci_run_remedy(remedy, services):
    if remedy.action not in ACTIONS or remedy.agent is None:
        return None
    reason = f"{remedy.reason.check}: {remedy.reason.summary}"
    return services.launch(remedy.agent, remedy.action, reason, prompt=remedy.text or None,
                           turn_end=bool(remedy.data.get("turn_end")))
