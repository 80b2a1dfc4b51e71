"""``ccci restart AGENT`` on a real fleet (the code the dashboard's restart button runs):
a new process for the same conversation, the other agent left alone."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


def test_restart_gives_a_new_process_and_keeps_the_conversation(fleet):
    fleet.watch("--quiet")
    assert fleet.wait(lambda: all(fleet.live_pid(a) and fleet.store.agent(a).state == "running"
                                  for a in fleet.AGENTS), 30)
    old, other = fleet.live_pid("builder"), fleet.live_pid("adversary")
    conv = fleet.store.agent("builder").conversation_id
    r = fleet.ccci("restart", "builder")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "builder: stopped" in r.stdout and "watcher running" in r.stdout
    assert fleet.wait(lambda: fleet.live_pid("builder") not in (None, old)
                      and fleet.store.agent("builder").state == "running", 30)
    rec = fleet.store.agent("builder")
    assert rec.conversation_id == conv and not rec.stopped
    assert fleet.live_pid("adversary") == other
    assert [e for e in fleet.events("agent_stopped", "builder") if "ccci restart" in e["message"]]
    r = fleet.ccci("restart", "nobody")
    assert r.returncode == 2 and "no agent 'nobody'" in r.stderr
