"""The ``tmux_server`` fixture of ccci's pytest plugin: a real tmux server on a private
socket (libtmux's ``server`` fixture), wrapped in ccci.tmux.Tmux."""
from __future__ import annotations

import time

import pytest

from ccci.tmux import Tmux

pytestmark = pytest.mark.tmux


def test_tmux_server_is_private_and_usable(tmux_server, server):
    assert isinstance(tmux_server, Tmux)
    assert tmux_server.server.socket_name == server.socket_name != None  # noqa: E711
    assert tmux_server.list_panes() == {}
    pane = tmux_server.new_session("t", ["sh", "-c", "echo ready-marker; exec sleep 30"], None, {})
    text = ""
    for _ in range(50):
        text = tmux_server.capture([pane.pane_id])[pane.pane_id]
        if "ready-marker" in text:
            break
        time.sleep(0.02)
    assert "ready-marker" in text
    assert set(tmux_server.list_panes()) == {"t"}
