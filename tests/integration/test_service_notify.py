"""systemd's notify protocol from a real ``ccci watch`` on a real fleet: the test binds
the ``NOTIFY_SOCKET`` datagram socket (AF_UNIX, SOCK_DGRAM) as systemd would and reads
what the watcher sends: READY=1 after the first tick, STATUS= with the fleet summary,
WATCHDOG=1 from the tick loop (none while a tick hangs), STOPPING=1 on SIGTERM."""
from __future__ import annotations

import shutil
import signal
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.tmux, pytest.mark.slow]

WATCHDOG_USEC = 2_000_000  # pings are due every 1 s


class NotifySocket:
    """A bound ``NOTIFY_SOCKET``; :meth:`read` collects ``(monotonic time, line)``."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ccci-n")  # AF_UNIX paths are short (108 bytes)
        self.path = str(Path(self.dir) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.got: list[tuple[float, str]] = []

    def read(self, until, timeout: float) -> bool:
        """Read datagrams until ``until(self)`` is true (returned) or ``timeout`` s."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if until(self):
                return True
            self.sock.settimeout(max(0.05, min(0.5, end - time.monotonic())))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            for line in data.decode().splitlines():
                self.got.append((time.monotonic(), line))
        return until(self)

    def lines(self, prefix: str) -> list[str]:
        return [ln for _, ln in self.got if ln.startswith(prefix)]

    def times(self, line: str) -> list[float]:
        return [t for t, ln in self.got if ln == line]

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket():
    s = NotifySocket()
    yield s
    s.close()


