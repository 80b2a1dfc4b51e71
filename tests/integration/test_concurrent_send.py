"""Concurrent ``ccci send`` with no watcher running (a watcher restart, ``start --no-watch``):
each message is typed by exactly one process, once. The chaos soak (bench/soak.py) saw
four sends queued during a watcher restart each type every queued message: one token
reached its agent three times."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ccci.testing.fleet import typed_turns

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


def test_concurrent_sends_without_a_watcher_deliver_each_message_once(fleet):
    assert fleet.ccci("start", "--no-watch").returncode == 0
    assert fleet.wait(lambda: fleet.idle("adversary"), 30), fleet.screen("adversary")
    tokens = [f"conc-send-{i}" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-m", "ccci", "--fleet", str(fleet.root), "send", "adversary",
                               f"{t}: note this", "--timeout", "60"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=dict(os.environ)) for t in tokens]
    outs = [p.communicate(timeout=90)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    # every token started exactly one turn of the agent
    assert fleet.wait(lambda: all(typed_turns(fleet, "adversary", t) >= 1 for t in tokens), 30)
    assert {t: typed_turns(fleet, "adversary", t) for t in tokens} == {t: 1 for t in tokens}
    rows = [m for m in fleet.store.messages(100) if "conc-send-" in m["text"]]
    assert sorted(m["status"] for m in rows) == ["delivered"] * 4
