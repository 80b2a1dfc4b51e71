"""Part 2: the cost of one ``Supervisor.tick()`` against fleet size, on one real tmux
server (private socket) holding N cheap stand-in agents (``bench/standin.py``).

For each size N (sessions are added to the same server as N grows):

* **ccci**: an in-process ``Supervisor`` built the way ``ccci watch`` builds it (the
  fleet's plugin manager, a fresh state store, the fleet's tmux socket), git off
  (``origin = ""``), agents adopted; after warm-up ticks, ``T`` ticks at the real 1 s
  cadence, each timed with ``time.perf_counter`` (wall) and ``time.process_time`` plus
  ``getrusage(RUSAGE_CHILDREN)`` (CPU of ccci's process and of the tmux client
  subprocesses it ran and reaped);
* **floor**: one ``tmux list-panes -a -F <ccci's format>`` subprocess round trip;
* **naive**: one ``tmux capture-pane -p`` subprocess per agent (the design ccci's batching
  replaces), nothing else;
* **ccci, as the watcher runs it** (the main row): the supervisor's tmux access started
  in control mode (``Tmux.start_control``, what ``Supervisor.run`` does): every query
  through the one persistent ``tmux -C`` client of :mod:`ccci.tmux_control`; its CPU
  includes the client's reader thread and the client process (``/proc/PID/schedstat``);
* **ccci, forked** (the fallback when no control client runs): one forked tmux client
  per query, as every tick did before control mode;
* **a real ``ccci watch``** at the sizes in ``watch_sizes``: its CPU share of one core on
  the stand-ins above (each redraws a turn every ~3 s: a busy fleet), and its RSS;
* **a real ``ccci watch`` on an idle fleet** at the same sizes: stand-ins that drew one
  turn and then nothing (agents idle at their prompt, nothing changing), on a tmux
  server of their own (so the busy stand-ins' output neither wakes it nor loads its
  server): its CPU share of one core;
* where the tick goes: the same ticks split by phase (wrappers around ccci's own
  methods on the instance; no core code is changed), and a cProfile of extra ticks.

The tmux server's own CPU (it serves the captures) is reported separately, net of its
idle rate, because it is not part of ccci's process.
"""
from __future__ import annotations

import cProfile
import io
import pstats
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil

from _common import BENCH, TMUX, Cleanup, log, pct, summary

from ccci import config as config_mod
from ccci.plugins import get_plugin_manager
from ccci.state import StateStore
from ccci.supervisor import Supervisor
from ccci.tmux import LIST_FORMAT, Tmux

STANDIN_PERIOD_S = 3.0


