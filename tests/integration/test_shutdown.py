"""A clean stop on a real fleet (real tmux, scripted agents, ``ccci start`` spawning the
watcher in the background): ``ccci shutdown`` leaves no process of the fleet, and the
watcher does not take the end of tmux (its last session stopped) for a lost server."""
from __future__ import annotations

import os

import pytest

from ccci.lock import FleetLock
from ccci.testing.fleet import fleet_processes as _fleet_processes

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


def fleet_processes(fleet) -> list[str]:
    """Live processes of ``fleet``: :func:`ccci.testing.fleet.fleet_processes`."""
    return _fleet_processes(fleet.root, fleet.cfg.tmux_socket)


def _running(fleet) -> bool:
    return all(fleet.live_pid(a) for a in fleet.AGENTS)


def test_start_then_shutdown_leaves_no_process_of_the_fleet(fleet):
    r = fleet.ccci("start")
    assert r.returncode == 0, r.stderr
    lock = FleetLock(fleet.cfg.state_dir)
    assert fleet.wait(lambda: lock.is_held() and fleet.events("watcher_started"), 20)
    assert fleet.wait(lambda: _running(fleet) and fleet.events("agent_adopted"), 30)
    assert fleet_processes(fleet)
    r = fleet.ccci("shutdown")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stopped" in r.stdout
    assert fleet.wait(lambda: not fleet_processes(fleet), 10), fleet_processes(fleet)
    kinds = [e["kind"] for e in fleet.events()]
    assert "watcher_stopping" in kinds and "watcher_stopped" in kinds
    assert kinds.index("watcher_stopping") < kinds.index("watcher_stopped")
    assert fleet.events("watcher_stopping")[-1]["data"]["reason"] == "SIGTERM"
    assert "tmux_server_lost" not in kinds
    assert all(fleet.store.agent(a).stopped for a in fleet.AGENTS)
    # and 'ccci start' brings the fleet back; a second shutdown ends it again
    r = fleet.ccci("start")
    assert r.returncode == 0, r.stderr
    assert fleet.wait(lambda: _running(fleet), 30)
    assert fleet.wait(lambda: lock.is_held(), 20)
    assert fleet.ccci("shutdown").returncode == 0
    assert fleet.wait(lambda: not fleet_processes(fleet), 10), fleet_processes(fleet)


def test_stop_of_every_agent_under_a_watcher_is_no_lost_tmux_server(fleet):
    w = fleet.watch("--quiet")
    assert fleet.wait(lambda: _running(fleet), 30)
    r = fleet.ccci("stop")
    assert r.returncode == 0, r.stderr
    assert fleet.wait(lambda: not any(fleet.live_pid(a) for a in fleet.AGENTS), 10)
    assert fleet.wait(lambda: not fleet.tmux.list_panes() and not fleet.tmux.server_running, 10)
    n = fleet.store.last_event_id()
    assert fleet.wait(lambda: fleet.store.last_event_id() >= n, 3)
    import time

    time.sleep(3)  # several ticks with the server gone
    assert not fleet.events("tmux_server_lost"), fleet.events("tmux_server_lost")
    assert w.poll() is None
    assert not any(fleet.live_pid(a) for a in fleet.AGENTS), "a stopped agent was started again"


def test_attach_execs_tmux_with_an_argv_list(fleet, monkeypatch):
    """``ccci attach AGENT [-r]``: tmux on the fleet's socket, the exact session, no shell."""
    from click.testing import CliRunner

    from ccci.commands.cli import main

    r = fleet.ccci("attach", "builder", "-r", "--print")
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout) == ["tmux", "-L", fleet.cfg.tmux_socket, "attach-session", "-t",
                                    f"={fleet.cfg.session_name('builder')}", "-r"]
    r = fleet.ccci("attach", "builder")
    assert r.returncode == 2 and "no tmux session" in r.stderr  # nothing runs yet
    assert fleet.ccci("start", "--no-watch").returncode == 0
    calls = []

    def fake_exec(file, argv, env):
        calls.append((file, argv, env))
        raise SystemExit(0)

    monkeypatch.setattr("os.execvpe", fake_exec)
    monkeypatch.setenv("TMUX", "/tmp/outer,1,0")
    res = CliRunner().invoke(main, ["--fleet", str(fleet.root), "attach", "adversary"])
    assert res.exit_code == 0, res.output
    (file, argv, env), = calls
    assert file == "tmux" and argv == ["tmux", "-L", fleet.cfg.tmux_socket, "attach-session", "-t",
                                       f"={fleet.cfg.session_name('adversary')}"]
    assert "TMUX" not in env
    r = fleet.ccci("attach", "nobody")
    assert r.returncode == 2 and "no agent 'nobody'" in r.stderr


@pytest.fixture
def idle_fleet(tmp_path):
    from ccci.testing.fleet import Fleet, fleet_name

    f = Fleet(tmp_path / "fleet", fleet_name(tmp_path), fleet={"idle_exit": 2})
    yield f
    f.close()


