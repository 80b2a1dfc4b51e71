"""The runner: one tick per second, checks as plugins, remedies under guard rails.

Each tick:

1. ``ccci_tick_start``;
2. one batched ``tmux list-panes -a`` query; captures (one more tmux call) only of the
   panes whose activity, cursor, history or title changed, or not captured for
   :data:`RECAPTURE_S`; one process scan (psutil) of the agents' pane pids;
3. ``ccci_observe`` (git on its own cadence, other fleet facts);
4. ``ccci_check_agent`` per agent (not while a remedy is in flight), then
   ``ccci_check_fleet``; each implementation is called on its own so a raising plugin
   (or one returning something other than Findings) is an UNKNOWN result for that check
   only; 5 consecutive such ticks disable it;
5. hysteresis (``failure_threshold`` consecutive ticks, or ``immediate`` findings;
   ``startup_grace`` after a start during which only immediate findings count);
6. ``ccci_choose_remedy`` then, if the guards allow, ``ccci_run_remedy``. Guards: one
   remedy in flight per agent; restart intensity (``restart_intensity`` per
   ``restart_period``) then escalation; exponential backoff between restarts
   (``backoff_initial`` doubling to ``backoff_max``, reset after ``backoff_reset``
   healthy); ``max_resumes`` then escalation; the fleet-wide breaker
   (``breaker_min_agents`` and ``breaker_fraction`` of the fleet failing within
   ``breaker_window``) stops automatic action for ``breaker_cooldown``;
7. queued messages are delivered to idle agents (reliable send);
8. ``ccci_tick_end``.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import psutil

from ccci.clock import Clock, iso
from ccci.config import FleetConfig
from ccci.faultpoint import fault_point
from ccci.model import AgentState, Event, Finding, PaneInfo, ProcessInfo, Remedy, RemedyResult
from ccci.plugins import CcciPluginManager, collect_backends
from ccci.runtime import AgentRuntime, FleetSnapshot
from ccci.state import StateStore
from ccci.tmux import Tmux

RECAPTURE_S = 5.0  #: capture an unchanged-looking pane at least this often (seconds)
PENDING_TIMEOUT_S = 30.0  #: a restarted agent not back after this is re-evaluated
PLUGIN_ERROR_LIMIT = 5  #: consecutive raising ticks before a plugin is disabled
TIMED_HOOKS = frozenset({"ccci_check_agent", "ccci_check_fleet", "ccci_observe"})


CHECK_HOOKS = frozenset({"ccci_check_agent", "ccci_check_fleet"})


class PluginResultError(TypeError):
    """A check returned something that is not a Finding, a list of Findings or None
    (counts as a raising tick toward disabling the plugin)."""


def _findings_shaped(result: Any) -> bool:
    if result is None or isinstance(result, Finding):
        return True
    return isinstance(result, (list, tuple)) and all(isinstance(f, Finding) for f in result)


class CheckTimeout(Exception):
    """A check ran past ``check_timeout`` seconds and was interrupted (counts as UNKNOWN)."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise CheckTimeout("ran past check_timeout and was interrupted")


try:  # the C function under signal.getsignal, which wraps every answer in an enum
    # lookup that raises and catches ValueError for a Python handler: ~1.7 us, run for
    # every check of every agent (0.6 ms of a 50-agent tick in bench/); this is ~0.1 us
    from _signal import getsignal as _raw_getsignal
except ImportError:  # pragma: no cover - not CPython
    _raw_getsignal = signal.getsignal


INTENT_KEY = "restart_intent.{agent}"  #: kv key: the (re)start mode in progress ("" when none)
RECOVER_PROBE_CHARS = 100  #: non-blank characters of a 'sending' message looked for after a watcher restart
STATE_RETRY_S = 5.0  #: seconds between attempts to write an in-memory state database back to disk
MAX_DELIVERY_ROUNDS = 3  #: delivery rounds (each with its own Enter retries) before a message fails
RESTART_ACTIONS = frozenset({"restart", "resume", "fresh"})


