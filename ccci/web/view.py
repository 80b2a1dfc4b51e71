"""What the dashboard shows, read from one fleet: its state database (agents, events,
messages, usage) and its tmux server, through the functions ``ccci status`` uses
(:func:`ccci.commands.cli.status_rows`). Every text that could hold a secret from an
agent's environment (screens, events, commit subjects) goes through the supervisor's
:class:`ccci.redact.Redactor`.

A :class:`FleetView` is not thread-safe (its :class:`ccci.state.StateStore` is one
SQLite connection): :mod:`ccci.web.app` calls it from a single worker thread.
"""
from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta
from typing import Any

from ccci.clock import UTC, iso, parse_utc

#: event kinds that start a state on the timeline (an agent running again)
RUNNING_KINDS = ("agent_started", "agent_resumed", "agent_restarted_fresh", "agent_adopted")
#: event kinds listed as an agent's remedies
REMEDY_KINDS = ("finding", "remedy", "remedy_failed", "remedy_timeout", "scheduled", "backoff", "escalation",
                "escalation_repeated", "escalation_retry", "escalation_recovered", "breaker_open", "launch_failed")
#: how many recent events the log filters look through (newest first)
EVENT_WINDOW = 5000


def parse_since(text: str, now: datetime) -> datetime | None:
    """``"90s"``, ``"30m"``, ``"12h"``, ``"7d"`` (before ``now``) or an ISO-8601 UTC time;
    ``""`` = no bound. :raises ValueError: anything else."""
    text = (text or "").strip()
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    return parse_utc(text)


