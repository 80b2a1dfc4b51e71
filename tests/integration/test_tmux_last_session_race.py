"""Killing a server's last session makes tmux exit; a ``new-session`` sent at that moment
failed with "server exited unexpectedly" (about 1 in 30 here, tmux 3.3). That is what a
restart does (kill the agent's session, start it again) when the agent is the only one
on its socket; seen on the real Claude Code under ``ccci watch``. Tmux.new_session retries
once, starting a new server."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from ccci.tmux import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def test_new_session_right_after_the_last_session_was_killed():
    name = f"ccci-race-{uuid.uuid4().hex[:8]}"
    t = Tmux(socket_name=name)
    try:
        for i in range(40):
            t.new_session("a", ["sleep", "30"], None, {})
            t.kill_session("a")
            pane = t.new_session("b", ["sleep", "30"], None, {})  # raised ~1 in 30 before the retry
            assert t.list_panes()["b"].pane_id == pane.pane_id
            t.kill_session("b")
    finally:
        t.kill_server()
        (Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.geteuid()}" / name).unlink(missing_ok=True)