class Supervisor:
    """Supervises one fleet. Holds the services remedies use.

    :param config: the fleet config.
    :param pm: the plugin manager (builtins + third party).
    :param store: the durable state store.
    :param tmux: the tmux server of the fleet.
    :param clock: the clock (inject :class:`ccci.clock.FakeClock` in tests).
    :param process_scan: ``pids -> {pid: ProcessInfo}`` (default: a :class:`ProcessScanner`, psutil).
    """

    def __init__(
        self,
        config: FleetConfig,
        pm: CcciPluginManager,
        store: StateStore,
        tmux: Tmux,
        clock: Clock | None = None,
        process_scan: Callable[[list[int]], dict[int, ProcessInfo]] | None = None,
    ) -> None:
        self.config = config
        self.pm = pm
        self.store = store
        self.tmux = tmux
        self.clock = clock or Clock()
        self.process_scan = process_scan or ProcessScanner()
        self.backends = collect_backends(pm)
        for bname, rules in config.patterns.items():
            if bname in self.backends:
                self.backends[bname].set_overrides(rules, f"{config.path}: patterns.{bname}")
        self.agents: dict[str, AgentRuntime] = {}
        for spec in config.agents:
            backend = self.backends.get(spec.backend)
            if backend is None:
                raise ValueError(
                    f"{config.path}: agents.{spec.name}.backend: unknown backend {spec.backend!r}; "
                    f"known: {', '.join(sorted(self.backends))}"
                )
            self.agents[spec.name] = AgentRuntime(spec=spec, backend=backend, session=config.session_name(spec.name))
        self.tick_no = 0
        self.plugin_errors: dict[str, int] = {}
        self._errored_this_tick: set[str] = set()
        self.breaker_open_until = 0.0
        self.breaker_outage: set[str] = set()  # agents whose failures opened the breaker
        self.failure_marks: list[tuple[float, str]] = []
        self.scheduled: list[tuple[datetime, Remedy]] = []
        self.last_snapshot: FleetSnapshot | None = None
        self.stopping = False
        self.log_dir = config.state_dir / "logs"
        self._last_tick_error: tuple[str, float] = ("", 0.0)
        self._tmux_down = False
        self._state_retry_mono = 0.0  # no restore of a deleted state.db before this
        self._state_flush_mono = 0.0  # last attempt to write an in-memory state back
        self._secrets = collect_secrets(config)

    def _redact_data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._redact_data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._redact_data(v) for v in value]
        return value

    def redact(self, text: str) -> str:
        """``text`` with every known secret value replaced by ``***``."""
        for value in self._secrets:
            if value in text:
                text = text.replace(value, "***")
        return text

    # ================================================================== events
    def emit(self, kind: str, message: str, /, agent: str | None = None, data: dict | None = None, **extra: Any) -> None:
        """Append an event to the durable log, then call ``ccci_report_event``.

        :param kind: event kind (``finding``, ``remedy``, ``agent_resumed``...).
        :param message: one line for people (secrets are redacted).
        :param agent: the agent concerned, or ``None``.
        :param data: JSON-able details (merged with ``extra``).
        """
        payload = self._redact_data({**(data or {}), **extra})
        from ccci.send import sanitize

        # text from panes and commits may carry escapes: never replay them on a terminal
        ev = Event(kind=kind, message=sanitize(self.redact(message)), agent=agent, at=self.clock.now(), data=payload)
        try:
            self.store.append_event(ev)
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop supervision
            ev.data["store_error"] = str(exc)[:200]
        for impl in self.pm.hook.ccci_report_event.get_hookimpls():
            self._call_impl(impl, {"event": ev}, hook="ccci_report_event")

    # ================================================================== plugin calls
    def _call_impl(self, impl: Any, kwargs: dict[str, Any], hook: str) -> tuple[bool, Any]:
        """Call one hook implementation with the arguments it declares.

        :returns: ``(ok, result)``; ``ok`` is ``False`` when it raised (the error is
            reported and counted toward disabling the plugin).
        """
        timed = hook in TIMED_HOOKS and self._can_alarm()
        try:
            args = [kwargs[a] for a in impl.argnames]
            start = time.monotonic()
            if timed:
                signal.setitimer(signal.ITIMER_REAL, float(self.config.checks.get("check_timeout", 10.0)))
            try:
                result = impl.function(*args)
            finally:
                if timed:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            took = time.monotonic() - start
            if hook in CHECK_HOOKS and not _findings_shaped(result):
                # the Findings in it still count; the rest is reported like a raise
                self._plugin_failed(impl, hook, PluginResultError(
                    f"returned {type(result).__name__} {str(result)[:60]!r}; "
                    f"a check returns a Finding, a list of Findings or None"))
                items = result if isinstance(result, (list, tuple)) else [result]
                return True, [f for f in items if isinstance(f, Finding)]
            budget = float(self.config.checks.get("check_budget", 2.0))
            if took > budget and hook.startswith("ccci_check"):
                self.emit("plugin_slow", f"{impl.plugin_name}.{hook} took {took:.2f}s (budget {budget}s)",
                          plugin=impl.plugin_name, seconds=round(took, 3))
            return True, result
        except Exception as exc:  # noqa: BLE001 - a plugin must never stop the daemon
            self._plugin_failed(impl, hook, exc)
            return False, None

    def _plugin_failed(self, impl: Any, hook: str, exc: Exception) -> None:
        """Count a failing tick of ``impl``'s plugin (disabled after
        :data:`PLUGIN_ERROR_LIMIT` in a row) and report it as ``plugin_error``."""
        name = impl.plugin_name
        if name not in self._errored_this_tick:
            self._errored_this_tick.add(name)
            self.plugin_errors[name] = self.plugin_errors.get(name, 0) + 1
        if hook != "ccci_report_event":
            tb = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            where = f"{Path(tb.filename).name}:{tb.lineno}" if tb else getattr(impl.function, "__qualname__", "")
            self.emit("plugin_error", f"{name}.{hook} raised {type(exc).__name__}: {str(exc)[:200]} (UNKNOWN)",
                      plugin=name, hook=hook, where=where)

    @staticmethod
    def _can_alarm() -> bool:
        """Checks get a hard time limit (SIGALRM, like pytest-timeout's signal method)
        only on the main thread, where Python delivers signals."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if _raw_getsignal(signal.SIGALRM) is not _on_alarm:
            signal.signal(signal.SIGALRM, _on_alarm)
        return True

    def _call_all(self, hookname: str, kwargs: dict[str, Any]) -> list[Any]:
        caller = getattr(self.pm.hook, hookname)
        out = []
        for impl in reversed(caller.get_hookimpls()):
            ok, res = self._call_impl(impl, kwargs, hookname)
            if ok and res is not None:
                out.append(res)
        return out

    def _end_plugin_accounting(self) -> None:
        for name in list(self.plugin_errors):
            if name in self._errored_this_tick:
                if self.plugin_errors[name] >= PLUGIN_ERROR_LIMIT:
                    if self.pm.disable(name):
                        self.emit("plugin_disabled", f"plugin {name} raised on {PLUGIN_ERROR_LIMIT} ticks in a row; disabled", plugin=name)
                        del self.plugin_errors[name]
            else:
                del self.plugin_errors[name]
        self._errored_this_tick = set()

    # ================================================================== start-up
    def adopt(self) -> None:
        """Adopt agents that are still running (after a watcher restart), start the others.

        A live pane whose session name matches is adopted with its persisted
        conversation id; nothing is restarted. Agents marked stopped stay stopped.
        """
        from ccci import jobs, phases

        panes = self.tmux.list_panes()
        mono = self.clock.monotonic()
        self._recover_sending_messages(panes)
        if phases.settings(self.config) is not None and phases.current(self.config, self.store) is None:
            self.emit("sequence_complete", "all phases are complete already; nothing to supervise")
            self.request_stop()
            return
        for name, rt in self.agents.items():
            rec = self.store.agent(name)
            rt.conversation_id = rec.conversation_id
            rt.generation = rec.generation
            rt.resumes = rec.resumes
            rt.stopped = rec.stopped
            rt.given_up = rec.given_up
            pane = panes.get(rt.session)
            if pane is not None and not pane.dead:
                rt.pane_id, rt.pid = pane.pane_id, pane.pid
                age = (self.clock.now() - rec.started_at).total_seconds() if rec.started_at else 0.0
                rt.started_mono = mono - max(0.0, age)
                rt.screen_changed_mono = rt.content_changed_mono = mono
                rt.healthy_since_mono = mono
                self.store.update_agent(name, pane_id=pane.pane_id, pid=pane.pid, session=rt.session)
                self.emit("agent_adopted", f"adopted running agent (pid {pane.pid}, pane {pane.pane_id})", agent=name,
                          pid=pane.pid, conversation_id=rt.conversation_id)
            elif rt.stopped or rt.given_up or (rt.spec.role.value == "job" and not jobs.is_active(self.store, name)):
                continue  # jobs start only through 'ccci job start' or their schedule
            else:
                mode = "resume" if (pane is not None and rt.conversation_id and rt.backend.supports_resume) else "start"
                reason = "not running at watcher start"
                intent = self.store.get(INTENT_KEY.format(agent=name)) or ""
                if intent in RESTART_ACTIONS:
                    # the previous watcher died between stopping this agent and starting it
                    mode, reason = intent, f"completing the {intent} a previous watcher began"
                self.launch_agent(name, mode, reason=reason)

    def _recover_sending_messages(self, panes: dict[str, PaneInfo]) -> None:
        """Messages left in state 'sending' by a killed watcher: delivered if their text
        shows in the agent's pane log after the point where the typing began (recorded in
        the row's ``detail``; the screen when there is no log), else queued again (so a
        ping is delivered once).

        The probe is the first :data:`RECOVER_PROBE_CHARS` non-blank characters of the
        message, compared with all whitespace removed (a wrapped line splits words):
        long enough to hold a ping's commit sha, so two pings never match each other."""
        rows = self.store.db.execute("SELECT id, agent, text, detail FROM messages WHERE status='sending'").fetchall()
        for row in rows:
            rt = self.agents.get(row["agent"])
            pane = panes.get(rt.session) if rt else None
            m = re.match(r"log_offset=(\d+)$", row["detail"] or "")
            log = self.log_dir / f"{rt.name}.log" if rt else None
            if m and log is not None and log.exists():
                # only what the pane printed after the typing began: an identical earlier
                # message on screen or in the log does not count
                seen = _log_since(log, int(m.group(1)))
            else:
                seen = self.tmux.capture([pane.pane_id]).get(pane.pane_id, "") if pane else ""
            probe = "".join(row["text"].split())[:RECOVER_PROBE_CHARS]
            if probe and probe in "".join(seen.split()):
                self.store.finish_message(row["id"], "delivered", "seen on screen after watcher restart", self.clock.now(), 1)
            else:
                self.store.db.execute("UPDATE messages SET status='queued' WHERE id=?", (row["id"],))

    # ================================================================== launching
    def launch_agent(self, name: str, mode: str, reason: str, prompt: str | None = None,
                     turn_end: bool = False) -> RemedyResult:
        """Start an agent's process in its tmux session.

        :param name: agent name.
        :param mode: ``start`` (first start: fresh conversation), ``fresh`` (restart with a
            new conversation), ``resume`` (restart continuing the persisted conversation;
            counts toward ``max_resumes``), ``restart`` (resume when the backend supports
            it, else fresh).
        :param reason: why, for the event log and the agent's resume prompt.
        :param prompt: the initial prompt of a fresh start (default: phase preamble +
            role prompt); a job's extra arguments arrive here. For a resume: the message
            to continue with (default: a note that ccci restarted the session).
        :param turn_end: the backend exits at every turn end and this resume continues
            after one (not counted as a restart). For such backends
            (``exits_at_turn_end``) a resume's prompt is the agent's queued messages,
            which are marked delivered: the CLI has no input box to type them into.
        :returns: a :class:`RemedyResult`; ``ok=False`` when the workdir is missing or tmux
            failed (reported as an event).
        """
        from ccci.external import find_external
        from ccci.model import Role

        rt = self.agents[name]
        spec, backend = rt.spec, rt.backend
        if spec.role == Role.ORCHESTRATOR:
            pid = find_external(backend, spec.workdir, {p for p in (rt.pid,) if p})
            if pid:
                self.emit("orchestrator_external", f"an orchestrator already runs outside ccci (pid {pid}); not starting another",
                          agent=name, pid=pid)
                return RemedyResult(False, f"external orchestrator pid {pid}", pending=False)
            if mode == "start" and rt.conversation_id and backend.supports_resume:
                mode = "resume"  # one long conversation kept across reboots
        if mode == "restart":
            mode = "resume" if (backend.supports_resume and rt.conversation_id) else "fresh"
        if mode == "resume" and not rt.conversation_id:
            mode = "fresh"
        if not spec.workdir.is_dir():
            self.emit("launch_failed", f"workdir {spec.workdir} does not exist; create it or fix agents.{name}.workdir", agent=name)
            return RemedyResult(False, "workdir missing", pending=False)
        # a watcher that dies between the stop and the start leaves this intent; its
        # successor completes the same (re)start instead of starting a fresh conversation
        self.store.put(INTENT_KEY.format(agent=name), mode)
        self.stop_agent_process(name)
        if mode == "fresh" and rt.conversation_id:
            # forget the old conversation before trying: if this launch fails, the next
            # restart must not resume it (a thinking-block 400 would come back)
            rt.conversation_id = ""
            self.store.update_agent(name, conversation_id="")
        fault_point("after_stop")
        delivered: list = []
        if mode == "resume":
            conv = rt.conversation_id
            if backend.exits_at_turn_end:
                delivered = self.store.pending_messages(name)
            if delivered:
                prompt = "\n\n".join(m.text for m in delivered)
            elif prompt is None:
                prompt = ("Continue." if turn_end else
                          f"ccci restarted this session ({reason}). Continue from where you left off.")
        else:
            conv = backend.new_conversation_id()
            prompt = prompt if prompt is not None else self.initial_prompt(name)
        try:
            plan = backend.launch(spec, self.config, conv, mode == "resume", prompt)
        except Exception as exc:  # noqa: BLE001 - e.g. the backend's server is down: report, retry later
            self.emit("launch_failed", f"{backend.name} backend could not prepare the launch: "
                      f"{type(exc).__name__}: {str(exc)[:200]}", agent=name)
            return RemedyResult(False, f"launch failed: {str(exc)[:120]}", pending=False)
        conv = plan.conversation_id or conv
        if shutil.which(plan.argv[0]) is None:
            # a restart cannot fix a missing program: hand it to a person at once
            self.emit("launch_failed", f"{plan.argv[0]!r} is not on PATH; install the {backend.name} CLI "
                      f"or set agents.{name}.backend", agent=name)
            self._escalate(name, f"cannot launch: {plan.argv[0]} not found")
            return RemedyResult(False, f"{plan.argv[0]} not found", pending=False)
        from ccci import phases

        env = {"CCCI_AGENT": name, "CCCI_FLEET": str(self.config.root), **spec.env, **plan.env}
        phase = phases.current(self.config, self.store)
        if phase:
            env["CCCI_PHASE"] = phase
        try:
            pane = self.tmux.new_session(rt.session, plan.argv, plan.cwd or spec.workdir, env,
                                         log_file=self.log_dir / f"{name}.log")
        except Exception as exc:  # noqa: BLE001
            self.emit("launch_failed", f"tmux could not start the agent: {str(exc)[:200]}", agent=name)
            return RemedyResult(False, str(exc)[:200], pending=False)
        now, mono = self.clock.now(), self.clock.monotonic()
        rec = self.store.agent(name)
        rt.pane_id, rt.pid = pane.pane_id, pane.pid
        rt.conversation_id = conv
        rt.generation = rec.generation + 1
        rt.started_mono = rt.screen_changed_mono = rt.content_changed_mono = mono
        rt.healthy_since_mono = mono
        rt.last_change_key = None
        rt.screen, rt.failing, rt.nudges = "", {}, 0
        rt.hold_until_mono = 0.0
        rt.pending_since_mono = mono
        rt.pending_action = mode
        rt.stopped = False
        kind = {"start": "start", "fresh": "fresh", "resume": "resume"}[mode]
        if mode == "resume":
            rt.resumes += 1
        else:
            rt.resumes = 0 if mode == "fresh" else rt.resumes
        with self.store.transaction():
            self.store.update_agent(
                name, session=rt.session, pane_id=pane.pane_id, pid=pane.pid, conversation_id=conv,
                started_at=now, generation=rt.generation,
                restarts=rec.restarts + (0 if mode == "start" or turn_end else 1), resumes=rt.resumes,
                state="starting", stopped=0,
            )
            self.store.record_restart(name, "turn_end" if turn_end else kind, reason, now)
            self.store.put(INTENT_KEY.format(agent=name), "")
            for m in delivered:
                self.store.finish_message(m.id, "delivered", "given as the resume prompt", now, m.attempts + 1)
        for m in delivered:
            self.emit("message_delivered", f"delivered as the resume prompt: {m.text[:80]!r}", agent=name,
                      message_id=m.id, attempts=m.attempts + 1,
                      latency_s=round((now - m.queued_at).total_seconds(), 3))
        verb = {"start": "started", "fresh": "restarted fresh", "resume": "resumed"}[mode]
        if turn_end:
            rt.pending_action = "turn_end"
        self.emit(f"agent_{verb.replace(' ', '_')}", f"{verb} ({reason}); pid {pane.pid}, conversation {conv[:8]}",
                  agent=name, pid=pane.pid, conversation_id=conv, mode=mode, reason=reason)
        return RemedyResult(True, f"{verb}, pid {pane.pid}")

    def initial_prompt(self, name: str) -> str:
        """The prompt a fresh session starts with: the role prompt file's text."""
        from ccci import phases

        spec = self.agents[name].spec
        if spec.prompt_file and spec.prompt_file.is_file():
            role = spec.prompt_file.read_text(encoding="utf-8").strip()
        else:
            role = f"You are the {spec.handoff_role or spec.role.value} of fleet {self.config.name}. Work your loop."
        pre = phases.preamble(self.config, self.store) if spec.role.value == "loop" else ""
        return f"{pre}\n\n{role}" if pre else role

    def stop_agent_process(self, name: str) -> None:
        """Kill the agent's process tree (SIGKILL; a stopped or wedged process too) and
        its tmux session. Safe when nothing runs."""
        rt = self.agents[name]
        panes = self.tmux.list_panes()
        pane = panes.get(rt.session)
        pids = [p for p in {rt.pid, pane.pid if pane else None} if p]
        for pid in pids:
            kill_tree(pid)
        if pane is not None:
            self.tmux.kill_session(rt.session)
        rt.pane_id = rt.pid = None

    def stop_agent(self, name: str, reason: str = "ccci stop") -> None:
        """Stop an agent and mark it stopped so the watcher leaves it alone."""
        self.stop_agent_process(name)
        rt = self.agents[name]
        rt.stopped = True
        self.store.update_agent(name, stopped=1, state="stopped", pid=None)
        self.emit("agent_stopped", f"stopped ({reason})", agent=name)

    # ================================================================== the tick
    def observe(self) -> FleetSnapshot:
        """Steps 2-3 of the tick: tmux, captures, processes, ``ccci_observe``."""
        now, mono = self.clock.now(), self.clock.monotonic()
        snap = FleetSnapshot(tick=self.tick_no, now=now, mono=mono)
        panes = self.tmux.list_panes()
        if not getattr(self.tmux, "server_running", True):
            # the whole tmux server is gone: one cause, which restarting does fix, so it
            # is not a fleet-wide failure for the breaker
            snap.facts["tmux_server_down"] = True
            if not self._tmux_down:
                self.emit("tmux_server_lost", "the tmux server is gone; restoring every agent")
            self._tmux_down = True
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
                text = texts.get(rt.pane_id or "", "")
                rt.last_capture_mono = mono
                snap.captured.add(rt.name)
                pane = snap.panes[rt.name]
                if text != rt.screen:
                    rt.screen_changed_mono = mono
                    rt.screen = text
                analysis = rt.backend.analyse(text, pane.title if pane else "")
                if analysis.fingerprint != rt.analysis.fingerprint:
                    rt.content_changed_mono = mono
                if rt.last_state == AgentState.BUSY and analysis.state == AgentState.IDLE:
                    rt.nudges = 0  # a turn ended: the agent is making progress
                rt.last_state = analysis.state
                rt.analysis = analysis
        pids = [p.pid for p in panes.values() if p is not None and not p.dead]
        procs = self.process_scan(pids) if pids else {}
        for name, rt in self.agents.items():
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
        self._call_all("ccci_observe", {"snapshot": snap, "config": self.config, "state": self.store, "now": now, "mono": mono,
                                        "agents": self.agents})
        for ev in snap.events:
            self.emit(ev.kind, ev.message, agent=ev.agent, data=ev.data)
        self.last_snapshot = snap
        return snap

    def tick(self) -> list[Finding]:
        """Run one tick; returns the findings produced (before hysteresis)."""
        self.tick_no += 1
        t0 = time.monotonic()
        now, mono = self.clock.now(), self.clock.monotonic()
        self._call_all("ccci_tick_start", {"tick": self.tick_no, "now": now, "mono": mono})
        self._check_state_storage(mono)
        from ccci import jobs

        self._refresh_flags()
        snap = self.observe()
        findings: list[Finding] = []
        actionable: list[Finding] = []
        for name, rt in self.agents.items():
            if rt.stopped or rt.given_up:
                continue
            if rt.spec.role.value == "job" and not jobs.is_active(self.store, name):
                rt.failing.clear()  # a finished job stays idle and viewable: nothing to judge
                continue
            if snap.facts.get("external", {}).get(name):
                rt.failing.clear()  # a hand-launched instance holds this role: not ours to judge
                continue
            self._update_pending(rt, snap)
            if rt.pending_since_mono is not None:
                continue
            fs = self.check_agent(rt, snap)
            findings.extend(fs)
            actionable.extend(self._hysteresis(rt, fs, snap.mono))
        fleet_fs = self._flatten(self._call_all("ccci_check_fleet", {
            "snapshot": snap, "config": self.config, "state": self.store, "now": snap.now, "mono": snap.mono}))
        findings.extend(fleet_fs)
        actionable.extend(f for f in fleet_fs if f.severity != "info")
        if not snap.facts.get("tmux_server_down"):
            self._update_breaker(actionable, snap.mono)
        handled: set[str] = set()
        # process death first: a dead agent's other findings are stale, and an immediate
        # finding of another check must not hold its restart off tick after tick
        for f in sorted(actionable, key=lambda f: (f.check != "process_death", not f.immediate, f.check)):
            if f.agent is not None:
                if f.agent in handled:
                    continue
                handled.add(f.agent)
            self.act(f, snap)
        self._run_scheduled()
        self.deliver_pending()
        self._end_plugin_accounting()
        self._call_all("ccci_tick_end", {"tick": self.tick_no, "findings": findings, "duration_s": time.monotonic() - t0})
        return findings

    def _check_state_storage(self, mono: float) -> None:
        """Write back a ``state.db`` deleted under the watcher (``state_restored``);
        report a state database that fell back to memory (once, also as one line on
        stderr), and every :data:`STATE_RETRY_S` seconds try to write it back."""
        db = getattr(self.store, "db", None)
        if db is not None and hasattr(db, "reattach_if_missing") and mono >= self._state_retry_mono:
            try:
                if db.reattach_if_missing():
                    msg = f"{db.path} was deleted or replaced under the watcher; written back from the open database"
                    sys.stderr.write(f"ccci: {msg}\n")
                    self.emit("state_restored", msg)
            except Exception as exc:  # noqa: BLE001 - retried after STATE_RETRY_S
                self._state_retry_mono = mono + STATE_RETRY_S
                self.emit("state_degraded", f"cannot restore {db.path}: {' '.join(str(exc).split())[:160]}")
        if not getattr(db, "in_memory", False):
            return
        if db.new_failure:
            db.new_failure = False
            self._state_flush_mono = mono
            msg = (f"cannot write the state database ({db.error}); supervising on with the state in memory, "
                   f"it is written back when the disk takes writes again")
            sys.stderr.write(f"ccci: {msg}\n")
            sys.stderr.flush()
            self.emit("state_degraded", msg, error=db.error)
            return
        if mono - self._state_flush_mono < STATE_RETRY_S:
            return
        self._state_flush_mono = mono
        since = db.failed_at
        saved = db.try_flush()
        if saved is not None:
            took = f" after {time.time() - since:.0f}s" if since else ""
            sys.stderr.write(f"ccci: state database writable again{took}; {saved} pending writes saved\n")
            sys.stderr.flush()
            self.emit("state_recovered", f"state database writable again{took}; {saved} pending writes saved",
                      writes=saved)

    def check_agent(self, rt: AgentRuntime, snap: FleetSnapshot) -> list[Finding]:
        """Run every ``ccci_check_agent`` implementation for one agent."""
        kwargs = {
            "agent": rt, "spec": rt.spec, "pane": snap.panes.get(rt.name), "process": snap.processes[rt.name],
            "screen": rt.screen, "analysis": rt.analysis, "backend": rt.backend,
            "settings": self.config.settings_for(rt.name), "snapshot": snap, "now": snap.now, "mono": snap.mono,
        }
        out = self._flatten(self._call_all("ccci_check_agent", kwargs))
        for f in out:
            if f.agent is None:
                f.agent = rt.name
        return out

    @staticmethod
    def _flatten(results: list[Any]) -> list[Finding]:
        out: list[Finding] = []
        for r in results:
            items = r if isinstance(r, (list, tuple)) else [r]
            for item in items:
                if isinstance(item, Finding):
                    out.append(item)
        return out

    def _refresh_flags(self) -> None:
        """Pick up ``ccci stop``/``ccci start`` made by the CLI since the last tick."""
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
                    self.launch_agent(rec.name, "restart", reason="ccci start")
            if rec.given_up != rt.given_up and not rec.given_up:
                rt.given_up = False  # cleared by a person ('ccci start')
                rt.restart_marks.clear()
                rt.backoff_s = 0.0

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
        elif snap.mono - rt.pending_since_mono >= PENDING_TIMEOUT_S:
            rt.pending_since_mono = None  # evaluate again: process death will fire
            self.emit("remedy_timeout", f"agent not back {PENDING_TIMEOUT_S:.0f}s after {rt.pending_action}", agent=rt.name)

    def _hysteresis(self, rt: AgentRuntime, findings: list[Finding], mono: float) -> list[Finding]:
        settings = self.config.settings_for(rt.name)
        threshold = int(settings["failure_threshold"])
        in_grace = mono - rt.started_mono < float(settings["startup_grace"])
        seen: set[str] = set()
        out: list[Finding] = []
        for f in findings:
            if f.severity == "info":
                continue
            if mono < rt.hold_until_mono and not f.immediate:
                continue
            seen.add(f.check)
            count, first = rt.failing.get(f.check, (0, mono))
            rt.failing[f.check] = (count + 1, first)
            if f.immediate or (not in_grace and count + 1 >= threshold):
                out.append(f)
        for check in list(rt.failing):
            if check not in seen:
                del rt.failing[check]
        if not rt.failing:
            if mono - rt.healthy_since_mono >= float(settings["backoff_reset"]) and rt.backoff_s:
                rt.backoff_s = 0.0
        else:
            rt.healthy_since_mono = mono
        return out

    def _update_breaker(self, actionable: list[Finding], mono: float) -> None:
        s = self.config.checks
        if mono < self.breaker_open_until:
            return  # open: failures while it is open belong to the outage that opened it
        # after the cooldown the agents of that outage get one round of remedies before
        # their failures count again (else the same outage would reopen it at once)
        outage, self.breaker_outage = self.breaker_outage, set()
        window = float(s["breaker_window"])
        for f in actionable:
            if f.data.get("turn_end"):
                continue  # a turn end of a backend that exits after each turn is no failure
            if f.agent is not None and f.agent not in outage:
                self.failure_marks.append((mono, f.agent))
        self.failure_marks = [(t, a) for t, a in self.failure_marks if mono - t <= window]
        failing = {a for _, a in self.failure_marks}
        need = max(int(s["breaker_min_agents"]), int(len(self.agents) * float(s["breaker_fraction"]) + 0.999))
        if len(failing) >= need and mono >= self.breaker_open_until:
            self.breaker_open_until = mono + float(s["breaker_cooldown"])
            self.emit("breaker_open", f"{len(failing)} of {len(self.agents)} agents failed within {window:.0f}s; "
                      f"automatic action paused for {s['breaker_cooldown']}s", agents=sorted(failing))
            self._escalate(None, f"fleet breaker open: {', '.join(sorted(failing))} failing at once")
            self.breaker_outage = failing
            self.failure_marks.clear()

    # ================================================================== remedies
    def act(self, finding: Finding, snap: FleetSnapshot) -> None:
        """Choose and (if the guards allow) carry out a remedy for ``finding``."""
        rt = self.agents.get(finding.agent) if finding.agent else None
        settings = self.config.settings_for(finding.agent)
        try:
            remedy = self.pm.hook.ccci_choose_remedy(finding=finding, agent=rt, settings=settings, now=snap.now)
        except Exception as exc:  # noqa: BLE001
            self.emit("plugin_error", f"ccci_choose_remedy raised {type(exc).__name__}: {str(exc)[:200]}")
            return
        if remedy is None:
            self._report_finding_once(rt, finding, "no remedy chosen")
            return
        if remedy.not_before and remedy.not_before > snap.now and remedy.action != "wait":
            self.schedule(remedy)
            return
        if rt is not None:
            if snap.mono < self.breaker_open_until and remedy.action not in ("escalate", "wait"):
                self._report_finding_once(rt, finding, "fleet breaker open: no automatic action")
                return
            if remedy.action in RESTART_ACTIONS and not self._restart_allowed(rt, remedy, snap.mono, settings):
                return
        self.emit("finding", f"{finding.check}: {finding.summary}", agent=finding.agent,
                  data={**{k: v for k, v in finding.data.items() if k != "pings"}, "check": finding.check,
                        "evidence": self.redact(finding.evidence)})
        self.run_remedy(remedy)

    def _report_finding_once(self, rt: AgentRuntime | None, finding: Finding, why: str) -> None:
        key = f"{finding.check}:{why}"
        if rt is not None and rt.reported_wait == key:
            return
        if rt is not None:
            rt.reported_wait = key
        self.emit("finding", f"{finding.check}: {finding.summary} ({why})", agent=finding.agent,
                  check=finding.check, evidence=finding.evidence)

    def _restart_allowed(self, rt: AgentRuntime, remedy: Remedy, mono: float, settings: dict) -> bool:
        if remedy.data.get("turn_end"):
            # a backend that exits at every turn end: resuming is its normal life, not a
            # crash, so neither restart intensity nor backoff apply; max_resumes does
            if rt.resumes >= int(settings["max_resumes"]):
                self._escalate(rt.name, f"max_resumes ({int(settings['max_resumes'])}) reached after turn ends; "
                               "not resuming again")
                return False
            return True
        period = float(settings["restart_period"])
        recent = [t for t in rt.restart_marks if mono - t <= period]
        if len(recent) >= int(settings["restart_intensity"]):
            self._escalate(rt.name, f"restart intensity exceeded: {len(recent)} restarts in {period:.0f}s "
                           f"(last: {remedy.reason.check}: {remedy.reason.evidence[:120]})")
            return False
        # "restart" resumes too when the backend can (see launch_agent): it counts
        resuming = remedy.action == "resume" or (
            remedy.action == "restart" and rt.backend.supports_resume and bool(rt.conversation_id))
        if resuming and rt.resumes >= int(settings["max_resumes"]):
            self._escalate(rt.name, f"max_resumes ({int(settings['max_resumes'])}) reached; not resuming again")
            return False
        if mono < rt.next_restart_mono:
            key = f"backoff:{rt.next_restart_mono:.0f}"
            if rt.reported_wait != key:
                rt.reported_wait = key
                self.emit("backoff", f"{remedy.action} deferred {rt.next_restart_mono - mono:.1f}s (backoff)", agent=rt.name,
                          seconds=round(rt.next_restart_mono - mono, 1))
            return False
        rt.restart_marks.append(mono)
        # the delay before the NEXT restart doubles with each restart: backoff_initial
        # after the 1st, twice that after the 2nd, ... up to backoff_max; _hysteresis
        # sets it back to 0 after backoff_reset seconds healthy
        rt.backoff_s = min(float(settings["backoff_max"]),
                           rt.backoff_s * 2 if rt.backoff_s else float(settings["backoff_initial"]))
        rt.next_restart_mono = mono + rt.backoff_s
        return True

    def run_remedy(self, remedy: Remedy) -> RemedyResult | None:
        """Carry out a remedy through ``ccci_run_remedy`` and log the outcome."""
        try:
            result = self.pm.hook.ccci_run_remedy(remedy=remedy, supervisor=self)
        except Exception as exc:  # noqa: BLE001
            self.emit("remedy_failed", f"{remedy.action} raised {type(exc).__name__}: {str(exc)[:200]}", agent=remedy.agent,
                      action=remedy.action)
            return None
        if result is None:
            self.emit("remedy_failed", f"no plugin handles action {remedy.action!r}", agent=remedy.agent, action=remedy.action)
            return None
        self.emit("remedy", f"{remedy.action} for {remedy.reason.check}: {result.detail}", agent=remedy.agent,
                  action=remedy.action, check=remedy.reason.check, ok=result.ok)
        return result

    def _escalate(self, agent: str | None, why: str) -> None:
        if agent is not None:
            rt = self.agents[agent]
            if rt.given_up:
                return
        self.run_remedy(Remedy(action="escalate", agent=agent, reason=Finding("runner", agent, why, evidence=why)))

    def give_up(self, agent: str) -> None:
        """Stop acting on ``agent`` until a person runs ``ccci start`` (persisted)."""
        rt = self.agents[agent]
        rt.given_up = True
        self.store.update_agent(agent, given_up=1, state="given_up")

    def schedule(self, remedy: Remedy) -> None:
        """Run ``remedy`` at ``remedy.not_before`` (UTC); one per agent and action."""
        self.scheduled = [(t, r) for t, r in self.scheduled if not (r.agent == remedy.agent and r.action == remedy.action)]
        self.scheduled.append((remedy.not_before or self.clock.now(), remedy))
        self.emit("scheduled", f"{remedy.action} at {iso(remedy.not_before)} ({remedy.reason.check})", agent=remedy.agent,
                  action=remedy.action, at=iso(remedy.not_before))

    def _run_scheduled(self) -> None:
        now = self.clock.now()
        due = [(t, r) for t, r in self.scheduled if t <= now]
        self.scheduled = [(t, r) for t, r in self.scheduled if t > now]
        for _, remedy in due:
            rt = self.agents.get(remedy.agent) if remedy.agent else None
            if rt is not None and (rt.stopped or rt.given_up):
                continue
            self.run_remedy(remedy)

    # ================================================================== messages
    def queue_message(self, agent: str, text: str, dedup_key: str | None = None) -> int | None:
        """Queue ``text`` for delivery to ``agent`` when it is idle (see :mod:`ccci.send`)."""
        return self.store.queue_message(agent, text, self.clock.now(), dedup_key)

    def deliver_pending(self) -> None:
        """Deliver queued messages to agents that are ready for input, oldest first,
        one per agent per tick."""
        from ccci.send import deliver

        for msg in self.store.pending_messages():
            rt = self.agents.get(msg.agent)
            if rt is None:
                self.store.finish_message(msg.id, "failed", "no such agent", self.clock.now(), msg.attempts)
                continue
            if rt.stopped or rt.given_up or rt.pending_since_mono is not None or not rt.pane_id:
                continue
            if not rt.backend.is_ready_for_input(rt.analysis):
                continue
            # where the agent's pane log ends now: after a watcher crash, recovery looks
            # for the message only in what the pane printed after this point
            self.store.db.execute("UPDATE messages SET status='sending', detail=? WHERE id=?",
                                  (f"log_offset={_file_size(self.log_dir / f'{rt.name}.log')}", msg.id))
            res = deliver(self.tmux, rt.pane_id, rt.backend, msg.text, self.config.settings_for(rt.name),
                          self.clock, tmpdir=self.config.state_dir / "tmp")
            if res.delivered:
                fault_point("after_type")
            status = "delivered" if res.delivered else ("queued" if res.retry_later else "failed")
            if status == "failed" and msg.attempts + 1 < MAX_DELIVERY_ROUNDS:
                status = "queued"  # try again on a later tick (e.g. after the agent's restart)
                self.emit("message_retry", f"not delivered yet ({res.detail}); will retry", agent=rt.name, message_id=msg.id)
            if status == "queued":
                self.store.db.execute("UPDATE messages SET status='queued', attempts=attempts+1 WHERE id=?", (msg.id,))
            else:
                self.store.finish_message(msg.id, status, res.detail, self.clock.now(), msg.attempts + res.attempts)
                self.emit("message_delivered" if res.delivered else "message_failed",
                          f"{'delivered' if res.delivered else 'NOT delivered'}: {res.detail}; {msg.text[:80]!r}",
                          agent=rt.name, message_id=msg.id, attempts=res.attempts, latency_s=round(
                              (self.clock.now() - msg.queued_at).total_seconds(), 3))
            # re-read the screen next tick
            rt.last_change_key = None

    # ================================================================== main loop
    def run(self, ticks: int | None = None, on_tick: Callable[[], None] | None = None) -> None:
        """Tick every ``tick_seconds`` until :meth:`request_stop` (or ``ticks`` ticks).

        Ticks are scheduled on the monotonic clock; a slow tick is not followed by a
        burst of catch-up ticks.
        """
        self._call_all("ccci_configure", {"config": self.config})
        try:
            self.adopt()
            next_at = self.clock.monotonic()
            n = 0
            while not self.stopping and (ticks is None or n < ticks):
                try:
                    self.tick()
                except Exception as exc:  # noqa: BLE001 - keep supervising
                    msg = f"tick failed: {type(exc).__name__}: {str(exc)[:300]}"
                    mono = self.clock.monotonic()
                    if msg != self._last_tick_error[0] or mono - self._last_tick_error[1] >= 60:
                        self._last_tick_error = (msg, mono)
                        self.emit("tick_error", msg, where=traceback.format_exc(limit=4)[-800:])
                n += 1
                if on_tick:
                    on_tick()
                next_at += float(self.config.tick_seconds)
                delay = next_at - self.clock.monotonic()
                if delay < 0:
                    next_at = self.clock.monotonic()
                    delay = 0
                self.clock.sleep(delay)
        finally:
            self._call_all("ccci_unconfigure", {"config": self.config})

    def request_stop(self, *_: Any) -> None:
        self.stopping = True


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_since(path: Path, offset: int, limit: int = 1 << 20) -> str:
    """An agent's pane log from byte ``offset`` (at most ``limit`` bytes) as text,
    escape sequences removed ("" when there is no log). A log shorter than ``offset``
    (rotated or recreated) is read from the start."""
    from ccci.send import ANSI_RE

    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(offset if offset <= size else 0)
            return ANSI_RE.sub("", fh.read(limit).decode("utf-8", "replace"))
    except OSError:
        return ""


