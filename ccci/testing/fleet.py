"""A real fleet for integration and fault tests: scripted agents in real tmux panes on a
private socket, a real bare git origin, and real ``ccci watch`` subprocesses.

``Fleet(root, name, checks=..., fleet=..., git=..., options=...)`` scaffolds the demo
fleet (:func:`ccci.fleet.init_fleet` with ``demo=True``: builder + adversary on the
``scripted`` backend) and then merges the given overrides into its ``ccci.toml``
(``checks`` into ``[checks]``, ``fleet`` into ``[fleet]``, ``git`` into ``[git]``,
``options`` into every agent's ``[agents.options]``, ``agents`` into every
``[[agents]]`` table, e.g. ``{"handoff_role": "other"}``). Durations are seconds.
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

from ccci import config as config_mod
from ccci.fleet import init_fleet
from ccci.state import StateStore
from ccci.tmux import Tmux


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

    def wait(self, pred: Callable[[], Any], timeout: float = 30.0, poll: float = 0.1):
        """Poll ``pred`` until it returns something truthy (returned) or ``timeout`` s."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            val = pred()
            if val:
                return val
            time.sleep(poll)
        return None

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

        holder = FleetLock(self.cfg.state_dir).holder()  # a watcher 'ccci start' put in the background
        if holder and FleetLock(self.cfg.state_dir).is_held():
            try:
                os.kill(holder, signal.SIGTERM)
                self.wait(lambda: not FleetLock(self.cfg.state_dir).is_held(), 10)
            except ProcessLookupError:
                pass
        for p in self.watchers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
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