def test_a_watcher_started_by_ccci_start_exits_when_idle_a_service_does_not(idle_fleet, tmp_path):
    import socket
    import tempfile
    import time

    fleet = idle_fleet
    assert fleet.ccci("start").returncode == 0
    lock = FleetLock(fleet.cfg.state_dir)
    assert fleet.wait(lambda: lock.is_held() and _running(fleet), 30)
    pid = lock.holder()
    time.sleep(3)  # longer than idle_exit, but the agents run: it stays
    assert lock.is_held() and lock.holder() == pid
    assert fleet.events("watcher_started")[-1]["data"]["exit_when_idle"] == 2
    assert fleet.ccci("stop").returncode == 0
    t0 = time.monotonic()
    assert fleet.wait(lambda: not lock.is_held(), 15), "the idle watcher did not exit"
    assert time.monotonic() - t0 >= 1.5
    ev = fleet.events("watcher_stopping")[-1]
    assert ev["data"]["reason"].startswith("idle"), ev
    assert fleet.events("watcher_stopped")
    assert fleet.wait(lambda: not fleet_processes(fleet), 10), fleet_processes(fleet)
    # under systemd (NOTIFY_SOCKET) the same option is ignored: a service stays
    d = tempfile.mkdtemp(prefix="ccci-n")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(f"{d}/notify")
    try:
        w = fleet.watch("--quiet", "--exit-when-idle", "1", env={"NOTIFY_SOCKET": f"{d}/notify"})
        assert fleet.wait(lambda: len(fleet.events("watcher_started")) == 2, 15)
        time.sleep(4)
        assert w.poll() is None, "a service must not exit when idle"
        assert fleet.events("watcher_started")[-1]["data"]["exit_when_idle"] is None
    finally:
        s.close()


def test_attach_read_only_on_a_real_terminal(fleet):
    """A real ``ccci attach -r`` in a pty shows the agent's pane; keys typed do not reach
    the agent; ``C-b d`` detaches and the agent runs on."""
    import sys

    import pexpect

    assert fleet.ccci("start", "--no-watch").returncode == 0
    assert fleet.wait(lambda: fleet.idle("builder"), 30)
    pid = fleet.live_pid("builder")
    child = pexpect.spawn(sys.executable, ["-m", "ccci", "--fleet", str(fleet.root), "attach", "builder", "-r"],
                          dimensions=(40, 120), timeout=15, env={**os.environ, "TERM": "xterm"})
    try:
        import re

        # tmux's status line names the session (status-left is cut at 10 characters)
        child.expect(re.escape("[" + fleet.cfg.session_name("builder")[:9]))
        before = fleet.screen("builder")
        child.send("typed-by-a-watcher")
        import time

        time.sleep(1)
        assert "typed-by-a-watcher" not in fleet.screen("builder"), "a read-only client typed into the agent"
        assert fleet.screen("builder") == before
        child.send("\x02d")  # C-b d
        child.expect(r"detached")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert fleet.live_pid("builder") == pid


def test_ccci_start_while_the_idle_watcher_leaves_still_starts_the_agents(idle_fleet):
    """``ccci start`` just before the idle watcher exits: the agents run, supervised."""
    import time

    fleet = idle_fleet
    assert fleet.ccci("start").returncode == 0
    lock = FleetLock(fleet.cfg.state_dir)
    assert fleet.wait(lambda: lock.is_held() and _running(fleet), 30)
    assert fleet.ccci("stop").returncode == 0
    time.sleep(1.6)  # idle_exit is 2 s: the watcher leaves about now
    r = fleet.ccci("start")
    assert r.returncode == 0, r.stderr
    assert fleet.wait(lambda: _running(fleet) and lock.is_held(), 30), (r.stdout, fleet.events()[-5:])
    time.sleep(4)  # past another idle_exit: the agents run, so a watcher stays
    assert _running(fleet) and lock.is_held()


def test_an_agent_ccci_start_cannot_launch_is_left_to_the_background_watcher(fleet):
    """``ccci start`` with no watcher launches the agents itself; one it cannot launch
    (here its workdir is missing; an opencode agent before its shared server runs) is an
    error with ``--no-watch``, and otherwise left to the background watcher it starts,
    which launches it once it can."""
    work = next(a.workdir for a in fleet.cfg.agents if a.name == "builder")
    aside = work.with_name(work.name + "-aside")
    work.rename(aside)
    r = fleet.ccci("start", "builder", "--no-watch")
    assert r.returncode == 1 and "builder: workdir missing" in r.stdout, r.stdout + r.stderr
    assert not FleetLock(fleet.cfg.state_dir).is_held()  # no watcher: that was asked for
    r = fleet.ccci("start")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "builder: workdir missing; the watcher tries again each tick" in r.stdout, r.stdout
    lock = FleetLock(fleet.cfg.state_dir)
    assert fleet.wait(lambda: lock.is_held(), 20)
    assert fleet.live_pid("adversary") and not fleet.live_pid("builder")
    aside.rename(work)
    assert fleet.wait(lambda: fleet.live_pid("builder"), 30), fleet.events()[-5:]
    assert fleet.ccci("shutdown").returncode == 0
    assert fleet.wait(lambda: not fleet_processes(fleet), 10), fleet_processes(fleet)
