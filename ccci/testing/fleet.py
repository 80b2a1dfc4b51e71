"""A real fleet for integration and fault tests: scripted agents in real tmux panes on a
private socket, a real bare git origin, and real ``ccci watch`` subprocesses.

``Fleet(root, name, checks=..., fleet=..., git=..., options=...)`` scaffolds the demo
fleet (:func:`ccci.commands.init.init_fleet` with ``demo=True``: builder + adversary on the
``scripted`` backend) and then merges the given overrides into its ``ccci.toml``
(``checks`` into ``[checks]``, ``fleet`` into ``[fleet]``, ``git`` into ``[git]``,
``options`` into every agent's ``[agents.options]``, ``agents`` into every
``[[agents]]`` table, e.g. ``{"handoff_role": "other"}``). Durations are seconds.

Checks used by the fault suite (``tests/faults``): :func:`agent_processes`,
:func:`exactly_one_instance` (one tmux session, one pane, one process per agent),
:func:`push_commit` (push as an agent would, raw bytes allowed), :func:`typed_turns`
(how many turns a message started, from the pane log).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import psutil

from ccci import config as config_mod
from ccci.commands.init import init_fleet
from ccci.state import StateStore
from ccci.tmux import Tmux


def poll_until(pred: Callable[[], Any], timeout: float = 30.0, poll: float = 0.1) -> Any:
    """Call ``pred`` every ``poll`` seconds until it returns something truthy, which is
    returned, or ``timeout`` seconds (monotonic) passed: ``None``. The one wait-for-a-
    condition loop of the tests (never a fixed sleep then an assert)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        val = pred()
        if val:
            return val
        time.sleep(poll)
    return None


