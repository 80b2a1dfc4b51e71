"""Token usage and context use of every agent, read from what its CLI records: an
ordinary builtin plugin (``ccci.usage_watch``).

In ``ccci_observe``, at most every ``usage_interval`` seconds per agent (``[checks]``,
default 10), and on every tick for :data:`SETTLE_READ_S` after an agent becomes ready for
input (its turn ended: the CLI may still be writing the turn's usage when its hook wakes
the runner; no queued message goes out meanwhile), it asks the agent's backend (:meth:`ccci.backends.base.Backend.read_usage`;
the backend reads incrementally by file offset) and

* stores the totals that changed with ``services.record_usage`` (absolute per UTC day,
  source and model, so re-reading after a watcher restart changes nothing);
* stores the context use under :data:`ccci.usage.CONTEXT_KEY` (``ccci status`` reads it
  from there) and offers it to the checks every tick as ``snapshot.facts["context"]``:
  ``{agent: {"tokens", "window", "fraction", "model", "at"}}``. The window is the one the
  CLI recorded, else :func:`ccci.usage.context_window` of the model (``[context_windows]``
  in ccci.toml, then ``ccci/data/context_windows.toml``).

A *final read* when an agent's process ends or ccci stops acting on it: in the tick its
pane is first seen dead or gone, and in the tick it is first seen given up or stopped,
whatever the interval; a final read the backend could not answer is tried again every
tick for :data:`FINAL_READ_S`. Also at once (``ccci_report_event``, before the other
plugins hear of it) on an ``escalation`` or ``escalation_repeated`` that gave the agent
up and on ``agent_stopped``. The CLI has written the last turn's usage when its process
exits, but where that record lives can go away next: opencode's sessions are read from
the fleet's ``opencode serve``, which :mod:`ccci.backends.opencode.opencode_serve` stops
in the tick after the last opencode agent is given up or stopped (a CI run on 2 busy
cores lost the last turn's 2,561 input tokens that way: the periodic read had last run
before that turn, and the next tick found the server gone).

A record the backend cannot read (``OSError``, ``ValueError``) is one
``usage_unreadable`` event per agent until a read succeeds again.
"""
from __future__ import annotations

import json

from ccci.hookspecs import hookimpl
from ccci.stash import StashKey
from ccci.usage import CONTEXT_KEY, context_record, context_window

LAST_READ = StashKey[float]("last_read_mono")  #: monotonic s of the agent's last read
WAS_READY = StashKey[bool]("was_ready")  #: the agent was ready for input at the previous tick
WRITTEN = StashKey[dict]("written")  #: (day, source, model) -> counts stored by this watcher
CONTEXT = StashKey[dict]("context")  #: the newest context record
FAILED = StashKey[bool]("unreadable")  #: a usage_unreadable event was emitted and no read succeeded since
TURN_ENDED_AT = StashKey[float]("turn_ended_mono")  #: monotonic s the agent's last turn was seen ending
#: s after a turn's end during which every tick reads (the outbox waits ccci.outbox.TURN_SETTLE_S
#: before typing, so the turn's usage is read before a queued message goes out)
SETTLE_READ_S = 1.5
#: the end (pane pid, pane dead or gone, given up, stopped) the final read is for
FINAL_FOR = StashKey[tuple]("final_for")
FINAL_SINCE = StashKey[float]("final_since_mono")  #: monotonic s the current end was first seen
FINAL_DONE = StashKey[bool]("final_done")  #: the final read of the current end got an answer
#: s during which a final read the backend did not answer is tried again every tick
FINAL_READ_S = 30.0
#: events after which an agent's usage is read at once (given up or stopped)
FINAL_EVENTS = frozenset({"escalation", "escalation_repeated", "agent_stopped"})
FACT = "context"  #: the ``snapshot.facts`` name


