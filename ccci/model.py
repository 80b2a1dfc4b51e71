"""Plain data passed between the runner and plugins.

Every object here is a dataclass with no behaviour beyond small helpers, so a plugin
author can build them by hand in a unit test. Times are either *monotonic seconds*
(``float``, from :meth:`ccci.clock.Clock.monotonic`, for intervals) or *UTC wall time*
(``datetime`` with ``tzinfo=UTC``, for persisted state and declared deadlines); each
field says which.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


class AgentState(str, enum.Enum):
    """What a supervisor concludes an agent is doing, from one observation.

    The values are the strings ``ccci diagnose --json`` prints under ``state``.
    """

    BUSY = "busy"  #: working on a turn (includes the CLI retrying an API error by itself)
    IDLE = "idle"  #: turn ended, empty input box
    UNSENT_INPUT = "unsent_input"  #: text sits in the input box, not submitted
    WAITING_INPUT = "waiting_input"  #: a dialog (permission, API key) needs an answer
    FATAL_ERROR = "fatal_error"  #: an error only a fresh session fixes (thinking-block 400)
    CONTEXT_LIMIT = "context_limit"  #: context window full; /compact or a fresh session
    USAGE_LIMIT = "usage_limit"  #: plan usage limit; wait for the reset time
    API_ERROR = "api_error"  #: API error left after the CLI's own retries
    EXITED = "exited"  #: the agent process is gone
    UNKNOWN = "unknown"  #: nothing matched

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class Role(str, enum.Enum):
    """An agent's role in the fleet (``role`` in ``ccci.toml``)."""

    LOOP = "loop"
    ORCHESTRATOR = "orchestrator"
    JOB = "job"


@dataclass(frozen=True)
class AgentSpec:
    """One ``[[agents]]`` entry of ``ccci.toml``, validated.

    Attributes:
        name: unique agent name, ``[a-z0-9_-]+``; the tmux session is ``ccci-<fleet>-<name>``.
        role: :class:`Role`.
        backend: backend plugin name (``scripted``, ``claude``, ...).
        model: model name passed to the backend, or ``""`` for the backend's default.
        workdir: absolute working directory of the agent (its git clone).
        prompt_file: absolute path of the role prompt, or ``None``.
        handoff_role: ``builder`` | ``adversary`` | ``""``; used by handoff rules.
        env: extra environment variables for the agent process (never logged).
        options: backend-specific options from the config table ``[agents.options]``.
        schedule: cron expression (UTC) on which the watcher runs this job, or ``""``.
        host: the ``[[hosts]]`` name of the machine whose watcher runs the agent
            (``local``: the machine the config is read on; see :mod:`ccci.hosts`).
    """

    name: str
    role: Role
    backend: str
    workdir: Path
    model: str = ""
    prompt_file: Path | None = None
    handoff_role: str = ""
    env: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    schedule: str = ""
    host: str = "local"


@dataclass
class PaneInfo:
    """One row of the batched ``tmux list-panes -a -F ...`` query.

    Attributes:
        session_name: tmux session name.
        pane_id: tmux pane id, e.g. ``"%3"``.
        pid: pid of the process tmux started in the pane (the agent, for ccci's panes).
        dead: ``True`` when the pane's process exited (``remain-on-exit`` keeps the pane).
        dead_status: exit status when dead and it exited, else ``None``.
        dead_signal: signal number when dead by signal, else ``None``.
        current_command: ``pane_current_command`` (e.g. ``"claude"``, ``"python3"``).
        title: ``pane_title`` (Claude Code shows a spinner glyph there while busy).
        activity: ``window_activity``, UTC epoch seconds of the last output (1 s resolution).
        cursor: ``(x, y)`` cursor position.
        history_size: lines in the scrollback.
        width, height: pane size in cells.
    """

    session_name: str
    pane_id: str
    pid: int
    dead: bool = False
    dead_status: int | None = None
    dead_signal: int | None = None
    current_command: str = ""
    title: str = ""
    activity: int = 0
    cursor: tuple[int, int] = (0, 0)
    history_size: int = 0
    width: int = 200
    height: int = 50

    def change_key(self) -> tuple:
        """Fields whose change means the screen may have changed (a capture is due)."""
        return (self.activity, self.cursor, self.history_size, self.title, self.dead)


