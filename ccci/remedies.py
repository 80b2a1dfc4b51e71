"""Remedy dispatch for the runner: choose a remedy for each actionable finding, apply
the guard rails (:mod:`ccci.guards`), run it through ``ccci_run_remedy``, remember the
occurrence (:mod:`ccci.occurrences`), run scheduled remedies when they are due, and
retry given-up agents automatically (:func:`note_escalation`, :meth:`Remedies.retry_given_up`).

Escalation and automatic retries (docs/reliability.md#escalation-and-automatic-retries)
---------------------------------------------------------------------------------------
An escalation gives the agent up and keeps a record in the state store
(:data:`ESCALATION_KEY`, JSON; survives a watcher restart). A failure a restart cannot
fix must not be restarted forever, and a passing outage (the provider down for an hour,
a usage limit until its reset) must not need a person: so a given-up agent is retried
``escalation_retry_initial`` s (1800) after the escalation, the delay doubling per retry
up to ``escalation_retry_max`` (14400 s), at most ``escalation_retries`` (3) times; the
retry is the probe (the agent's checks see whether the condition is gone). A person is
paged (``escalation`` event) at the first escalation and when the retries are used up;
the escalations in between are ``escalation_repeated`` events. A retry that holds for
``escalation_retry_max`` s without a new escalation ends the record
(``escalation_recovered``). ``ccci start AGENT`` clears the record.

Internal; plugins act through :class:`ccci.services.Services`.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ccci import guards
from ccci.clock import iso, parse_utc
from ccci.lifecycle import RESTART_ACTIONS
from ccci.model import Finding, Remedy, RemedyResult

if TYPE_CHECKING:  # pragma: no cover
    from ccci.runtime import AgentRuntime, FleetSnapshot
    from ccci.supervisor import Supervisor

#: actions a plugin may choose instead of an essential check's builtin choice
ESSENTIAL_OVERRIDES = RESTART_ACTIONS | {"start", "escalate"}
#: kv key: an agent's escalation record (JSON, see :func:`note_escalation`)
ESCALATION_KEY = "escalation.{agent}"
#: kv key: a scheduled remedy (JSON, see :func:`remedy_to_json`): one per agent and action,
#: kept so that a watcher restart (``kill -9``, the service manager) runs it on time instead
#: of finding the condition again later and backing off one more step
SCHEDULED_KEY = "scheduled.{agent}.{action}"


def remedy_to_json(at: datetime, remedy: Remedy) -> str:
    """A scheduled remedy as JSON: ``{"at": ISO UTC, "action", "agent", "text",
    "not_before", "data", "retry_after_s", "reason": {Finding's fields}}``."""
    from dataclasses import asdict

    return json.dumps({"at": iso(at), "action": remedy.action, "agent": remedy.agent, "text": remedy.text,
                       "not_before": iso(remedy.not_before) if remedy.not_before else None,
                       "data": remedy.data, "retry_after_s": remedy.retry_after_s,
                       "reason": asdict(remedy.reason)}, default=str)


def remedy_from_json(raw: str) -> tuple[datetime, Remedy]:
    """The inverse of :func:`remedy_to_json`. Raises ``ValueError``/``KeyError``/``TypeError``
    on a record it cannot read."""
    rec = json.loads(raw)
    reason = Finding(**rec["reason"])
    remedy = Remedy(rec["action"], rec["agent"], reason, text=rec.get("text", ""),
                    not_before=parse_utc(rec["not_before"]) if rec.get("not_before") else None,
                    data=dict(rec.get("data") or {}), retry_after_s=rec.get("retry_after_s"))
    return parse_utc(rec["at"]), remedy


def escalation_record(kv: Any, agent: str) -> dict | None:
    """The agent's escalation record (:func:`note_escalation`), ``None`` when there is none
    (or it is unreadable). ``kv``: anything with ``get(key)`` (the state store, a KeyValue)."""
    raw = kv.get(ESCALATION_KEY.format(agent=agent))
    try:
        rec = json.loads(raw) if raw else None
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def note_escalation(kv: Any, agent: str, why: str, now: datetime, settings: dict,
                    not_before: datetime | None = None) -> dict:
    """Record an escalation of ``agent`` and plan its automatic retry.

    :param kv: the state (``get``/``put``).
    :param why: the escalation's one-line reason.
    :param now: UTC.
    :param settings: thresholds: ``escalation_retries`` (count), ``escalation_retry_initial``
        and ``escalation_retry_max`` (seconds).
    :param not_before: UTC: no retry before then (e.g. a usage limit's reset).
    :returns: the record written: ``{"since": first escalation (ISO UTC), "at": this one,
        "why": str, "retries": retries done so far, "retry_at": ISO UTC or None,
        "final": bool (no more automatic retries), "page": bool (a person is paged now:
        the first escalation and the final one)}``.
    """
    prev = escalation_record(kv, agent)
    chain = prev is not None and int(prev.get("retries", 0)) > 0 and not prev.get("final")
    retries = int(prev["retries"]) if chain else 0
    cap = int(settings["escalation_retries"])
    final = retries >= cap
    retry_at = None
    if not final:
        delay = min(float(settings["escalation_retry_max"]), float(settings["escalation_retry_initial"]) * 2 ** retries)
        at = now + timedelta(seconds=delay)
        retry_at = iso(max(at, not_before) if not_before else at)
    rec = {"since": prev["since"] if chain else iso(now), "at": iso(now), "why": why, "retries": retries,
           "retry_at": retry_at, "final": final, "page": not chain or final}
    kv.put(ESCALATION_KEY.format(agent=agent), json.dumps(rec))
    return rec


class Remedies:
    """Chooses and runs remedies for a :class:`ccci.supervisor.Supervisor`."""

    def __init__(self, sup: "Supervisor") -> None:
        self.sup = sup
        self.scheduled: list[tuple[datetime, Remedy]] = []
        self._loaded = False

    def _load_scheduled(self) -> None:
        """Take over the remedies a previous watcher of this fleet scheduled (once)."""
        self._loaded = True
        prefix = SCHEDULED_KEY.format(agent="", action="")[:-1]
        for key, raw in self.sup.store.items(prefix).items():
            try:
                at, remedy = remedy_from_json(raw)
            except (ValueError, KeyError, TypeError):
                self.sup.store.delete(key)
                continue
            if remedy.agent is not None and remedy.agent not in self.sup.agents:
                self.sup.store.delete(key)  # the agent left the config
                continue
            self.scheduled = [(t, r) for t, r in self.scheduled
                              if not (r.agent == remedy.agent and r.action == remedy.action)]
            self.scheduled.append((at, remedy))

    @staticmethod
    def _key(remedy: Remedy) -> str:
        return SCHEDULED_KEY.format(agent=remedy.agent or "-", action=remedy.action)

    def choose(self, finding: Finding, rt: AgentRuntime | None, settings: dict, now: datetime) -> Remedy | None:
        """``ccci_choose_remedy``, each implementation isolated, first result wins. For
        an essential check's finding only a restart or an escalation may replace the
        essential plugin's own choice, so a failing or careless plugin cannot leave a
        dead agent dead."""
        essential = self.sup.pm.is_essential(finding.plugin)

        def accept(info) -> bool:
            return (not essential or self.sup.pm.is_essential(info.plugin)
                    or info.result.action in ESSENTIAL_OVERRIDES)

        info = self.sup.calls.call_first("ccci_choose_remedy", {"finding": finding, "agent": rt, "settings": settings,
                                                            "now": now, "config": self.sup.config},
                                     agent=finding.agent, accept=accept)
        return info.result if info else None

    def act(self, finding: Finding, snap: FleetSnapshot, fleet: bool = False) -> None:
        """Choose and (if the guards allow) carry out a remedy for ``finding``, once per
        occurrence (see :class:`ccci.model.RemedyResult`).

        :param fleet: ``finding`` came from ``ccci_check_fleet`` (its occurrence belongs
            to the fleet checks, whatever agent it names)."""
        rt = self.sup.agents.get(finding.agent) if finding.agent else None
        scope = None if fleet else finding.agent
        generation = rt.generation if (rt is not None and not fleet) else 0
        if not self.sup.occurrences.due(scope, finding, generation, snap.now):
            return
        settings = self.sup.config.settings_for(finding.agent)
        remedy = self.choose(finding, rt, settings, snap.now)
        if remedy is None:
            self._report_finding_once(rt, finding, "no remedy chosen")
            return
        if remedy.not_before and remedy.not_before > snap.now and remedy.action != "wait":
            self.schedule(remedy)
            self.sup.occurrences.record(scope, finding, generation, RemedyResult(
                True, retry_after_s=(remedy.not_before - snap.now).total_seconds()), snap.now)
            return
        if rt is not None:
            if snap.mono < self.sup.breaker.open_until and remedy.action not in ("escalate", "wait"):
                self._report_finding_once(rt, finding, "fleet breaker open: no automatic action")
                return
            if remedy.action in RESTART_ACTIONS:
                probe = getattr(rt.backend, "launch_blocked", None)
                blocked = probe and self.sup.calls.guarded(
                    self.sup.backend_plugins.get(rt.backend.name, rt.backend.name), f"{rt.backend.name}.launch_blocked",
                    probe, rt.spec, self.sup.config, default=None)
                if blocked:
                    self._report_finding_once(rt, finding, f"the launch waits: {blocked}")
                    return
                if not self._restart_allowed(rt, remedy, snap.mono, settings):
                    return
        self.sup.emit("finding", f"{finding.check}: {finding.summary}", agent=finding.agent,
                  data={**{k: v for k, v in finding.data.items() if k != "pings"}, "check": finding.check,
                        "evidence": self.sup.redact(finding.evidence), "plugin": finding.plugin})
        result = self.run(remedy)
        if result is not None:
            if result.ok and result.retry_after_s is None and remedy.retry_after_s is not None:
                result.retry_after_s = remedy.retry_after_s
            self.sup.occurrences.record(scope, finding, generation, result, snap.now)

    def _report_finding_once(self, rt: AgentRuntime | None, finding: Finding, why: str) -> None:
        key = f"{finding.check}:{why}"
        if rt is not None and rt.reported_wait == key:
            return
        if rt is not None:
            rt.reported_wait = key
        self.sup.emit("finding", f"{finding.check}: {finding.summary} ({why})", agent=finding.agent,
                  check=finding.check, evidence=finding.evidence, plugin=finding.plugin)

    def _restart_allowed(self, rt: AgentRuntime, remedy: Remedy, mono: float, settings: dict) -> bool:
        # "restart" resumes too when the backend can (see Lifecycle.launch): it counts
        resuming = remedy.action == "resume" or (
            remedy.action == "restart" and rt.backend.supports_resume and bool(rt.conversation_id))
        d = guards.restart_decision(remedy, restart_marks=rt.restart_marks, resumes=rt.resumes, resuming=resuming,
                                    backoff_s=rt.backoff_s, next_restart_mono=rt.next_restart_mono, mono=mono,
                                    settings=settings, turn_marks=rt.turn_marks)
        if d.escalate:
            self.escalate(rt.name, d.escalate)
            return False
        if not d.allowed:
            key = f"backoff:{rt.next_restart_mono:.0f}"
            if rt.reported_wait != key:
                rt.reported_wait = key
                self.sup.emit("backoff", f"{remedy.action} deferred {d.deferred_s:.1f}s (backoff)", agent=rt.name,
                          seconds=round(d.deferred_s, 1))
            return False
        if not remedy.data.get("turn_end"):
            rt.restart_marks.append(mono)
        rt.backoff_s, rt.next_restart_mono = d.backoff_s, d.next_restart_mono
        return True

    def run(self, remedy: Remedy) -> RemedyResult | None:
        """Carry out a remedy through ``ccci_run_remedy`` and log the outcome. Essential
        implementations (the restart remedy) are asked first; then the others in
        calling order, each isolated: one that raises is skipped for the next."""
        rt = self.sup.agents.get(remedy.agent) if remedy.agent else None
        kwargs = {"remedy": remedy, "agent": rt, "config": self.sup.config, "now": self.sup.clock.now()}
        impls = self.sup.calls.ordered("ccci_run_remedy")
        impls = [i for i in impls if self.sup.pm.is_essential(i.plugin_name)] + \
                [i for i in impls if not self.sup.pm.is_essential(i.plugin_name)]
        failed: list[str] = []
        result: RemedyResult | None = None
        for impl in impls:
            info = self.sup.calls.call(impl, "ccci_run_remedy", kwargs, agent=remedy.agent)
            if not info.ok:
                failed.append(info.plugin)
            elif info.result is not None:
                result = info.result
                break
        if result is None:
            why = f"plugin(s) {', '.join(failed)} failed" if failed else "no plugin handles it"
            self.sup.emit("remedy_failed", f"{remedy.action} was not carried out: {why}", agent=remedy.agent,
                      action=remedy.action, check=remedy.reason.check, failed=failed)
            return None
        if result.pending and rt is not None and rt.pending_since_mono is None:
            rt.pending_since_mono = self.sup.clock.monotonic()
            rt.pending_action = remedy.action
        self.sup.emit("remedy", f"{remedy.action} for {remedy.reason.check}: {result.detail}", agent=remedy.agent,
                  action=remedy.action, check=remedy.reason.check, ok=result.ok)
        return result

    def escalate(self, agent: str | None, why: str) -> None:
        """Run the ``escalate`` remedy (once: an agent already given up is left alone)."""
        if agent is not None and self.sup.agents[agent].given_up:
            return
        self.run(Remedy(action="escalate", agent=agent, reason=Finding("runner", agent, why, evidence=why)))

    def schedule(self, remedy: Remedy) -> None:
        """Run ``remedy`` at ``remedy.not_before`` (UTC); one per agent and action (a
        new one replaces the one scheduled before). Kept in the state store
        (:data:`SCHEDULED_KEY`) until it runs, so a restarted watcher runs it on time."""
        if not self._loaded:
            self._load_scheduled()
        at = remedy.not_before or self.sup.clock.now()
        self.scheduled = [(t, r) for t, r in self.scheduled if not (r.agent == remedy.agent and r.action == remedy.action)]
        self.scheduled.append((at, remedy))
        self.sup.store.put(self._key(remedy), remedy_to_json(at, remedy))
        self.sup.emit("scheduled", f"{remedy.action} at {iso(remedy.not_before)} ({remedy.reason.check})", agent=remedy.agent,
                  action=remedy.action, at=iso(remedy.not_before))

    def retry_given_up(self) -> None:
        """Retry given-up agents whose escalation record's ``retry_at`` (UTC) is past, and
        forget the records of agents that stayed up ``escalation_retry_max`` s after a
        retry (see the module docstring). A retry clears ``given_up``, the failure
        counters (``resumes``, restart intensity, backoff) and restarts the agent
        (resuming its conversation where the backend can); not while the fleet breaker
        is open or the agent is stopped. Events: ``escalation_retry``, ``escalation_recovered``."""
        sup = self.sup
        records = sup.store.items(ESCALATION_KEY.format(agent=""))
        if not records:
            return
        now, mono = sup.clock.now(), sup.clock.monotonic()
        for key, raw in records.items():
            name = key[len(ESCALATION_KEY.format(agent="")):]
            rt = sup.agents.get(name)
            try:
                rec = json.loads(raw)
            except ValueError:
                rec = None
            if rt is None or not isinstance(rec, dict):
                sup.store.delete(key)
                continue
            settings = sup.config.settings_for(name)
            if not rt.given_up:
                done = rec.get("retried_at")
                if done and (now - parse_utc(done)).total_seconds() >= float(settings["escalation_retry_max"]):
                    sup.store.delete(key)
                    sup.emit("escalation_recovered", f"no escalation for {float(settings['escalation_retry_max']):.0f}s "
                             f"after automatic retry {rec.get('retries')}: recovered ({rec.get('why', '')[:120]})",
                             agent=name, retries=rec.get("retries"))
                elif not done:
                    sup.store.delete(key)  # cleared by a person ('ccci start') before any retry
                continue
            if rt.stopped or rec.get("final") or not rec.get("retry_at") or parse_utc(rec["retry_at"]) > now:
                continue
            if mono < sup.breaker.open_until:
                continue
            rec.update(retries=int(rec.get("retries", 0)) + 1, retried_at=iso(now), retry_at=None, page=False)
            cap = int(settings["escalation_retries"])
            with sup.store.transaction():
                sup.store.put(key, json.dumps(rec))
                sup.store.update_agent(name, given_up=0, resumes=0)
            rt.given_up = False
            rt.resumes = 0
            rt.restart_marks.clear()
            rt.backoff_s, rt.next_restart_mono = 0.0, 0.0
            rt.failing, rt.nudges, rt.hold_until_mono = {}, 0, 0.0
            sup.emit("escalation_retry", f"automatic retry {rec['retries']} of {cap} after the escalation at "
                     f"{rec.get('at')}: {rec.get('why', '')[:160]}", agent=name, retries=rec["retries"], cap=cap,
                     why=rec.get("why", ""))
            sup.lifecycle.launch(name, "restart", reason=f"automatic retry {rec['retries']} of {cap} after escalation")

    def run_scheduled(self) -> None:
        """Run the scheduled remedies that are due, then :meth:`retry_given_up`."""
        self.retry_given_up()
        if not self._loaded:
            self._load_scheduled()
        now = self.sup.clock.now()
        due = [(t, r) for t, r in self.scheduled if t <= now]
        self.scheduled = [(t, r) for t, r in self.scheduled if t > now]
        for _, remedy in due:
            self.sup.store.delete(self._key(remedy))
            rt = self.sup.agents.get(remedy.agent) if remedy.agent else None
            if rt is not None and (rt.stopped or rt.given_up):
                continue
            self.run(remedy)
