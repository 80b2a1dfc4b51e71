"""Agent lifecycle: adopt running agents, launch (start, fresh, resume), stop.

Internal to the runner; plugins reach it through :class:`ccci.services.Services`
(``launch``, ``stop``, ``initial_prompt``). What plugins add to a launch comes through
hooks: ``ccci_agent_active`` (may this agent be started or judged now?),
``ccci_before_launch`` (a reason not to launch), ``ccci_launch_env`` (environment) and
``ccci_prompt_preamble`` (text ahead of the role prompt).
"""
from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from ccci.calls import where_raised
from ccci.faultpoint import fault_point
from ccci.model import RemedyResult, Role
from ccci import processes

if TYPE_CHECKING:  # pragma: no cover
    from ccci.runtime import FleetSnapshot
    from ccci.supervisor import Supervisor

INTENT_KEY = "restart_intent.{agent}"  #: kv key: the (re)start mode in progress ("" when none)
#: kv key: the deadline (ISO-8601 UTC) of the wait the agent's last turn declared
#: (``WAITING-UNTIL``) while its process is exited; cleared at every launch. Written by
#: the check that honours the wait; read by ``ccci status`` and after a watcher restart.
DECLARED_WAIT_KEY = "declared_wait.{agent}"
RESTART_ACTIONS = frozenset({"restart", "resume", "fresh"})


