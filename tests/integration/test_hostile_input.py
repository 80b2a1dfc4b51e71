"""Hostile commit subjects reach the other agent literally: ANSI escapes and control
characters removed, tmux key names and a trailing ';' typed as text, never as keys or
commands; a 10 KB message is pasted, not cut."""
from __future__ import annotations

import time

import git
import pytest

pytestmark = [pytest.mark.tmux, pytest.mark.slow]

HOSTILE = "claim(x): \x1b[31mred\x1b[0m C-c Escape Enter $(touch /tmp/ccci-pwned) `id`\x07 ;"


def test_hostile_commit_subject_is_delivered_literally(fleet, tmp_path):
    fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.settled(), 40)
    scratch = git.Repo.clone_from(fleet.cfg.git.origin, tmp_path / "scratch")
    with scratch.config_writer() as cw:
        cw.set_value("user", "name", "mallory")
        cw.set_value("user", "email", "m@example.invalid")
    (tmp_path / "scratch" / "x.txt").write_text("x\n")
    scratch.index.add(["x.txt"])
    scratch.index.commit(HOSTILE)
    scratch.git.push("origin", "HEAD:main")
    ev = fleet.wait(lambda: [e for e in fleet.events("message_delivered", "adversary") if "claim(x)" in e["message"]], 30)
    assert ev, "the ping with the hostile subject was not delivered"
    screen = fleet.wait(lambda: (s := fleet.screen("adversary")) and "C-c Escape Enter $(touch /tmp/ccci-pwned)" in s and s, 10)
    assert screen
    assert "\x1b" not in screen and "[31m" not in screen
    line = next(ln for ln in screen.splitlines() if ln.startswith("» ") and "C-c Escape" in ln)
    assert "red C-c Escape Enter $(touch /tmp/ccci-pwned) `id` ;" in line
    import os

    assert not os.path.exists("/tmp/ccci-pwned")
    # and the event log never stores the escapes either (ccci events prints it on a terminal)
    assert not any("\x1b" in e["message"] or "\x07" in e["message"] for e in fleet.events())


def test_a_10kb_message_is_pasted_whole(fleet):
    fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.settled(), 40)
    text = "start " + "y" * 10_000 + " end"
    r = fleet.ccci("send", "builder", text, timeout=60)
    assert r.returncode == 0, r.stderr
    time.sleep(1)
    log = (fleet.cfg.state_dir / "logs" / "builder.log").read_text(errors="replace")
    assert "start " + "y" * 100 in log
