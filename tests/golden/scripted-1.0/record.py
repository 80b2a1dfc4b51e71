"""Record the scripted agent's screens into this directory (real tmux, 200x50).

Run: python tests/golden/scripted-1.0/record.py   (needs tmux and git)
Writes NN_name.txt captures; LABELS.toml holds the state each must read as.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ccci.tmux import Tmux

HERE = Path(__file__).parent


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    subprocess.run(["git", "init", "-q", str(tmp / "origin.git"), "--bare"], check=True)
    subprocess.run(["git", "clone", "-q", str(tmp / "origin.git"), str(tmp / "work")], check=True, capture_output=True)
    subprocess.run(["git", "-C", str(tmp / "work"), "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    subprocess.run(["git", "-C", str(tmp / "work"), "push", "-q", "origin", "HEAD:main"], check=True, capture_output=True)
    tmux = Tmux("ccci-record")
    control = tmp / "control"  # re-pointed per agent by start()

    def start(name: str, role: str, prompt: str = "", resume: bool = False) -> str:
        nonlocal control
        control = tmp / f"control-{name}"
        argv = [sys.executable, "-m", "ccci.backends.scripted.scripted_agent", "--name", name, "--role", role, "--conversation", name,
                "--state-dir", str(tmp / "conv"), "--workdir", str(tmp / "work"), "--control", str(control),
                "--turn-seconds", "3", "--wait-seconds", "600"] + (["--resume"] if resume else []) + ([prompt] if prompt else [])
        for other in "abcde":
            tmux.kill_session(other)
        return tmux.new_session(name, argv, tmp / "work", {}).pane_id

    def cap(pane: str, fname: str) -> None:
        (HERE / fname).write_text(tmux.capture([pane])[pane] + "\n")

    p = start("a", "builder")
    time.sleep(1)
    cap(p, "01_startup_idle.txt")
    tmux.send_literal(p, "implement the next item")
    time.sleep(0.5)
    cap(p, "02_typed_not_submitted.txt")
    tmux.send_key(p, "Enter")
    time.sleep(1.2)
    cap(p, "03_busy.txt")
    time.sleep(3)
    cap(p, "04_turn_done_waiting.txt")
    control.write_text("fatal")
    time.sleep(1)
    cap(p, "10_fatal_thinking_block.txt")
    tmux.send_literal(p, "try again")
    tmux.send_key(p, "Enter")
    time.sleep(4)
    cap(p, "11_fatal_repeats_every_turn.txt")
    p = start("b", "adversary")
    time.sleep(1)
    control.write_text("usage_limit:3600")
    time.sleep(1)
    cap(p, "12_usage_limit.txt")
    p = start("c", "adversary")
    time.sleep(1)
    control.write_text("context_limit")
    time.sleep(1)
    cap(p, "13_context_limit.txt")
    tmux.send_literal(p, "/compact")
    tmux.send_key(p, "Enter")
    time.sleep(2.5)
    cap(p, "14_compacted_old_limit_above.txt")
    p = start("d", "adversary")
    time.sleep(1)
    control.write_text("freeze")
    time.sleep(1.5)
    cap(p, "15_frozen_turn.txt")
    p = start("e", "adversary")
    time.sleep(1)
    control.write_text("exit")
    time.sleep(1.5)
    cap(p, "16_exited.txt")
    tmux.kill_server()


if __name__ == "__main__":
    main()
