"""What a plugin may do: the narrow, typed services object (:class:`Services`).

No hook receives the runner. A hook that acts (``ccci_run_remedy``, and any hook that
declares a ``services`` argument) gets a :class:`Services` bound to the calling plugin:
``services.stash()`` is that plugin's own stash. This protocol is the stable API; the
runner behind it may change. ``docs/plugins.md`` documents it with examples.

Times: ``now()`` is UTC wall time (``datetime`` with ``tzinfo=UTC``); ``monotonic()``
and every ``*_s`` argument are seconds.
"""
from __future__ import annotations

import contextlib
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ccci.model import PaneInfo, Remedy, RemedyResult, ScreenAnalysis

if TYPE_CHECKING:  # pragma: no cover
    from ccci.config import FleetConfig
    from ccci.send import SendResult
    from ccci.stash import Stash
    from ccci.supervisor import Supervisor


@runtime_checkable
class KeyValue(Protocol):
    """Fleet-wide named values in the state database, shared between plugins (e.g. the
    handoff baseline ``git.baseline.<branch>``); also the ``state`` hook argument.
    Prefer a :class:`ccci.stash.Stash` for a plugin's own state."""

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key``, or ``default``."""

    def put(self, key: str, value: str) -> None:
        """Set ``key`` (written at once, or at the end of the open transaction)."""

    def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` when it existed."""

    def transaction(self) -> contextlib.AbstractContextManager:
        """``with state.transaction(): ...``: the writes inside commit together or not
        at all (an exception rolls them back)."""


