"""Record golden screens of the real Codex CLI / Gemini CLI (not a test).

    PYTHONPATH=$PWD python tests/e2e/record_codexgemini.py codex  OUTDIR
    PYTHONPATH=$PWD python tests/e2e/record_codexgemini.py gemini OUTDIR

Runs the pinned CLI (installed under ``.cache/npm``; for Codex, ``$CCCI_CODEX_VERSION``
names another version, e.g. ``0.169.0``, installed under ``.cache/npm-codex-<version>``) in
a private tmux server (200x50), inside a fresh loopback-only network namespace, against the
scripted model server, and walks it through every state a supervisor must tell apart:
startup idle, unsent input, busy, idle after a reply, a shell tool call (commit + push),
HTTP 400, context limit, usage limit (429), rate limit (429) after the CLI's retries, a
hung server, exit, resume. Codex also: ``/compact`` after the context limit, and in the
resumed session the F2 warnings view and a 3000-character bracketed paste left unsent.
Each screen is ``tmux capture-pane -p -J`` (what ccci reads) saved as ``OUTDIR/NN_name.txt``
with ``OUTDIR/titles.txt`` listing the pane title at each capture. Labels are written by
hand into ``LABELS.toml`` after reading the screens.
Needs root (``ip netns``). Takes about 3 minutes per CLI.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from codexgemini_fixtures import CliSession, capture_to, ensure_cli  # noqa: E402

from ccci.testing.model_server import Fail, Text, ToolUse  # noqa: E402
from ccci.tmux import Tmux  # noqa: E402


def settle(s: CliSession, quiet: float = 2.0, timeout: float = 60.0) -> str:
    """Wait until the screen has not changed for ``quiet`` seconds (or ``timeout``)."""
    last, since, end = None, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < end:
        scr = s.screen()
        h = hashlib.sha1(scr.encode()).hexdigest()
        if h != last:
            last, since = h, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return scr
        time.sleep(0.2)
    return s.screen()


def main() -> int:
    kind, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    bin_path = ensure_cli(kind)
    ns = f"ccci-rec-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
    tmux = Tmux(socket_name=f"ccci-rec-{uuid.uuid4().hex[:6]}")
    titles: list[str] = []
    shell_tool = (ToolUse("exec_command", {"cmd": "git commit -q --allow-empty -m 'claim(e2e): recorded' && git push -q origin HEAD:main && echo pushed-ok"})
                  if kind == "codex" else
                  ToolUse("run_shell_command", {"command": "git commit -q --allow-empty -m 'claim(e2e): recorded' && git push -q origin HEAD:main && echo pushed-ok",
                                                "description": "commit and push"}))
    reset = int(time.time()) + 9000
    script = [
        Text("Hello from the scripted model. This reply streams slowly so the busy screen can be seen.",
             delay=0.25, chunk=3),
        shell_tool, Text("Committed and pushed."),
        Fail.thinking_400(),
        Fail.prompt_too_long(),
        Fail.hang(20), Text("Answer after the hung request."),
    ]
    if kind == "codex":
        script += [Fail.usage_limit(reset), Fail.rate_limit_429(repeat=None)]
    else:
        script += [Fail.usage_limit(reset, repeat=None)]
    try:
        with tempfile.TemporaryDirectory(prefix=f"rec-{kind}-") as tmp:
            s = CliSession(kind=kind, root=Path(tmp), name=f"rec-{kind}", tmux=tmux, netns=ns,
                           bin_path=bin_path, script=script, codex_retries=3)
            s.start_server()
            n = 0

            def cap(name: str, screen: str | None = None) -> None:
                nonlocal n
                n += 1
                scr = screen if screen is not None else s.screen()
                pane = s.pane()
                fname = f"{n:02d}_{name}.txt"
                capture_to(out / fname, scr)
                titles.append(f"{fname}\t{pane.title if pane else ''}\t{pane.current_command if pane else ''}")
                print(f"== {fname} (title {titles[-1].split(chr(9))[1]!r})\n{scr.rstrip()}\n", flush=True)

            def say(text: str) -> None:
                s.tmux.send_literal(s.pane_id, text)
                time.sleep(0.3)
                s.tmux.send_key(s.pane_id, "Enter")

            print("argv:", s.launch(), flush=True)
            cap("startup_idle", settle(s, 3.0))
            s.tmux.send_literal(s.pane_id, "please say hello slowly")
            time.sleep(1.0)
            cap("typed_not_submitted")
            s.tmux.send_key(s.pane_id, "Enter")
            time.sleep(4.0)
            cap("busy_streaming")
            cap("reply_finished_idle", settle(s))
            say("commit and push")
            cap("after_shell_tool_idle", settle(s, 3.0))
            say("trigger a 400")
            cap("http_400", settle(s, 3.0))
            say("trigger context limit")
            cap("context_limit", settle(s, 3.0, 90))
            if kind == "codex":  # a side call: takes no script step
                say("/compact")
                cap("compacted_after_context_limit", settle(s, 3.0, 90))
            say("trigger hang")
            time.sleep(6.0)
            cap("hung_server_busy")
            cap("after_hang", settle(s, 5.0, 150))
            say("trigger usage limit")
            time.sleep(3.0)
            cap("usage_limit_early")
            cap("usage_limit", settle(s, 5.0, 150))
            if kind == "codex":
                say("trigger rate limit")
                time.sleep(2.5)
                cap("rate_limit_retrying")
                cap("rate_limit_final", settle(s, 5.0, 150))
            else:
                s.tmux.send_key(s.pane_id, "Down")
                time.sleep(0.5)
                s.tmux.send_key(s.pane_id, "Enter")
                cap("usage_limit_stopped", settle(s, 3.0))
            say("/quit")
            time.sleep(4.0)
            cap("after_exit", settle(s, 2.0))
            s.launch(resume=True)
            cap("resumed_idle", settle(s, 4.0))
            if kind == "codex":
                s.tmux.send_key(s.pane_id, "F2")  # what "⚠ N warnings · f2 to view" lists
                cap("warnings_view", settle(s, 2.0))
                s.tmux.send_key(s.pane_id, "Escape")
                settle(s, 2.0)
                s.tmux.paste(s.pane_id, " ".join(f"w{i:05d}" for i in range(429))[:3000], Path(tmp))
                cap("pasted_draft_unsent", settle(s, 2.0))
            s.close()
    finally:
        tmux.kill_server()
        subprocess.run(["ip", "netns", "delete", ns])
        (out / "titles.txt").write_text("\n".join(titles) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
