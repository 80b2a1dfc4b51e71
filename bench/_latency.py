"""Part 1: event-to-remedy latency, measured on a real ``ccci watch`` process supervising
a demo-style fleet (real tmux on a private socket, real git with a bare origin).

The fleet: ``builder`` and ``adversary`` (the demo's clones of the bare origin, scripted
agents that push ``claim(...)``/``review(...)`` commits) plus ``W`` worker agents
(scripted, no git) on which the local faults are injected round-robin, so that no agent
is hit twice within a few seconds. Trials of one kind run one after the other (the
usage-limit trials overlap, staggered by >= 2.5 s, because each waits for its reset);
each starts at a random phase against the 1 s tick (and the fetch interval).

Timestamps: the bench and the watcher read the same UTC wall clock; ccci's events carry
millisecond times (``state.db``), read with ``StateStore.events()``.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import Cleanup, at, log, now_utc, summary

from ccci import config as config_mod
from ccci.clock import parse_utc
from ccci.commands.init import init_fleet
from ccci.state import StateStore
from ccci.tmux import Tmux

FETCH_INTERVAL = 2.0
USAGE_LIMIT_S = 6  # usage_limit:N -> the agent announces a reset N s ahead
USAGE_SLACK_S = 5.0  # ccci/checks/usage_limit.py RESET_SLACK_S: resume 5 s after the reset
FATAL_POLL_S = 0.05
CHECKS = {
    # demo-like thresholds; the guard rails that deliberately delay *repeated* restarts
    # of one agent are opened up so back-to-back trials measure detection + remedy
    "stall_idle": 300, "stall_grace": 180, "startup_grace": 2, "failure_threshold": 2,
    "restart_intensity": 1000, "restart_period": 600, "backoff_initial": 0,
    "max_resumes": 1000, "breaker_min_agents": 1000,
}
FATAL_MARK = "API Error: 400"


def _toml_agent(name: str, hrole: str, workdir: str, prompt: str | None) -> str:
    s = f'\n[[agents]]\nname = "{name}"\nrole = "loop"\nhandoff_role = "{hrole}"\nworkdir = "{workdir}"\n'
    if prompt:
        s += f'prompt_file = "{prompt}"\n'
    return s + "[agents.options]\nturn_seconds = 0.5\nwait_seconds = 3600\n"


class LatencyBench:
    def __init__(self, work: Path, cleanup: Cleanup, trials: int, workers: int, seed: int | None = None) -> None:
        self.root = work / "latency-fleet"
        self.cleanup = cleanup
        self.trials = trials
        self.rng = random.Random(seed)
        self.name = f"bl{os.getpid()}"
        self.socket = cleanup.socket(f"ccci-bench-{os.getpid()}-lat")
        init_fleet(self.root, demo=True, name=self.name)
        self.workers = [f"w{i}" for i in range(1, workers + 1)]
        for w in self.workers:
            (self.root / "work" / w).mkdir(parents=True, exist_ok=True)
        origin = self.root / "origin.git"
        text = (
            "# written by bench/_latency.py\n"
            f'[fleet]\nname = "{self.name}"\nstate_dir = ".ccci"\ntick_seconds = 1.0\ntmux_socket = "{self.socket}"\n'
            f'\n[git]\norigin = "{origin}"\nbranch = "main"\nfetch_interval = {FETCH_INTERVAL}\n'
            '\n[defaults]\nbackend = "scripted"\n\n[checks]\n'
            + "".join(f"{k} = {v}\n" for k, v in CHECKS.items())
            + _toml_agent("builder", "builder", "work/builder", "prompts/builder.md")
            + _toml_agent("adversary", "adversary", "work/adversary", "prompts/adversary.md")
            + "".join(_toml_agent(w, "worker", f"work/{w}", None) for w in self.workers)
        )
        (self.root / "ccci.toml").write_text(text)
        self.cfg = config_mod.load(self.root)
        self.store = StateStore(self.cfg.state_dir)
        self.tmux = Tmux(self.socket)
        self.scratch = self.root / "scratch"
        self._git("clone", "--quiet", str(origin), str(self.scratch), cwd=self.root)
        self.watcher: subprocess.Popen | None = None
        self.last_start: dict[str, float] = {}  # monotonic time each worker was (re)started
        self.anomalies: list[str] = []

    # ------------------------------------------------------------------ plumbing
    def _git(self, *args: str, cwd: Path | None = None) -> str:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_EDITOR": "true"}
        r = subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@ccci.invalid", *args],
                           cwd=cwd or self.scratch, capture_output=True, text=True, env=env, timeout=60)
        if r.returncode:
            raise RuntimeError(f"git {' '.join(args)}: {r.stderr.strip()[:300]}")
        return r.stdout.strip()

    def start_watcher(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("CCCI_BACKEND", "CCCI_FLEET", "CCCI_DISABLE_PLUGINS")}
        out = open(self.cfg.state_dir / "watcher.out", "ab")
        self.watcher = self.cleanup.proc(subprocess.Popen(
            [sys.executable, "-m", "ccci", "--fleet", str(self.root), "watch", "--quiet"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True))

    def stop(self) -> None:
        if self.watcher is not None:
            Cleanup.stop_proc(self.watcher)
        Cleanup.kill_tmux(self.socket)

    def check_watcher(self) -> None:
        if self.watcher is not None and self.watcher.poll() is not None:
            tail = (self.cfg.state_dir / "watcher.out").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"ccci watch exited with status {self.watcher.returncode}:\n{tail}")

    def pane(self, agent: str):
        return self.tmux.list_panes().get(self.cfg.session_name(agent))

    def screen(self, agent: str) -> str:
        p = self.pane(agent)
        return self.tmux.capture([p.pane_id]).get(p.pane_id, "") if p else ""

    def idle(self, agent: str) -> bool:
        p = self.pane(agent)
        if p is None or p.dead:
            return False
        lines = [ln for ln in self.tmux.capture([p.pane_id]).get(p.pane_id, "").splitlines() if ln.strip()]
        return bool(lines) and lines[-1].startswith(">")

    def wait(self, pred, timeout: float, poll: float = 0.1, what: str = ""):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.check_watcher()
            v = pred()
            if v:
                return v
            time.sleep(poll)
        if what:
            self.anomalies.append(f"timed out after {timeout:.0f}s waiting for {what}")
            log(f"  timeout: {what}")
        return None

    def events(self, after_id: int, agent: str | None = None, kinds: tuple[str, ...] = (), pred=lambda e: True) -> list[dict]:
        return [e for e in self.store.events(after_id=after_id, limit=100000, agent=agent)
                if (not kinds or e["kind"] in kinds) and pred(e)]

    def first(self, after_id: int, agent: str | None, kinds: tuple[str, ...], pred=lambda e: True) -> dict | None:
        evs = self.events(after_id, agent, kinds, pred)
        return evs[0] if evs else None

    def control(self, agent: str, fault: str) -> None:
        path = self.cfg.state_dir / "scripted" / f"{agent}.control"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(fault)
        os.replace(tmp, path)

    def ready(self, agent: str, since_start: float = 3.5) -> bool:
        """Idle, and up longer than startup_grace (+1.5 s) since its last (re)start."""
        if time.monotonic() - self.last_start.get(agent, -1e9) < since_start:
            return False
        return self.idle(agent)

    def settle(self, quiet_s: float = 2.0, timeout: float = 60.0) -> None:
        def ok():
            last = self.store.events(after_id=max(0, self.store.last_event_id() - 1))
            age = (now_utc() - at(last[-1])).total_seconds() if last else quiet_s
            return (age >= quiet_s and not self.store.pending_messages()
                    and all(self.idle(a) for a in ["builder", "adversary", *self.workers]))
        self.wait(ok, timeout, poll=0.3, what="the fleet to settle")

    # ------------------------------------------------------------------ start-up
    def start(self) -> None:
        log(f"latency: fleet {self.root} on tmux -L {self.socket}; starting ccci watch")
        self.start_watcher()
        t = time.monotonic()
        # the demo exchange: builder pushes claim(...) -> adversary pinged -> review(...) -> builder pinged
        self.wait(lambda: self.first(0, "builder", ("message_delivered",), lambda e: "review(" in e["message"]), 120,
                  poll=0.3, what="the first claim/review handoff round")
        for w in self.workers:
            self.last_start[w] = t
        self.settle(quiet_s=3.0)
        log(f"latency: fleet settled after {time.monotonic() - t:.1f}s")

    # ------------------------------------------------------------------ trials
    def _next_worker(self, i: int) -> str:
        w = self.workers[i % len(self.workers)]
        self.wait(lambda: self.ready(w), 60, what=f"{w} to be ready")
        return w

    def trial_kill(self, i: int) -> dict:
        w = self._next_worker(i)
        time.sleep(self.rng.uniform(0, 1.0))
        pane = self.pane(w)
        last = self.store.last_event_id()
        t0 = now_utc()
        os.kill(pane.pid, signal.SIGKILL)
        reaped = _reaped_within(pane.pid, 0.5)
        ev = self.wait(lambda: self.first(last, w, ("agent_resumed", "agent_restarted_fresh")), 30,
                       poll=0.05, what=f"restart of {w} after kill -9")
        self.last_start[w] = time.monotonic()
        det = self.first(last, w, ("finding",), lambda e: e["data"].get("check") == "process_death")
        return {"agent": w, "event_at": t0.isoformat(), "pid": pane.pid,
                "latency_s": _secs(ev, t0), "detect_s": _secs(det, t0), "remedy_s": _between(det, ev),
                "finding": det["message"][:80] if det else None, "reaped_within_s": reaped,
                "remedy": ev["kind"] if ev else None, "mode": ev["data"].get("mode") if ev else None}

    def trial_fatal(self, i: int) -> dict:
        w = self._next_worker(i)
        time.sleep(self.rng.uniform(0, 1.0))
        pane = self.pane(w)
        before = self.tmux.capture([pane.pane_id]).get(pane.pane_id, "").count(FATAL_MARK)
        last = self.store.last_event_id()
        self.control(w, "fatal")
        shown = None
        prev_end = now_utc()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = self.tmux.capture([pane.pane_id]).get(pane.pane_id, "")
            end = now_utc()
            if text.count(FATAL_MARK) > before:
                # the line appeared after the previous poll that did not show it: measuring
                # from that poll makes each latency an upper bound (at most one poll over)
                shown = prev_end
                shown_upper = end
                break
            prev_end = end
            time.sleep(FATAL_POLL_S)
        if shown is None:
            self.anomalies.append(f"fatal trial {i}: the error never showed on {w}'s screen")
            return {"agent": w, "latency_s": None}
        ev = self.wait(lambda: self.first(last, w, ("agent_restarted_fresh", "agent_resumed")), 30,
                       poll=0.05, what=f"fresh restart of {w} after the fatal error")
        self.last_start[w] = time.monotonic()
        det = self.first(last, w, ("finding",), lambda e: e["data"].get("check") == "fatal_error")
        if ev and ev["kind"] != "agent_restarted_fresh":
            self.anomalies.append(f"fatal trial {i}: {w} was {ev['kind']} (must be a fresh session)")
        return {"agent": w, "event_at": shown.isoformat(), "latency_s": _secs(ev, shown),
                "latency_lower_s": _secs(ev, shown_upper), "detect_s": _secs(det, shown), "remedy_s": _between(det, ev),
                "remedy": ev["kind"] if ev else None}

    def trial_handoff(self, i: int) -> dict:
        self.wait(lambda: self.idle("adversary") and self.idle("builder") and not self.store.pending_messages(), 60,
                  poll=0.2, what="builder and adversary idle before a push")
        self._git("pull", "--rebase", "--quiet", "origin", "main")
        time.sleep(self.rng.uniform(0, FETCH_INTERVAL))  # random phase against the fetch cadence
        (self.scratch / f"bench-{i}.txt").write_text(f"bench handoff {i}\n")
        self._git("add", f"bench-{i}.txt")
        subject = f"claim(bench {i}): benchmark handoff {i}"
        self._git("commit", "--quiet", "-m", subject)
        sha = self._git("rev-parse", "HEAD")
        last = self.store.last_event_id()
        for attempt in range(5):
            try:
                self._git("push", "--quiet", "origin", "HEAD:main")
                break
            except RuntimeError:
                self._git("pull", "--rebase", "--quiet", "origin", "main")
                sha = self._git("rev-parse", "HEAD")
        t0 = now_utc()  # the push returned: origin's ref has moved

        def delivered():
            rows = self.store.message_by_key(f"ping:{sha}:adversary")
            if not rows:
                return None
            row = rows[0]
            return self.first(last, "adversary", ("message_delivered",), lambda e: e["data"].get("message_id") == row["id"])

        ev = self.wait(delivered, 30, poll=0.05, what=f"ping of {sha[:10]} to the adversary")
        queued = self.first(last, "adversary", ("ping_queued",), lambda e: e["data"].get("sha") == sha)
        # let the round finish: the adversary pushes review(...), which pings the builder
        after = self.store.last_event_id()
        self.wait(lambda: self.first(after, "builder", ("message_delivered",), lambda e: "review(" in e["message"]), 40,
                  poll=0.2, what=f"the review round after claim(bench {i})")
        return {"agent": "adversary", "event_at": t0.isoformat(), "sha": sha, "latency_s": _secs(ev, t0),
                "detect_s": _secs(queued, t0),
                "deliver_s": (round((at(ev) - at(queued)).total_seconds(), 3) if ev and queued else None)}

    def shift_tick_phase(self) -> float:
        """Move the watcher's tick to a new random phase: SIGSTOP it for 2.2-3.2 s, then
        SIGCONT. Its run loop then finds the next tick overdue and restarts the 1 s grid
        from that moment (``Supervisor.run``: a late tick is not followed by catch-up
        ticks). Used between usage-limit rounds only, when nothing is in flight."""
        d = self.rng.uniform(2.2, 3.2)
        os.kill(self.watcher.pid, signal.SIGSTOP)
        try:
            time.sleep(d)
        finally:
            os.kill(self.watcher.pid, signal.SIGCONT)
        return round(d, 3)

    def trials_usage(self, n: int, per_round: int) -> list[dict]:
        """Usage limits announced USAGE_LIMIT_S ahead, in rounds of ``per_round`` trials
        on different workers started 2.5-3.5 s apart. The reset times are whole seconds
        (the screen gives an epoch) and the watcher's 1 s tick keeps its phase against
        whole seconds, so every trial of one round sees the same tick phase; between
        rounds the phase is moved at random (:meth:`shift_tick_phase`)."""
        done: list[dict] = []

        def resolve(tr: dict) -> None:
            w, last = tr["agent"], tr["_last"]
            ev = self.wait(lambda: self.first(last, w, ("remedy",), lambda e: e["data"].get("action") == "send"
                                              and e["data"].get("check") == "usage_limit"), USAGE_LIMIT_S + USAGE_SLACK_S + 30,
                           poll=0.1, what=f"'continue' to {w} after its usage limit")
            fnd = self.first(last, w, ("finding",), lambda e: e["data"].get("check") == "usage_limit")
            restarted = self.first(last, w, ("agent_resumed", "agent_restarted_fresh"))
            if restarted:
                self.anomalies.append(f"usage trial: {w} was restarted during a usage limit")
            reset = parse_utc(fnd["data"]["reset_at"]) if fnd and fnd["data"].get("reset_at") else None
            raw = round((at(ev) - reset).total_seconds(), 3) if ev and reset else None
            tr.update(event_at=reset.isoformat() if reset else None, latency_raw_s=raw,
                      latency_s=None if raw is None else round(raw - USAGE_SLACK_S, 3),
                      detect_s=_secs(fnd, parse_utc(tr["injected_at"])), ok=ev["data"].get("ok") if ev else None)
            tr.pop("_last")
            done.append(tr)
            self.wait(lambda: self.idle(w), 20, what=f"{w} idle after continue")

        i = 0
        rnd = 0
        while i < n:
            rnd += 1
            stopped = self.shift_tick_phase() if rnd > 1 else 0.0
            batch = []
            for _ in range(min(per_round, n - i)):
                w = self.workers[i % len(self.workers)]
                self.wait(lambda: self.ready(w), 60, what=f"{w} ready")
                time.sleep(2.5 + self.rng.uniform(0, 1.0))
                last = self.store.last_event_id()
                t = now_utc()
                self.control(w, f"usage_limit:{USAGE_LIMIT_S}")
                batch.append({"agent": w, "injected_at": t.isoformat(), "_last": last, "round": rnd,
                              "watcher_stopped_s": stopped})
                i += 1
            for tr in batch:
                resolve(tr)
        return done

    def zombie_repro(self, reps: int = 3) -> dict:
        """Deterministic reproduction of the slow restart: ``ccci.processes.kill_tree``
        (what ``Lifecycle.launch`` runs through ``stop_process`` before it starts the new
        process) on a process that is dead but not reaped by its parent, the state tmux
        leaves a pane process in when it misses the SIGCHLD. The parent here is a
        process that never calls wait(); one call is profiled."""
        import cProfile
        import pstats

        import psutil

        from ccci.processes import kill_tree

        code = ("import os, time\npid = os.fork()\nif pid == 0:\n    time.sleep(3600)\n"
                "else:\n    print(pid, flush=True)\n    time.sleep(3600)\n")
        rows, prof = [], None
        for i in range(reps):
            parent = self.cleanup.proc(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True))
            try:
                child = int(parent.stdout.readline())
                os.kill(child, signal.SIGKILL)
                end = time.monotonic() + 2
                while time.monotonic() < end and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
                    time.sleep(0.01)
                status = psutil.Process(child).status()
                pr = cProfile.Profile() if i == 0 else None
                t0 = time.perf_counter()
                if pr:
                    pr.enable()
                kill_tree(child)
                if pr:
                    pr.disable()
                    st = pstats.Stats(pr)
                    top = sorted(st.stats.items(), key=lambda kv: -kv[1][3])[:8]
                    prof = [{"function": fn if fl == "~" else f"{Path(fl).name}:{ln}({fn})", "calls": v[1],
                             "cumtime_s": round(v[3], 3)} for (fl, ln, fn), v in top]
                rows.append({"status": status, "kill_tree_s": round(time.perf_counter() - t0, 3)})
            finally:
                parent.kill()
                parent.wait()
        return {"reps": reps, "kill_tree_s": summary([r["kill_tree_s"] for r in rows]), "rows": rows, "profile": prof}

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        t_start = time.monotonic()
        self.start()
        first_id = self.store.last_event_id()
        out: dict[str, list[dict]] = {}
        for kind, fn in (("kill_to_restart", self.trial_kill), ("fatal_to_fresh", self.trial_fatal),
                         ("claim_push_to_ping", self.trial_handoff)):
            log(f"latency: {self.trials} trials of {kind}")
            out[kind] = []
            for i in range(self.trials):
                tr = fn(i)
                out[kind].append(tr)
                log(f"  {kind} #{i + 1}: {tr.get('latency_s')} s")
            self.settle(quiet_s=1.5, timeout=30)
        per_round = max(2, -(-self.trials // 5))
        log(f"latency: {self.trials} trials of usage_reset_to_continue (rounds of {per_round}, tick phase moved between rounds)")
        out["usage_reset_to_continue"] = self.trials_usage(self.trials, per_round)
        for tr in out["usage_reset_to_continue"]:
            log(f"  usage: raw {tr.get('latency_raw_s')} s, minus slack {tr.get('latency_s')} s")
        bad = self.events(first_id, None, ("escalation", "tick_error", "plugin_error", "plugin_disabled",
                                           "remedy_failed", "message_failed", "breaker_open"))
        self.stop()
        probe = self.zombie_repro()
        log(f"latency: kill_tree on an unreaped zombie took {probe['kill_tree_s']['p50']} s (p50 of {probe['reps']})")
        res = {
            "zombie_repro": probe,
            "fleet": {"agents": ["builder", "adversary", *self.workers], "tick_seconds": 1.0,
                      "fetch_interval_s": FETCH_INTERVAL, "checks": CHECKS, "usage_limit_ahead_s": USAGE_LIMIT_S,
                      "usage_slack_s": USAGE_SLACK_S, "fatal_poll_s": FATAL_POLL_S, "usage_per_round": per_round},
            "trials": out,
            "unexpected_events": [f"{e['kind']} [{e['agent']}] {e['message'][:150]}" for e in bad],
            "anomalies": self.anomalies,
            "wall_s": round(time.monotonic() - t_start, 1),
        }
        return res


def _reaped_within(pid: int, window: float) -> float | None:
    """Seconds until the killed pid disappeared (tmux reaped it), or None if it was
    still there (a zombie) after ``window`` seconds."""
    import psutil

    t0 = time.monotonic()
    while time.monotonic() - t0 < window:
        if not psutil.pid_exists(pid):
            return round(time.monotonic() - t0, 3)
        time.sleep(0.01)
    return None


def _between(a: dict | None, b: dict | None) -> float | None:
    return None if a is None or b is None else round((at(b) - at(a)).total_seconds(), 3)


def _secs(ev: dict | None, since) -> float | None:
    return None if ev is None else round((at(ev) - since).total_seconds(), 3)


def summarise(lat: dict) -> dict:
    """``latency_s`` for results.json: by event, p50/p95/n (+ parts)."""
    out = {}
    for kind, trials in lat["trials"].items():
        s = summary([t.get("latency_s") for t in trials])
        s["detect_p50"] = summary([t.get("detect_s") for t in trials])["p50"]
        if kind == "usage_reset_to_continue":
            raw = summary([t.get("latency_raw_s") for t in trials])
            s["raw_p50"], s["raw_p95"] = raw["p50"], raw["p95"]
            s["note"] = ("from the announced reset time + ccci's builtin 5 s slack (raw = from the reset "
                         "time itself, slack included)")
        if kind == "claim_push_to_ping":
            s["deliver_p50"] = summary([t.get("deliver_s") for t in trials])["p50"]
        if kind in ("kill_to_restart", "fatal_to_fresh"):
            rem = summary([t.get("remedy_s") for t in trials])
            s["remedy_p50"], s["remedy_p95"] = rem["p50"], rem["p95"]
            s["remedies_over_1_5s"] = sum(1 for t in trials if (t.get("remedy_s") or 0) >= 1.5)
        out[kind] = s
    return out
