"""The watcher's tmux control-mode client (ccci/tmux_control.py) on real tmux, each test
on its own ``-L`` socket: command round trips, errors and the deadline; a ``kill -9``
that wakes the runner long before its safety tick; a restart after ``kill-server``;
reaping of a dead watcher's client but not of another program's; no client left after
the watcher stops; and watcher ``kill -9`` after ``kill -9`` leaving no orphan
(``CCCI_CONTROL_KILLS``: how many, 10 by default, 100 for the issue's figure)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from ccci import tmux_control
from ccci.testing.fleet import poll_until
from ccci.tmux import Tmux, TmuxError
from ccci.tmux_control import OWNER_ENV, ControlClient, ControlUnavailable, control_clients

pytestmark = [pytest.mark.tmux]


def _wait(pred, timeout: float, poll: float = 0.02):
    """:func:`poll_until`, then one last try (its value is what a failing assert shows)."""
    return poll_until(pred, timeout, poll) or pred()


@pytest.fixture
def sock():
    name = f"ccci-ctl-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)


def _ours(name: str) -> list[dict]:
    return [c for c in control_clients(name) if c["owner"] is not None]


def test_round_trips_errors_and_deadline(sock, tmp_path):
    t = Tmux(sock)
    assert t.start_control() == []
    assert t.control is None  # no server yet: nothing to attach to, and none is started
    pane = t.new_session("a", ["sh", "-c", "printf '\\033[2mfaint\\033[0m plain\\n'; exec sleep 1000"], tmp_path, {})
    panes = t.list_panes()  # forked (no control client yet) and it sees a session: attach now
    assert panes["a"].pane_id == pane.pane_id
    _wait(lambda: t.list_panes() and t.control is not None and t.control.alive, 5)
    ctl = t.control
    assert ctl is not None and ctl.alive and ctl.attached_session == "a"
    forked = t.calls
    # an argument with quotes, $, ~, a trailing ';' and a backslash survives the line protocol
    text = "it's \"$HOME\" ~ a;b \\ end;"
    t.cmd("set-buffer", "-b", "ccci-t", "--", text[:-1] + "\\;")
    # (read back by a forked client: show-buffer escapes '\\' and '$' for a control client)
    shown = subprocess.run(["tmux", "-L", sock, "show-buffer", "-b", "ccci-t"], capture_output=True, text=True).stdout
    assert shown == text
    # capture-pane -e through control mode gives what a forked client gives
    assert _wait(lambda: "plain" in t.capture([pane.pane_id])[pane.pane_id], 5)
    via_control = t.capture([pane.pane_id, "%9999"])
    assert via_control["%9999"] == ""
    assert t.calls == forked  # none of that forked a tmux client
    assert t.control_calls >= 4
    with pytest.raises(TmuxError, match="can't find pane"):
        t.cmd("send-keys", "-t", "%9999", "x")
    # a chain stops at its first error, as a forked client's does
    with pytest.raises(TmuxError, match="can't find"):
        t.cmd("display-message", "-p", "one", ";", "kill-pane", "-t", "%9999", ";", "set-buffer", "-b", "ccci-never", "x")
    assert "ccci-never" not in "\n".join(t.cmd("list-buffers", "-F", "#{buffer_name}"))
    t.stop_control()
    forked_screen = t.capture([pane.pane_id])[pane.pane_id]
    assert via_control[pane.pane_id] == forked_screen
    assert via_control[pane.pane_id].styles == forked_screen.styles and any(any(r) for r in forked_screen.styles)

    # the deadline: a wedged tmux (its server stopped: tmux 3.3 hands a control client's
    # stdin and stdout to the server, which reads and answers them itself) answers nothing
    server = psutil.Process(int(t.cmd("display-message", "-p", "#{pid}")[0]))
    ctl = ControlClient(sock, deadline_s=0.3)
    ctl.start()
    pid = ctl.pid
    assert ctl.run([["display-message", "-p", "x"]]) == [(["x"], None)]
    server.suspend()
    try:
        t0 = time.monotonic()
        with pytest.raises(ControlUnavailable, match="deadline"):
            ctl.run([["display-message", "-p", "y"]])
        assert time.monotonic() - t0 < 3
    finally:
        server.resume()
    assert not ctl.alive
    assert _wait(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 5)
    with pytest.raises(ControlUnavailable):
        ctl.run([["display-message", "-p", "x"]])
    ctl.close()

    # a wedged client is replaced at the next call
    t2 = Tmux(sock)
    t2.start_control(deadline_s=0.3)
    assert t2.control is not None and t2.control_starts == 1
    server.suspend()
    try:
        with pytest.raises(TmuxError, match="may have run"):  # not repeated through a forked client
            t2.cmd("set-buffer", "-b", "ccci-once", "x")
    finally:
        server.resume()
    assert t2.list_panes()["a"].pane_id == pane.pane_id
    assert t2.control is not None and t2.control.alive and t2.control_starts == 2
    t2.stop_control()
    assert _wait(lambda: _ours(sock) == [], 5)


def test_restart_after_kill_server(sock, tmp_path):
    wakes: list[str] = []
    t = Tmux(sock)
    t.new_session("a", ["sleep", "1000"], tmp_path, {})
    t.start_control(wakes.append)
    first = t.control
    assert first is not None and first.alive
    t.kill_server()
    assert _wait(lambda: not first.alive, 5)
    assert any("ended" in w for w in wakes), wakes
    assert t.list_panes() == {} and not t.server_running  # forked fallback: no server
    t.new_session("b", ["sleep", "1000"], tmp_path, {})
    assert "b" in _wait(lambda: t.list_panes(), 5)
    assert _wait(lambda: (t.list_panes(), t.control is not None and t.control.alive)[1], 5)
    assert t.control is not first and t.control_starts == 2
    t.stop_control()


def test_reaps_a_dead_watchers_client_and_never_a_foreign_one(sock, tmp_path):
    t = Tmux(sock)
    t.new_session("a", ["sleep", "1000"], tmp_path, {})
    dead = subprocess.Popen(["sleep", "60"])
    tag = f"{dead.pid}:{psutil.Process(dead.pid).create_time()!r}"
    dead.kill()
    dead.wait()
    base = ["tmux", "-L", sock, "-C", "attach-session", "-f", "ignore-size"]
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    # this test holds both clients' stdin, so neither exits on EOF: the orphan stands for
    # a client that was wedged when its watcher was killed
    orphan = subprocess.Popen(base, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env={**env, OWNER_ENV: tag})
    foreign = subprocess.Popen(base, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    live_owner = subprocess.Popen(["sleep", "60"])
    live_tag = f"{live_owner.pid}:{psutil.Process(live_owner.pid).create_time()!r}"
    other_watcher = subprocess.Popen(base, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     env={**env, OWNER_ENV: live_tag})
    try:
        assert _wait(lambda: len(control_clients(sock)) == 3, 5)
        reaped = t.start_control()
        assert reaped == [orphan.pid]
        assert orphan.wait(5) is not None
        pids = {c["pid"] for c in control_clients(sock)}
        assert foreign.pid in pids and other_watcher.pid in pids and orphan.pid not in pids
        assert foreign.poll() is None and other_watcher.poll() is None
    finally:
        t.stop_control()
        for p in (orphan, foreign, other_watcher):
            p.stdin.close()
            p.wait(5)
        live_owner.kill()
        live_owner.wait()


def test_kill_9_of_an_agent_wakes_the_runner_before_the_safety_tick(fleet):
    """With a 30 s safety tick, the restart after ``kill -9`` comes from a wake-up."""
    from ccci.testing.fleet import _override

    _override(fleet.root / "ccci.toml", {}, {"tick_seconds": 30}, {}, {}, {})
    w = fleet.watch()
    pid = fleet.wait(lambda: fleet.live_pid("builder"), 20)
    assert pid
    assert fleet.wait(lambda: [c for c in _ours(fleet.cfg.tmux_socket) if c["owner"].startswith(f"{w.pid}:")], 20)
    time.sleep(1.5)  # the watcher's next tick registered the pane's pid
    restarts_before = len(fleet.restarts("builder"))
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    new = fleet.wait(lambda: len(fleet.restarts("builder")) > restarts_before and fleet.live_pid("builder"), 15,
                     poll=0.05)
    took = time.monotonic() - t0
    assert new and new != pid, fleet.watcher_output(0)[-2000:]
    assert took < 15  # the safety tick would be 30 s away
    w.send_signal(signal.SIGHUP)  # reload: the same control client stays
    before = {c["pid"] for c in _ours(fleet.cfg.tmux_socket)}
    assert fleet.wait(lambda: fleet.events("plugins_reloaded"), 40)
    assert {c["pid"] for c in _ours(fleet.cfg.tmux_socket)} == before and len(before) == 1
    w.send_signal(signal.SIGTERM)
    assert w.wait(40) == 0
    # the watcher closed its client on the way out
    assert fleet.wait(lambda: _ours(fleet.cfg.tmux_socket) == [], 5) == [] or _ours(fleet.cfg.tmux_socket) == []
    assert not [p for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] and "-C" in p.info["cmdline"] and fleet.cfg.tmux_socket in p.info["cmdline"]]


_WATCHER = """
import sys, time
from ccci.tmux import Tmux
t = Tmux(sys.argv[1])
t.start_control(lambda r: None)
end = time.monotonic() + 30
while t.control is None and time.monotonic() < end:  # a busy machine: an attach can time out; retried
    time.sleep(0.2)
    t.list_panes()
