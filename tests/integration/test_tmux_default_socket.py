"""A fleet with ``tmux_socket = ""`` means tmux's default server wherever ccci runs.

Run inside another tmux server, a tmux client started without ``-L``/``-S`` follows
``$TMUX`` to that server, while the watcher's control client (started with ``$TMUX``
dropped) went to the default one: the tick's forked calls and its control-mode calls
then read two different servers. Both servers here live in a private ``TMUX_TMPDIR``,
so the user's own default server is never touched."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ccci.config import FleetConfig
from ccci.commands.cli import attach_argv
from ccci.testing.fleet import poll_until
from ccci.tmux import Tmux, socket_path_of

pytestmark = [pytest.mark.tmux]


@pytest.fixture
def two_servers(tmp_path, monkeypatch):
    """(default server's socket path, the other server's socket path), each with one
    session: ``here`` on the default server, ``elsewhere`` on the other; ``$TMUX`` names
    the other one, as inside a pane of it."""
    tmpdir = tmp_path / "tmux"
    tmpdir.mkdir()
    monkeypatch.setenv("TMUX_TMPDIR", str(tmpdir))
    monkeypatch.delenv("TMUX", raising=False)
    default = socket_path_of()
    other = str(Path(default).with_name("other"))
    Path(default).parent.mkdir(mode=0o700)
    for sock, session in ((default, "here"), (other, "elsewhere")):
        subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-s", session, "sleep 600"], check=True,
                       env={k: v for k, v in os.environ.items() if k != "TMUX"})
    monkeypatch.setenv("TMUX", f"{other},12345,0")
    yield default, other
    for sock in (default, other):
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)


def test_socket_path_of_follows_tmux_tmpdir(tmp_path, monkeypatch):
    monkeypatch.setenv("TMUX_TMPDIR", f"{tmp_path}:/elsewhere")
    assert socket_path_of() == str(tmp_path.resolve() / f"tmux-{os.geteuid()}" / "default")
    assert socket_path_of("ccci-x") == str(tmp_path.resolve() / f"tmux-{os.geteuid()}" / "ccci-x")
    monkeypatch.delenv("TMUX_TMPDIR")
    assert socket_path_of() == os.path.join(os.path.realpath(f"/tmp/tmux-{os.geteuid()}"), "default")


def test_the_default_servers_directory_is_made_as_tmux_makes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TMUX_TMPDIR", str(tmp_path))
    monkeypatch.delenv("TMUX", raising=False)
    t = Tmux("")
    try:
        t.new_session("first", ["sleep", "600"], tmp_path, {})  # -S PATH: tmux makes no directory itself
        assert set(t.list_panes()) == {"first"}
        assert (Path(t.socket_path).parent.stat().st_mode & 0o777) == 0o700
    finally:
        t.kill_server()


def test_forked_and_control_calls_reach_the_default_server_under_another_tmux(two_servers):
    default, _other = two_servers
    t = Tmux("")
    assert t.socket_path == default
    assert set(t.list_panes()) == {"here"}  # forked: $TMUX would have led to 'elsewhere'
    t.start_control()
    try:
        assert poll_until(lambda: t.list_panes() is not None and t.control is not None and t.control.alive, 10)
        calls = t.control_calls
        assert set(t.list_panes()) == {"here"}  # through the control client now
        assert t.control_calls > calls
        assert t.control.attached_session == "here"
    finally:
        t.stop_control()


def test_attach_names_the_default_server(two_servers, tmp_path):
    default, _other = two_servers
    cfg = FleetConfig(path=tmp_path / "ccci.toml", root=tmp_path, name="f", state_dir=tmp_path / "state")
    assert attach_argv(cfg, "a") == ["tmux", "-S", default, "attach-session", "-t", "=ccci-f-a"]
