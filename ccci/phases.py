"""Phases: an ordered list of phases the fleet moves through.

Configured in ``ccci.toml``::

    [phases]
    order = ["1c", "1b", "2"]          # ids, in order
    plan = "plans/PLAN-{id}.md"          # the phase's plan file in the project repo
    done_marker = "## DONE"              # a line of STATUS-<id>.md that ends the phase
    require_review = false               # REVIEW-<id>.md must carry the marker too

Each phase has phase-namespaced state files in the project repo: ``STATUS-<id>.md``,
``BACKLOG-<id>.md``, ``REVIEW-<id>.md``, ``JOURNAL-<id>.md``. Agents start with a phase
preamble (:func:`preamble`) ahead of their role prompt, and get ``CCCI_PHASE=<id>`` in
their environment.

When ``STATUS-<id>.md`` *on origin* has a line equal to ``done_marker`` (and, with
``require_review``, ``REVIEW-<id>.md`` too), the ``advance_phase`` remedy stops the loops,
moves the handoff baseline to origin's head (nothing of the old phase is pinged), records
the next phase, and starts the loops fresh in it. After the last phase it writes
``SEQUENCE-COMPLETE`` (in the fleet directory), stops the loops and ends the watcher.
The current phase and the order (after ``ccci phase insert``) live in the state store.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ccci.clock import iso
from ccci.gitwatch import BASELINE_KEY
from ccci.hookspecs import hookimpl
from ccci.model import Finding, Remedy, RemedyResult, Role

CURRENT_KEY = "phase.current"
ORDER_KEY = "phase.order"
REQUEST_KEY = "phase.request"  # set by `ccci phase insert|skip` for a running watcher
COMPLETE_FILE = "SEQUENCE-COMPLETE"


@dataclass(frozen=True)
class PhaseSettings:
    order: tuple[str, ...]
    plan: str = "PLAN-{id}.md"
    done_marker: str = "## DONE"
    require_review: bool = False


def settings(config) -> PhaseSettings | None:
    """The ``[phases]`` table, or ``None`` when the fleet has no phases.

    :raises ccci.config.ConfigError: on a malformed table (one line: file, key, fix).
    """
    from ccci.config import ConfigError

    raw = config.raw.get("phases")
    if raw is None:
        return None
    where = f"{config.path}: phases"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table [phases] with order = [\"id\", ...]")
    order = raw.get("order")
    if not isinstance(order, list) or not order or not all(isinstance(x, str) and x.strip() for x in order):
        raise ConfigError(f"{where}.order: expected a non-empty list of phase ids, e.g. order = [\"1\", \"2\"]")
    if len(set(order)) != len(order):
        raise ConfigError(f"{where}.order: phase ids must be unique")
    for key in raw:
        if key not in ("order", "plan", "done_marker", "require_review"):
            raise ConfigError(f"{where}.{key}: unknown key; known: order, plan, done_marker, require_review")
    return PhaseSettings(
        order=tuple(order),
        plan=str(raw.get("plan", "PLAN-{id}.md")),
        done_marker=str(raw.get("done_marker", "## DONE")),
        require_review=bool(raw.get("require_review", False)),
    )


def order(config, store) -> list[str]:
    """The phase order in force (``ccci phase insert`` stores a modified one)."""
    ps = settings(config)
    if ps is None:
        return []
    stored = store.get(ORDER_KEY)
    return json.loads(stored) if stored else list(ps.order)


def current(config, store) -> str | None:
    """The current phase id; ``None`` after the last one (or without phases)."""
    ps = settings(config)
    if ps is None:
        return None
    val = store.get(CURRENT_KEY)
    if val is None:
        return order(config, store)[0]
    return val or None


def next_after(config, store, phase: str) -> str | None:
    seq = order(config, store)
    if phase not in seq:
        return None
    i = seq.index(phase)
    return seq[i + 1] if i + 1 < len(seq) else None


def preamble(config, store) -> str:
    """The text agents start with ahead of their role prompt ("" without phases)."""
    ps = settings(config)
    cur = current(config, store)
    if ps is None or cur is None:
        return ""
    plan = ps.plan.format(id=cur)
    return (
        f"PHASE {cur} of {', '.join(order(config, store))}. This phase's plan, {plan}, is the source of truth. "
        f"Its state files are STATUS-{cur}.md, BACKLOG-{cur}.md, REVIEW-{cur}.md and JOURNAL-{cur}.md. "
        f"When the phase is complete, the builder writes a line '{ps.done_marker}' in STATUS-{cur}.md and pushes it."
    )


def _has_marker(text: str | None, marker: str) -> bool:
    return text is not None and any(line.strip() == marker for line in text.splitlines())


def request_enter(store, phase: str | None) -> None:
    """Ask the running watcher to move the fleet to ``phase`` (``None``: complete)."""
    store.put(REQUEST_KEY, json.dumps({"phase": phase}))


@hookimpl
def ccci_check_fleet(snapshot, config, state):
    ps = settings(config)
    if ps is None:
        return None
    cur = current(config, state)
    req = state.get(REQUEST_KEY)
    if req:
        target = json.loads(req).get("phase")
        facts = snapshot.facts.get("git")
        return Finding("phase_done", None, f"a person moved the fleet from phase {cur} to {target or 'the end'}",
                       evidence=f"ccci phase request: {req}", immediate=True,
                       data={"phase": cur, "next": target, "head": facts.head if facts else None, "requested": True})
    facts = snapshot.facts.get("git")
    if cur is None or facts is None or facts.error or not facts.head or facts.read is None:
        return None
    status = facts.read(f"STATUS-{cur}.md")  # a missing file is simply "not done"
    if not _has_marker(status, ps.done_marker):
        return None
    if ps.require_review and not _has_marker(facts.read(f"REVIEW-{cur}.md"), ps.done_marker):
        return None
    nxt = next_after(config, state, cur)
    return Finding("phase_done", None, f"phase {cur} is DONE on origin; next: {nxt or 'none (sequence complete)'}",
                   evidence=f"STATUS-{cur}.md at {facts.head[:10]}: {ps.done_marker}", immediate=True,
                   data={"phase": cur, "next": nxt, "head": facts.head})


@hookimpl
def ccci_choose_remedy(finding):
    if finding.check == "phase_done":
        return Remedy("advance_phase", None, finding)
    return None


@hookimpl
def ccci_run_remedy(remedy, services):
    if remedy.action != "advance_phase":
        return None
    data = remedy.reason.data
    cfg, state = services.config, services.state
    loops = [n for n in services.agents() if services.agent(n).spec.role == Role.LOOP]
    for name in loops:
        services.stop(name, reason=f"phase {data['phase']} ends", keep_stopped=False)
    with state.transaction():
        if data.get("head"):
            state.put(BASELINE_KEY.format(branch=cfg.git.branch), data["head"])
        state.put(CURRENT_KEY, data["next"] or "")
        state.delete(REQUEST_KEY)
        # pings of the finished phase that were not delivered are dropped
        services.fail_queued_messages("ping:", "phase ended")
    if data.get("requested"):
        services.emit("phase_moved", f"phase {data['phase']} -> {data['next']} (ccci phase)", phase=data["phase"],
                      next=data["next"])
    else:
        services.emit("phase_complete", f"phase {data['phase']} complete", phase=data["phase"], next=data["next"])
    if data["next"]:
        for name in loops:
            services.launch(name, "fresh", reason=f"phase {data['next']} begins")
        return RemedyResult(True, f"phase {data['phase']} -> {data['next']}", pending=False)
    marker = cfg.root / COMPLETE_FILE
    marker.write_text(f"{iso(services.now())} phases {', '.join(order(cfg, state))} complete\n")
    for name in loops:
        services.stop(name, reason="sequence complete")
    services.emit("sequence_complete", f"all phases complete; wrote {marker}")
    services.request_stop()
    return RemedyResult(True, "sequence complete", pending=False)


@hookimpl
def ccci_configure(config, services):
    if settings(config) is not None and current(config, services.state) is None:
        services.emit("sequence_complete", "all phases are complete already; nothing to supervise")
        services.request_stop()


@hookimpl
def ccci_agent_active(config, state):
    if settings(config) is not None and current(config, state) is None:
        return False  # the sequence is complete: nothing to start or judge
    return None


@hookimpl
def ccci_launch_env(config, state):
    phase = current(config, state)
    return {"CCCI_PHASE": phase} if phase else None


@hookimpl
def ccci_prompt_preamble(spec, config, state):
    return preamble(config, state) or None if spec.role == Role.LOOP else None