class Fleet:
    """A demo-threshold fleet of scripted agents on its own tmux socket.

    :param root: fleet directory (created).
    :param name: fleet name; also names the tmux socket ``ccci-<name>``.
    :param checks, fleet, git, options, agents: ``ccci.toml`` overrides (see the module doc).
    """

    AGENTS = ("builder", "adversary")

    def __init__(self, root: Path, name: str, *, checks: dict[str, Any] | None = None,
                 fleet: dict[str, Any] | None = None, git: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, agents: dict[str, Any] | None = None) -> None:
        init_fleet(root, demo=True, name=name)
        if checks or fleet or git or options or agents:
            _override(root / "ccci.toml", checks or {}, fleet or {}, git or {}, options or {}, agents or {})
        self.root = root
        self.cfg = config_mod.load(root)
        self.tmux = Tmux(self.cfg.tmux_socket)
        self.watchers: list[subprocess.Popen] = []
        self._store: StateStore | None = None

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(self.cfg.state_dir)
        return self._store

    def ccci(self, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``python -m ccci --fleet ROOT ARGS...`` to completion (text output)."""
        if args[:1] in (("start",), ("job",)):
            self.spawned_watcher = True  # it may put a watcher in the background (close() stops it)
        return subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(self.root), *args],
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})

    def watch(self, *extra: str, env: dict | None = None) -> subprocess.Popen:
        """Start ``ccci watch EXTRA...`` in the background; its output goes to
        ``<root>/watcher-N.out`` (outside the state directory, which a test may fill)."""
        log = open(self.root / f"watcher-{len(self.watchers)}.out", "wb")
        p = subprocess.Popen([sys.executable, "-m", "ccci", "--fleet", str(self.root), "watch", *extra],
                             stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.watchers.append(p)
        return p

    def watcher_output(self, n: int) -> str:
        return (self.root / f"watcher-{n}.out").read_text(errors="replace")

    def pane(self, agent: str):
        return self.tmux.list_panes().get(self.cfg.session_name(agent))

    def live_pid(self, agent: str) -> int | None:
        """The agent's pane pid when the pane is alive, else ``None``."""
        p = self.pane(agent)
        return p.pid if p is not None and not p.dead else None

    def screen(self, agent: str) -> str:
        p = self.pane(agent)
        return self.tmux.capture([p.pane_id]).get(p.pane_id, "") if p else ""

    def events(self, kind: str | None = None, agent: str | None = None) -> list[dict]:
        return [e for e in self.store.events(limit=10**6, agent=agent) if kind is None or e["kind"] == kind]

    def restarts(self, agent: str | None = None) -> list[dict]:
        """``agent_resumed`` and ``agent_restarted_fresh`` events (every restart)."""
        return [e for e in self.events(agent=agent) if e["kind"] in ("agent_resumed", "agent_restarted_fresh")]

    def kill_and_wait_restart(self, agent: str, timeout: float = 15.0) -> int | None:
        """``kill -9`` the agent's pane process and wait until the watcher restarted it:
        a new live pane pid, the agent ``running`` in the state store, and one more restart
        event (written once the new process runs, a moment after its pid shows).

        :returns: the new pid, or ``None`` after ``timeout`` seconds.
        :raises AssertionError: when the agent has no live pane to kill.
        """
        old = self.live_pid(agent)
        assert old, f"{agent} has no live pane to kill"
        n0 = len(self.restarts(agent))
        os.kill(old, signal.SIGKILL)
        return self.wait(lambda: (p := self.live_pid(agent)) and p != old and self.store.agent(agent).state == "running"
                         and len(self.restarts(agent)) > n0 and p, timeout)

    def wait(self, pred: Callable[[], Any], timeout: float = 30.0, poll: float = 0.1):
        """Poll ``pred`` until it returns something truthy (returned) or ``timeout`` s (:func:`poll_until`)."""
        return poll_until(pred, timeout, poll)

    def idle(self, agent: str) -> bool:
        lines = [ln for ln in self.screen(agent).splitlines() if ln.strip()]
        return bool(lines) and lines[-1].startswith(">")

    def settled(self, quiet_s: float = 2.0) -> bool:
        """No event for ``quiet_s`` seconds, no queued message, every agent idle."""
        from ccci.clock import UTC, parse_utc

        ev = self.store.events(after_id=max(0, self.store.last_event_id() - 1))
        age = (datetime.now(UTC) - parse_utc(ev[-1]["at"])).total_seconds() if ev else quiet_s
        return age >= quiet_s and not self.store.pending_messages() and all(self.idle(a) for a in self.AGENTS)

    def close(self) -> None:
        from ccci.lock import FleetLock

        def stop_background_watcher() -> None:
            holder = FleetLock(self.cfg.state_dir).holder()  # a watcher 'ccci start' put in the background
            if holder and FleetLock(self.cfg.state_dir).is_held():
                try:
                    os.kill(holder, signal.SIGTERM)
                    self.wait(lambda: not FleetLock(self.cfg.state_dir).is_held(), 10)
                except ProcessLookupError:
                    pass

        stop_background_watcher()
        for p in self.watchers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.tmux.kill_server()
        # a watcher 'ccci start' spawned just before the test ended takes the lock a moment
        # later; left alone it would restore the fleet forever
        if getattr(self, "spawned_watcher", False) and self.wait(lambda: FleetLock(self.cfg.state_dir).is_held(), 2):
            stop_background_watcher()
            self.tmux.kill_server()


def _override(path: Path, checks: dict, fleet: dict, git: dict, options: dict, agents: dict) -> None:
    from ccci.testing.fakes import toml_document

    raw = tomllib.loads(path.read_text())
    raw.setdefault("checks", {}).update(checks)
    raw.setdefault("fleet", {}).update(fleet)
    raw.setdefault("git", {}).update(git)
    for a in raw.get("agents", []):
        a.setdefault("options", {}).update(options)
        a.update(agents)
    tables = {k: v for k, v in raw.items() if k != "agents"}
    path.write_text(toml_document(tables, {"agents": raw.get("agents", [])}))


def fleet_name(tmp_path: Path) -> str:
    """A fleet (and tmux socket) name unique to this test process and directory."""
    return f"t{os.getpid()}{abs(hash(str(tmp_path))) % 10**6}"


# ---------------------------------------------------------------- checks on a real fleet


def agent_processes(fleet: Fleet, agent: str) -> list[psutil.Process]:
    """Live scripted-agent processes of ``agent`` in ``fleet`` (found by command line,
    not through tmux: a process tmux lost track of counts too)."""
    state = str(fleet.cfg.state_dir)
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = p.info["cmdline"] or []
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if cmd and os.path.basename(cmd[0]).startswith("tmux"):
                continue  # the tmux server keeps the argv of the client that started it
            if "ccci.backends.scripted.scripted_agent" in cmd and "--name" in cmd and cmd[cmd.index("--name") + 1] == agent \
                    and any(a.startswith(state) for a in cmd):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, IndexError):
            pass
    return out


