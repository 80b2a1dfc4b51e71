"""``ccci demo``: a throwaway fleet of scripted agents, every fault injected, a timeline.

1. ``ccci init`` a fleet (bare git origin, builder and adversary clones, the scripted
   backend, demo thresholds of seconds) on a private tmux socket;
2. start ``ccci watch`` as a real background process;
3. wait for the first handoff (builder's ``claim(...)`` push pings the adversary, whose
   ``review(...)`` push pings the builder);
4. inject each fault and wait for ccci to detect and heal it: ``kill -9`` of an agent,
   the fatal thinking-block error, a frozen process, an overslept ``WAITING-UNTIL``, a
   usage limit with a reset time, a full context, and ``kill -9`` of the watcher itself
   (the new watcher must adopt the agents, not restart them, and re-ping nothing);
5. print the timeline and a table with the detection and heal latency of each fault.

Exits 0 only if every fault was detected and healed. Event messages, paths and details
are printed literally (:class:`rich.text.Text`); only fixed words are styled.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import git
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ccci import config as config_mod
from ccci.clock import UTC, parse_utc
from ccci.commands.init import ROLES, init_fleet
from ccci.gitwatch import BASELINE_KEY
from ccci.state import StateStore
from ccci.tmux import Tmux

STEP_TIMEOUT_S = 45.0


@dataclass
class FaultResult:
    name: str
    agent: str
    expected: str
    injected_at: datetime | None = None
    detected_s: float | None = None
    healed_s: float | None = None
    detail: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.detected_s is not None and self.healed_s is not None


class Demo:
    def __init__(self, console: Console, directory: Path) -> None:
        self.console = console
        self.dir = directory
        self.cfg_path = init_fleet(directory, demo=True, name=f"demo{os.getpid()}")
        self.cfg = config_mod.load(self.cfg_path)
        self.store = StateStore(self.cfg.state_dir)
        self.tmux = Tmux(self.cfg.tmux_socket)
        self.watcher: subprocess.Popen | None = None
        self.t0 = time.time()
        self.seen_id = 0

    # ------------------------------------------------------------------ plumbing
    def start_watcher(self) -> None:
        log = open(self.cfg.state_dir / "watcher.out", "ab")
        self.watcher = subprocess.Popen(
            [sys.executable, "-m", "ccci", "--fleet", str(self.dir), "watch", "--quiet"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def kill_watcher(self) -> None:
        if self.watcher and self.watcher.poll() is None:
            os.kill(self.watcher.pid, signal.SIGKILL)
            self.watcher.wait()

    def stop_all(self, keep: bool) -> None:
        if self.watcher and self.watcher.poll() is None:
            self.watcher.send_signal(signal.SIGTERM)
            try:
                self.watcher.wait(10)
            except subprocess.TimeoutExpired:
                self.kill_watcher()
        if not keep:
            self.tmux.kill_server()

    def events_since(self, after: datetime, agent: str | None = None) -> list[dict]:
        out = []
        for e in self.store.events(after_id=0, limit=100000, agent=agent):
            if parse_utc(e["at"]) >= after:
                out.append(e)
        return out

    def print_new_events(self) -> None:
        for e in self.store.events(after_id=self.seen_id):
            self.seen_id = e["id"]
            if e["kind"] == "state_changed":  # one per turn and fault: 'ccci report' shows them as a timeline
                continue
            rel = parse_utc(e["at"]).timestamp() - self.t0
            who = (f"{e['agent']:<9}", "cyan") if e["agent"] else " " * 9
            kind = e["kind"]
            style = "red" if kind in ("escalation", "plugin_error", "tick_error", "remedy_failed", "message_failed") else (
                "green" if kind.startswith("agent_") or kind in ("message_delivered", "remedy") else "white")
            self.say(f"  {rel:7.2f}s ", who, " ", (f"{kind:<18}", style), f" {e['message'][:110]}")

    def say(self, *parts: str | tuple[str, str]) -> None:
        """One line, literally: plain strings, or ``(text, style)`` for styled fixed words."""
        self.console.print(Text.assemble(*parts), soft_wrap=True)

    def wait_for(self, pred: Callable[[], object], timeout: float = STEP_TIMEOUT_S) -> object:
        end = time.time() + timeout
        while time.time() < end:
            if self.watcher is not None and self.watcher.poll() is not None:
                self.console.print(f"[red]the watcher exited with status {self.watcher.returncode}[/red]")
                return None
            self.print_new_events()
            val = pred()
            if val:
                return val
            time.sleep(0.2)
        self.print_new_events()
        return None

    def pane(self, agent: str):
        return self.tmux.list_panes().get(self.cfg.session_name(agent))

    def screen(self, agent: str) -> str:
        p = self.pane(agent)
        return self.tmux.capture([p.pane_id]).get(p.pane_id, "") if p else ""

    def control(self, agent: str, fault: str) -> None:
        path = self.cfg.state_dir / "scripted" / f"{agent}.control"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(fault)

    def first_event(self, after: datetime, agent: str | None, kinds: tuple[str, ...], pred=lambda e: True) -> dict | None:
        for e in self.events_since(after, agent):
            if e["kind"] in kinds and pred(e):
                return e
        return None

    @staticmethod
    def secs(e: dict | None, since: datetime) -> float | None:
        return None if e is None else round((parse_utc(e["at"]) - since).total_seconds(), 2)

    def alive_and_idle(self, agent: str) -> bool:
        p = self.pane(agent)
        if p is None or p.dead:
            return False
        lines = [ln for ln in self.screen(agent).splitlines() if ln.strip()]
        return bool(lines) and lines[-1].startswith(">")

    # ------------------------------------------------------------------ faults
    def origin_head(self) -> str | None:
        """The sha of origin's watched branch, read from the origin itself (GitPython)."""
        try:
            out = git.cmd.Git().ls_remote(self.cfg.git.origin, f"refs/heads/{self.cfg.git.branch}")
        except git.GitCommandError:
            return None
        return out.split()[0] if out.strip() else None

    def quiet_state(self) -> str:
        """Why the fleet is not quiet yet (``""`` when it is): a commit on origin that
        ccci has not yet turned into pings, a message queued or being typed, or an agent
        that is busy or not drawn yet. Any of these can heal or mask the next fault (a
        handoff ping wakes an agent that was meant to oversleep)."""
        head = self.origin_head()
        baseline = self.store.get(BASELINE_KEY.format(branch=self.cfg.git.branch))
        if head is None or head != baseline:
            return f"origin head {str(head)[:10]} not yet processed (baseline {str(baseline)[:10]})"
        unfinished = self.store.unfinished_messages()
        if unfinished:
            return f"{len(unfinished)} message(s) queued or being delivered"
        busy = [a for a in ROLES if not self.alive_and_idle(a)]
        if busy:
            return f"not idle: {', '.join(busy)}"
        return ""

    def settle(self, quiet_s: float = 3.0, timeout: float = 90.0) -> bool:
        """Wait until the fleet is quiet (:meth:`quiet_state`) and has stayed quiet, with
        no new event, for ``quiet_s`` seconds, so one fault's aftermath (pings, resumed
        turns, their own handoffs) can neither heal nor mask the next fault.

        :returns: ``False`` (with a printed note) when ``timeout`` seconds pass first.
        """
        end = time.time() + timeout
        quiet_since: float | None = None
        last_id = self.store.last_event_id()
        why = ""
        while time.time() < end:
            self.print_new_events()
            why = self.quiet_state()
            newest = self.store.last_event_id()
            if why or newest != last_id:
                quiet_since = None
                last_id = newest
            elif quiet_since is None:
                quiet_since = time.time()
            elif time.time() - quiet_since >= quiet_s:
                return True
            time.sleep(0.3)
        self.say(f"  (the fleet did not settle in {timeout:.0f} s: {why or 'events kept coming'})")
        return False

    def inject(self, r: FaultResult, do: Callable[[], None], detect_kinds: tuple[str, ...],
               heal: Callable[[datetime], dict | None], detect_pred=lambda e: True) -> FaultResult:
        self.settle()
        self.say("\n", (f"fault: {r.name}", "bold"), f" on {r.agent} — expect: {r.expected}")
        self.wait_for(lambda: self.alive_and_idle(r.agent), timeout=30)
        r.injected_at = datetime.now(UTC)
        do()
        det = self.wait_for(lambda: self.first_event(r.injected_at, r.agent, detect_kinds, detect_pred))
        r.detected_s = self.secs(det, r.injected_at)
        healed = self.wait_for(lambda: heal(r.injected_at))
        r.healed_s = self.secs(healed, r.injected_at) if isinstance(healed, dict) else None
        if det:
            r.detail = det["message"][:90]
        return r

    def run(self) -> list[FaultResult]:
        c = self.console
        self.say(("ccci demo", "bold"), f": fleet in {self.dir} (tmux -L {self.cfg.tmux_socket})")
        self.start_watcher()
        results: list[FaultResult] = []

        # --- handoff ----------------------------------------------------------
        c.print("\n[bold]handoff[/bold]: builder pushes claim(...) -> ccci pings adversary -> review(...) -> builder")
        start = datetime.now(UTC)
        r = FaultResult("handoff claim -> review", "adversary", "claim ping to adversary, review ping to builder")
        r.injected_at = start
        claim = self.wait_for(lambda: self.first_event(start, "adversary", ("message_delivered",), lambda e: "claim(" in e["message"]), 60)
        review = self.wait_for(lambda: self.first_event(start, "builder", ("message_delivered",), lambda e: "review(" in e["message"]), 60)
        if isinstance(claim, dict):
            queued = self.first_event(start, "adversary", ("ping_queued",))
            r.detected_s = round((parse_utc(claim["at"]) - parse_utc(queued["at"])).total_seconds(), 2) if queued else None
            r.notes.append("detected = ping queued -> delivered")
        r.healed_s = self.secs(review if isinstance(review, dict) else None, start)
        r.detail = "claim and review each pinged once" if r.ok else "handoff did not complete"
        results.append(r)

        # --- kill -9 of an agent -----------------------------------------------
        def kill_builder() -> None:
            p = self.pane("builder")
            os.kill(p.pid, signal.SIGKILL)

        results.append(self.inject(
            FaultResult("kill -9 agent", "builder", "restart (resume) within 3 s"), kill_builder,
            ("finding",), lambda t: self.first_event(t, "builder", ("agent_resumed", "agent_restarted_fresh")),
            detect_pred=lambda e: "process_death" in e["message"]))

        # --- fatal thinking-block error -------------------------------------------
        results.append(self.inject(
            FaultResult("fatal 400 thinking-block", "adversary", "fresh session, never a resume"),
            lambda: self.control("adversary", "fatal"), ("finding",),
            lambda t: self.first_event(t, "adversary", ("agent_restarted_fresh",)),
            detect_pred=lambda e: "fatal_error" in e["message"]))

        # --- frozen process ------------------------------------------------------
        results.append(self.inject(
            FaultResult("frozen process", "builder", "stall: nudge, then restart"),
            lambda: self.control("builder", "freeze"), ("finding",),
            lambda t: self.first_event(t, "builder", ("agent_resumed", "agent_restarted_fresh")),
            detect_pred=lambda e: "stall" in e["message"]))

        # --- overslept WAITING-UNTIL ------------------------------------------------
        results.append(self.inject(
            FaultResult("overslept WAITING-UNTIL", "adversary", "nudge after the grace period wakes it"),
            lambda: self.control("adversary", "oversleep"), ("finding",),
            lambda t: self.first_event(t, "adversary", ("remedy",), lambda e: "send for stall" in e["message"] and "sent" in e["message"]),
            detect_pred=lambda e: "WAITING-UNTIL" in e["message"]))

        # --- usage limit -------------------------------------------------------------
        results.append(self.inject(
            FaultResult("usage limit (reset in 8 s)", "builder", "no restart: wait for the reset, then continue"),
            lambda: self.control("builder", "usage_limit:8"), ("finding",),
            lambda t: self.first_event(t, "builder", ("remedy",), lambda e: "send for usage_limit" in e["message"] and "sent" in e["message"]),
            detect_pred=lambda e: "usage_limit" in e["message"]))
        lim = results[-1]
        if lim.injected_at and self.first_event(lim.injected_at, "builder", ("agent_resumed", "agent_restarted_fresh")):
            lim.healed_s = None
            lim.notes.append("restarted during a usage limit: wrong")

        # --- context limit -------------------------------------------------------------
        results.append(self.inject(
            FaultResult("context limit", "adversary", "/compact once"),
            lambda: self.control("adversary", "context_limit"), ("finding",),
            lambda t: self.first_event(t, "adversary", ("remedy",), lambda e: "send for context_limit" in e["message"] and "sent" in e["message"]),
            detect_pred=lambda e: "context_limit" in e["message"]))

        # --- kill -9 of the watcher -------------------------------------------------------
        self.settle()
        c.print("\n[bold]fault: kill -9 of the watcher[/bold] — expect: new watcher adopts both agents, no restart, no re-ping",
                soft_wrap=True)
        pids = {a: self.pane(a).pid for a in ("builder", "adversary")}
        pinged_before = self.store.dedup_keys("ping:")
        r = FaultResult("kill -9 watcher", "(watcher)", "adopt running agents; no second session; no repeated ping")
        r.injected_at = datetime.now(UTC)
        self.kill_watcher()
        time.sleep(1.0)
        self.start_watcher()
        adopted = self.wait_for(lambda: len([e for e in self.events_since(r.injected_at) if e["kind"] == "agent_adopted"]) >= 2)
        time.sleep(3.0)
        self.print_new_events()
        restarted = [e for e in self.events_since(r.injected_at) if e["kind"] in ("agent_started", "agent_resumed", "agent_restarted_fresh")]
        repinged = [e for e in self.events_since(r.injected_at) if e["kind"] == "ping_queued"
                    and f"ping:{e['data'].get('sha')}:{e['agent']}" in pinged_before]
        same_pids = all(self.pane(a) is not None and self.pane(a).pid == pids[a] for a in pids)
        if adopted and not restarted and same_pids and not repinged:
            ev = [e for e in self.events_since(r.injected_at) if e["kind"] == "agent_adopted"][-1]
            r.detected_s = self.secs(ev, r.injected_at)
            r.healed_s = r.detected_s
            r.detail = f"adopted pids {sorted(pids.values())}; none of {len(pinged_before)} earlier pings repeated"
        else:
            r.detail = f"adopted={bool(adopted)} restarts={len(restarted)} same_pids={same_pids} repeated pings={len(repinged)}"
        results.append(r)
        return results


