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
        if last is None or mono - last >= interval or settle:
            stash[LAST_READ] = mono
            _read(name, rt, config, now, stash, services)
        rec = stash.get(CONTEXT)
        if rec is not None:
            facts[name] = rec


def _read(name, rt, config, now, stash, services) -> None:
    conversation = rt.conversation_id or ""
    if not conversation:
        return
    try:
        reading = rt.backend.read_usage(rt.spec, config, conversation, None)
    except (OSError, ValueError) as exc:
        if not stash.get(FAILED):
            stash[FAILED] = True
            services.emit("usage_unreadable", f"cannot read the CLI's usage records: {type(exc).__name__}: {exc}"[:300],
                          agent=name)
        return
    if reading is None:
        return
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


__all__ = ["FACT"]
