"""``ccci status --watch`` in a real pty (pexpect): the table is drawn, redrawn as the
fleet changes, and Ctrl-C ends it cleanly (exit 0, no traceback)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pexpect
import pytest

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


def _status_watch(root, **kwargs) -> pexpect.spawn:
    """``ccci status --watch`` on the fleet at ``root`` in a 160x40 pty."""
    return pexpect.spawn(sys.executable, ["-m", "ccci", "--fleet", str(root), "status", "--watch", "--interval", "0.3"],
                         env={**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm"},
                         dimensions=(40, 160), timeout=30, encoding="utf-8",
                         codec_errors="replace", **kwargs)  # the tty echoes ^C between the bytes of a box character


def test_status_watch_refreshes_and_ends_on_ctrl_c(fleet):
    fleet.watch("--quiet")
    assert fleet.wait(lambda: all(fleet.live_pid(a) and fleet.idle(a) for a in fleet.AGENTS), 60), "fleet not up"
    child = _status_watch(fleet.root)
    try:
        child.expect("builder")
        child.expect("adversary")
        child.expect("running \\(pid")  # the watcher line of the title
        # a kill -9 shows up in a later frame: the builder restarted, its restart count 1
        new_pid = fleet.kill_and_wait_restart("builder")
        assert new_pid
        child.expect(str(new_pid), timeout=20)  # the new pid, drawn by the running command
        child.sendintr()  # Ctrl-C
        child.expect(pexpect.EOF, timeout=10)
    finally:
        if child.isalive():
            child.kill(signal.SIGKILL)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "Traceback" not in (child.before or "")


def test_ctrl_c_ends_status_watch_even_when_sigint_came_in_ignored(tmp_path):
    """A command started from a background job or a script inherits SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler: Ctrl-C did nothing (the CI
    rehearsals of 2026-12-07 ran `.ci/run` so). ``status --watch`` installs its own."""
    subprocess.run([sys.executable, "-m", "ccci", "init", str(tmp_path / "fl")], check=True, capture_output=True)
    child = _status_watch(tmp_path / "fl", preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        child.expect("builder")
        child.sendintr()
        child.expect(pexpect.EOF, timeout=10)
    finally:
        if child.isalive():
            child.kill(signal.SIGKILL)
    child.close()
    assert child.exitstatus == 0, child.before