def _cpu() -> float:
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def _task_cpu_s(pid: int) -> float:
    """CPU seconds of a process's main thread from ``/proc/<pid>/schedstat`` (ns; the
    ``/proc/<pid>/stat`` figures psutil reads come in 10 ms clock ticks, too coarse for a
    client that works microseconds per request); psutil's figure where it is missing."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system


class PhaseTimer:
    """Wraps methods of one supervisor instance to add up CPU and wall time per phase."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, obj, attr: str, phase: str) -> None:
        fn = getattr(obj, attr)

        def wrapped(*a, **k):
            c0, w0 = _cpu(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.cpu[phase] += _cpu() - c0
                self.wall[phase] += time.perf_counter() - w0
                self.calls[phase] += 1

        setattr(obj, attr, wrapped)

    def reset(self) -> None:
        self.cpu.clear()
        self.wall.clear()
        self.calls.clear()


class TickBench:
    def __init__(self, work: Path, cleanup: Cleanup, sizes: list[int], ticks: int, naive_reps: int,
                 floor_reps: int, profile_sizes: list[int], watch_sizes: list[int] | None = None,
                 watch_seconds: float = 60.0) -> None:
        self.work = work
        self.watch_sizes = watch_sizes or []
        self.watch_seconds = watch_seconds
        self.sizes = sizes
        self.ticks = ticks
        self.naive_reps = naive_reps
        self.floor_reps = floor_reps
        self.profile_sizes = profile_sizes
        import os

        self.fleet_name = f"bt{os.getpid()}"
        self._cleanup = cleanup
        self.socket = cleanup.socket(f"ccci-bench-{os.getpid()}-tick")
        self.tmux = Tmux(self.socket)
        self.agents: list[str] = []
        (work / "tick-workdir").mkdir(parents=True, exist_ok=True)

    def agent_name(self, i: int) -> str:
        return f"a{i:03d}"

    def session(self, agent: str) -> str:
        return f"ccci-{self.fleet_name}-{agent}"

    def grow(self, n: int) -> None:
        while len(self.agents) < n:
            a = self.agent_name(len(self.agents))
            self.tmux.new_session(self.session(a), [sys.executable, "-S", str(BENCH / "standin.py"), str(STANDIN_PERIOD_S), a],
                                  self.work / "tick-workdir", {})
            self.agents.append(a)

    def write_config(self, root: Path, n: int, origin: str = "", fetch_interval: float = 10) -> config_mod.FleetConfig:
        root.mkdir(parents=True, exist_ok=True)
        body = "".join(f'\n[[agents]]\nname = "{a}"\nrole = "loop"\nworkdir = "{self.work / "tick-workdir"}"\n'
                       for a in self.agents[:n])
        (root / "ccci.toml").write_text(
            f'# written by bench/_tick.py\n[fleet]\nname = "{self.fleet_name}"\nstate_dir = ".ccci"\n'
            f'tick_seconds = 1.0\ntmux_socket = "{self.socket}"\n\n[git]\norigin = "{origin}"\n'
            f'fetch_interval = {fetch_interval}\n\n[defaults]\nbackend = "scripted"\n{body}')
        return config_mod.load(root)

    def server_cpu(self) -> float:
        if not hasattr(self, "_server"):
            pid = int(self.tmux.cmd("display-message", "-p", "#{pid}")[0])
            self._server = psutil.Process(pid)
        t = self._server.cpu_times()
        return t.user + t.system

    def server_pid(self) -> int:
        self.server_cpu()
        return self._server.pid

    def idle_rate(self, seconds: float = 3.0) -> float:
        """tmux server CPU seconds per second while nobody queries it (the stand-ins print)."""
        c0, t0 = self.server_cpu(), time.perf_counter()
        time.sleep(seconds)
        return (self.server_cpu() - c0) / (time.perf_counter() - t0)

    # ------------------------------------------------------------------ designs
    def measure_ccci(self, sup: Supervisor, ticks: int) -> dict:
        cpu, wall, calls, caps = [], [], [], []
        srv0, t_start = self.server_cpu(), time.perf_counter()
        next_at = time.monotonic()
        for _ in range(ticks):
            n0 = sup.tmux.calls
            c0, w0 = _cpu(), time.perf_counter()
            sup.tick()
            w1, c1 = time.perf_counter(), _cpu()
            cpu.append((c1 - c0) * 1000)
            wall.append((w1 - w0) * 1000)
            calls.append(sup.tmux.calls - n0)
            caps.append(len(sup.last_snapshot.captured) if sup.last_snapshot else 0)
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.monotonic()))
        elapsed = time.perf_counter() - t_start
        srv = (self.server_cpu() - srv0 - self._idle * elapsed) / ticks * 1000
        return {"cpu": cpu, "wall": wall, "tmux_calls_per_tick": sum(calls) / len(calls),
                "captures_per_tick": sum(caps) / len(caps), "server_cpu_ms": round(srv, 3)}

    def measure_floor(self) -> dict:
        argv = [TMUX, "-L", self.socket, "list-panes", "-a", "-F", LIST_FORMAT]
        cpu, wall = [], []
        srv0, t0 = self.server_cpu(), time.perf_counter()
        for _ in range(self.floor_reps):
            c0, w0 = _cpu(), time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            wall.append((time.perf_counter() - w0) * 1000)
            cpu.append((_cpu() - c0) * 1000)
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        srv = (self.server_cpu() - srv0 - self._idle * elapsed) / self.floor_reps * 1000
        return {"cpu": cpu, "wall": wall, "server_cpu_ms": round(srv, 3)}

    def measure_naive(self, n: int) -> dict:
        panes = self.tmux.list_panes()
        ids = [panes[self.session(a)].pane_id for a in self.agents[:n]]
        cpu, wall = [], []
        srv0, t0 = self.server_cpu(), time.perf_counter()
        for _ in range(self.naive_reps):
            c0, w0 = _cpu(), time.perf_counter()
            for pid in ids:
                subprocess.run([TMUX, "-L", self.socket, "capture-pane", "-p", "-J", "-t", pid], capture_output=True, check=True)
            wall.append((time.perf_counter() - w0) * 1000)
            cpu.append((_cpu() - c0) * 1000)
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        srv = (self.server_cpu() - srv0 - self._idle * elapsed) / self.naive_reps * 1000
        return {"cpu": cpu, "wall": wall, "server_cpu_ms": round(srv, 3)}

    def measure_control_mode(self, n: int, captures: int) -> dict:  # (kept for reference; no longer run)
        """Reference, not ccci: the same two queries a tick makes (``list-panes -a -F
        <ccci's format>``, then ``capture-pane -p -J`` of ``captures`` panes) sent through
        ONE persistent control-mode client (``tmux -C attach``, on a session of its own so
        that no agent's window is touched) instead of two forked tmux clients.

        Per repetition: this process's CPU (writing, reading, splitting the reply), the
        control client's CPU (``/proc/<pid>/schedstat``, in nanoseconds, averaged over the
        repetitions) and the wall time. The reply of each
        command is the lines between its ``%begin ... 1`` and ``%end``/``%error`` guard
        lines (flag 1: sent by this client; the attach itself answers with flag 0)."""
        panes = self.tmux.list_panes()
        ids = [panes[self.session(a)].pane_id for a in self.agents[:n]]
        ids = ids[:max(1, min(len(ids), round(captures)))]
        ctl = f"ccci-bench-ctl-{n}"
        self.tmux.new_session(ctl, ["sleep", "100000"], self.work / "tick-workdir", {})
        client = subprocess.Popen([TMUX, "-L", self.socket, "-C", "attach-session", "-t", f"={ctl}"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        reader = client.stdout

        def roundtrip(commands: list[list[str]]) -> list[list[bytes]]:
            # one line per command; arguments quoted for tmux's parser (pane ids and the
            # fixed format only: no text from outside)
            client.stdin.write(b"".join((" ".join("'" + a + "'" for a in c) + "\n").encode() for c in commands))
            client.stdin.flush()
            replies: list[list[bytes]] = []
            block: list[bytes] | None = None
            while len(replies) < len(commands):
                line = reader.readline()
                if not line:
                    raise RuntimeError("control-mode client exited")
                line = line.rstrip(b"\n")
                if block is None:
                    if line.startswith(b"%begin ") and line.endswith(b" 1"):
                        block = []
                    continue
                if line.startswith((b"%end ", b"%error ")) and line.endswith(b" 1"):
                    if line.startswith(b"%error"):
                        raise RuntimeError(f"control mode: {b' '.join(block)[:200]!r}")
                    replies.append(block)
                    block = None
                    continue
                block.append(line)
            return replies

        list_cmd = [["list-panes", "-a", "-F", LIST_FORMAT]]
        cap_cmds = [["capture-pane", "-p", "-J", "-t", pid] for pid in ids]
        try:
            got = roundtrip(list_cmd)[0]
            if len(got) != len(panes) + 1:
                raise RuntimeError(f"control mode listed {len(got)} panes, expected {len(panes) + 1}")
            roundtrip(cap_cmds)
            t0 = _task_cpu_s(client.pid)
            srv0, ts0 = self.server_cpu(), time.perf_counter()
            cpu, wall = [], []
            for _ in range(self.floor_reps * 3):
                c0, w0 = time.process_time(), time.perf_counter()
                roundtrip(list_cmd)
                roundtrip(cap_cmds)
                wall.append((time.perf_counter() - w0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
                time.sleep(0.02)
            client_ms = (_task_cpu_s(client.pid) - t0) * 1000 / len(cpu)
            srv = (self.server_cpu() - srv0 - self._idle * (time.perf_counter() - ts0)) / len(cpu) * 1000
        finally:
            client.stdin.close()
            try:
                client.wait(5)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()
            self.tmux.kill_session(ctl)
        st = _stats({"cpu": cpu, "wall": wall})
        return {**st, "client_cpu_ms": round(client_ms, 4), "server_cpu_ms": round(srv, 3), "captures": len(ids),
                "cpu_p50_with_client": round(st["cpu_p50"] + client_ms, 3)}

    def measure_watch_silent(self, n: int, seconds: float) -> dict:
        """:meth:`measure_watch_idle` on ``n`` stand-ins that draw one turn and then
        nothing (``standin.py 0``), on a tmux server of their own (socket
        ``ccci-bench-<pid>-idle``), torn down afterwards: an idle fleet."""
        import os as _os

        sock = self._cleanup.socket(f"ccci-bench-{_os.getpid()}-idle{n}")
        t = Tmux(sock)
        names = [f"q{i:03d}" for i in range(n)]
        for a in names:
            t.new_session(self.session(a), [sys.executable, "-S", str(BENCH / "standin.py"), "0", a],
                          self.work / "tick-workdir", {})
        time.sleep(2.0)
        root = self.work / f"watch-idle-{n}"
        root.mkdir(parents=True, exist_ok=True)
        body = "".join(f'\n[[agents]]\nname = "{a}"\nrole = "loop"\nworkdir = "{self.work / "tick-workdir"}"\n'
                       for a in names)
        (root / "ccci.toml").write_text(
            f'# written by bench/_tick.py (idle fleet)\n[fleet]\nname = "{self.fleet_name}"\nstate_dir = ".ccci"\n'
            f'tick_seconds = 1.0\ntmux_socket = "{sock}"\n\n[git]\norigin = ""\n\n'
            f'[defaults]\nbackend = "scripted"\n{body}')
        try:
            pid = int(t.cmd("display-message", "-p", "#{pid}")[0])
            return {**self.measure_watch_idle(n, seconds, root=root, server_pid=pid), "fleet": "idle (silent stand-ins)"}
        finally:
            t.kill_server()

    def measure_watch_idle(self, n: int, seconds: float, root: Path | None = None, server_pid: int | None = None) -> dict:
        """A real ``ccci watch --quiet`` (control mode, as shipped) on the first ``n``
        stand-ins, git off: after it adopted them, its CPU over ``seconds`` (its own
        threads, its reaped children, and its control client, from ``/proc``) as a share
        of one core, and its RSS. The stand-ins print a line every
        :data:`STANDIN_PERIOD_S` seconds, so this is a busy fleet, not a silent one
        (:meth:`measure_watch_silent` is the idle fleet: ``root`` and ``server_pid``
        name its fleet directory and tmux server)."""
        import os as _os

        if root is None:
            root = self.work / f"watch-{n}"
            self.write_config(root, n)
        cfg = config_mod.load(root)
        srv = psutil.Process(server_pid) if server_pid else None

        def server_cpu() -> float:
            if srv is None:
                return self.server_cpu()
            c = srv.cpu_times()
            return c.user + c.system
        env = {k: v for k, v in _os.environ.items() if k not in ("CCCI_BACKEND", "CCCI_FLEET", "CCCI_DISABLE_PLUGINS")}
        out = open(root / "watcher.out", "ab")
        w = subprocess.Popen([sys.executable, "-m", "ccci", "--fleet", str(root), "watch", "--quiet"],
                             stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        store = StateStore(cfg.state_dir)
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 90 and store.event_counts().get("agent_adopted", 0) < n:
                if w.poll() is not None:
                    raise RuntimeError(f"watch-idle: ccci watch exited: {(root / 'watcher.out').read_text()[-800:]}")
                time.sleep(0.2)
            time.sleep(5.0)  # first captures of every pane
            proc = psutil.Process(w.pid)
            clients = [c for c in proc.children() if "-C" in (c.cmdline() or [])]

            def cpu() -> float:
                t = proc.cpu_times()
                return (t.user + t.system + t.children_user + t.children_system
                        + sum(_task_cpu_s(c.pid) for c in clients if c.is_running()))

            c0, s0, t0 = cpu(), server_cpu(), time.perf_counter()
            rss = []
            while time.perf_counter() - t0 < seconds:
                rss.append(proc.memory_info().rss / 2**20)
                time.sleep(1.0)
            el = time.perf_counter() - t0
            c1, s1 = cpu(), server_cpu()
            kinds = store.event_counts()
        finally:
            w.terminate()
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
            store.close()
        return {"agents": n, "seconds": round(el, 1), "watcher_cpu_pct_of_core": round((c1 - c0) / el * 100, 3),
                "tmux_server_cpu_pct_of_core": round((s1 - s0) / el * 100, 3),
                "control_clients": len(clients), "rss_mb_max": round(max(rss), 2), "rss_mb_end": round(rss[-1], 2),
                "events_by_kind": kinds}

    # ------------------------------------------------------------------ one size
    def build(self, n: int, tag: str, control: bool = False) -> Supervisor:
        cfg = self.write_config(self.work / f"tick-{n}-{tag}", n)
        pm = get_plugin_manager(cfg.root)
        sup = Supervisor(cfg, pm, StateStore(cfg.state_dir), Tmux(self.socket))
        if control:  # what Supervisor.run() does for the watcher
            sup.tmux.start_control(sup.wake)
            if sup.tmux.control is None:
                raise RuntimeError("tick bench: the control-mode client did not start")
        sup.configure()
        sup.adopt()
        adopted = [e for e in sup.store.events(limit=100000) if e["kind"] == "agent_adopted"]
        if len(adopted) != n:
            raise RuntimeError(f"tick bench: adopted {len(adopted)} of {n} stand-ins")
        for _ in range(3):  # warm-up: first captures of every pane, imports, caches
            sup.tick()
            time.sleep(1.0)
        return sup

    @staticmethod
    def instrument(sup: Supervisor) -> PhaseTimer:
        timer = PhaseTimer()
        timer.wrap(sup.tmux, "list_panes", "tmux list-panes")
        timer.wrap(sup.tmux, "capture", "tmux capture (batched)")
        timer.wrap(sup, "process_scan", "process scan (psutil)")
        timer.wrap(sup.backends["scripted"], "analyse", "screen analysis (patterns)")
        timer.wrap(sup, "_refresh_flags", "state: agents' flags (SQLite)")
        timer.wrap(sup, "check_agent", "ccci_check_agent hooks")
        timer.wrap(sup.outbox, "deliver_pending", "message queue (SQLite)")
        return timer

    @staticmethod
    def phases(timer: PhaseTimer, ticks: int) -> dict:
        return {k: {"cpu_ms": round(timer.cpu[k] * 1000 / ticks, 3), "wall_ms": round(timer.wall[k] * 1000 / ticks, 3),
                    "calls_per_tick": round(timer.calls[k] / ticks, 2)} for k in timer.cpu}

    def run_size(self, n: int) -> dict:
        self.grow(n)
        time.sleep(2.0)
        self._idle = self.idle_rate()
        # ccci as the watcher runs it: every tmux query through its one control-mode client
        sup = self.build(n, "main", control=True)
        timer = self.instrument(sup)
        log(f"tick: {n} agents, {self.ticks} ticks at 1 s (control mode)")
        client_pid = sup.tmux.control.pid
        k0 = _task_cpu_s(client_pid)
        starts0 = sup.tmux.control_starts
        m = self.measure_ccci(sup, self.ticks)
        client_ms = (_task_cpu_s(client_pid) - k0) * 1000 / self.ticks
        restarts = sup.tmux.control_starts - starts0
        ctl = sup.tmux.control
        notes = dict(ctl.notifications) if ctl else {}
        control_calls = sup.tmux.control_calls
        # the fallback path (no control client: one forked tmux client per query), same server, same run
        fk = self.build(n, "forked")
        fk_timer = self.instrument(fk)
        log(f"tick: {n} agents, {self.ticks} ticks at 1 s (forked clients, the fallback)")
        mf = self.measure_ccci(fk, self.ticks)
        floor = self.measure_floor()
        naive = self.measure_naive(n)
        res = {
            "n": n,
            "ccci": {**_stats(m), "tmux_calls_per_tick": round(m["tmux_calls_per_tick"], 2),
                     "captures_per_tick": round(m["captures_per_tick"], 2), "server_cpu_ms": m["server_cpu_ms"],
                     "transport": "control mode (one tmux -C client)",
                     "control_client_cpu_ms_per_tick": round(client_ms, 4), "control_restarts": restarts,
                     "control_requests": control_calls, "control_notifications": notes,
                     "samples_cpu_ms": [round(x, 3) for x in m["cpu"]], "samples_wall_ms": [round(x, 3) for x in m["wall"]]},
            "ccci_forked": {**_stats(mf), "tmux_calls_per_tick": round(mf["tmux_calls_per_tick"], 2),
                            "captures_per_tick": round(mf["captures_per_tick"], 2), "server_cpu_ms": mf["server_cpu_ms"],
                            "transport": "forked tmux clients (the fallback)",
                            "phases": self.phases(fk_timer, self.ticks)},
            "phases": self.phases(timer, self.ticks),
            "floor": {**_stats(floor), "server_cpu_ms": floor["server_cpu_ms"]},
            "naive": {**_stats(naive), "server_cpu_ms": naive["server_cpu_ms"], "reps": self.naive_reps},
            "tmux_server_idle_cpu_ms_per_s": round(self._idle * 1000, 3),
            "processes_on_machine": len(psutil.pids()),
        }
        fk.store.close()
        if n in self.profile_sizes:
            timer.reset()
            pr = cProfile.Profile()
            for _ in range(8):
                pr.enable()
                sup.tick()
                pr.disable()
                time.sleep(1.0)
            res["profile"] = _profile_rows(pr, 8)
        sup.tmux.stop_control()
        sup.store.close()
        if n in self.watch_sizes:
            log(f"tick: {n} agents, a real ccci watch for {self.watch_seconds:.0f} s (CPU share, RSS)")
            res["watch"] = self.measure_watch_idle(n, self.watch_seconds)
            log(f"tick: {n} agents idle at their prompt, a real ccci watch for {self.watch_seconds:.0f} s (CPU share)")
            res["watch_idle_fleet"] = self.measure_watch_silent(n, self.watch_seconds)
        return res

    def run(self) -> dict:
        t0 = time.monotonic()
        out = {"sizes": {}, "standin_period_s": STANDIN_PERIOD_S, "ticks_per_size": self.ticks}
        for n in self.sizes:
            out["sizes"][str(n)] = self.run_size(n)
            r = out["sizes"][str(n)]
            log(f"tick: {n:3d} agents: ccci cpu p50 {r['ccci']['cpu_p50']} ms, wall p50 {r['ccci']['wall_p50']} ms; "
                f"floor wall p50 {r['floor']['wall_p50']} ms; naive wall p50 {r['naive']['wall_p50']} ms")
        out["tmux_server_pid"] = self.server_pid()
        out["wall_s"] = round(time.monotonic() - t0, 1)
        return out


def _stats(m: dict) -> dict:
    r = lambda x: None if x is None else round(x, 3)  # noqa: E731
    return {"cpu_p50": r(pct(m["cpu"], 50)), "cpu_p95": r(pct(m["cpu"], 95)),
            "wall_p50": r(pct(m["wall"], 50)), "wall_p95": r(pct(m["wall"], 95)), "n": len(m["cpu"])}


def _profile_rows(pr: cProfile.Profile, ticks: int, top: int = 14) -> dict:
    st = pstats.Stats(pr)
    total = st.total_tt
    rows = []
    for (fname, line, func), (cc, nc, tt, ct, _callers) in st.stats.items():
        if fname.endswith("_tick.py"):
            continue  # the bench's own phase wrappers
        rows.append({"function": func if fname == "~" else f"{Path(fname).name}:{line}({func})",
                     "where": "builtin" if fname == "~" else _short(fname),
                     "calls_per_tick": round(nc / ticks, 1), "tottime_ms_per_tick": round(tt * 1000 / ticks, 3),
                     "cumtime_ms_per_tick": round(ct * 1000 / ticks, 3)})
    by_cum = sorted(rows, key=lambda r: -r["cumtime_ms_per_tick"])[:top]
    by_tot = sorted(rows, key=lambda r: -r["tottime_ms_per_tick"])[:top]
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(30)
    return {"ticks": ticks, "total_ms_per_tick_under_profiler": round(total * 1000 / ticks, 3),
            "by_cumulative": by_cum, "by_own_time": by_tot, "text": buf.getvalue()}


def _short(fname: str) -> str:
    for key in ("site-packages/", "lib/python3", "/ccci/"):
        if key in fname:
            return fname.split(key, 1)[1] if key != "/ccci/" else "ccci/" + fname.split(key, 1)[1]
    return fname
