"""Per-agent live bookkeeping and the per-tick fleet snapshot.

These are the objects checks receive as ``agent`` and ``snapshot``. Times ending in
``_mono`` are monotonic seconds; ``datetime`` fields are UTC.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ccci.model import AgentSpec, AgentState, Event, PaneInfo, ProcessInfo, ScreenAnalysis

if TYPE_CHECKING:  # pragma: no cover
    from ccci.backends.base import Backend


@dataclass
class AgentRuntime:
    """What the watcher knows about one agent right now.

    Attributes:
        spec: the config entry.
        backend: the agent's backend.
        session: tmux session name.
        pane_id, pid: the live pane and its process (``None`` when not running).
        conversation_id: the conversation the agent runs (persisted in the state store).
        generation: increments at every (re)start; stale remedies for an older
            generation are dropped.
        started_mono: when the current process was started or adopted.
        screen, analysis: newest capture and its reading.
        screen_changed_mono: last time the raw capture changed (any byte, timers too).
        content_changed_mono: last time the normalised fingerprint changed.
        pending_since_mono: a remedy is in flight since then; checks are paused until
            the agent is back (``None`` when nothing is in flight).
        hold_until_mono: checks (except process death) are paused until then (a
            ``wait`` remedy, e.g. a usage limit's reset).
        failing: per check, ``(consecutive failing ticks, first failing mono)``.
        restart_marks: monotonic times of recent restarts (restart intensity).
        turn_marks: monotonic times of recent turn-end resumes (``max_turns_per_hour``;
            read back from the ``restarts`` table after a watcher restart).
        backoff_s: current backoff before the next restart (seconds; 0 = none).
        next_restart_mono: no restart before this time (backoff).
        healthy_since_mono: since when no failing finding was seen.
        nudges: stall nudges sent since the agent last finished a turn.
        resumes: resumes of the current conversation after failures (``max_resumes``);
            turn-end resumes are not counted.
        given_up: the runner escalated and stopped acting on this agent.
        stopped: ``ccci stop`` was used; not restarted until ``ccci start``.
    """

    spec: AgentSpec
    backend: "Backend"
    session: str
    pane_id: str | None = None
    pid: int | None = None
    conversation_id: str = ""
    generation: int = 0
    started_mono: float = 0.0
    screen: str = ""
    analysis: ScreenAnalysis = field(default_factory=ScreenAnalysis)
    last_change_key: tuple | None = None
    last_capture_mono: float = -1e9
    screen_changed_mono: float = 0.0
    content_changed_mono: float = 0.0
    last_state: AgentState = AgentState.UNKNOWN
    #: launched by this watcher with a prompt whose turn has not been seen busy yet
    first_turn_pending: bool = False
    #: launched by this watcher; the CLI has not reported the end of a turn since (the
    #: launch prompt's), where the backend reports turns (:meth:`ccci.backends.base.Backend.turn_activity`)
    launch_turn_open: bool = False
    #: the tick in which something was typed into the pane (its analysis is stale until the next capture)
    typed_tick: int = -1
    #: monotonic seconds when ccci last started typing text into the pane (-inf: never
    #: since the watcher started); a CLI's error report older than it is superseded
    typed_mono: float = float("-inf")
    pending_since_mono: float | None = None
    pending_action: str = ""
    hold_until_mono: float = 0.0
    failing: dict[str, tuple[int, float]] = field(default_factory=dict)
    restart_marks: deque = field(default_factory=lambda: deque(maxlen=100))
    turn_marks: deque = field(default_factory=lambda: deque(maxlen=10000))
    backoff_s: float = 0.0
    next_restart_mono: float = 0.0
    healthy_since_mono: float = 0.0
    nudges: int = 0
    resumes: int = 0
    given_up: bool = False
    stopped: bool = False
    reported_wait: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    def uptime(self, mono: float) -> float:
        """Seconds since the current process was started or adopted."""
        return max(0.0, mono - self.started_mono) if self.pid else 0.0


@dataclass
class FleetSnapshot:
    """One tick's view of the fleet.

    Attributes:
        tick: tick number.
        now: UTC wall time at the start of the tick.
        mono: monotonic seconds at the start of the tick.
        panes: agent name -> :class:`PaneInfo` (``None``: no tmux session).
        processes: agent name -> :class:`ProcessInfo`.
        captured: names of agents whose pane was captured this tick.
        facts: plugin-provided facts by name (e.g. ``"git"`` from the git watcher).
        events: events plugins want logged (appended during ``ccci_observe``).
    """

    tick: int
    now: datetime
    mono: float
    panes: dict[str, PaneInfo | None] = field(default_factory=dict)
    processes: dict[str, ProcessInfo] = field(default_factory=dict)
    captured: set[str] = field(default_factory=set)
    facts: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
