"""One orchestrator per fleet: a hand-launched orchestrator stops ccci from starting a
second one; when it goes away, ccci starts (and later resumes) its own."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from ccci import config as config_mod
from ccci.tmux import Tmux

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


def test_hand_launched_orchestrator_is_respected(fleet, tmp_path):
    orch_dir = fleet.root / "work" / "orchestrator"
    orch_dir.mkdir(parents=True)
    fleet.cfg.path.write_text(fleet.cfg.path.read_text() + '\n[[agents]]\nname = "orch"\nrole = "orchestrator"\n'
                              'workdir = "work/orchestrator"\n')
    fleet.cfg = config_mod.load(fleet.root)
    # a person starts an orchestrator by hand in another terminal (another tmux server)
    other = Tmux(f"{fleet.cfg.tmux_socket}-person")
    by_hand = other.new_session("person", [sys.executable, "-m", "ccci.backends.scripted.scripted_agent", "--name", "orch", "--role",
                                           "orchestrator", "--conversation", "by-hand", "--state-dir", str(tmp_path / "conv")],
                                orch_dir, {})
    try:
        r = fleet.ccci("start", "orch")
        assert r.returncode != 0 or "external" in r.stdout + r.stderr
        assert fleet.pane("orch") is None, "ccci started a second orchestrator"
        fleet.watch("--quiet")
        assert fleet.wait(lambda: fleet.events("orchestrator_external"), 20)
        time.sleep(4)
        assert fleet.pane("orch") is None, "the watcher started a second orchestrator"
        assert not [e for e in fleet.events(agent="orch") if e["kind"].startswith("agent_")]
        # the person closes theirs: ccci takes the role over
        other.kill_server()
        pane = fleet.wait(lambda: fleet.pane("orch"), 20)
        assert pane is not None and not pane.dead
    finally:
        other.kill_server()
    # a restart of the orchestrator resumes its one long conversation
    conv = fleet.store.agent("orch").conversation_id
    assert conv
    fleet.pane("orch") and __import__("os").kill(fleet.pane("orch").pid, signal.SIGKILL)
    assert fleet.wait(lambda: [e for e in fleet.events("agent_resumed", "orch")], 15)
    assert fleet.store.agent("orch").conversation_id == conv
    _ = subprocess  # the person's terminal is a separate tmux server, not a child of ccci
