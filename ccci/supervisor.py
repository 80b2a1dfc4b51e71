"""The runner: one tick per second, checks as plugins, remedies under guard rails.

Each tick:

1. ``ccci_tick_start``;
2. one batched ``tmux list-panes -a`` query (through the watcher's control-mode client,
   :mod:`ccci.tmux_control`, whose notifications also :meth:`Supervisor.wake` the runner
   when a pane changes; a forked tmux client when it is not running); captures (one more tmux call) only of the
   panes whose activity, cursor, history or title changed, or not captured for
   :data:`RECAPTURE_S`; one process scan (psutil) of the agents' pane pids;
3. ``ccci_observe`` (git on its own cadence, other fleet facts, state sources);
4. for every agent that is not stopped, given up, inactive (``ccci_agent_active``) or
   coming back from a restart: ``ccci_check_agent``; then ``ccci_check_fleet``;
5. hysteresis, restart intensity, backoff and the fleet breaker (:mod:`ccci.guards`);
6. for each actionable finding whose occurrence was not remedied yet
   (:mod:`ccci.occurrences`): ``ccci_choose_remedy``, then ``ccci_run_remedy``
   (:mod:`ccci.remedies`); an
   essential check's finding (process death) is handled first and its builtin choice
   stands unless another plugin chose a restart or an escalation;
7. due scheduled remedies; queued messages delivered (:mod:`ccci.outbox`);
8. ``ccci_tick_end``.

Every call into plugin code goes through :mod:`ccci.calls` (isolated, timed, checked).
Plugins get :class:`ccci.services.Services`, never this class.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any, Callable

from ccci import guards
from ccci.calls import PluginCalls
from ccci.clock import Clock
from ccci.config import FleetConfig
from ccci.lifecycle import Lifecycle
from ccci.model import AgentState, Event, Finding, ProcessInfo, Remedy, RemedyResult, ScreenAnalysis
from ccci.occurrences import Occurrences
from ccci.outbox import Outbox
from ccci.plugins import CcciPluginManager, collect_backends
from ccci.processes import ProcessScanner
from ccci.redact import Redactor, collect_secrets
from ccci.remedies import Remedies
from ccci.runtime import AgentRuntime, FleetSnapshot
from ccci.services import RunnerServices, StoreKeyValue
from ccci.state import StateStore, StorageMonitor
from ccci.stash import Stashes
from ccci.tmux import Tmux

RECAPTURE_S = 5.0  #: capture an unchanged-looking pane at least this often (seconds)
PENDING_TIMEOUT_S = 30.0  #: a restarted agent not back after this is re-evaluated


class Supervisor:
    """Supervises one fleet.

    :param config: the fleet config.
    :param pm: the plugin manager (builtins + third party).
    :param store: the durable state store.
    :param tmux: the tmux server of the fleet.
    :param clock: the clock (inject :class:`ccci.clock.FakeClock` in tests).
    :param process_scan: ``pids -> {pid: ProcessInfo}`` (default: a :class:`ProcessScanner`, psutil).
    :raises ValueError: when an agent names an unknown backend (one line: file, key, fix).
    """

    def __init__(self, config: FleetConfig, pm: CcciPluginManager, store: StateStore, tmux: Tmux,
                 clock: Clock | None = None,
                 process_scan: Callable[[list[int]], dict[int, ProcessInfo]] | None = None) -> None:
        self.config = config
        self.pm = pm
        self.store = store
        self.kv = StoreKeyValue(store)
        self.tmux = tmux
        self.clock = clock or Clock()
        self.process_scan = process_scan or ProcessScanner()
        self.redactor = Redactor(collect_secrets(config))
        self.stashes = Stashes(store)
        self._services: dict[str, RunnerServices] = {}
        self.calls = PluginCalls(pm, self.emit, lambda: self.config.checks, self.stashes, self.services)
        self.lifecycle = Lifecycle(self)
        self.outbox = Outbox(self)
        self.storage = StorageMonitor(store, self.emit)
        self.occurrences = Occurrences(store)
        self.remedies = Remedies(self)
        self.backends = collect_backends(pm)
        #: backend name -> the plugin that registered it (for plugin_error events)
        self.backend_plugins = {b.name: getattr(b, "_ccci_plugin", b.name) for b in self.backends.values()}
        for bname, version in config.pattern_versions.items():
            if bname in self.backends:  # explicit: read screens as those of this CLI version
                self.backends[bname].use_cli_version(version)
        for bname, rules in config.patterns.items():
            if bname in self.backends:
                self.backends[bname].set_overrides(rules, f"{config.path}: patterns.{bname}")
        self.agents: dict[str, AgentRuntime] = {}
        for spec in config.agents:
            backend = self.backends.get(spec.backend)
            if backend is None:
                raise ValueError(f"{config.path}: agents.{spec.name}.backend: unknown backend {spec.backend!r}; "
                                 f"known: {', '.join(sorted(self.backends))}")
            self.agents[spec.name] = AgentRuntime(spec=spec, backend=backend, session=config.session_name(spec.name))
        self.tick_no = 0
        self.breaker = guards.BreakerState()
        self.last_snapshot: FleetSnapshot | None = None
        self.stopping = False
        self.stop_reason = ""  #: why :meth:`request_stop` was called (the ``watcher_stopping`` event)
        self.log_dir = config.state_dir / "logs"
        self._last_tick_error: tuple[str, float] = ("", 0.0)
        self._tmux_down = False
        self._reload_requested = False
        self._wake = threading.Event()
        self.last_wake_reason = ""
        #: the last tick saw nothing change and found nothing (:meth:`next_interval`)
        self.quiet = False
        self._agents_version: tuple | None = None  # StateStore.agents_version at the last _refresh_flags
        self._tick_data_version: tuple | None = None  # StateStore.data_version at the last tick's start
        self._tick_by: float | None = None  # monotonic: a plugin asked for a tick by then (tick_within)

    def services(self, plugin: str) -> RunnerServices:
        """The :class:`ccci.services.Services` bound to ``plugin``."""
        svc = self._services.get(plugin)
        if svc is None:
            svc = self._services[plugin] = RunnerServices(self, plugin)
        return svc

    def redact(self, text: str) -> str:
        """``text`` with every known secret value replaced by ``***``."""
        return self.redactor.text(text)

    # ================================================================== events
    def emit(self, kind: str, message: str, /, agent: str | None = None, data: dict | None = None, **extra: Any) -> None:
        """Append an event to the durable log, then call every ``ccci_report_event``.

        :param kind: event kind (``finding``, ``remedy``, ``agent_resumed``...).
        :param message: one line for people (secrets redacted, escapes removed).
        :param agent: the agent concerned, or ``None``.
        :param data: JSON-able details (merged with ``extra``).
        """
        from ccci.send import sanitize

        payload = self.redactor.data({**(data or {}), **extra})
        # text from panes and commits may carry escapes: never replay them on a terminal
        ev = Event(kind=kind, message=sanitize(self.redact(message)), agent=agent, at=self.clock.now(), data=payload)
        try:
            self.store.append_event(ev)
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop supervision
            ev.data["store_error"] = str(exc)[:200]
        self.calls.call_all("ccci_report_event", {"event": ev})

    # ================================================================== the tick
    def observe(self) -> FleetSnapshot:
        """Steps 2-3 of the tick: tmux, captures, processes, ``ccci_observe``."""
        now, mono = self.clock.now(), self.clock.monotonic()
        snap = FleetSnapshot(tick=self.tick_no, now=now, mono=mono)
        panes = self.tmux.list_panes()
        if not getattr(self.tmux, "server_running", True):
            # the whole tmux server is gone: one cause, which restarting does fix, so it
            # is not a fleet-wide failure for the breaker
            self._note_server_down(snap)
        else:
            self._tmux_down = False
        to_capture: list[AgentRuntime] = []
        for name, rt in self.agents.items():
            pane = panes.get(rt.session)
            snap.panes[name] = pane
            if pane is None:
                continue
            if rt.pane_id != pane.pane_id:
                rt.pane_id, rt.pid = pane.pane_id, pane.pid
            key = pane.change_key()
            if key != rt.last_change_key or mono - rt.last_capture_mono >= RECAPTURE_S:
                to_capture.append(rt)
                rt.last_change_key = key
        if to_capture:
            texts = self.tmux.capture([rt.pane_id for rt in to_capture if rt.pane_id])
            for rt in to_capture:
                self._read_screen(rt, texts.get(rt.pane_id or "", ""), snap)
        pids = [p.pid for p in panes.values() if p is not None and not p.dead]
        procs = self.process_scan(pids) if pids else {}
        for name in self.agents:
            pane = snap.panes[name]
            if pane is None:
                snap.processes[name] = ProcessInfo(pid=None, alive=False)
            elif pane.dead:
                snap.processes[name] = ProcessInfo(pid=pane.pid, alive=False)
            else:
                snap.processes[name] = procs.get(pane.pid, ProcessInfo(pid=pane.pid, alive=False))
        snap.facts["backends"] = {n: rt.backend for n, rt in self.agents.items()}
        pending: dict[str, int] = {}
        for msg in self.store.pending_messages():
            pending[msg.agent] = pending.get(msg.agent, 0) + 1
        snap.facts["pending_messages"] = pending  # {agent: queued messages}
        self.calls.call_all("ccci_observe", {"snapshot": snap, "config": self.config, "state": self.kv, "now": now,
                                             "mono": mono, "agents": self.agents})
        for ev in snap.events:
            self.emit(ev.kind, ev.message, agent=ev.agent, data=ev.data)
        self.last_snapshot = snap
        return snap

    def _read_screen(self, rt: AgentRuntime, text: str, snap: FleetSnapshot) -> None:
        rt.last_capture_mono = snap.mono
        snap.captured.add(rt.name)
        pane = snap.panes[rt.name]
        if text != rt.screen:
            rt.screen_changed_mono = snap.mono
            rt.screen = text
        analysis = self.calls.guarded(self.backend_plugins.get(rt.backend.name, rt.backend.name),
                                      f"{rt.backend.name}.analyse", rt.backend.analyse, text, pane.title if pane else "",
                                      default=ScreenAnalysis(block=text))
        if analysis.fingerprint != rt.analysis.fingerprint:
            rt.content_changed_mono = snap.mono
        if rt.last_state == AgentState.BUSY and analysis.state == AgentState.IDLE:
            rt.nudges = 0  # a turn ended: the agent is making progress
        rt.last_state = analysis.state
        if analysis.state == AgentState.BUSY:
            rt.first_turn_pending = False
        rt.analysis = analysis

    def tick(self) -> list[Finding]:
        """Run one tick; returns the findings produced (before hysteresis)."""
        self.tick_no += 1
        t0 = time.monotonic()
        now, mono = self.clock.now(), self.clock.monotonic()
        self.calls.begin_tick()
        try:
            return self._tick(t0, now, mono)
        finally:
            self.calls.disarm()

    def _tick(self, t0: float, now: Any, mono: float) -> list[Finding]:
        self.quiet = False
        self._tick_by = None
        self._tick_data_version = self.store.data_version()  # before this tick reads the store
        self.calls.call_all("ccci_tick_start", {"tick": self.tick_no, "now": now, "mono": mono})
        self.storage.check(mono)
        self._refresh_flags()
        snap = self.observe()
        findings: list[Finding] = []
        actionable: list[Finding] = []
        for name, rt in self.agents.items():
            if rt.stopped or rt.given_up:
                continue
            if not self.lifecycle.active(name, snap):
                rt.failing.clear()  # an inactive job, a hand-launched instance: not ours to judge
                continue
            self._update_pending(rt, snap)
            if rt.pending_since_mono is not None:
                continue
            fs = self.check_agent(rt, snap)
            findings.extend(fs)
            self.occurrences.observed(name, fs)
            a = guards.assess(fs, failing=rt.failing, mono=snap.mono, started_mono=rt.started_mono,
                              hold_until_mono=rt.hold_until_mono, healthy_since_mono=rt.healthy_since_mono,
                              backoff_s=rt.backoff_s, settings=self.config.settings_for(name))
            rt.failing, rt.healthy_since_mono, rt.backoff_s = a.failing, a.healthy_since_mono, a.backoff_s
            actionable.extend(a.actionable)
        fleet_fs = self._findings("ccci_check_fleet", {
            "snapshot": snap, "config": self.config, "state": self.kv, "now": snap.now, "mono": snap.mono}, None)
        findings.extend(fleet_fs)
        self.occurrences.observed(None, fleet_fs)
        actionable.extend(f for f in fleet_fs if f.severity != "info")
        if not snap.facts.get("tmux_server_down"):
            self._update_breaker(actionable, snap)
        fleet_ids = {id(f) for f in fleet_fs}
        handled: set[str] = set()
        # an essential check (process death) first: a dead agent's other findings are
        # stale, and an immediate finding of another check must not hold its restart off
        for f in sorted(actionable, key=lambda f: (not self.pm.is_essential(f.plugin), not f.immediate, f.check)):
            if f.agent is not None:
                if f.agent in handled:
                    continue
                handled.add(f.agent)
            self.remedies.act(f, snap, fleet=id(f) in fleet_ids)
        self.remedies.run_scheduled()
        self.outbox.deliver_pending()
        self.calls.end_tick()
        self.calls.call_all("ccci_tick_end", {"tick": self.tick_no, "findings": findings,
                                              "duration_s": time.monotonic() - t0})
        self.quiet = self._fleet_quiet(snap, findings)
        return findings

    def _fleet_quiet(self, snap: FleetSnapshot, findings: list[Finding]) -> bool:
        """Nothing changed and nothing is under way: no finding (of any severity), no
        screen that changed this tick, nothing typed, no agent failing, coming back from
        a remedy or given up, no queued message, the breaker closed, the tmux server up."""
        if findings or snap.facts.get("pending_messages") or snap.facts.get("tmux_server_down"):
            return False
        if snap.mono < self.breaker.open_until:
            return False
        tick = self.tick_no
        for rt in self.agents.values():
            if (rt.failing or rt.pending_since_mono is not None or rt.given_up or rt.typed_tick == tick
                    or rt.screen_changed_mono == snap.mono or rt.content_changed_mono == snap.mono):
                return False
        return True

    def tick_within(self, seconds: float) -> None:
        """The next tick comes within ``seconds`` even when the fleet is quiet
        (``Services.tick_within``; the earliest request of the tick wins)."""
        at = self.clock.monotonic() + max(0.0, float(seconds))
        if self._tick_by is None or at < self._tick_by:
            self._tick_by = at

    def event_driven(self) -> bool:
        """True while the watcher's tmux control client runs and its subscription is
        live: a pane process exit (pidfd), a pane's output, a pane dying and a session
        coming or going wake the runner (:mod:`ccci.tmux_control`)."""
        ctl = getattr(self.tmux, "control", None)
        return ctl is not None and ctl.alive and bool(getattr(ctl, "subscribed", False))

    def next_interval(self) -> float:
        """Seconds from the start of the last tick to the next one when nothing wakes
        the runner: ``tick_seconds``; ``fleet.idle_tick_seconds`` (the quiet fleet's
        safety tick) when the last tick was :attr:`quiet` and the runner is
        :meth:`event_driven`, but no later than a plugin's :meth:`tick_within`, the
        first scheduled remedy or the end of an agent's hold.

        Why it is safe: what makes a quiet fleet unquiet reaches the runner as a wake-up
        (a pidfd for a process exit, the subscription within 1 s for output in any
        pane or a dead pane, ``%sessions-changed``/``%window-close``, the control
        client's own end, which also turns :meth:`event_driven` off); a missed one
        waits at most ``idle_tick_seconds``, the safety tick, which always runs. A time
        threshold (``stall_idle``, ``needs_input``) on a quiet screen is reached at
        most that much later."""
        base = float(self.config.tick_seconds)
        idle = float(getattr(self.config, "idle_tick_seconds", 0.0) or 0.0)
        snap = self.last_snapshot
        if not self.quiet or idle <= base or snap is None or not self.event_driven():
            return base
        limit = snap.mono + idle
        if self._tick_by is not None:
            limit = min(limit, self._tick_by)
        for rt in self.agents.values():
            if rt.hold_until_mono > snap.mono:
                limit = min(limit, rt.hold_until_mono)
        for at, _remedy in self.remedies.scheduled:
            limit = min(limit, snap.mono + max(0.0, (at - snap.now).total_seconds()))
        return max(base, limit - snap.mono)

    def check_agent(self, rt: AgentRuntime, snap: FleetSnapshot) -> list[Finding]:
        """Run every ``ccci_check_agent`` implementation for one agent."""
        kwargs = {
            "agent": rt, "spec": rt.spec, "pane": snap.panes.get(rt.name), "process": snap.processes[rt.name],
            "screen": rt.screen, "block": rt.analysis.block, "analysis": rt.analysis, "backend": rt.backend,
            "settings": self.config.settings_for(rt.name), "snapshot": snap, "now": snap.now, "mono": snap.mono,
        }
        return self._findings("ccci_check_agent", kwargs, rt.name)

    def _findings(self, hook: str, kwargs: dict[str, Any], agent: str | None) -> list[Finding]:
        out: list[Finding] = []
        for info in self.calls.call_all(hook, kwargs, agent=agent):
            for f in info.result if isinstance(info.result, (list, tuple)) else [info.result]:
                if isinstance(f, Finding):
                    f.plugin = info.plugin
                    if f.agent is None and agent is not None:
                        f.agent = agent
                    out.append(f)
        return out

    def _refresh_flags(self) -> None:
        """Pick up ``ccci stop``/``ccci start`` made by the CLI since the last tick (the
        table is read only when :meth:`ccci.state.StateStore.agents_version` moved)."""
        version = self.store.agents_version()
        if version is not None and version == self._agents_version:
            return
        self._agents_version = version
        for rec in self.store.agents():
            rt = self.agents.get(rec.name)
            if rt is None:
                continue
            if rec.stopped and not rt.stopped:
                rt.stopped = True
            elif not rec.stopped and rt.stopped:
                rt.stopped = False  # 'ccci start' while we watch: start it now
                pane = self.tmux.list_panes().get(rt.session)
                if pane is None or pane.dead:
                    self.lifecycle.launch(rec.name, "restart", reason="ccci start")
            if rec.given_up != rt.given_up and not rec.given_up:
                rt.given_up = False  # cleared by a person ('ccci start')
                rt.restart_marks.clear()
                rt.backoff_s = 0.0
                rt.resumes = rec.resumes  # 'ccci start' resets the failure resumes too

    def _update_pending(self, rt: AgentRuntime, snap: FleetSnapshot) -> None:
        if rt.pending_since_mono is None:
            return
        pane, proc = snap.panes.get(rt.name), snap.processes.get(rt.name)
        back = pane is not None and not pane.dead and proc is not None and proc.alive
        waited = snap.mono - rt.pending_since_mono
        if back and waited >= 1.0:
            rt.pending_since_mono = None
            rt.pending_action = ""
            self.store.update_agent(rt.name, state="running")
        elif (pane is None or pane.dead) and waited >= 1.0:
            rt.pending_since_mono = None  # died right after the start: process death acts (with backoff)
            rt.pending_action = ""
        elif waited >= PENDING_TIMEOUT_S:
            rt.pending_since_mono = None  # evaluate again: process death will fire
            self.emit("remedy_timeout", f"agent not back {PENDING_TIMEOUT_S:.0f}s after {rt.pending_action}", agent=rt.name)

    def _update_breaker(self, actionable: list[Finding], snap: FleetSnapshot) -> None:
        # a turn end of a backend that exits after each turn is no failure
        failing = [f.agent for f in actionable if f.agent is not None and not f.data.get("turn_end")]
        breaker, opened = guards.breaker_update(self.breaker, failing, mono=snap.mono, fleet_size=len(self.agents),
                                                settings=self.config.checks)
        if opened and self._tmux_server_gone(snap):
            return  # one cause that restoring the agents fixes: not a fleet-wide failure
        self.breaker = breaker
        if opened:
            window, cooldown = self.config.checks["breaker_window"], self.config.checks["breaker_cooldown"]
            self.emit("breaker_open", f"{len(opened)} of {len(self.agents)} agents failed within {float(window):.0f}s; "
                      f"automatic action paused for {cooldown}s", agents=sorted(opened))
            self.escalate(None, f"fleet breaker open: {', '.join(sorted(opened))} failing at once")

    def _tmux_server_gone(self, snap: FleetSnapshot) -> bool:
        """Look at the tmux server again before the breaker opens: a ``kill -9`` of the
        server between this tick's pane list and its process scan shows as every
        agent's process dead in live panes (the chaos soak, bench/soak.py, on a loaded
        2-core machine: 16 of 20 "process not alive", the breaker open for 300 s, and
        the server's loss seen only on the next tick). When the server is gone, this
        tick's snapshot says so (``tmux_server_down``), ``tmux_server_lost`` is logged
        and the agents are restored as after any loss of the server."""
        self.tmux.list_panes()
        if getattr(self.tmux, "server_running", True):
            return False
        self._note_server_down(snap)
        return True

    def _note_server_down(self, snap: FleetSnapshot) -> None:
        snap.facts["tmux_server_down"] = True
        # tmux exits with its last session: after 'ccci stop' of the last running
        # agent that is the normal end, not a loss (no agent it ran is still wanted)
        wanted = [n for n, rt in self.agents.items() if rt.pane_id and not rt.stopped and not rt.given_up]
        if not self._tmux_down and wanted:
            self.emit("tmux_server_lost", "the tmux server is gone; restoring every agent", agents=wanted)
            self._tmux_down = True

    # ================================================================== remedies (ccci.remedies)
    def run_remedy(self, remedy: Remedy) -> RemedyResult | None:
        """Carry out a remedy now (:meth:`ccci.remedies.Remedies.run`)."""
        return self.remedies.run(remedy)

    def escalate(self, agent: str | None, why: str) -> None:
        """Hand a problem to a person (:meth:`ccci.remedies.Remedies.escalate`)."""
        self.remedies.escalate(agent, why)

    def give_up(self, agent: str) -> None:
        """Stop acting on ``agent`` until a person runs ``ccci start`` (persisted)."""
        self.agents[agent].given_up = True
        self.store.update_agent(agent, given_up=1, state="given_up")

    def schedule(self, remedy: Remedy) -> None:
        """Run ``remedy`` at ``remedy.not_before`` (:meth:`ccci.remedies.Remedies.schedule`)."""
        self.remedies.schedule(remedy)

    # ================================================================== messages
    def queue_message(self, agent: str, text: str, dedup_key: str | None = None) -> int | None:
        """Queue ``text`` for delivery to ``agent`` when it is idle (see :mod:`ccci.send`)."""
        return self.store.queue_message(agent, text, self.clock.now(), dedup_key)

    def deliver_now(self, agent: str, text: str):
        """Type ``text`` into ``agent`` now and verify it (:meth:`ccci.outbox.Outbox.deliver_now`)."""
        return self.outbox.deliver_now(agent, text)

    # ================================================================== main loop
    def adopt(self) -> None:
        """Adopt running agents and start the others (:meth:`ccci.lifecycle.Lifecycle.adopt`)."""
        self.lifecycle.adopt()

    def configure(self) -> None:
        """Call ``ccci_configure`` (once, before the first tick)."""
        self.calls.call_all("ccci_configure", {"config": self.config})

    def run(self, ticks: int | None = None, on_tick: Callable[[], None] | None = None) -> None:
        """Tick every ``tick_seconds`` (a quiet fleet's safety tick:
        :meth:`next_interval`) until :meth:`request_stop` (or ``ticks`` ticks); a
        :meth:`wake` runs the next tick at once.

        Ticks are scheduled on the monotonic clock; a slow tick is not followed by a
        burst of catch-up ticks.
        """
        self.configure()
        self._start_control()
        try:
            self.adopt()
            next_at = self.clock.monotonic()
            n = 0
            while not self.stopping and (ticks is None or n < ticks):
                if self._reload_requested:
                    self.reload_local_plugins()
                try:
                    self.tick()
                except Exception as exc:  # noqa: BLE001 - keep supervising
                    msg = f"tick failed: {type(exc).__name__}: {str(exc)[:300]}"
                    mono = self.clock.monotonic()
                    if msg != self._last_tick_error[0] or mono - self._last_tick_error[1] >= 60:
                        self._last_tick_error = (msg, mono)
                        self.emit("tick_error", msg, where=traceback.format_exc(limit=4)[-800:])
                    self.quiet = False
                n += 1
                if on_tick:
                    on_tick()
                interval = self.next_interval()
                next_at += interval
                delay = next_at - self.clock.monotonic()
                if delay < 0:
                    next_at = self.clock.monotonic()
                    delay = 0
                if interval > float(self.config.tick_seconds):
                    woke = self._quiet_wait(delay)
                else:
                    woke = self.clock.wait(self._wake, delay)
                if woke:
                    next_at = self.clock.monotonic()
        finally:
            if self.stopping:
                self.emit("watcher_stopping", f"stopping: {self.stop_reason or 'asked to stop'}; "
                          "plugins are unconfigured, the agents keep running", reason=self.stop_reason)
            self.calls.call_all("ccci_unconfigure", {"config": self.config})
            stop = getattr(self.tmux, "stop_control", None)
            if callable(stop):
                stop()
            close = getattr(self.process_scan, "close", None)
            if callable(close):
                close()  # its pidfds (a later tick reads /proc again)

    def _quiet_wait(self, delay: float) -> bool:
        """The wait before a quiet fleet's safety tick: as ``clock.wait`` on the wake
        event, but every ``tick_seconds`` the state database is asked whether another
        process committed to it since the last tick started
        (:meth:`ccci.state.StateStore.data_version`): a ``ccci send``, ``stop``, ``start``
        or ``job`` is then picked up within ``tick_seconds``, as without the safety tick.
        :returns: True when woken (an event or such a commit)."""
        step = float(self.config.tick_seconds)
        end = self.clock.monotonic() + delay
        while True:
            left = end - self.clock.monotonic()
            if left <= 0:
                return False
            if self.clock.wait(self._wake, min(left, step)):
                return True
            version = self.store.data_version()
            if version is None or version != self._tick_data_version:
                self.last_wake_reason = "the state database was written by another process"
                return True

    def _start_control(self) -> None:
        """Switch the tmux access to one control-mode client whose notifications call
        :meth:`wake` (:meth:`ccci.tmux.Tmux.start_control`); control clients a dead
        watcher left on the fleet's server are reaped first (a ``tmux_clients_reaped``
        event). ``CCCI_TMUX_CONTROL=0`` in the environment keeps forked tmux clients."""
        start = getattr(self.tmux, "start_control", None)
        if not callable(start) or os.environ.get("CCCI_TMUX_CONTROL", "1") == "0":
            return
        reaped = start(self.wake)
        if reaped:
            self.emit("tmux_clients_reaped", f"ended {len(reaped)} tmux control client(s) a dead watcher left behind",
                      pids=reaped)

    def request_stop(self, signum: int | None = None, *_: Any, reason: str = "") -> None:
        """End :meth:`run` after the current tick (a signal handler: ``SIGTERM``, ``SIGINT``).

        :param signum: the signal that asked, named in the ``watcher_stopping`` event.
        :param reason: the reason to log instead (e.g. ``idle``).
        """
        if not self.stopping:
            import signal as _signal

            if reason:
                self.stop_reason = reason
            elif isinstance(signum, int):
                try:
                    self.stop_reason = _signal.Signals(signum).name
                except ValueError:
                    self.stop_reason = f"signal {signum}"
        self.stopping = True
        self._wake.set()

    def wake(self, reason: str = "") -> None:
        """Run the next tick now instead of at the next ``tick_seconds`` boundary.

        Thread-safe; called by event sources (a tmux notification, a CLI's hook spool,
        an opencode server event) so a finding the CLI reported is acted on without
        waiting for the tick. Several wakes before the tick is run coalesce into one.

        :param reason: what woke the runner (kept in :attr:`last_wake_reason` for tests).
        """
        self.last_wake_reason = reason
        self._wake.set()

    def request_reload(self, *_: Any) -> None:
        """Ask for :meth:`reload_local_plugins` before the next tick (``SIGHUP``)."""
        self._reload_requested = True

    def reload_local_plugins(self) -> None:
        """Re-import the fleet's ``ccci_plugins.py`` (``SIGHUP`` to ``ccci watch``): the
        old module is unregistered, a copy the runner disabled is enabled again, its
        in-memory stash is dropped (persisted keys stay), and the new module is
        registered and configured. Installed (entry-point) plugins need a watcher
        restart; a plugin blocked by ``CCCI_DISABLE_PLUGINS`` stays blocked."""
        from ccci.plugins import LOCAL_PLUGIN_NAME

        self._reload_requested = False
        name = LOCAL_PLUGIN_NAME
        if self.pm.disabled.get(name) == "CCCI_DISABLE_PLUGINS":
            self.emit("plugins_reloaded", f"{name} is blocked by CCCI_DISABLE_PLUGINS; nothing reloaded", enabled=[])
            return
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        if self.pm.is_blocked(name):
            self.pm.unblock(name)
        self.pm.disabled.pop(name, None)
        self.stashes.forget_plugin(name)
        self.calls.strikes.pop(name, None)
        errors_before = len(self.pm.load_errors)
        self.pm.load_local(self.config.root)
        errors = self.pm.load_errors[errors_before:]
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            for impl in self.calls.ordered("ccci_configure"):
                if impl.plugin_name == name:
                    self.calls.call(impl, "ccci_configure", {"config": self.config})
        self.emit("plugins_reloaded", f"reloaded {self.config.root / 'ccci_plugins.py'}: "
                  + ("registered" if plugin is not None else f"not registered ({'; '.join(errors) or 'no file'})")
                  + "; installed plugins need a watcher restart", enabled=[name] if plugin is not None else [],
                  errors=errors)