class Lifecycle:
    """Starts and stops one fleet's agents for a :class:`ccci.supervisor.Supervisor`."""

    def __init__(self, sup: "Supervisor") -> None:
        self.sup = sup

    # ------------------------------------------------------------------ plugin asks
    def active(self, name: str, snapshot: "FleetSnapshot | None") -> bool:
        """``False`` when any ``ccci_agent_active`` implementation says the agent is not
        ccci's to start or judge now (an inactive job, a hand-launched orchestrator,
        a finished sequence of phases)."""
        sup = self.sup
        rt = sup.agents[name]
        infos = sup.calls.call_all("ccci_agent_active", {
            "agent": rt, "spec": rt.spec, "config": sup.config, "state": sup.kv, "snapshot": snapshot}, agent=name)
        return all(info.result is not False for info in infos)

    # ------------------------------------------------------------------ start-up
    def adopt(self) -> None:
        """Adopt agents that are still running (after a watcher restart), start the others.

        A live pane whose session name matches is adopted with its persisted
        conversation id; nothing is restarted. Agents marked stopped stay stopped, and
        so do agents a plugin calls inactive (``ccci_agent_active``).

        A backend that exits at every turn end (``exits_at_turn_end``) whose pane exited
        cleanly (no signal, status 0 or not known yet) is adopted as it is, not resumed:
        the first tick's checks decide, as for any turn end, so a declared
        ``WAITING-UNTIL`` survives a watcher restart (issue 13: a new watcher resumed
        such agents before their deadline). The turn-end resumes of the last hour are
        read back from the ``restarts`` table (``max_turns_per_hour``).
        """
        sup = self.sup
        panes = sup.tmux.list_panes()
        mono = sup.clock.monotonic()
        sup.outbox.recover_sending(panes)
        for name, rt in sup.agents.items():
            rec = sup.store.agent(name)
            rt.conversation_id = rec.conversation_id
            rt.generation = rec.generation
            rt.resumes = rec.resumes
            rt.stopped = rec.stopped
            rt.given_up = rec.given_up
            self._load_turn_marks(name, mono)
            pane = panes.get(rt.session)
            if (pane is not None and pane.dead and rt.backend.exits_at_turn_end and not pane.dead_signal
                    and pane.dead_status in (0, None) and rt.conversation_id and not rt.stopped
                    and not sup.store.get(INTENT_KEY.format(agent=name))):
                rt.pane_id, rt.pid = pane.pane_id, pane.pid
                rt.started_mono = rt.screen_changed_mono = rt.content_changed_mono = mono
                rt.healthy_since_mono = mono
                sup.emit("agent_adopted", f"adopted an agent whose turn ended (pane {pane.pane_id} exited "
                         f"{'cleanly' if pane.dead_status == 0 else 'with the status not known yet'}); "
                         "the checks decide when it resumes", agent=name, pid=pane.pid,
                         conversation_id=rt.conversation_id, exited=True)
            elif pane is not None and not pane.dead:
                rt.pane_id, rt.pid = pane.pane_id, pane.pid
                age = (sup.clock.now() - rec.started_at).total_seconds() if rec.started_at else 0.0
                rt.started_mono = mono - max(0.0, age)
                rt.screen_changed_mono = rt.content_changed_mono = mono
                rt.healthy_since_mono = mono
                sup.store.update_agent(name, pane_id=pane.pane_id, pid=pane.pid, session=rt.session)
                sup.emit("agent_adopted", f"adopted running agent (pid {pane.pid}, pane {pane.pane_id})", agent=name,
                         pid=pane.pid, conversation_id=rt.conversation_id)
            elif rt.stopped or rt.given_up or not self.active(name, None):
                continue
            else:
                mode = "resume" if (pane is not None and rt.conversation_id and rt.backend.supports_resume) else "start"
                reason = "not running at watcher start"
                intent = sup.store.get(INTENT_KEY.format(agent=name)) or ""
                if intent in RESTART_ACTIONS:
                    # the previous watcher died between stopping this agent and starting it
                    mode, reason = intent, f"completing the {intent} a previous watcher began"
                self.launch(name, mode, reason=reason)

    def _load_turn_marks(self, name: str, mono: float) -> None:
        """Read the agent's turn-end resumes of the last hour back as monotonic marks."""
        from ccci.guards import TURN_WINDOW_S

        sup, now = self.sup, self.sup.clock.now()
        cap = int(sup.config.settings_for(name)["max_turns_per_hour"])
        marks = [mono - (now - at).total_seconds() for at, kind, _ in sup.store.restart_history(name, 2 * cap + 50)
                 if kind == "turn_end" and (now - at).total_seconds() < TURN_WINDOW_S]
        sup.agents[name].turn_marks.clear()
        sup.agents[name].turn_marks.extend(sorted(marks))

    # ------------------------------------------------------------------ launching
    def launch(self, name: str, mode: str, reason: str, prompt: str | None = None,
               turn_end: bool = False) -> RemedyResult:
        """Start an agent's process in its tmux session.

        :param name: agent name.
        :param mode: ``start`` (first start: fresh conversation), ``fresh`` (restart with a
            new conversation), ``resume`` (restart continuing the persisted conversation;
            counts toward ``max_resumes`` unless ``turn_end``), ``restart`` (resume when
            the backend supports it, else fresh). A fresh (re)start of an agent that was
            never started (generation 0, no conversation: its earlier launches all
            failed) is its start: ``agent_started``, no restart counted.
        :param reason: why, for the event log and the agent's resume prompt.
        :param prompt: the initial prompt of a fresh start (default:
            :meth:`initial_prompt`); a job's extra arguments arrive here. For a resume:
            the message to continue with (default: a note that ccci restarted the session).
        :param turn_end: the backend exits at every turn end and this resume continues
            after one (not counted as a restart). For such backends
            (``exits_at_turn_end``) a resume's prompt is the agent's queued messages,
            which are marked delivered: the CLI has no input box to type them into. A
            queued message that is the backend's stall nudge (``nudge_text``) is stale
            at a resume (the turn ended, or the restart's own prompt supersedes it): it
            is dropped (``failed``) with a ``message_dropped`` event. A turn-end resume
            is marked in ``turn_marks`` (``max_turns_per_hour``), not in ``resumes``.
        :returns: a :class:`RemedyResult` (``pending`` on success); ``ok=False`` when a
            plugin vetoed it, the workdir is missing or tmux failed (reported as an event).
        """
        sup = self.sup
        rt = sup.agents[name]
        spec, backend = rt.spec, rt.backend
        for info in sup.calls.call_all("ccci_before_launch", {"agent": rt, "spec": spec, "mode": mode,
                                                                "config": sup.config}, agent=name):
            if info.result:
                return RemedyResult(False, f"not launched: {info.result}", pending=False)
        if spec.role == Role.ORCHESTRATOR and mode == "start" and rt.conversation_id and backend.supports_resume:
            mode = "resume"  # one long conversation kept across reboots
        if mode == "restart":
            mode = "resume" if (backend.supports_resume and rt.conversation_id) else "fresh"
        if mode == "resume" and not rt.conversation_id:
            mode = "fresh"
        if mode == "fresh" and not rt.conversation_id and sup.store.agent(name).generation == 0:
            # never started (generation 0: every earlier launch failed, e.g. an opencode
            # fleet's first launch while its server was still starting): this is its start
            mode = "start"
        if not spec.workdir.is_dir():
            sup.emit("launch_failed", f"workdir {spec.workdir} does not exist; create it or fix agents.{name}.workdir",
                     agent=name)
            return RemedyResult(False, "workdir missing", pending=False)
        # a watcher that dies between the stop and the start leaves this intent; its
        # successor completes the same (re)start instead of starting a fresh conversation
        sup.store.put(INTENT_KEY.format(agent=name), mode)
        self.stop_process(name)
        if mode == "fresh" and rt.conversation_id:
            # forget the old conversation before trying: if this launch fails, the next
            # restart must not resume it (a thinking-block 400 would come back)
            rt.conversation_id = ""
            sup.store.update_agent(name, conversation_id="")
        fault_point("after_stop")
        delivered: list = []
        if mode == "resume":
            conv = rt.conversation_id
            if backend.exits_at_turn_end:
                delivered = sup.store.pending_messages(name)
                stale = [m for m in delivered if backend.nudge_text and m.text.strip() == backend.nudge_text.strip()]
                delivered = [m for m in delivered if m not in stale]
                self._drop_stale(name, stale, reason)
            if delivered:
                prompt = "\n\n".join(m.text for m in delivered)
            elif prompt is None:
                prompt = ("Continue." if turn_end else
                          f"ccci restarted this session ({reason}). Continue from where you left off.")
        else:
            conv = backend.new_conversation_id()
            prompt = prompt if prompt is not None else self.initial_prompt(name)
        try:
            plan = backend.launch(spec, sup.config, conv, mode == "resume", prompt)
        except Exception as exc:  # noqa: BLE001 - e.g. the backend's server is down: report, retry later
            sup.emit("launch_failed", f"{backend.name} backend could not prepare the launch: "
                     f"{type(exc).__name__}: {str(exc)[:200]}", agent=name,
                     plugin=sup.backend_plugins.get(backend.name, backend.name), where=where_raised(exc))
            return RemedyResult(False, f"launch failed: {str(exc)[:120]}", pending=False)
        conv = plan.conversation_id or conv
        if shutil.which(plan.argv[0]) is None:
            # a restart cannot fix a missing program: hand it to a person at once
            sup.emit("launch_failed", f"{plan.argv[0]!r} is not on PATH; install the {backend.name} CLI "
                     f"or set agents.{name}.backend", agent=name)
            sup.escalate(name, f"cannot launch: {plan.argv[0]} not found")
            return RemedyResult(False, f"{plan.argv[0]} not found", pending=False)
        env = {"CCCI_AGENT": name, "CCCI_FLEET": str(sup.config.root), **spec.env, **plan.env}
        for info in sup.calls.call_all("ccci_launch_env", {"agent": rt, "spec": spec, "config": sup.config,
                                                             "state": sup.kv}, agent=name):
            env.update(info.result)
        try:
            pane = sup.tmux.new_session(rt.session, plan.argv, plan.cwd or spec.workdir, env,
                                        log_file=sup.log_dir / f"{name}.log")
        except Exception as exc:  # noqa: BLE001
            sup.emit("launch_failed", f"tmux could not start the agent: {str(exc)[:200]}", agent=name)
            return RemedyResult(False, str(exc)[:200], pending=False)
        now, mono = sup.clock.now(), sup.clock.monotonic()
        rec = sup.store.agent(name)
        rt.pane_id, rt.pid = pane.pane_id, pane.pid
        rt.conversation_id = conv
        rt.generation = rec.generation + 1
        rt.started_mono = rt.screen_changed_mono = rt.content_changed_mono = mono
        rt.first_turn_pending = True  # the launch prompt's turn: the outbox waits for it (ccci.outbox)
        rt.launch_turn_open = True
        rt.healthy_since_mono = mono
        rt.last_change_key = None
        rt.screen, rt.failing, rt.nudges = "", {}, 0
        rt.hold_until_mono = 0.0
        rt.pending_since_mono = mono
        rt.pending_action = "turn_end" if turn_end else mode
        rt.stopped = False
        if mode == "resume" and turn_end:
            rt.turn_marks.append(mono)
        elif mode == "resume":
            rt.resumes += 1
        elif mode == "fresh":
            rt.resumes = 0
        with sup.store.transaction():
            sup.store.update_agent(
                name, session=rt.session, pane_id=pane.pane_id, pid=pane.pid, conversation_id=conv,
                started_at=now, generation=rt.generation,
                restarts=rec.restarts + (0 if mode == "start" or turn_end else 1), resumes=rt.resumes,
                state="starting", stopped=0,
            )
            sup.store.record_restart(name, "turn_end" if turn_end else mode, reason, now)
            sup.store.put(INTENT_KEY.format(agent=name), "")
            sup.store.delete(DECLARED_WAIT_KEY.format(agent=name))
            for m in delivered:
                sup.store.finish_message(m.id, "delivered", "given as the resume prompt", now, m.attempts + 1)
        for m in delivered:
            sup.emit("message_delivered", f"delivered as the resume prompt: {m.text[:80]!r}", agent=name,
                     message_id=m.id, attempts=m.attempts + 1,
                     latency_s=round((now - m.queued_at).total_seconds(), 3))
        verb = {"start": "started", "fresh": "restarted fresh", "resume": "resumed"}[mode]
        sup.emit(f"agent_{verb.replace(' ', '_')}", f"{verb} ({reason}); pid {pane.pid}, conversation {conv[:8]}",
                 agent=name, pid=pane.pid, conversation_id=conv, mode=mode, reason=reason)
        return RemedyResult(True, f"{verb}, pid {pane.pid}", pending=True)

    def _drop_stale(self, name: str, stale: list, reason: str) -> None:
        """Mark stale nudges ``failed`` and log one ``message_dropped`` event each."""
        sup = self.sup
        now = sup.clock.now()
        for m in stale:
            sup.store.finish_message(m.id, "failed", f"stale nudge dropped at a resume ({reason})", now, m.attempts)
            sup.emit("message_dropped", f"stale nudge dropped, not given as the resume prompt ({reason}): "
                     f"{m.text[:60]!r}", agent=name, message_id=m.id,
                     queued_s=round((now - m.queued_at).total_seconds(), 1))

    def initial_prompt(self, name: str) -> str:
        """The prompt a fresh session starts with: every ``ccci_prompt_preamble`` (e.g.
        the current phase), then the role prompt file's text."""
        sup = self.sup
        rt = sup.agents[name]
        spec = rt.spec
        if spec.prompt_file and spec.prompt_file.is_file():
            role = spec.prompt_file.read_text(encoding="utf-8").strip()
        else:
            role = f"You are the {spec.handoff_role or spec.role.value} of fleet {sup.config.name}. Work your loop."
        pre = [info.result for info in sup.calls.call_all("ccci_prompt_preamble", {
            "agent": rt, "spec": spec, "config": sup.config, "state": sup.kv}, agent=name) if info.result]
        return "\n\n".join([*pre, role])

    # ------------------------------------------------------------------ stopping
    def stop_process(self, name: str) -> None:
        """Kill the agent's process tree (SIGKILL; a stopped or wedged process too) and
        its tmux session. Safe when nothing runs."""
        sup = self.sup
        rt = sup.agents[name]
        pane = sup.tmux.list_panes().get(rt.session)
        for pid in [p for p in {rt.pid, pane.pid if pane else None} if p]:
            processes.kill_tree(pid)
        if pane is not None:
            sup.tmux.kill_session(rt.session)
        rt.pane_id = rt.pid = None

    def stop(self, name: str, reason: str = "ccci stop") -> None:
        """Stop an agent and mark it stopped so the watcher leaves it alone."""
        sup = self.sup
        self.stop_process(name)
        sup.agents[name].stopped = True
        sup.store.update_agent(name, stopped=1, state="stopped", pid=None)
        sup.emit("agent_stopped", f"stopped ({reason})", agent=name)