def run_demo(console: Console, keep: bool = False, directory: Path | None = None) -> bool:
    """Run the demo; returns ``True`` when every fault was detected and healed."""
    if shutil.which("tmux") is None:
        console.print("[red]ccci demo needs tmux on PATH (apt-get install tmux)[/red]")
        return False
    tmp = None
    if directory is None:
        tmp = tempfile.mkdtemp(prefix="ccci-demo-")
        directory = Path(tmp) / "fleet"
    demo = Demo(console, Path(directory))
    results: list[FaultResult] = []
    try:
        results = demo.run()
    finally:
        demo.stop_all(keep)
        if tmp and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title="ccci demo: injected faults")
    for col in ("fault", "agent", "expected remedy", "detected (s)", "healed (s)", "result"):
        table.add_column(col)
    for r in results:
        table.add_row(Text(r.name), Text(r.agent), Text(r.expected), _fmt(r.detected_s), _fmt(r.healed_s),
                      Text("healed", "green") if r.ok else Text.assemble(("FAILED", "red"), f" {r.detail}"))
    console.print()
    console.print(table)
    ok = bool(results) and all(r.ok for r in results)
    console.print("[green]every fault detected and healed[/green]" if ok else "[red]some faults were not healed[/red]")
    if keep:
        console.print(Text(f"fleet kept in {directory}; tmux -L {demo.cfg.tmux_socket} attach"), soft_wrap=True)
    return ok


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