print("ready", t.control.pid if t.control else 0, flush=True)
time.sleep(600)
"""


KILLS = int(os.environ.get("CCCI_CONTROL_KILLS", "10"))


@pytest.mark.timeout(120 + 6 * KILLS)  # ~1.2 s per kill on 2 busy cores
def test_watcher_kill_9s_leave_no_orphaned_control_client(sock, tmp_path):
    n = KILLS
    t = Tmux(sock)
    t.new_session("a", ["sleep", "1000"], tmp_path, {})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    stopped = 0
    slow: list[int] = []
    for i in range(n):
        w = subprocess.Popen([sys.executable, "-c", _WATCHER, sock], stdout=subprocess.PIPE, text=True, env=env)
        line = w.stdout.readline().split()
        assert line[:1] == ["ready"] and int(line[1]) > 0, line
        client = int(line[1])
        if i % 5 == 4:  # every 5th: the client is wedged (stopped) when its watcher dies
            os.kill(client, signal.SIGSTOP)
            assert _wait(lambda: psutil.Process(client).status() == psutil.STATUS_STOPPED, 5)
            stopped += 1
        w.kill()
        w.wait()
        w.stdout.close()
        if i % 5 != 4:  # a healthy client exits by itself when its watcher's pipe closes
            if not _wait(lambda: not psutil.pid_exists(client) or psutil.Process(client).status() == "zombie", 5):
                slow.append(client)  # (seen on a machine at load 12: then the next watcher reaps it)
    # a wedged one may still be there (as a process; tmux may already have dropped it
    # from list-clients; the kernel's SIGHUP to an orphaned stopped process group may
    # have ended it) until a new watcher of the fleet reaps it
    left = tmux_control.marked_processes(sock)
    assert len(left) <= stopped + len(slow), (left, slow)
    reaped = t.start_control()
    assert sorted(reaped) == sorted(left)
    # as the watcher does: an attach that timed out on a busy machine (seen in a CI
    # rehearsal: no answer within 3 s) is tried again at the next call
    assert _wait(lambda: t.list_panes() is not None and t.control is not None, 30, poll=0.2), "no control client within 30 s"
    assert tmux_control.marked_processes(sock) == [t.control.pid]
    mine = t.control.pid
    assert [c["pid"] for c in _ours(sock)] == [mine]
    t.stop_control()
    assert _wait(lambda: control_clients(sock) == [], 5) == [] or control_clients(sock) == []
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if p.info["cmdline"] and "-C" in p.info["cmdline"] and sock in p.info["cmdline"]]
    assert all(p.status() == psutil.STATUS_ZOMBIE for p in leftovers), leftovers
    assert tmux_control.OWNER_ENV not in os.environ


# what bench/standin.py draws: a finished turn that declared a far wait, then the prompt
_QUIET_AGENT = ("import sys, time\n"
                "sys.stdout.write('\\n\\u00bb turn 1\\n\\u25cf done\\n\\u2713 turn done in 0s\\n"
                "WAITING-UNTIL: 2099-01-01T00:00:00Z\\n' + '\\u2500' * 40 + '\\n> ')\n"
                "sys.stdout.flush()\n"
                "time.sleep(100000)\n")


def _quiet_supervisor(tmp_path, fleet_config, idle: float):
    from ccci.plugins import get_plugin_manager
    from ccci.state import StateStore
    from ccci.supervisor import Supervisor

    sock = f"ccci-idle-{uuid.uuid4().hex[:8]}"
    cfg = fleet_config(agents=("a", "b"), fleet={"tmux_socket": sock, "tick_seconds": 0.25,
                                                 "idle_tick_seconds": idle})
    tmux = Tmux(sock)
    for name in ("a", "b"):
        tmux.new_session(cfg.session_name(name), [sys.executable, "-c", _QUIET_AGENT], tmp_path, {})
    return Supervisor(cfg, get_plugin_manager(cfg.root), StateStore(cfg.state_dir), tmux), sock


@pytest.mark.timeout(120, method="thread")  # the Supervisor runs in this process: its checks use SIGALRM
def test_quiet_fleet_safety_tick_finds_a_death_whose_wake_was_missed(tmp_path, fleet_config):
    """Event-driven mode: a quiet fleet ticks at ``idle_tick_seconds``, not
    ``tick_seconds``; with every notification lost (the runner's wake is a no-op), a
    ``kill -9`` of an agent is still found, by the safety tick, and the agent restarted."""
    idle = 2.0
    sup, sock = _quiet_supervisor(tmp_path, fleet_config, idle)
    sup.wake = lambda reason="": None  # every notification missed (the control client calls this)
    seen: dict = {"ticks": [], "quiet_intervals": [], "killed_at": None, "pid": None}

    def on_tick() -> None:
        now = time.monotonic()
        seen["ticks"].append(now)
        if now - seen["ticks"][0] > 60:
            sup.request_stop(reason="test timed out")
        if seen["killed_at"] is None:
            if sup.quiet and sup.event_driven():
                seen["quiet_intervals"].append(sup.next_interval())
            if len(seen["quiet_intervals"]) >= 3:
                rt = sup.agents["a"]
                seen["pid"], seen["killed_at"] = rt.pid, now
                os.kill(rt.pid, signal.SIGKILL)
        elif [r for r in sup.store.events() if r["kind"] == "remedy" and r["agent"] == "a"]:
            seen["restarted_at"] = now
            sup.request_stop(reason="test done")

    try:
        sup.run(on_tick=on_tick)
        assert seen["quiet_intervals"] == [idle] * len(seen["quiet_intervals"]), seen
        assert seen["killed_at"] is not None, "the fleet never read quiet in event-driven mode"
        assert "restarted_at" in seen, [(e["kind"], e["message"]) for e in sup.store.events()][-20:]
        # no wake-up came: the death was found by a tick on the safety schedule
        gaps = [b - a for a, b in zip(seen["ticks"], seen["ticks"][1:])]
        assert max(gaps) >= idle * 0.9, gaps  # quiet ticks were idle_tick_seconds apart
        assert seen["restarted_at"] - seen["killed_at"] <= idle + 15  # generous: a busy machine
        assert sup.agents["a"].pid != seen["pid"]
    finally:
        sup.store.close()
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


@pytest.mark.timeout(120, method="thread")
def test_a_lost_control_client_ends_event_driven_mode_until_it_is_back(tmp_path, fleet_config):
    """``kill -9`` of the control client: the runner is woken, ticks at
    ``tick_seconds`` (no longer event-driven), and a new client brings the quiet
    fleet's safety tick back."""
    sup, sock = _quiet_supervisor(tmp_path, fleet_config, 3.0)
    seen: dict = {"killed": None, "after_kill": [], "back": False}

    def on_tick() -> None:
        ctl = sup.tmux.control
        if seen["killed"] is None:
            if sup.quiet and sup.event_driven():
                seen["killed"] = ctl.pid
                os.kill(ctl.pid, signal.SIGKILL)
                _wait(lambda: not ctl.alive, 10)
        elif not seen["back"]:
            seen["after_kill"].append((sup.event_driven(), sup.next_interval()))
            if sup.event_driven() and ctl is not None and ctl.pid != seen["killed"]:
                seen["back"] = sup.quiet or seen["back"]
                if sup.quiet:
                    seen["interval_back"] = sup.next_interval()
                    sup.request_stop(reason="test done")

    t0 = time.monotonic()

    def guard() -> None:
        on_tick()
        if time.monotonic() - t0 > 60:
            sup.request_stop(reason="test timed out")

    try:
        sup.run(on_tick=guard)
        assert seen["killed"], "the fleet never read quiet in event-driven mode"
        not_driven = [iv for driven, iv in seen["after_kill"] if not driven]
        assert not_driven and set(not_driven) == {0.25}, seen["after_kill"]
        assert seen.get("interval_back") == 3.0, seen
        assert sup.tmux.control_starts >= 2
    finally:
        sup.store.close()
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


@pytest.mark.timeout(120, method="thread")
def test_a_commit_by_another_process_ends_a_quiet_wait(tmp_path, fleet_config):
    """A ``ccci stop`` (another process's commit to the state database) reaches a quiet
    fleet's runner within about ``tick_seconds``, not at its 30 s safety tick."""
    from ccci.state import StateStore

    sup, sock = _quiet_supervisor(tmp_path, fleet_config, 30.0)
    other = StateStore(sup.config.state_dir)  # what the CLI opens
    seen: dict = {}
    t0 = time.monotonic()

    def on_tick() -> None:
        if time.monotonic() - t0 > 60:
            sup.request_stop(reason="test timed out")
        if "wrote" not in seen:
            if sup.quiet and sup.event_driven() and sup.next_interval() == 30.0:
                other.update_agent("b", stopped=1)
                seen["wrote"] = time.monotonic()
        elif sup.agents["b"].stopped:
            seen["took"] = time.monotonic() - seen["wrote"]
            seen["reason"] = sup.last_wake_reason
            sup.request_stop(reason="test done")

    try:
        sup.run(on_tick=on_tick)
        assert "wrote" in seen, "the fleet never read quiet in event-driven mode"
        assert seen.get("took") is not None and seen["took"] < 15, seen  # the safety tick: 30 s
        assert "another process" in seen["reason"], seen
    finally:
        other.close()
        sup.store.close()
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