def _env(sock: NotifySocket) -> dict:
    return {"NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}


def test_ready_status_watchdog_and_stopping_from_a_real_watcher(fleet, notify_socket):
    w = fleet.watch("--quiet", env=_env(notify_socket))
    assert notify_socket.read(lambda s: s.lines("READY=1"), 30), notify_socket.got
    # READY=1 only after a complete tick: the agents were adopted or started by then
    assert fleet.events("watcher_started")
    assert fleet.events("agent_started") or fleet.events("agent_adopted")
    assert notify_socket.read(lambda s: len(s.times("WATCHDOG=1")) >= 4, 15), notify_socket.got
    status = notify_socket.lines("STATUS=")
    assert status and status[0].startswith(f"STATUS=fleet {fleet.cfg.name}: "), status
    assert notify_socket.read(lambda s: any("2/2 agents running" in ln for ln in s.lines("STATUS=")), 20), status
    assert len(notify_socket.lines("READY=1")) == 1
    settled = time.monotonic()
    assert notify_socket.read(lambda s: time.monotonic() > settled + 5, 10)
    pings = [t for t in notify_socket.times("WATCHDOG=1") if t >= settled]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert len(pings) >= 3 and max(gaps) < WATCHDOG_USEC / 1e6, gaps  # one a tick, well within the interval
    w.send_signal(signal.SIGTERM)
    assert notify_socket.read(lambda s: s.lines("STOPPING=1"), 15), notify_socket.got
    assert w.wait(20) == 0
    notify_socket.read(lambda s: False, 0.5)
    assert len(notify_socket.lines("STOPPING=1")) == 1, notify_socket.got
    assert notify_socket.lines("STATUS=")[-1] == "STATUS=stopping (SIGTERM)"
    assert fleet.events("watcher_stopping") and fleet.events("watcher_stopped")
    # KillMode=process: systemd signals only the watcher; the agents keep running and
    # the restarted watcher adopts them (no restart, same pids)
    pids = {a: fleet.live_pid(a) for a in fleet.AGENTS}
    assert all(pids.values())
    fleet.watch("--quiet", env=_env(notify_socket))
    assert fleet.wait(lambda: len(fleet.events("watcher_started")) == 2 and len(fleet.events("agent_adopted")) >= 2, 20)
    assert {a: fleet.live_pid(a) for a in fleet.AGENTS} == pids
    assert notify_socket.read(lambda s: len(s.lines("READY=1")) == 2, 15)


HANGING = textwrap.dedent('''
    import os
    import time

    from ccci import hookimpl

    @hookimpl
    def ccci_check_fleet(config):
        flag = os.path.join(str(config.root), "hang-now")
        if os.path.exists(flag):
            os.unlink(flag)
            time.sleep(6)          # one tick hangs 6 s, three times WATCHDOG_USEC
        return []
''')


def test_a_hung_tick_stops_the_watchdog_pings(fleet, notify_socket):
    (fleet.root / "ccci_plugins.py").write_text(HANGING)
    fleet.watch("--quiet", env=_env(notify_socket))
    assert notify_socket.read(lambda s: len(s.times("WATCHDOG=1")) >= 3, 40), notify_socket.got
    before = len(notify_socket.times("WATCHDOG=1"))
    hung_at = time.monotonic()
    (fleet.root / "hang-now").write_text("")
    assert notify_socket.read(lambda s: len(s.times("WATCHDOG=1")) >= before + 3 and time.monotonic() > hung_at + 11,
                              30), notify_socket.got
    pings = notify_socket.times("WATCHDOG=1")
    gaps = [(b - a, a) for a, b in zip(pings, pings[1:]) if b > hung_at]
    longest = max(g for g, _ in gaps)
    # silent through the hang: systemd (WatchdogSec=2) would have restarted this watcher
    assert longest >= 5.0 > WATCHDOG_USEC / 1e6, gaps
    # and regular again once the tick is over
    after = [g for g, a in gaps if a > hung_at + 7]
    assert after and max(after) < WATCHDOG_USEC / 1e6, gaps


def test_a_watcher_restarted_after_an_unclean_exit_pages_once_a_clean_restart_does_not(fleet, notify_socket):
    """Issue 15: "the watcher restarted by the service manager" is worth a page. The
    watcher runs as systemd would run it (``NOTIFY_SOCKET``, ``INVOCATION_ID``); it is
    killed (SIGKILL, as by the OOM killer or a watchdog timeout) and started again: one
    ``watcher_restarted`` page through a real Apprise URL, saying systemd started it. A
    clean stop (SIGTERM) and start pages nothing."""
    import json
    import os

    from ccci.testing.http_receiver import Receiver

    with Receiver() as receiver:
        fleet.cfg.path.write_text(fleet.cfg.path.read_text()
                                  + f'\n[notify]\nurls = ["json://127.0.0.1:{receiver.port}/hook"]\n')
        env = {**_env(notify_socket), "INVOCATION_ID": "0123456789abcdef0123456789abcdef"}
        first = fleet.watch("--quiet", env=env)
        assert notify_socket.read(lambda s: s.lines("READY=1"), 30), notify_socket.got
        pids = {a: fleet.live_pid(a) for a in fleet.AGENTS}
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        fleet.watch("--quiet", env={**env, "INVOCATION_ID": "fedcba9876543210fedcba9876543210"})
        assert fleet.wait(lambda: receiver.got, 30), fleet.events()
        [(method, path, body)] = receiver.got
        msg = json.loads(body)
        assert msg["title"] == f"[{fleet.cfg.name}] watcher restarted after an unclean exit", msg
        assert "a new one started by systemd" in msg["message"] and "adopted" in msg["message"], msg
        [ev] = fleet.events("watcher_restarted")
        assert ev["data"]["systemd"] is True and ev["data"]["previous_pid"] == first.pid, ev
        assert fleet.wait(lambda: len(fleet.events("agent_adopted")) >= 2, 20)
        assert {a: fleet.live_pid(a) for a in fleet.AGENTS} == pids  # adopted, not restarted
        # a clean stop and start: no page
        assert notify_socket.read(lambda s: len(s.lines("READY=1")) == 2, 20), notify_socket.got
        second = fleet.watchers[-1]
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
        fleet.watch("--quiet", env=env)
        assert notify_socket.read(lambda s: len(s.lines("READY=1")) == 3, 30), notify_socket.got
        time.sleep(2)  # the page would have been queued at the watcher_started event, before READY
        assert len(receiver.got) == 1, receiver.got
        assert len(fleet.events("watcher_started")) == 3 and len(fleet.events("watcher_restarted")) == 1