def child_counts() -> dict[int, int]:
    """``{ppid: number of children}`` for every process on the machine, from ONE pass
    over ``/proc``.

    ``psutil.Process.children()`` rebuilds this parent map on every call (it reads
    ``/proc/<pid>/stat`` of every process), so calling it per agent made a tick
    O(agents x processes): 84% of a 50-agent tick in ``bench/`` (commit d94f74f).
    Uses psutil's own ``_ppid_map`` when present, else the public ``process_iter``.
    """
    counts: dict[int, int] = {}
    ppid_map = getattr(psutil, "_ppid_map", None)
    if ppid_map is not None:
        pairs = ppid_map().items()
    else:  # pragma: no cover - other psutil versions
        pairs = ((p.pid, p.info.get("ppid") or 0) for p in psutil.process_iter(["ppid"]))
    for _pid, ppid in pairs:
        counts[ppid] = counts.get(ppid, 0) + 1
    return counts


class ProcessScanner:
    """The per-tick process scan (psutil) of the agents' pane pids, as a callable
    ``pids -> {pid: ProcessInfo}``; the default ``process_scan`` of a :class:`Supervisor`.

    Child counts come from one parent map per call (:func:`child_counts`). The
    ``psutil.Process`` of each pid is kept from one call to the next (entries for pids
    not asked for are dropped): building one reads ``/proc/<pid>/stat`` for its start
    time, once per agent per tick otherwise (bench/: 0.6 ms of a 50-agent tick). The
    answer is the same as from a fresh ``psutil.Process``: ``status()``, ``name()`` and
    ``cpu_times()`` read ``/proc/<pid>`` on every call and do not check the start time,
    so a reused pid reads as the new process either way, and a gone pid raises
    ``NoSuchProcess`` (``alive=False``).
    """

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def __call__(self, pids: list[int]) -> dict[int, ProcessInfo]:
        """:returns: ``{pid: ProcessInfo}``; a zombie or missing process is ``alive=False``."""
        out: dict[int, ProcessInfo] = {}
        kids = child_counts() if pids else {}
        procs: dict[int, psutil.Process] = {}
        for pid in pids:
            try:
                p = self._procs.get(pid)
                if p is None:
                    p = psutil.Process(pid)
                with p.oneshot():
                    status = p.status()
                    alive = status not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
                    name = p.name()
                    t = p.cpu_times()
                procs[pid] = p
                out[pid] = ProcessInfo(pid=pid, alive=alive, name=name, cpu_seconds=t.user + t.system,
                                       children=kids.get(pid, 0))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                out[pid] = ProcessInfo(pid=pid, alive=False)
        self._procs = procs
        return out