def fleet_processes(root: Path | str, socket: str) -> list[str]:
    """``"pid: command line"`` of every live process that belongs to the fleet under
    ``root`` with the tmux socket ``socket``: its watcher (``--fleet ROOT``), its tmux
    server and clients (``-L SOCKET`` or ``-LSOCKET``), anything whose command line names a path under
    ``root``, and opencode's processes (``serve``, ``run``) running in a directory under
    ``root`` or with ``HOME`` under it. Zombies and this process are left out (so is a
    short-lived helper such as GitPython's ``git cat-file`` that only runs in the fleet's
    directory). Used to check that ``ccci shutdown`` leaves nothing behind."""
    root = str(root)
    out = []
    for p in psutil.process_iter(["cmdline", "status", "cwd"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE or p.pid == os.getpid():
                continue
            cmd = p.info["cmdline"] or []
            line = " ".join(cmd)
            # the server keeps the argv of the client that started it: "-L NAME" or "-LNAME"
            tmux = bool(cmd) and os.path.basename(cmd[0]).startswith("tmux") and (socket in cmd or f"-L{socket}" in cmd)
            opencode = "opencode" in line and ((p.info["cwd"] or "").startswith(root)
                                               or (p.environ().get("HOME") or "").startswith(root))
            if tmux or root in line or opencode:
                out.append(f"{p.pid}: {line}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def sessions_named(fleet: Fleet, agent: str) -> int:
    """How many tmux sessions carry the agent's session name (must be 0 or 1)."""
    name = fleet.cfg.session_name(agent)
    try:
        out = fleet.tmux.cmd("list-sessions", "-F", "#{session_name}", check=False)
    except Exception:  # noqa: BLE001 - no server
        return 0
    return sum(1 for s in out if s == name)


def panes_in_session(fleet: Fleet, agent: str) -> int:
    try:
        out = fleet.tmux.cmd("list-panes", "-s", "-t", f"={fleet.cfg.session_name(agent)}", "-F", "#{pane_id}", check=False)
    except Exception:  # noqa: BLE001
        return 0
    return len([ln for ln in out if ln.startswith("%")])


def exactly_one_instance(fleet: Fleet, agent: str) -> str | None:
    """``None`` when the agent has exactly one session, one pane and one process; else
    what is wrong."""
    s, p, procs = sessions_named(fleet, agent), panes_in_session(fleet, agent), agent_processes(fleet, agent)
    if (s, p, len(procs)) != (1, 1, 1):
        return f"{agent}: {s} session(s), {p} pane(s), {len(procs)} process(es) {[x.pid for x in procs]}"
    return None


def push_commit(fleet: Fleet, tmp_path: Path, subject: str | bytes) -> str:
    """Commit a new file with ``subject`` (bytes: written raw, e.g. invalid UTF-8) from
    a scratch clone of the fleet's origin and push it, as an agent would.

    :returns: the commit sha.
    """
    path = tmp_path / f"scratch-{fleet.cfg.name}"
    if not path.exists():
        subprocess.run(["git", "clone", "--quiet", fleet.cfg.git.origin, str(path)], check=True)
        for k, v in (("user.name", "tester"), ("user.email", "t@example.invalid")):
            subprocess.run(["git", "-C", str(path), "config", k, v], check=True)
    subprocess.run(["git", "-C", str(path), "pull", "--quiet", "origin", "main"], check=True, capture_output=True)
    name = f"f{len(list(path.iterdir()))}.txt"
    (path / name).write_text("x\n")
    subprocess.run(["git", "-C", str(path), "add", name], check=True)
    if isinstance(subject, bytes):
        # 'git commit' repairs invalid UTF-8 (as Latin-1); other tools do not: write the
        # commit object by hand, as libgit2 or a script could
        def out(*a):
            return subprocess.run(["git", "-C", str(path), *a], check=True, capture_output=True, text=True).stdout.strip()

        tree, parent = out("write-tree"), out("rev-parse", "HEAD")
        who = b"tester <t@example.invalid> 1767225600 +0000"
        raw = b"tree %s\nparent %s\nauthor %s\ncommitter %s\n\n%s\n" % (tree.encode(), parent.encode(), who, who, subject)
        sha = subprocess.run(["git", "-C", str(path), "hash-object", "-t", "commit", "-w", "--stdin"], input=raw,
                             check=True, capture_output=True).stdout.decode().strip()
        out("update-ref", "HEAD", sha)
    else:
        msg = path / ".git" / "MSG"
        msg.write_text(subject)
        subprocess.run(["git", "-C", str(path), "commit", "--quiet", "--cleanup=verbatim", "-F", str(msg)], check=True)
    subprocess.run(["git", "-C", str(path), "push", "--quiet", "origin", "HEAD:main"], check=True, capture_output=True)
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def typed_turns(fleet: Fleet, agent: str, needle: str) -> int:
    """How many turns the agent started with a prompt containing ``needle`` (its
    ``» <prompt>`` lines in the pane log: one per received message)."""
    from ccci.send import ANSI_RE

    log = (fleet.cfg.state_dir / "logs" / f"{agent}.log").read_text(errors="replace")
    return sum(1 for ln in ANSI_RE.sub("", log).replace("\r", "\n").splitlines() if ln.startswith("» ") and needle in ln)