@runtime_checkable
class Services(Protocol):
    """The services a plugin may use. Every method is safe to call from any hook of
    the watcher's tick; none raises for an unknown agent except where noted."""

    config: "FleetConfig"  #: the validated fleet config (read-only)
    state: KeyValue  #: fleet-wide named values (see :class:`KeyValue`)
    plugin: str  #: the name of the plugin this object is bound to

    # -- clock --------------------------------------------------------------------
    def now(self) -> datetime:
        """UTC wall time."""

    def monotonic(self) -> float:
        """Monotonic seconds (for intervals)."""

    # -- reading --------------------------------------------------------------------
    def agents(self) -> list[str]:
        """Every agent's name, in config order."""

    def agent(self, name: str) -> "AgentView":
        """A read-only view of an agent's runtime state.

        :raises KeyError: for an unknown agent.
        """

    def pane(self, name: str) -> PaneInfo | None:
        """The agent's pane as tmux reports it now (one ``list-panes`` call), or
        ``None`` when its session does not exist."""

    def stash(self, agent: str | None = None) -> "Stash":
        """This plugin's stash for ``agent`` (``None``: the fleet); see :mod:`ccci.stash`."""

    # -- acting ---------------------------------------------------------------------
    def emit(self, kind: str, message: str, agent: str | None = None, **data: Any) -> None:
        """Append an event to the durable log and pass it to every reporter.

        :param kind: e.g. ``"my_plugin_alert"`` (letters, digits, ``_``).
        :param message: one line for people; secrets are redacted, escapes removed.
        :param data: JSON-able details.
        """

    def queue_message(self, agent: str, text: str, dedup_key: str | None = None) -> int | None:
        """Queue ``text`` for delivery when the agent is ready for input (verified
        submission; see ``ccci send``).

        :param dedup_key: a second message with the same key is dropped (``None``
            returned): what makes a handoff ping happen once, ever.
        :returns: the message id, or ``None`` when deduplicated.
        """

    def recent_messages(self, agent: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` messages queued for ``agent`` (any status), newest first:
        dicts with ``id`` (int), ``text``, ``status`` (``queued`` | ``sending`` |
        ``delivered`` | ``failed``), ``dedup_key`` (str or ``None``), ``queued_at`` and
        ``done_at`` (ISO-8601 UTC strings; ``done_at`` ``None`` until finished). Read-only."""

    def deliver_now(self, agent: str, text: str) -> "SendResult":
        """Type ``text`` into the agent's pane now (not queued), then Enter, then verify
        it was submitted (:func:`ccci.send.deliver`). For nudges and slash commands that
        must not reach a restarted agent later."""

    def launch(self, agent: str, mode: str, reason: str, prompt: str | None = None,
               turn_end: bool = False) -> RemedyResult:
        """(Re)start an agent: ``mode`` is ``start``, ``fresh`` (new conversation),
        ``resume`` (same conversation) or ``restart`` (resume where the backend can).
        The runner's guard rails (restart intensity, backoff) apply to remedies, not to
        this call: use it from a remedy the runner allowed."""

    def stop(self, agent: str, reason: str, keep_stopped: bool = True) -> None:
        """Stop the agent's process and tmux session. ``keep_stopped``: leave it stopped
        until ``ccci start`` (else the next tick's checks see it gone and restart it)."""

    def schedule(self, remedy: Remedy) -> None:
        """Run ``remedy`` at ``remedy.not_before`` (UTC); one per agent and action."""

    def run_remedy(self, remedy: Remedy) -> RemedyResult | None:
        """Carry out another remedy now (through ``ccci_run_remedy``)."""

    def escalate(self, agent: str | None, why: str) -> None:
        """Hand a problem to a person: the agent (if any) is given up until
        ``ccci start`` and an ``escalation`` event goes to the notifiers."""

    def give_up(self, agent: str) -> None:
        """Stop acting on ``agent`` until a person runs ``ccci start`` (persisted)."""

    def hold(self, agent: str, seconds: float) -> None:
        """Pause the agent's non-immediate findings for ``seconds`` (a wait)."""

    def count_nudge(self, agent: str) -> None:
        """Count a stall nudge sent to ``agent`` (reset when a turn ends or at a restart)."""

    def initial_prompt(self, agent: str) -> str:
        """The prompt a fresh session of ``agent`` starts with: every
        ``ccci_prompt_preamble``, then the role prompt file's text."""

    def fail_queued_messages(self, key_prefix: str, detail: str) -> int:
        """Mark every queued message whose dedup key starts with ``key_prefix`` failed
        (e.g. the pings of a finished phase); returns how many."""

    def request_stop(self) -> None:
        """Ask the watcher to stop after this tick (e.g. a sequence of phases is complete)."""

    def wake(self, reason: str) -> None:
        """Run the next tick now (thread-safe). For a plugin's event source: a thread
        that sees the CLI report something (a hook spool file written, a server event)
        calls this so the finding is acted on without waiting up to ``tick_seconds``."""

    def tick_within(self, seconds: float) -> None:
        """Have the runner tick again within ``seconds`` even when the fleet is quiet
        (its safety tick is ``fleet.idle_tick_seconds`` then): for a plugin with a
        cadence of its own (the git watcher's ``fetch_interval``). Asked again at each
        tick that needs it; the earliest request wins. Main thread (a hook)."""

    # -- token usage ------------------------------------------------------------------
    def record_usage(self, agent: str, day: str, source: str, model: str, counts: dict[str, int]) -> None:
        """Store the token totals the CLI recorded for ``agent`` on UTC ``day``
        (``YYYY-MM-DD``) from one ``source`` (a conversation id, a session file) and
        ``model``: absolute totals, not increments (recording the same totals twice
        changes nothing). ``counts``: tokens by :data:`ccci.state.USAGE_COUNTERS` name.

        :raises KeyError: for a counter not in :data:`ccci.state.USAGE_COUNTERS`."""

    def usage_rows(self, agent: str | None = None, since_day: str | None = None) -> list[dict[str, Any]]:
        """Token totals per agent, UTC day and model, summed over sources (dicts with
        ``agent``, ``day``, ``model`` and the :data:`ccci.state.USAGE_COUNTERS`), oldest
        day first; ``since_day``: only days ``>=`` this ``YYYY-MM-DD``. Read-only."""


@runtime_checkable
class AgentView(Protocol):
    """Read-only runtime state of one agent (what :meth:`Services.agent` returns and
    checks get as ``agent``). Times ending in ``_mono`` are monotonic seconds."""

    name: str
    spec: Any  #: the :class:`ccci.model.AgentSpec`
    backend: Any  #: the :class:`ccci.backends.base.Backend`
    session: str
    pane_id: str | None
    pid: int | None
    conversation_id: str
    generation: int  #: increments at every (re)start
    started_mono: float
    screen: str
    analysis: ScreenAnalysis
    resumes: int  #: resumes of the conversation after failures (``max_resumes``)
    turn_marks: Any  #: monotonic seconds of recent turn-end resumes (``max_turns_per_hour``)
    nudges: int
    hold_until_mono: float
    pending_since_mono: float | None
    stopped: bool
    given_up: bool


class StoreKeyValue:
    """:class:`KeyValue` over the state store."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._store.get(key, default)

    def put(self, key: str, value: str) -> None:
        self._store.put(key, value)

    def delete(self, key: str) -> bool:
        return self._store.delete(key)

    def transaction(self) -> contextlib.AbstractContextManager:
        return self._store.transaction()


class RunnerServices:
    """The :class:`Services` a :class:`ccci.supervisor.Supervisor` hands to one plugin."""

    def __init__(self, sup: "Supervisor", plugin: str) -> None:
        self._sup = sup
        self.plugin = plugin
        self.config = sup.config
        self.state = sup.kv

    def now(self) -> datetime:
        return self._sup.clock.now()

    def monotonic(self) -> float:
        return self._sup.clock.monotonic()

    def agents(self) -> list[str]:
        return list(self._sup.agents)

    def agent(self, name: str) -> AgentView:
        return self._sup.agents[name]

    def pane(self, name: str) -> PaneInfo | None:
        rt = self._sup.agents.get(name)
        return self._sup.tmux.list_panes().get(rt.session) if rt else None

    def stash(self, agent: str | None = None) -> "Stash":
        return self._sup.stashes.get(self.plugin, agent)

    def emit(self, kind: str, message: str, agent: str | None = None, **data: Any) -> None:
        self._sup.emit(kind, message, agent=agent, data={**data, "plugin": self.plugin} if "plugin" not in data else data)

    def queue_message(self, agent: str, text: str, dedup_key: str | None = None) -> int | None:
        return self._sup.queue_message(agent, text, dedup_key)

    def recent_messages(self, agent: str, limit: int = 20) -> list[dict[str, Any]]:
        keep = ("id", "text", "status", "dedup_key", "queued_at", "done_at")
        return [{k: m[k] for k in keep} for m in self._sup.store.messages_for(agent, limit)]

    def deliver_now(self, agent: str, text: str) -> "SendResult":
        return self._sup.deliver_now(agent, text)

    def launch(self, agent: str, mode: str, reason: str, prompt: str | None = None,
               turn_end: bool = False) -> RemedyResult:
        return self._sup.lifecycle.launch(agent, mode, reason, prompt=prompt, turn_end=turn_end)

    def stop(self, agent: str, reason: str, keep_stopped: bool = True) -> None:
        if keep_stopped:
            self._sup.lifecycle.stop(agent, reason)
        else:
            self._sup.lifecycle.stop_process(agent)

    def schedule(self, remedy: Remedy) -> None:
        self._sup.schedule(remedy)

    def run_remedy(self, remedy: Remedy) -> RemedyResult | None:
        return self._sup.run_remedy(remedy)

    def escalate(self, agent: str | None, why: str) -> None:
        self._sup.escalate(agent, why)

    def give_up(self, agent: str) -> None:
        self._sup.give_up(agent)

    def hold(self, agent: str, seconds: float) -> None:
        rt = self._sup.agents[agent]
        rt.hold_until_mono = max(rt.hold_until_mono, self._sup.clock.monotonic() + max(0.0, seconds))

    def count_nudge(self, agent: str) -> None:
        self._sup.agents[agent].nudges += 1

    def initial_prompt(self, agent: str) -> str:
        return self._sup.lifecycle.initial_prompt(agent)

    def fail_queued_messages(self, key_prefix: str, detail: str) -> int:
        return self._sup.store.fail_queued(key_prefix, detail, self._sup.clock.now())

    def request_stop(self) -> None:
        self._sup.request_stop(reason=f"asked by plugin {self.plugin}")

    def wake(self, reason: str) -> None:
        self._sup.wake(f"{self.plugin}: {reason}")

    def tick_within(self, seconds: float) -> None:
        self._sup.tick_within(seconds)

    def record_usage(self, agent: str, day: str, source: str, model: str, counts: dict[str, int]) -> None:
        self._sup.store.set_usage(agent, day, source, model, counts, self._sup.clock.now())

    def usage_rows(self, agent: str | None = None, since_day: str | None = None) -> list[dict[str, Any]]:
        return self._sup.store.usage_rows(agent, since_day)


__all__ = ["AgentView", "KeyValue", "RunnerServices", "Services", "StoreKeyValue"]