@dataclass
class ProcessInfo:
    """What the per-tick process scan (psutil) learnt about an agent's process.

    Attributes:
        pid: the pid looked at (the pane pid), or ``None`` when there is no pane.
        alive: process exists and is not a zombie.
        name: process name (``psutil.Process.name()``), ``""`` when gone.
        cpu_seconds: user+system CPU time of the process and its children (seconds).
        children: number of child processes (tools the agent is running; zombies not yet
            reaped included). From the default scan it is counted when first read (one
            pass over ``/proc`` per scan, shared by every agent; none when no plugin reads
            it: ``ccci.processes.LazyChildCounts``).
    """

    pid: int | None
    alive: bool
    name: str = ""
    cpu_seconds: float = 0.0
    children: int = 0


@dataclass
class Match:
    """A pattern that matched a screen: which rule, which line, what it captured.

    Attributes:
        rule: rule id from the pattern data (e.g. ``"claude.fatal.thinking_block"``).
        state: the :class:`AgentState` the rule concludes.
        line: the matching screen line, stripped.
        groups: named groups the rule's regex captured.
        source: where the rule was observed (the ``source`` note in the pattern file).
        structured: the CLI reported this itself in structured form (a lifecycle hook's
            payload, a server API's answer), not a screen pattern: a finding drawn from
            it needs no second tick of hysteresis (:attr:`Finding.structured`).
    """

    rule: str
    state: AgentState
    line: str
    groups: dict[str, str] = field(default_factory=dict)
    source: str = ""
    structured: bool = False


@dataclass
class ScreenAnalysis:
    """A backend's reading of one pane capture.

    Attributes:
        state: the concluded :class:`AgentState` for the screen alone.
        matches: every rule that matched in the newest block, strongest first.
        input_text: text currently in the input box, ``""`` when empty or unknown.
        input_present: the input box was found on screen.
        reset_at: usage-limit reset time (UTC) when the screen gives one.
        waiting_until: the newest ``WAITING-UNTIL:`` deadline (UTC) on screen, if any.
        fingerprint: hash of the screen with timers and counters normalised; equal
            fingerprints mean "nothing really changed" (used by the stall check).
        block: the newest block of the screen: the lines from the newest user turn on
            (the backend's ``block_start`` rule), above the input box; older turns'
            text is not in it. Checks get it as the ``block`` argument.
        placeholder: text the empty input box showed as a placeholder (known from the
            pattern file's ``input_placeholder``, or drawn faint; :mod:`ccci.screen`),
            ``""`` when none; never counted as ``input_text``.
    """

    state: AgentState = AgentState.UNKNOWN
    matches: list[Match] = field(default_factory=list)
    input_text: str = ""
    input_present: bool = False
    reset_at: datetime | None = None
    waiting_until: datetime | None = None
    fingerprint: str = ""
    block: str = ""
    placeholder: str = ""

    def first(self, state: AgentState) -> Match | None:
        """The first match concluding ``state``, or ``None``."""
        for m in self.matches:
            if m.state == state:
                return m
        return None


