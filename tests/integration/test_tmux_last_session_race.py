"""Killing a server's last session makes tmux exit; a ``new-session`` sent at that moment
failed with "server exited unexpectedly" (about 1 in 30 here, tmux 3.3). That is what a
restart does (kill the agent's session, start it again) when the agent is the only one
on its socket; seen on the real Claude Code under ``ccci watch``. Tmux.new_session retries
once, starting a new server."""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from ccci.tmux import Tmux, socket_path_of

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
        Path(socket_path_of(name)).unlink(missing_ok=True)


def test_arguments_ending_in_a_semicolon_reach_the_program_as_given(tmp_path):
    """tmux 3.3a reads an argument ending in ``;`` as a command separator: a prompt split
    into words (the opencode backend) with ``stalled;`` in it failed to launch ("command
    if-shell: too many arguments"). Tmux.new_session escapes such arguments."""
    name = f"ccci-semi-{uuid.uuid4().hex[:8]}"
    t = Tmux(socket_name=name)
    out = tmp_path / "argv.json"
    words = ["a;", "b\\;", "x;y", "", "if", "-c", ";"]
    try:
        t.new_session("s", ["python3", "-c", "import json,sys; json.dump(sys.argv[2:], open(sys.argv[1], 'w'))",
                            str(out), *words], None, {"CCCI_SEMI": "v;"})
        for _ in range(50):
            if out.exists() and out.read_text():
                break
            import time
            time.sleep(0.1)
        assert json.loads(out.read_text()) == words
    finally:
        t.kill_server()
        Path(socket_path_of(name)).unlink(missing_ok=True)
