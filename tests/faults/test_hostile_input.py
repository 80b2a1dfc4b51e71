"""Scenario 10: hostile input.

* Commit subjects with ANSI escapes, control characters, tmux key names, ``$(...)``, a
  trailing ``;`` and invalid UTF-8 reach the other agent literally (escapes and control
  characters removed, invalid bytes as U+FFFD), never as keys or commands, and are never
  stored raw in the event log; a 10 KB message is pasted whole.
* A malformed ``ccci.toml`` stops ``ccci watch`` with one line naming the file and key.
* A 1 MB pane capture of garbage is classified in bounded time by every backend and
  every check (``ccci diagnose``'s path); the time is reported in docs/reliability.md.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from ccci.testing.fleet import push_commit, typed_turns

pytestmark = [pytest.mark.faults]

HOSTILE = "claim(x): \x1b[31mred\x1b[0m C-c Escape Enter $(touch /tmp/ccci-pwned) `id`\x07 ;"
INVALID_UTF8 = "claim(step 70): bad bytes \udcff\udcfe here, valid é ü, and C-c ;".encode("utf-8", "surrogateescape")


@pytest.mark.tmux
@pytest.mark.slow
def test_hostile_commit_subjects_are_delivered_literally(make_fleet, trials, tmp_path):
    t = trials("10", "Hostile input")
    fleet = make_fleet()
    fleet.watch("--quiet")
    assert fleet.wait(lambda: fleet.events("message_delivered", "builder"), 40)
    assert fleet.wait(lambda: fleet.settled(1.0), 40)
    sha = push_commit(fleet, tmp_path, HOSTILE)
    ev = fleet.wait(lambda: [e for e in fleet.events("message_delivered", "adversary") if "claim(x)" in e["message"]], 30)
    assert ev, "the ping with the hostile subject was not delivered"
    screen = fleet.wait(lambda: (s := fleet.screen("adversary")) and "C-c Escape Enter $(touch /tmp/ccci-pwned)" in s and s, 10)
    assert screen
    assert "\x1b" not in screen and "[31m" not in screen
    line = next(ln for ln in screen.splitlines() if ln.startswith("» ") and "C-c Escape" in ln)
    assert "red C-c Escape Enter $(touch /tmp/ccci-pwned) `id` ;" in line
    assert not os.path.exists("/tmp/ccci-pwned")
    assert typed_turns(fleet, "adversary", sha[:10]) == 1
    t.trial()
    t.check("subject with ANSI escapes, BEL, tmux key names, $(...), backticks and a trailing ';': typed "
            "literally (escapes removed), nothing executed, one turn")
    # invalid UTF-8 in the subject: delivered with U+FFFD, the watcher does not trip on it
    assert fleet.wait(lambda: fleet.settled(1.0), 40)
    sha = push_commit(fleet, tmp_path, INVALID_UTF8)
    assert fleet.wait(lambda: typed_turns(fleet, "adversary", sha[:10]) == 1, 30), "the invalid UTF-8 subject was not delivered"
    [msg] = [e for e in fleet.events("ping_queued") if e["data"].get("sha") == sha]
    assert msg["data"]["subject"] == "claim(step 70): bad bytes \ufffd\ufffd here, valid é ü, and C-c ;"
    assert not fleet.events("tick_error") and not fleet.events("plugin_error")
    t.trial()
    t.check("subject with invalid UTF-8: delivered once with U+FFFD, no tick or plugin error")
    # the event log never stores the escapes either (ccci events prints it on a terminal)
    assert not any("\x1b" in e["message"] or "\x07" in e["message"] for e in fleet.events())
    t.check("the event log never holds escape or control characters")
    # a 10 KB message is pasted whole, not cut
    text = "start " + "y" * 10_000 + " end"
    r = fleet.ccci("send", "builder", text, timeout=60)
    assert r.returncode == 0, r.stderr
    fleet.wait(lambda: False, 1.0)
    log = (fleet.cfg.state_dir / "logs" / "builder.log").read_text(errors="replace")
    assert "start " + "y" * 100 in log
    t.trial()
    t.check("a 10 KB message is pasted whole and submitted")


BAD_CONFIGS = {
    "syntax": ("[checks]\nstall_idle = \n", "checks.stall_idle"),
    "type": ("[checks]\nstall_idle = \"soon\"\n", "checks.stall_idle"),
    "unknown key": ("[checks]\nstall_idel = 3\n", "checks.stall_idel"),
    "bad role": ("[[agents]]\nname = \"a\"\nrole = \"lop\"\n", "agents[0].role"),
    "header": ("[fleet\nname = \"x\"\n", "fleet"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_malformed_config_is_one_line_naming_file_and_key(tmp_path, trials, case):
    t = trials("10", "Hostile input")
    text, key = BAD_CONFIGS[case]
    (tmp_path / "ccci.toml").write_text(text)
    r = subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(tmp_path), "watch", "--quiet"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(tmp_path / "ccci.toml") in lines[0] and f": {key}:" in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    t.trial()
    t.check("malformed ccci.toml (syntax, type, unknown key, bad value, broken header): ccci watch exits "
            "with one line naming the file and the key")


def _garbage(size: int, seed: int) -> str:
    rnd = random.Random(seed)
    parts, n = [], 0
    pieces = ["\x1b[31m", "\x1b]0;title\x07", "⠋ working… (", "WAITING-UNTIL: 99999", "API Error: ", "usage limit",
              "> ", "\r", "\t", "\x00", "─" * 300, "Context limit", "✓ turn done in ", "(esc to interrupt"]
    while n < size:
        if rnd.random() < 0.3:
            p = rnd.choice(pieces)
        else:
            p = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 400))).decode("utf-8", "replace")
        if rnd.random() < 0.05:
            p += "\n"
        parts.append(p)
        n += len(p)
    return "".join(parts)[:size]


def test_a_1mb_garbage_capture_is_classified_in_bounded_time(trials):
    from ccci.commands.diagnose import diagnose
    from ccci.plugins import collect_backends, get_plugin_manager

    t = trials("10", "Hostile input")
    pm = get_plugin_manager(environ={}, entrypoints=False)
    backends = sorted(collect_backends(pm))
    assert {"claude", "scripted"} <= set(backends)
    for seed, shape in ((1, "mixed"), (2, "one line")):
        screen = _garbage(1_000_000, seed)
        if shape == "one line":
            screen = screen.replace("\n", " ")
        for name in backends:
            t0 = time.monotonic()
            out = diagnose(pm, screen, name)
            took = time.monotonic() - t0
            assert isinstance(out["state"], str)
            t.trial()
            t.note(f"1 MB of garbage ({shape}), backend {name}: classified as {out['state']} in {took:.2f} s")
    t.check("a 1 MB garbage capture (random bytes, escapes, pattern fragments; many lines or one) is classified "
            "by every backend and every check, and the call returns")
