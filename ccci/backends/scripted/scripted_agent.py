"""A small stand-in agent that behaves like an agent TUI in a tmux pane.

Run as ``python -m ccci.backends.scripted.scripted_agent --name builder --role builder ...`` (the
``scripted`` backend builds this command). It is what ``ccci demo`` and the
integration tests supervise, so that ccci can be exercised without a model:

* an input line ``> `` at the bottom when idle; typed text + Enter starts a turn;
* a busy indicator ``⠋ working… (3s)`` redrawn every second while a turn runs;
* a turn end ``✓ turn done in 2s`` followed by ``WAITING-UNTIL: <ISO-8601 UTC>``;
* real git work: as ``builder`` a turn commits ``claim(step N): ...`` and pushes it
  to origin (a turn prompted by a ``review(`` ping only reads the review); as ``adversary`` a turn whose prompt mentions ``claim(`` commits
  ``review(step N): ...`` and pushes;
* a self-wake when its declared ``WAITING-UNTIL`` passes (like a real loop);
* faults on cue, read from the control file (``--control``; the file is removed once
  read): ``exit`` (exit status 1), ``fatal`` (the Claude thinking-block 400 text, then
  every turn of this conversation fails the same way: only a fresh session fixes it),
  ``freeze`` (stop drawing and reading for good: a wedged process),
  ``usage_limit:SECONDS`` (usage limit until now+SECONDS), ``context_limit``
  (``/compact`` fixes it), ``oversleep`` (declare a wait of 2 s and never self-wake);
* ``--exit-after SECONDS``: exit (status 2) that long after every start: a crash loop;
* ``--tag TAG``: commit subjects read ``claim(TAG step N): ...`` (per-pair handoff rules,
  used by the chaos soak ``bench/soak.py``);
* ``--journal FILE``: append one JSON line per start and per turn (``{"t": epoch s,
  "agent", "pid", "conversation", "kind": "start"|"turn", "text"}``), the ground truth the
  soak compares ccci's records with (pings received, conversation writers).

Conversation state (step counter, poisoned flag) is kept in
``<state-dir>/<conversation>.json`` so ``--resume`` continues it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

UTC = timezone.utc
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
FATAL_TEXT = (
    "● API Error: 400 messages.1.content.0: `thinking` or `redacted_thinking` blocks in the "
    "latest assistant message cannot be modified. These blocks must remain as they were in "
    "the original response."
)
VERSION = "1.0"
# a ping names a real commit ("claim(step 3)"); the role prompts' "claim(...)" does not
CLAIM_REF = re.compile(r"\bclaim\((?!\.\.\.)[^)]+\)")
REVIEW_REF = re.compile(r"\breview\((?!\.\.\.)[^)]+\)")


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ScriptedAgent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state_dir = Path(args.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.conv_file = self.state_dir / f"{args.conversation}.json"
        self.conv = {"step": 0, "poisoned": False, "turns": 0}
        if args.resume and self.conv_file.exists():
            self.conv.update(json.loads(self.conv_file.read_text()))
        self.control = Path(args.control) if args.control else None
        self.wait_until: datetime | None = None
        self.usage_reset: datetime | None = None
        self.context_full = False
        self.no_self_wake = False
        self.at_prompt = False

    def journal(self, kind: str, text: str = "") -> None:
        if not self.args.journal:
            return
        line = json.dumps({"t": time.time(), "agent": self.args.name, "pid": os.getpid(),
                           "conversation": self.args.conversation, "kind": kind, "text": text}) + "\n"
        try:  # one write(2) with O_APPEND: lines of concurrent agents never interleave
            fd = os.open(self.args.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError:
            pass

    # ------------------------------------------------------------------ output
    def out(self, text: str = "") -> None:
        if self.at_prompt:  # output that interrupts the idle prompt starts on a new line
            sys.stdout.write("\n")
            self.at_prompt = False
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def save(self) -> None:
        tmp = self.conv_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.conv))
            os.replace(tmp, self.conv_file)
        except OSError as exc:  # a full disk: a real CLI reports it and goes on
            self.out(f"● could not save the conversation: {exc.strerror or exc}")

    # ------------------------------------------------------------------ faults
    def poll_control(self) -> None:
        if self.control is None or not self.control.exists():
            return
        try:
            fault = self.control.read_text().strip()
            self.control.unlink()
        except OSError:
            return
        if fault == "exit":
            self.out("✗ scripted fault: exiting")
            sys.exit(1)
        if fault == "freeze":
            # a turn that wedges: the busy line is drawn once and never again (like a
            # hung tool call), and nothing is read from the keyboard
            self.out("» (working on the next item)")
            sys.stdout.write(f"{SPINNER[0]} working… (0s)")
            sys.stdout.flush()
            while True:
                time.sleep(3600)
        if fault == "fatal":
            self.conv["poisoned"] = True
            self.save()
            self.out(FATAL_TEXT)
            self.end_turn_marker(0)
        elif fault.startswith("usage_limit"):
            secs = int(fault.split(":", 1)[1]) if ":" in fault else 30
            self.usage_reset = datetime.now(UTC) + timedelta(seconds=secs)
            self.print_usage_limit()
        elif fault == "context_limit":
            self.context_full = True
            self.out("⎿  Context limit reached · /compact or /clear to continue")
            self.end_turn_marker(0)
        elif fault == "oversleep":
            self.no_self_wake = True
            self.declare_wait(2)
        self.prompt()

    def print_usage_limit(self) -> None:
        assert self.usage_reset is not None
        epoch = int(self.usage_reset.timestamp())
        self.out(f"● API Error: Request rejected (429) · usage limit reached|{epoch} (resets {_iso(self.usage_reset)})")
        self.end_turn_marker(0)

    # ------------------------------------------------------------------ turns
    def end_turn_marker(self, seconds: int) -> None:
        self.out(f"✓ turn done in {seconds}s")

    def declare_wait(self, seconds: float) -> None:
        self.wait_until = datetime.now(UTC) + timedelta(seconds=seconds)
        self.out(f"WAITING-UNTIL: {_iso(self.wait_until)}")

    def prompt(self) -> None:
        self.out("─" * 40)
        sys.stdout.write("> ")
        sys.stdout.flush()
        self.at_prompt = True

    def busy(self, seconds: float) -> None:
        start = time.monotonic()
        i = 0
        while True:
            elapsed = time.monotonic() - start
            sys.stdout.write(f"\r\x1b[K{SPINNER[i % len(SPINNER)]} working… ({int(elapsed)}s)")
            sys.stdout.flush()
            if elapsed >= seconds:
                break
            i += 1
            self.poll_control_busy()
            time.sleep(min(0.5, max(0.05, seconds - elapsed)))
        sys.stdout.write("\r\x1b[K")
        sys.stdout.flush()

    def poll_control_busy(self) -> None:
        # faults that act mid-turn: exit and freeze
        if self.control is None or not self.control.exists():
            return
        fault = self.control.read_text().strip()
        if fault in ("exit", "freeze"):
            self.poll_control()

    def turn(self, text: str) -> None:
        self.journal("turn", text)
        self.out(f"» {text[:150]}")
        self.conv["turns"] += 1
        self.wait_until = None
        now = datetime.now(UTC)
        if self.usage_reset and now < self.usage_reset:
            self.print_usage_limit()
            return
        self.usage_reset = None
        if text.strip() == "/compact":
            self.busy(1)
            self.context_full = False
            self.out("✻ Conversation compacted")
            self.end_turn_marker(1)
            self.declare_wait(self.args.wait_seconds)
            return
        if self.context_full:
            self.out("⎿  Context limit reached · /compact or /clear to continue")
            self.end_turn_marker(0)
            return
        self.busy(self.args.turn_seconds)
        if self.conv["poisoned"]:
            self.out(FATAL_TEXT)
            self.end_turn_marker(0)
            return
        role = self.args.role
        if role == "builder" and REVIEW_REF.search(text) and not (self.args.done_after and not self.conv.get("done")):
            self.out("● Read the review; nothing to fix. Next item after my wait.")
        elif role == "builder":
            self.git_step("claim", "implemented the next backlog item")
            phase = os.environ.get("CCCI_PHASE", "")
            if self.args.done_after and phase and self.conv["step"] >= self.args.done_after and not self.conv.get("done"):
                self.conv["done"] = True
                self.save()
                (Path(self.args.workdir) / f"STATUS-{phase}.md").write_text(f"# Status of phase {phase}\n\n## DONE\n")
                self.git_step("claim", f"phase {phase} complete", extra=[f"STATUS-{phase}.md"])
        elif role == "adversary" and CLAIM_REF.search(text):
            self.git_step("review", "verified the claim, looks right")
        else:
            self.out("● Nothing to do this turn.")
        self.end_turn_marker(int(self.args.turn_seconds))
        self.declare_wait(self.args.wait_seconds)

    def git_step(self, kind: str, what: str, extra: list[str] | None = None) -> None:
        import git  # GitPython

        # never let git open an editor or ask for credentials in the pane
        os.environ.update(GIT_EDITOR="true", GIT_TERMINAL_PROMPT="0", GIT_MERGE_AUTOEDIT="no")
        gitdir = Path(self.args.workdir) / ".git"
        (gitdir / "index.lock").unlink(missing_ok=True)  # left by a killed predecessor
        for leftover in ("rebase-merge", "rebase-apply"):
            if (gitdir / leftover).exists():
                try:
                    git.Repo(self.args.workdir).git.rebase("--abort")
                except git.GitCommandError:
                    pass
        self.conv["step"] += 1
        self.save()
        step = self.conv["step"]
        try:
            repo = git.Repo(self.args.workdir)
            path = Path(self.args.workdir) / f"{self.args.name}-{kind}-{step}.txt"
            path.write_text(f"{kind} step {step} by {self.args.name} at {_iso(datetime.now(UTC))}\n")
            repo.index.add([str(path)] + [str(Path(self.args.workdir) / e) for e in (extra or [])])
            tag = f"{self.args.tag} " if self.args.tag else ""
            subject = f"{kind}({tag}step {step}): {what}"
            commit = repo.index.commit(subject)
            branch = repo.active_branch.name
            for _attempt in range(5):
                try:
                    repo.git.pull("--rebase", "--quiet", "origin", branch)
                except git.GitCommandError:
                    pass
                try:
                    repo.git.push("--quiet", "origin", f"HEAD:{branch}")
                    break
                except git.GitCommandError:
                    time.sleep(0.3)
            self.out(f"● {subject}")
            self.out(f"  pushed {repo.head.commit.hexsha[:10]} (was {commit.hexsha[:10]}) to origin/{branch}")
        except Exception as exc:  # an agent reports tool failures on screen and goes on
            self.out(f"● git failed: {str(exc).splitlines()[0][:150]}")

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        self.journal("start")
        self.out(f"scripted-agent {VERSION} · {self.args.name} ({self.args.role}) · conversation {self.args.conversation}")
        if self.args.resume:
            self.out(f"resumed conversation {self.args.conversation} at step {self.conv['step']}")
        self.save()
        if self.args.prompt:
            self.turn(self.args.prompt)
        self.prompt()
        while True:
            self.poll_control()
            ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            if ready:
                line = sys.stdin.readline()
                if line == "":  # EOF: terminal gone
                    return
                text = line.rstrip("\n")
                self.at_prompt = False  # the tty echoed the line and its newline
                if text.strip():
                    self.turn(text)
                    self.prompt()
                continue
            if (
                self.wait_until is not None
                and not self.no_self_wake
                and datetime.now(UTC) >= self.wait_until
            ):
                self.wait_until = None
                self.out("")
                self.turn("self-wake: the declared wait is over; continue the loop")
                self.prompt()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ccci-scripted-agent")
    p.add_argument("--name", required=True)
    p.add_argument("--role", default="builder", help="builder | adversary | other")
    p.add_argument("--conversation", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--workdir", default=".")
    p.add_argument("--control", default="")
    p.add_argument("--turn-seconds", type=float, default=2.0)
    p.add_argument("--wait-seconds", type=float, default=600.0)
    p.add_argument("--done-after", type=int, default=0,
                   help="builder: after N claims write '## DONE' in STATUS-$CCCI_PHASE.md")
    p.add_argument("--exit-after", type=float, default=0.0,
                   help="exit with status 2 this many seconds after every start (a crash loop); 0 = never")
    p.add_argument("--tag", default="", help="commit subjects read 'claim(TAG step N): ...'")
    p.add_argument("--journal", default="", help="append a JSON line per start and per turn to this file")
    p.add_argument("prompt", nargs="?", default="")
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the pane must not kill the agent
    if args.exit_after > 0:
        def _crash(signum, frame):
            sys.stdout.write(f"\n✗ scripted fault: exiting {args.exit_after:g}s after start\n")
            sys.stdout.flush()
            os._exit(2)

        signal.signal(signal.SIGALRM, _crash)
        signal.setitimer(signal.ITIMER_REAL, args.exit_after)
    ScriptedAgent(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
