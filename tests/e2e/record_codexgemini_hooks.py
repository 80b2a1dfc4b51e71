"""Record which lifecycle hooks the real Codex CLI / Gemini CLI fire offline (not a test).

    PYTHONPATH=$PWD python tests/e2e/record_codexgemini_hooks.py codex  OUTDIR
    PYTHONPATH=$PWD python tests/e2e/record_codexgemini_hooks.py gemini OUTDIR

Installs a command hook for every event (Codex: ``~/.codex/hooks.json`` and
``--dangerously-bypass-hook-trust``; Gemini: ``hooksConfig.enabled`` and ``hooks`` in
``~/.gemini/settings.json``) that appends the hook's stdin JSON (plus ``_event`` and
``_received``, unix seconds) to ``OUTDIR/hooks.jsonl``, then runs four turns against the
scripted model server (text, a shell tool call, a thinking-block 400, a usage-limit 429) and
``/quit``. ``tests/golden/<cli>/hooks/lifecycle.hooks.jsonl`` came from this. Needs root.
For Codex, ``$CCCI_CODEX_VERSION`` picks the version (default the pin).
"""
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from codexgemini_fixtures import CliSession, ensure_cli
from ccci.testing.model_server import Fail, Text, ToolUse
from ccci.tmux import Tmux

kind = sys.argv[1]; out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
spool = out / "hooks.jsonl"; spool.unlink(missing_ok=True)
EVENTS = {"codex": ["SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "PermissionRequest", "Stop", "PreCompact", "PostCompact"],
          "gemini": ["SessionStart", "SessionEnd", "BeforeAgent", "AfterAgent", "BeforeModel", "AfterModel", "BeforeTool", "AfterTool", "Notification", "PreCompress"]}[kind]
def cmd(ev):
    return f"python3 -c \"import sys,json,time; d=json.load(sys.stdin); d['_received']=time.time(); d['_event']='{ev}'; open('{spool}','a').write(json.dumps(d)+chr(10))\""

class S(CliSession):
    def spec(self):
        sp = super().spec()
        if self.kind == "codex":  # only the hooks.json below: not ccci's own -c hooks.SessionStart
            sp = dataclasses.replace(sp, options={**(sp.options or {}), "session_hook": False})
        return sp

    def prepare_home(self):
        super().prepare_home()
        if self.kind == "codex":
            hooks = {"hooks": {ev: [{"hooks": [{"type": "command", "command": cmd(ev), "timeout": 10}]}] for ev in EVENTS}}
            for ev in ("PreToolUse", "PostToolUse", "PermissionRequest"):
                hooks["hooks"][ev][0]["matcher"] = ".*"
            (self.home / ".codex" / "hooks.json").write_text(json.dumps(hooks, indent=1))
        else:
            p = self.home / ".gemini" / "settings.json"
            st = json.loads(p.read_text())
            st["hooksConfig"] = {"enabled": True}
            st["hooks"] = {ev: [{"matcher": "*", "hooks": [{"name": ev.lower(), "type": "command", "command": cmd(ev), "timeout": 10000}]}] for ev in EVENTS}
            p.write_text(json.dumps(st, indent=1))

bin_path = ensure_cli(kind)
ns = f"cgx-hooks-{os.getpid()}"
subprocess.run(["ip", "netns", "add", ns], check=True); subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
tmux = Tmux(socket_name=f"cgx-hooks-{uuid.uuid4().hex[:6]}")
tool = ToolUse("exec_command", {"cmd": "echo tool-ok"}) if kind == "codex" else ToolUse("run_shell_command", {"command": "echo tool-ok"})
tmp = tempfile.mkdtemp(prefix="hk-")
s = S(kind=kind, root=Path(tmp), name="hk", tmux=tmux, netns=ns, bin_path=bin_path,
      script=[Text("hello"), tool, Text("done"), Fail.thinking_400(), Fail.usage_limit(int(time.time())+3600, repeat=None if kind=="gemini" else 1)])
s.start_server()
if kind == "codex":
    orig = s.backend.launch
    def launch(*a, **k):
        plan = orig(*a, **k)
        if "--dangerously-bypass-hook-trust" not in plan.argv:
            plan.argv.insert(1, "--dangerously-bypass-hook-trust")
        return plan
    s.backend.launch = launch
s.launch()
def say(t, wait=6):
    s.tmux.send_literal(s.pane_id, t); time.sleep(0.3); s.tmux.send_key(s.pane_id, "Enter"); time.sleep(wait)
time.sleep(6)
marks = []
for t in ("hi", "run the tool", "trigger 400", "trigger usage"):
    marks.append((t, time.time())); say(t)
print(s.screen()[-2500:])
if kind == "gemini":
    s.tmux.send_key(s.pane_id, "Down"); time.sleep(0.3); s.tmux.send_key(s.pane_id, "Enter"); time.sleep(3)
marks.append(("/quit", time.time())); say("/quit", 4)
print(s.screen()[-800:])
s.close(); tmux.kill_server(); subprocess.run(["ip", "netns", "delete", ns])
(out / "marks.json").write_text(json.dumps(marks))
for ln in spool.read_text().splitlines() if spool.exists() else []:
    d = json.loads(ln); print(d["_event"], {k: (str(v)[:80]) for k, v in d.items() if k not in ("_event",)})