@hookimpl
def ccci_observe(snapshot, config, agents, mono, now, services):
    facts = snapshot.facts.setdefault(FACT, {})
    for name, rt in agents.items():
        stash = services.stash(name)
        interval = float(config.settings_for(name).get("usage_interval", 10))
        last = stash.get(LAST_READ)
        try:
            ready = bool(rt.backend.is_ready_for_input(rt.analysis))
        except Exception:  # noqa: BLE001 - a third-party backend's failure: read on the interval only
            ready = False
        turn_ended = ready and not stash.get(WAS_READY, False)
        stash[WAS_READY] = ready
        # read in the tick a turn ended and in the next one: the CLI may still be writing
        # the turn's usage when its hook wakes the runner (the outbox types nothing into
        # the agent before that next tick, ccci.outbox.Outbox.ready_since)
        if turn_ended:
            stash[TURN_ENDED_AT] = mono
        ended = stash.get(TURN_ENDED_AT)
        settle = ended is not None and mono - ended <= SETTLE_READ_S
        final = _final_due(stash, snapshot.panes.get(name), rt, mono)
        if last is None or mono - last >= interval or settle or final:
            stash[LAST_READ] = mono
            answered = _read(name, rt, config, now, stash, services)
            if final and answered:
                stash[FINAL_DONE] = True
        rec = stash.get(CONTEXT)
        if rec is not None:
            facts[name] = rec


def _final_due(stash, pane, rt, mono: float) -> bool:
    """Whether this tick owes the agent a final read (see the module docstring): its
    pane is dead or gone, or it is given up or stopped, seen for the first time (a new
    end), or an earlier end's final read has not been answered yet and began at most
    :data:`FINAL_READ_S` ago (also when the agent was restarted since: that read is
    still owed)."""
    gone = pane is None or bool(pane.dead)
    if gone or rt.given_up or rt.stopped:
        end = (pane.pid if pane is not None else None, gone, bool(rt.given_up), bool(rt.stopped))
        if stash.get(FINAL_FOR) != end:
            stash[FINAL_FOR], stash[FINAL_SINCE], stash[FINAL_DONE] = end, mono, False
    since = stash.get(FINAL_SINCE)
    return since is not None and not stash.get(FINAL_DONE) and mono - since <= FINAL_READ_S


@hookimpl(tryfirst=True)
def ccci_report_event(event, services):
    """Read an agent's usage at once when it is given up (an ``escalation`` or
    ``escalation_repeated`` without ``given_up: false``) or stopped (``agent_stopped``),
    before the other plugins hear of it (``tryfirst``: the opencode server plugin stops
    the server on the last opencode agent's ``agent_stopped``), in the process that emits
    the event (the watcher, or ``ccci stop``: one full read of the agent's records there)."""
    if event.kind not in FINAL_EVENTS or not event.agent or (event.data or {}).get("given_up") is False:
        return
    try:
        rt = services.agent(event.agent)
    except KeyError:
        return
    _read(event.agent, rt, services.config, services.now(), services.stash(event.agent), services)


def _read(name, rt, config, now, stash, services) -> bool:
    """Read and store the agent's usage; ``True`` when the backend answered (or there is
    no conversation to read), ``False`` when it did not (``None``, ``OSError``, ``ValueError``)."""
    conversation = rt.conversation_id or ""
    if not conversation:
        return True
    try:
        reading = rt.backend.read_usage(rt.spec, config, conversation, None)
    except (OSError, ValueError) as exc:
        if not stash.get(FAILED):
            stash[FAILED] = True
            services.emit("usage_unreadable", f"cannot read the CLI's usage records: {type(exc).__name__}: {exc}"[:300],
                          agent=name)
        return False
    if reading is None:
        return False
    stash[FAILED] = False
    written = stash.setdefault(WRITTEN, {})
    for key, counts in reading.totals.items():
        if written.get(key) != counts:
            day, source, model = key
            services.record_usage(name, day, source, model, counts)
            written[key] = dict(counts)
    window = reading.window or context_window(reading.model, getattr(config, "context_windows", None))
    rec = context_record(reading.context_tokens, window, reading.model, now)
    old = stash.get(CONTEXT)
    if old is None or {k: v for k, v in old.items() if k != "at"} != {k: v for k, v in rec.items() if k != "at"}:
        services.state.put(CONTEXT_KEY.format(agent=name), json.dumps(rec))
    stash[CONTEXT] = rec
    return True


__all__ = ["FACT"]
