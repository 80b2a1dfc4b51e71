"""Integration fixtures: real tmux (a private socket per fleet), real git, real
``ccci watch`` processes."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ccci import config as config_mod
from ccci.fleet import init_fleet
from ccci.state import StateStore
from ccci.tmux import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class Fleet:
    """A demo-threshold fleet of scripted agents on its own tmux socket."""

    def __init__(self, root: Path, name: str) -> None:
        init_fleet(root, demo=True, name=name)
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
        return subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(self.root), *args],
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})

    def watch(self, *extra: str, env: dict | None = None) -> subprocess.Popen:
        log = open(self.cfg.state_dir / f"watcher-{len(self.watchers)}.out", "wb")
        p = subprocess.Popen([sys.executable, "-m", "ccci", "--fleet", str(self.root), "watch", *extra],
                             stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.watchers.append(p)
        return p

    def pane(self, agent: str):
        return self.tmux.list_panes().get(self.cfg.session_name(agent))

    def screen(self, agent: str) -> str:
        p = self.pane(agent)
        return self.tmux.capture([p.pane_id]).get(p.pane_id, "") if p else ""

    def events(self, kind: str | None = None, agent: str | None = None) -> list[dict]:
        return [e for e in self.store.events(limit=10**6, agent=agent) if kind is None or e["kind"] == kind]

    def wait(self, pred, timeout: float = 30.0, poll: float = 0.1):
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
        ev = self.store.events(after_id=max(0, self.store.last_event_id() - 1))
        from datetime import datetime

        from ccci.clock import UTC, parse_utc

        age = (datetime.now(UTC) - parse_utc(ev[-1]["at"])).total_seconds() if ev else quiet_s
        return age >= quiet_s and not self.store.pending_messages() and all(self.idle(a) for a in ("builder", "adversary"))

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


@pytest.fixture
def fleet(tmp_path):
    """A fresh fleet (builder + adversary on the scripted backend, real bare origin),
    tmux server and watchers torn down afterwards."""
    name = f"t{os.getpid()}{abs(hash(str(tmp_path))) % 10**6}"
    f = Fleet(tmp_path / "fleet", name)
    yield f
    f.close()