def scan_processes(pids: list[int]) -> dict[int, ProcessInfo]:
    """One psutil pass over ``pids`` with nothing kept between calls (see
    :class:`ProcessScanner`, which a supervisor uses).

    :returns: ``{pid: ProcessInfo}``; a zombie or missing process is ``alive=False``.
    """
    return ProcessScanner()(pids)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (found first, then all killed; SIGKILL also
    ends a stopped process). Missing processes are ignored; returns within about 1 s."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    # wait until each is gone or a zombie (a zombie is dead; who reaps it is not ours
    # to wait for: in a container PID 1 may never do it), at most 1 s
    deadline = time.monotonic() + 1.0
    while procs and time.monotonic() < deadline:
        alive = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        procs = alive
        if procs:
            time.sleep(0.02)



SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.I)


def collect_secrets(config: FleetConfig, environ: dict[str, str] | None = None) -> list[str]:
    """Values that must never appear in events or logs: environment variables (and
    agents' ``env``, and ``[opencode] env``) whose names look secret (KEY, TOKEN,
    SECRET, PASSWORD, AUTH...), at least 6 characters long. Longest first, so a secret containing another is
    redacted whole."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if SECRET_NAME_RE.search(k) and len(v) >= 6}
    for spec in config.agents:
        values |= {v for k, v in spec.env.items() if SECRET_NAME_RE.search(k) and len(v) >= 6}
    serve_env = (config.raw.get("opencode") or {}).get("env") if isinstance(config.raw.get("opencode"), dict) else None
    if isinstance(serve_env, dict):  # the shared opencode serve's environment (provider keys)
        values |= {str(v) for k, v in serve_env.items() if SECRET_NAME_RE.search(str(k)) and len(str(v)) >= 6}
    return sorted(values, key=len, reverse=True)
