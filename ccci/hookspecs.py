"""Every hook specification of ccci, in one module (like pytest's ``hookspec.py``).

A plugin is any module or object with functions marked ``@ccci.hookimpl`` whose names
match the specs below. Builtin checks, remedies and backends are ordinary plugins,
registered through the same entry point machinery a third-party plugin uses.

Arguments by name
-----------------
As with pluggy in general (and pytest fixtures), a hook implementation declares only
the arguments it needs, by name, in any order. A check that only needs the screen
analysis is ``def ccci_check_agent(analysis): ...``. The arguments each spec offers are
listed in its docstring.

Result rules
------------
* "all results": pluggy calls every implementation and the caller gets the list of
  non-``None`` results.
* ``firstresult``: pluggy stops at the first non-``None`` result.

Arguments every hook offers
---------------------------
Besides the arguments in each spec, every hook offers two more, by name:

* ``stash``: the calling plugin's :class:`ccci.stash.Stash` for the hook's agent (the
  fleet's in fleet-wide hooks): the only place a plugin keeps state; keys made with
  ``StashKey(name, persist=True)`` survive a watcher restart.
* ``services``: a :class:`ccci.services.Services` bound to the calling plugin: what a
  plugin may do (emit an event, queue a message, launch/stop an agent, schedule,
  escalate, read the clock and the config, its stash). No hook receives the runner.

Isolation and order
-------------------
Every implementation of every hook is called on its own by the runner
(:mod:`ccci.calls`): with a time limit, and a raise, a time-out or a result of the wrong
type is UNKNOWN for that implementation only, reported as one ``plugin_error`` event
that names the plugin, the hook and ``file:line``; a plugin failing on 5 consecutive
ticks is disabled (``plugin_disabled``). Order: ``tryfirst``, then the others, then
``trylast``; within each, builtins first, then in registration order. Hook wrappers are
refused at registration. ``firstresult`` hooks take the first accepted non-``None``
result of an implementation that did not fail.

The essential builtins (``CCCI_ESSENTIAL``: process death and the restart remedy) cannot
be blocked: their restart remedy is run before any other ``ccci_run_remedy``, and for
their findings another chooser's answer counts only when it is a restart (``restart``,
``resume``, ``fresh``, ``start``) or ``escalate``; otherwise the builtin choice stands.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from datetime import datetime

    from ccci.backends.base import Backend
    from ccci.config import FleetConfig
    from ccci.model import Event, Finding, PaneInfo, ProcessInfo, Remedy, RemedyResult, ScreenAnalysis
    from ccci.model import AgentSpec
    from ccci.runtime import AgentRuntime, FleetSnapshot
    from ccci.services import KeyValue, Services
    from ccci.stash import Stash

PROJECT_NAME = "ccci"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------- lifecycle


@hookspec
def ccci_configure(config: "FleetConfig", stash: "Stash", services: "Services") -> None:
    """Called once after the fleet config is loaded and every plugin is registered.

    Called by ``ccci watch`` before the first tick, and by ``ccci diagnose`` and the
    other commands that build a plugin manager.

    :param config: the validated :class:`ccci.config.FleetConfig`.
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: nothing; results are ignored.
    """


@hookspec
def ccci_unconfigure(config: "FleetConfig", stash: "Stash", services: "Services") -> None:
    """Called once when the watcher stops (normal exit, SIGTERM, or Ctrl-C).

    Release resources opened in :func:`ccci_configure` here.

    :param config: the same :class:`ccci.config.FleetConfig` given to ``ccci_configure``.
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: nothing; results are ignored.
    """


# --------------------------------------------------------------------------- backends


@hookspec
def ccci_register_backends() -> "list[Backend]":
    """Called once at plugin-manager setup to collect agent backends.

    A backend knows how to launch and resume an agent CLI in a pane and how to read
    its screen (see :class:`ccci.backends.base.Backend`).

    :returns: a list of :class:`ccci.backends.base.Backend` instances (all results are
        collected; a later plugin registering an already-known name is an error
        reported in one line and skipped).
    """


# --------------------------------------------------------------------------- ticks


@hookspec
def ccci_tick_start(tick: int, now: "datetime", mono: float, stash: "Stash", services: "Services") -> None:
    """Called at the start of every tick, before the fleet is observed.

    :param tick: tick number, 1 for the first tick of this watcher process.
    :param now: UTC wall time (``datetime`` with ``tzinfo=UTC``).
    :param mono: monotonic clock reading in seconds.
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: nothing; results are ignored.
    """


@hookspec
def ccci_observe(
    snapshot: "FleetSnapshot", config: "FleetConfig", state: "KeyValue", now: "datetime", mono: float,
    agents: "dict[str, AgentRuntime]",
    stash: "Stash", services: "Services",
) -> None:
    """Called once per tick after the batched tmux query and the process scan.

    Plugins that gather fleet-wide facts on their own cadence (git fetches, file
    watches, the CLI's lifecycle-hook spool) add them to ``snapshot.facts`` under a
    name of their choosing; checks can then read ``snapshot.facts[name]``. To report
    something (e.g. origin unreachable), append a :class:`ccci.model.Event` to
    ``snapshot.events``; the runner logs it. An implementation must be cheap or
    rate-limit itself (the tick is 1 s).

    A *state source* (the CLI's lifecycle hooks, its session files) refines what the
    screen said: it may replace ``agents[name].analysis`` with a copy whose ``state``
    (and ``reset_at``) it knows better, its evidence first in ``matches`` (see
    :mod:`ccci.backends.claude.claude_hooks`). Checks then see the merged reading.

    Facts the builtins read: ``backends`` (``{agent: Backend}``, set by the runner),
    ``pending_messages`` (``{agent: queued messages}``, set by the runner),
    ``turn_outcome`` (``{agent: AgentState}``: how the last turn of a backend that exits
    at turn end ended; ``IDLE`` = cleanly) and ``turn_wait`` (``{agent: datetime}``: the
    ``WAITING-UNTIL`` that turn declared), both set by such a backend (opencode); the
    process-death check resumes only clean turn ends, and only when no declared wait is
    pending or a message is queued.
    ``context`` (``{agent: {"tokens", "window", "fraction", "model", "at"}}``: the context
    use the agent's CLI recorded, set by :mod:`ccci.usage_watch`) is read by the
    ``compact_before_limit`` check.

    :param snapshot: :class:`ccci.runtime.FleetSnapshot` for this tick (panes by agent,
        processes by agent, screens captured this tick, facts).
    :param config: the fleet config.
    :param state: fleet-wide named values (:class:`ccci.services.KeyValue`: ``get``,
        ``put``, ``delete``, ``transaction``).
    :param now: UTC wall time.
    :param mono: monotonic seconds.
    :param agents: agent name -> :class:`ccci.runtime.AgentRuntime` (this tick's screen
        analysis in ``analysis``).
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: nothing; results are ignored.
    """


@hookspec
def ccci_tick_end(tick: int, findings: "list[Finding]", duration_s: float, stash: "Stash", services: "Services") -> None:
    """Called at the end of every tick, after remedies were dispatched.

    :param tick: tick number.
    :param findings: every finding produced this tick (before hysteresis).
    :param duration_s: wall seconds the tick took (observation + checks + remedies).
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: nothing; results are ignored.
    """


# --------------------------------------------------------------------------- checks


@hookspec
def ccci_check_agent(
    agent: "AgentRuntime",
    spec: Any,
    pane: "PaneInfo | None",
    process: "ProcessInfo",
    screen: str,
    block: str,
    analysis: "ScreenAnalysis",
    backend: "Backend",
    settings: dict,
    snapshot: "FleetSnapshot",
    now: "datetime",
    mono: float,
    stash: "Stash", services: "Services",
) -> "Finding | list[Finding] | None":
    """Called once per tick for every supervised agent whose evaluation is not paused.

    This is where health checks live: one check per signal, each returning findings
    with evidence. Declare only the arguments you need.

    :param agent: :class:`ccci.runtime.AgentRuntime`: the agent's live bookkeeping
        (``started_mono``, ``screen_changed_mono``, ``conversation_id``, restart counts).
    :param spec: the agent's :class:`ccci.model.AgentSpec` from the config.
    :param pane: the agent's :class:`ccci.model.PaneInfo`, or ``None`` when its tmux
        session does not exist.
    :param process: :class:`ccci.model.ProcessInfo` from this tick's process scan.
    :param screen: the newest pane capture (plain text, no escapes), ``""`` if none.
    :param block: the newest block of ``screen``: the lines from the newest user turn on,
        above the input box (``analysis.block``). Text of older turns is not in it, so
        a check that reads ``block`` does not act on an error that scrolled past.
    :param analysis: the backend's :class:`ccci.model.ScreenAnalysis` of ``screen``.
    :param backend: the agent's :class:`ccci.backends.base.Backend`.
    :param settings: the check thresholds in force for this agent (``[checks]`` in
        ``ccci.toml`` merged with defaults; seconds for durations).
    :param snapshot: the whole :class:`ccci.runtime.FleetSnapshot` of this tick.
    :param now: UTC wall time (for declared deadlines like ``WAITING-UNTIL``).
    :param mono: monotonic seconds (for intervals).
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: a :class:`ccci.model.Finding`, a list of them, or ``None`` when healthy.
        All results are collected. A raised exception counts as UNKNOWN.
    """


@hookspec
def ccci_check_fleet(
    snapshot: "FleetSnapshot", config: "FleetConfig", state: "KeyValue", now: "datetime", mono: float,
    stash: "Stash", services: "Services",
) -> "Finding | list[Finding] | None":
    """Called once per tick for fleet-level signals (new handoff commits, phase done).

    :param snapshot: this tick's :class:`ccci.runtime.FleetSnapshot`, with the facts
        that ``ccci_observe`` implementations gathered.
    :param config: the fleet config.
    :param state: fleet-wide named values (:class:`ccci.services.KeyValue`; read
        baselines here: the remedy, not the check, advances them).
    :param now: UTC wall time.
    :param mono: monotonic seconds.
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: a :class:`ccci.model.Finding`, a list of them, or ``None``; all collected.
    """


# --------------------------------------------------------------------------- remedies


@hookspec(firstresult=True)
def ccci_choose_remedy(
    finding: "Finding", agent: "AgentRuntime | None", settings: dict, now: "datetime",
    stash: "Stash", services: "Services",
) -> "Remedy | None":
    """Called for each finding that passed hysteresis, to decide what to do.

    The first non-``None`` result wins (``firstresult``): a plugin that wants to
    override a builtin decision uses ``@hookimpl(tryfirst=True)``.

    :param finding: the :class:`ccci.model.Finding`.
    :param agent: the target's :class:`ccci.runtime.AgentRuntime`, ``None`` for fleet
        findings.
    :param settings: the thresholds in force (``max_resumes``, backoff seconds, ...).
    :param now: UTC wall time.
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: a :class:`ccci.model.Remedy`, or ``None`` to leave the decision to the
        next plugin (and, if nobody decides, the finding is only reported).
    """


@hookspec(firstresult=True)
def ccci_run_remedy(
    remedy: "Remedy", services: "Services", agent: "AgentRuntime | None", config: "FleetConfig", now: "datetime",
    stash: "Stash",
) -> "RemedyResult | None":
    """Called to carry out a remedy the runner allowed (restart intensity, backoff,
    breaker and "one remedy in flight per agent" are enforced before this call).

    The implementation that handles ``remedy.action`` returns a result; others return
    ``None`` (``firstresult``). The result decides what happens next: ``ok=True`` and no
    ``retry_after_s``: done for this occurrence of the finding, never repeated while it
    lasts (also across a watcher restart); ``retry_after_s``: the runner may act again
    after that many seconds if the finding is still there; ``ok=False``: failed, tried
    again on a later tick. ``pending=True``: the agent's checks pause until its process
    is back (a restart).

    :param remedy: the :class:`ccci.model.Remedy`.
    :param services: :class:`ccci.services.Services` bound to this plugin (act through it).
    :param agent: the target's runtime view (``None`` for fleet remedies).
    :param config: the fleet config.
    :param now: UTC wall time.
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :returns: a :class:`ccci.model.RemedyResult`, or ``None`` if this plugin does not
        handle the action. Raising is a ``plugin_error``; the next implementation is
        asked.
    """


# --------------------------------------------------------------------------- launching


@hookspec
def ccci_agent_active(
    agent: "AgentRuntime", spec: "AgentSpec", config: "FleetConfig", state: "KeyValue", snapshot: "FleetSnapshot | None",
    stash: "Stash", services: "Services",
) -> "bool | None":
    """Called at watcher start (``snapshot`` ``None``) and every tick before an agent's
    checks: is this agent ccci's to start and judge now?

    ``False`` from any implementation: the agent is neither started at watcher start nor
    checked this tick (a job between runs, a role a person launched by hand, a fleet
    whose phases are all complete).

    :param agent: the agent's :class:`ccci.runtime.AgentRuntime`.
    :param spec: its :class:`ccci.model.AgentSpec`.
    :param config: the fleet config.
    :param state: fleet-wide named values (:class:`ccci.services.KeyValue`).
    :param snapshot: this tick's :class:`ccci.runtime.FleetSnapshot`, ``None`` at watcher start.
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: ``False`` to leave the agent alone, ``True`` or ``None`` otherwise (all
        results are collected; one ``False`` decides).
    """


@hookspec
def ccci_before_launch(agent: "AgentRuntime", spec: "AgentSpec", mode: str, config: "FleetConfig", stash: "Stash", services: "Services") -> "str | None":
    """Called before an agent is (re)started (``mode``: ``start``, ``fresh``,
    ``resume`` or ``restart``).

    :param agent: the agent's :class:`ccci.runtime.AgentRuntime`.
    :param spec: its :class:`ccci.model.AgentSpec`.
    :param mode: the requested launch mode.
    :param config: the fleet config.
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: a one-line reason not to launch it now (the launch is skipped and
        reported as not carried out), or ``None``.
    """


@hookspec
def ccci_launch_env(agent: "AgentRuntime", spec: "AgentSpec", config: "FleetConfig", state: "KeyValue", stash: "Stash", services: "Services") -> "dict | None":
    """Called at every launch for environment variables of the agent's process (e.g.
    ``CCCI_PHASE``), merged over ``CCCI_AGENT``, ``CCCI_FLEET``, the agent's ``env`` and
    the backend's.

    :param agent: the agent's :class:`ccci.runtime.AgentRuntime`.
    :param spec: its :class:`ccci.model.AgentSpec`.
    :param config: the fleet config.
    :param state: fleet-wide named values (:class:`ccci.services.KeyValue`).
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: ``{name: value}`` (strings) or ``None``; all results are merged in calling
        order.
    """


@hookspec
def ccci_prompt_preamble(agent: "AgentRuntime", spec: "AgentSpec", config: "FleetConfig", state: "KeyValue", stash: "Stash", services: "Services") -> "str | None":
    """Called when a fresh session's prompt is built, for text ahead of the role prompt
    (e.g. the current phase and its plan).

    :param agent: the agent's :class:`ccci.runtime.AgentRuntime`.
    :param spec: its :class:`ccci.model.AgentSpec`.
    :param config: the fleet config.
    :param state: fleet-wide named values (:class:`ccci.services.KeyValue`).
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: a paragraph, or ``None``; all results are joined by blank lines.
    """


# --------------------------------------------------------------------------- reporting


@hookspec
def ccci_report_event(event: "Event", stash: "Stash", services: "Services") -> None:
    """Called for every event after it is appended to the durable event log.

    Used for logging, notifications (webhooks, shell commands) and metrics. Must not
    block for long: the call is on the tick's thread.

    :param event: the :class:`ccci.model.Event` (``at`` is UTC wall time).
    :param stash: the calling plugin's :class:`ccci.stash.Stash` (see "Arguments every hook offers").
    :param services: :class:`ccci.services.Services` bound to the calling plugin.
    :returns: nothing; results are ignored.
    """