class FleetView:
    """The dashboard's reads and actions on one fleet.

    :param sup: a :class:`ccci.supervisor.Supervisor` built as ``ccci status`` builds it
        (``ccci.commands.cli.build``); the web process never runs its ticks.
    """

    def __init__(self, sup, ttl: float = 0.4) -> None:
        self.sup = sup
        self.cfg = sup.config
        self.store = sup.store
        self.ttl = ttl
        self._commits: dict[str, tuple[float, dict | None]] = {}
        self._memo: dict[tuple, tuple[float, Any]] = {}

    def _cached(self, key: tuple, fn):
        """``fn()``, reused for ``ttl`` seconds: several open pages cost one tmux capture
        per look, not one each."""
        hit = self._memo.get(key)
        now = time.monotonic()
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        val = fn()
        self._memo[key] = (time.monotonic(), val)
        return val

    # ------------------------------------------------------------ helpers
    def redact(self, text: str) -> str:
        return self.sup.redactor.text(text or "")

    def _event(self, e: dict) -> dict:
        data = self.sup.redactor.data(e.get("data") or {})
        return {"id": e["id"], "at": e["at"], "agent": e["agent"], "kind": e["kind"],
                "message": self.redact(e["message"]), "source": data.get("source"),
                "check": data.get("check")}

    def last_event_id(self) -> int:
        return self.store.last_event_id()

    def last_commit(self, name: str) -> dict | None:
        """The agent's clone's ``HEAD`` commit: ``{"sha", "subject", "at"}`` (ISO-8601
        UTC), cached 5 s; ``None`` when the workdir is not a git clone."""
        hit = self._commits.get(name)
        if hit and time.monotonic() - hit[0] < 5:
            return hit[1]
        spec = next(a for a in self.cfg.agents if a.name == name)
        val = None
        try:
            out = subprocess.run(["git", "-C", str(spec.workdir), "log", "-1", "--format=%H%x00%ct%x00%s"],
                                 capture_output=True, text=True, timeout=5, errors="replace")
            if out.returncode == 0 and out.stdout.count("\0") == 2:
                sha, ct, subject = out.stdout.rstrip("\n").split("\0")
                val = {"sha": sha[:10], "subject": self.redact(subject)[:200],
                       "at": iso(datetime.fromtimestamp(int(ct), UTC))}
        except (OSError, subprocess.SubprocessError, ValueError):
            val = None
        self._commits[name] = (time.monotonic(), val)
        return val

    # ------------------------------------------------------------ reads
    def fleet(self) -> dict[str, Any]:
        """``{"fleet", "phase", "watcher_pid", "agents": [row]}``; a row is a
        ``ccci status --json`` row plus ``phase`` and ``last_commit`` (reused for
        ``ttl`` seconds)."""
        return self._cached(("fleet",), self._fleet)

    def _fleet(self) -> dict[str, Any]:
        from ccci import phases as ph
        from ccci.commands.cli import status_rows
        from ccci.lock import FleetLock

        try:
            phase = ph.current(self.cfg, self.store)
        except Exception:  # noqa: BLE001 - a malformed [phases]: ccci status says so; show none
            phase = None
        lock = FleetLock(self.cfg.state_dir)
        rows = []
        for r in status_rows(self.sup):
            rows.append({k: (self.redact(v) if isinstance(v, str) else v) for k, v in r.items()}
                        | {"phase": phase, "last_commit": self.last_commit(r["name"])})
        return {"fleet": self.cfg.name, "phase": phase, "watcher_pid": lock.holder() if lock.is_held() else None,
                "agents": rows}

    def screen_html(self, name: str) -> str:
        """The agent's pane now (``capture-pane -p -e -J``) as escaped, redacted HTML
        (:func:`ccci.web.ansi.to_html`); ``""`` without a pane."""
        from ccci.web.ansi import to_html

        pane = self.sup.tmux.list_panes().get(self.sup.agents[name].session)
        if pane is None:
            return ""
        lines = self.sup.tmux.cmd("capture-pane", "-p", "-e", "-J", "-t", pane.pane_id, check=False)
        while lines and not lines[-1].strip():
            lines.pop()
        return to_html("\n".join(lines), self.sup.redactor.secrets)

    def timeline(self, name: str, now: datetime, hours: float = 24) -> list[dict]:
        """The agent's states over the last ``hours`` (or since its first event, when
        younger, at least 60 s) from its events: ``[{"state", "start", "end", "pct"}]``
        (ISO-8601 UTC; ``pct`` of the period). A start or
        resume begins ``running``, a finding begins its check's name (``stall``,
        ``exited``...), ``agent_stopped`` begins ``stopped``, an escalation ``given_up``,
        a failed launch ``launch_failed``; before the first event: ``unknown``."""
        evs = self._agent_events(name)
        start = now - timedelta(hours=hours)
        if evs:  # a younger fleet: from its first event, so the bar is not all "unknown"
            start = max(start, min(parse_utc(evs[0]["at"]), now - timedelta(seconds=60)))
        marks: list[tuple[datetime, str]] = []
        state = "unknown"
        for e in evs:
            at = parse_utc(e["at"])
            k = e["kind"]
            new = ("running" if k in RUNNING_KINDS else "stopped" if k == "agent_stopped" else
                   "given_up" if k == "escalation" else "launch_failed" if k == "launch_failed" else
                   (e["data"].get("check") or "finding") if k == "finding" else None)
            if new is None:
                continue
            if at <= start:
                state = new
            else:
                marks.append((at, new))
        out: list[dict] = []
        t0 = start
        span = (now - start).total_seconds()
        for at, new in marks + [(now, None)]:
            if at > t0:
                out.append({"state": state, "start": iso(t0), "end": iso(at),
                            "pct": round(100 * (at - t0).total_seconds() / span, 3)})
            t0, state = at, new if new is not None else state
        merged: list[dict] = []
        for seg in out:
            if merged and merged[-1]["state"] == seg["state"]:
                merged[-1]["end"] = seg["end"]
                merged[-1]["pct"] = round(merged[-1]["pct"] + seg["pct"], 3)
            else:
                merged.append(seg)
        return merged

    def _agent_events(self, name: str, window: int = EVENT_WINDOW) -> list[dict]:
        return self.store.events(after_id=max(0, self.store.last_event_id() - window), limit=window, agent=name)

    def agent(self, name: str) -> dict[str, Any]:
        """:meth:`_agent`, reused for ``ttl`` seconds."""
        return self._cached(("agent", name), lambda: self._agent(name))

    def _agent(self, name: str) -> dict[str, Any]:
        """Everything the agent page shows: ``row`` (as in :meth:`fleet`), ``screen``
        (HTML), ``timeline``, ``events`` and ``remedies`` (newest 100 / 50, oldest
        first), ``conversation_id``, ``tokens`` (``usage_rows``: per day and model),
        ``messages`` (the send queue, newest 20)."""
        now = datetime.now(UTC)
        fleet = self.fleet()
        row = next(r for r in fleet["agents"] if r["name"] == name)
        evs = self._agent_events(name)
        return {
            "name": name, "row": row, "phase": fleet["phase"], "watcher_pid": fleet["watcher_pid"],
            "screen": self.screen_html(name), "timeline": self.timeline(name, now),
            "events": [self._event(e) for e in evs[-100:]],
            "remedies": [self._event(e) for e in evs if e["kind"] in REMEDY_KINDS][-50:],
            "conversation_id": row.get("conversation_id"),
            "tokens": self.store.usage_rows(agent=name),
            "messages": [{"id": m["id"], "status": m["status"], "text": self.redact(m["text"])[:300],
                          "detail": self.redact(m.get("detail") or "")}
                         for m in self.store.messages_for(name, limit=20)],
            "jobs": [a.name for a in self.cfg.agents if a.role.value == "job"],
        }

    def events(self, agent: str = "", kind: str = "", since: datetime | None = None, after_id: int = 0,
               limit: int = 500) -> list[dict]:
        """Events matching the filters, oldest first, at most the newest ``limit`` of
        the last :data:`EVENT_WINDOW`. ``kind`` matches a prefix (``agent_`` finds
        every ``agent_*``)."""
        first = max(after_id, self.store.last_event_id() - EVENT_WINDOW)
        out = []
        for e in self.store.events(after_id=first, limit=EVENT_WINDOW, agent=agent or None):
            if kind and not e["kind"].startswith(kind):
                continue
            if since is not None and parse_utc(e["at"]) < since:
                continue
            out.append(self._event(e))
        return out[-limit:]

    # ------------------------------------------------------------ actions
    def act(self, action: str, agent: str, text: str = "", args: list[str] | None = None,
            client: str = "") -> dict[str, Any]:
        """Run one action as its ``ccci`` command does (:mod:`ccci.commands.actions`)
        and log it as a ``web_action`` event with ``source="web"``.

        :param action: ``send`` (``text`` to ``agent``), ``restart``, ``stop``,
            ``start``, or ``job`` (start job ``agent`` with ``args``).
        :returns: ``{"ok": bool, "lines": [str], "event_id": int}``.
        :raises ValueError: an unknown action or agent, or an empty message.
        """
        from ccci.commands import actions as act

        names = [a.name for a in self.cfg.agents]
        if agent not in names:
            raise ValueError(f"no agent {agent!r}; agents are: {', '.join(names)}")
        reason = "ccci web"
        if action == "send":
            if not text.strip():
                raise ValueError("send: the message is empty")
            mid = act.queue_send(self.sup, agent, text)
            res = act.ActionResult(mid is not None, [f"queued message {mid} for {agent}; the watcher types it "
                                                     f"once {agent} is idle"])
        elif action == "stop":
            res = act.stop_agents(self.sup, [agent], reason=reason)
        elif action == "start":
            res = act.start_agents(self.sup, [agent], reason=reason)
        elif action == "restart":
            res = act.restart_agents(self.sup, [agent], reason=reason)
        elif action == "job":
            spec = next(a for a in self.cfg.agents if a.name == agent)
            if spec.role.value != "job":
                raise ValueError(f"{agent} is not a job (role = \"job\")")
            pid = act.request_job(self.cfg, self.store, agent, "start", list(args or []))
            res = act.ActionResult(pid is not None, [f"asked the watcher (pid {pid}) to start job {agent}"])
        else:
            raise ValueError(f"unknown action {action!r}; known: send, restart, stop, start, job")
        self._memo.clear()  # the next look shows what the action did
        detail = "; ".join(res.lines)
        self.sup.emit("web_action", f"{action} {agent} from the web dashboard: {detail}", agent=agent,
                      source="web", action=action, ok=res.ok, client=client,
                      **({"text": text[:200]} if action == "send" else {}))
        return {"ok": res.ok, "lines": res.lines, "event_id": self.store.last_event_id()}