@dataclass
class Finding:
    """What a check reports: a failing (or notable) signal with its evidence.

    Attributes:
        check: name of the check that produced it (e.g. ``"process_death"``).
        agent: agent name, or ``None`` for a fleet-level finding.
        summary: one line for people.
        evidence: the matching screen line, the numbers, the commit; never a secret.
        severity: ``"fail"`` (acts after hysteresis) or ``"info"`` (reported only).
        data: structured details for the remedy (e.g. ``{"reset_at": "..."}``).
        immediate: skip hysteresis (e.g. a dead process is a fact, not a flicker).
        structured: the CLI itself reported it in structured form (Claude Code's
            ``StopFailure`` hook payload, opencode's server API), not read off the
            screen: it acts on its first tick (no ``failure_threshold`` ticks, no
            ``startup_grace``), but, unlike ``immediate``, not while the agent is held
            (a ``wait`` for a usage limit). Screen-only findings keep the hysteresis.
        plugin: the plugin that produced it (set by the runner).

    Identity: a finding is the same *occurrence* as an earlier one when its ``check``,
    ``agent``, the agent's process generation and :meth:`fingerprint` (of ``evidence``)
    are equal; a remedy runs once per occurrence (see :class:`RemedyResult`). Put what
    makes an occurrence new (a line, a commit, a pid) in ``evidence``, and nothing that
    changes every tick (a counter of seconds) unless each tick is a new occurrence.
    """

    check: str
    agent: str | None
    summary: str
    evidence: str = ""
    severity: str = "fail"
    data: dict[str, Any] = field(default_factory=dict)
    immediate: bool = False
    structured: bool = False
    plugin: str = ""

    def fingerprint(self) -> str:
        """A short stable hash of ``evidence`` (16 hex digits, BLAKE2b)."""
        import hashlib

        return hashlib.blake2b(self.evidence.encode("utf-8", "replace"), digest_size=8).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (used by ``diagnose --json`` and the event log)."""
        return {
            "check": self.check,
            "agent": self.agent,
            "summary": self.summary,
            "evidence": self.evidence,
            "severity": self.severity,
            "data": self.data,
            "structured": self.structured,
        }


@dataclass
class Remedy:
    """A decision to act on a finding.

    Attributes:
        action: ``restart`` (fresh session), ``resume`` (relaunch, same conversation),
            ``send`` (type a message), ``wait`` (until ``not_before``), ``compact``,
            ``escalate`` (hand to a person), or any name a plugin handles.
        agent: target agent name (``None`` for fleet-level actions).
        reason: the finding that led here.
        text: message text for ``send``.
        not_before: UTC time before which the action must not run (``wait``).
        data: extra parameters for the executing plugin.
        retry_after_s: seconds after which the runner may act again on the same
            occurrence of the finding if it is still there, when the result does not
            say otherwise (``None``: once). E.g. ``/compact`` is given 60 s to work.
    """

    action: str
    agent: str | None
    reason: Finding
    text: str = ""
    not_before: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)
    retry_after_s: float | None = None


@dataclass
class RemedyResult:
    """Outcome of carrying out a :class:`Remedy`.

    Attributes:
        ok: ``True``: the action was carried out (not necessarily that the agent is
            healthy yet). The runner then does not run a remedy for the same occurrence
            of the finding again (same check, agent, process generation and evidence;
            also after a watcher restart), unless ``retry_after_s`` is set.
            ``False``: it could not be carried out; the runner may run a remedy again on
            a later tick while the finding persists (after ``retry_after_s`` when set;
            restarts stay under restart intensity and backoff).
        detail: one line for the event log.
        pending: the agent is expected to come back (a restart): its checks are paused
            until its process is back, at most 30 s.
        retry_after_s: seconds after which the runner may act again on the same
            occurrence if the finding is still there (``None``: once, for ``ok``; on the
            next tick, for a failure). A ``wait`` until a usage limit resets sets it.
    """

    ok: bool
    detail: str = ""
    pending: bool = False
    retry_after_s: float | None = None


@dataclass
class Event:
    """One entry of the append-only event log.

    Attributes:
        kind: e.g. ``agent_started``, ``finding``, ``remedy``, ``escalation``,
            ``plugin_error``, ``plugin_disabled``, ``ping_delivered``, ``degraded``.
        message: one line for people.
        agent: agent name or ``None``.
        at: UTC wall time.
        data: JSON-able details.
    """

    kind: str
    message: str
    agent: str | None = None
    at: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)
