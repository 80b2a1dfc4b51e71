"""The ``codex`` and ``gemini`` backends without the real CLIs: plugin registration, launch
and resume argv, session files, process recognition, and the pattern files' layout on
small screens cut from the golden captures (tests/golden/codex-0.169.0/,
tests/golden/gemini-0.61.0/; those, and tests/golden/codex-0.171.0/, are checked whole by
tests/test_golden_diagnose.py)."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from ccci.backends.codex import CodexBackend
from ccci.backends.gemini import GeminiBackend
from ccci.model import AgentSpec, AgentState, Role
from ccci.plugins import collect_backends, get_plugin_manager

pytestmark = pytest.mark.usefixtures("golden_zone")  # the recorded CLIs ran in UTC

CONFIG = SimpleNamespace(name="fleet")
CODEX_ID = "01a2023b-d217-7183-93d8-730de81570f0"


def spec(backend: str, tmp_path: Path, **kw) -> AgentSpec:
    kw.setdefault("env", {"HOME": str(tmp_path / "home")})
    return AgentSpec(name="a1", role=Role.LOOP, backend=backend, workdir=tmp_path / "work", **kw)


def write_rollout(home: Path, sid: str, cwd: Path, stamp: str = "2026-11-22T07-50-04") -> Path:
    day = home / ".codex" / "sessions" / "2026" / "11" / "22"
    day.mkdir(parents=True, exist_ok=True)
    path = day / f"rollout-{stamp}-{sid}.jsonl"
    meta = {"timestamp": "2026-11-22T07:50:04.647Z", "type": "session_meta",
            "payload": {"id": sid, "session_id": sid, "cwd": str(cwd), "timestamp": "2026-11-22T07:50:04.578Z"}}
    path.write_text(json.dumps(meta) + "\n")
    return path


# ------------------------------------------------------------------- registration


def test_both_are_builtin_plugins_registered_through_the_backend_hook(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no codex binary to ask: the pinned version's rules
    monkeypatch.delenv("CCCI_CODEX_VERSION", raising=False)
    pm = get_plugin_manager(environ={}, entrypoints=False)
    backends = collect_backends(pm)
    assert isinstance(backends["codex"], CodexBackend) and isinstance(backends["gemini"], GeminiBackend)
    assert {p.name: p.source for p in pm.describe()}["codex"] == "builtin"
    impls = {i.plugin_name for i in pm.hook.ccci_register_backends.get_hookimpls()}
    assert {"codex", "gemini", "claude", "scripted"} <= impls
    assert backends["codex"].patterns.version == "0.171.0" and backends["gemini"].patterns.version == "0.61.0"


def test_disabling_a_backend_plugin_removes_it():
    pm = get_plugin_manager(environ={"CCCI_DISABLE_PLUGINS": "gemini"}, entrypoints=False)
    assert "gemini" not in collect_backends(pm) and "codex" in collect_backends(pm)


# ------------------------------------------------------------------------ codex


def test_codex_fresh_launch_argv(tmp_path):
    plan = CodexBackend().launch(spec("codex", tmp_path, model="gpt-x"), CONFIG, "handle", False, "do the work")
    assert plan.argv == ["codex", "--dangerously-bypass-approvals-and-sandbox", "-m", "gpt-x", "--no-daemon",
                         "do the work"]
    assert plan.cwd == tmp_path / "work" and plan.env == {"HOME": str(tmp_path / "home")}


def test_codex_options_approval_sandbox_config_and_dash_prompt(tmp_path):
    s = spec("codex", tmp_path, options={"skip_permissions": False, "approval": "never", "sandbox": "workspace-write",
                                         "config": {"model_provider": "ccci", "request_max_retries": 2,
                                                    "tui": {"animations": False}},
                                         "no_daemon": False})
    plan = CodexBackend().launch(s, CONFIG, "h", False, "-rf is not an option")
    assert plan.argv == ["codex", "-a", "never", "-s", "workspace-write",
                         "-c", 'model_provider="ccci"', "-c", "request_max_retries=2",
                         "-c", "tui={animations = false}", "--", "-rf is not an option"]


def test_codex_resume_by_known_id_else_last_in_workdir(tmp_path):
    s = spec("codex", tmp_path)
    b = CodexBackend()
    # a ccci handle Codex never saw: resume the newest session in the workdir
    assert b.launch(s, CONFIG, "0f0e-handle", True, "").argv == [
        "codex", "resume", "--dangerously-bypass-approvals-and-sandbox", "--no-daemon", "--last"]
    write_rollout(tmp_path / "home", CODEX_ID, tmp_path / "work")
    assert b.known_session(s, CODEX_ID)
    assert not b.known_session(s, "*") and not b.known_session(s, "") and not b.known_session(s, "01a2023b-*")
    plan = b.launch(s, CONFIG, CODEX_ID, True, "ccci restarted this session")
    assert plan.argv == ["codex", "resume", "--dangerously-bypass-approvals-and-sandbox", "--no-daemon",
                         CODEX_ID, "ccci restarted this session"]
    assert plan.conversation_id == CODEX_ID


def test_codex_session_start_hook_is_installed_and_read_back_at_resume(tmp_path):
    b = CodexBackend()
    config = SimpleNamespace(name="fleet", state_dir=tmp_path / "state")
    s = spec("codex", tmp_path)
    argv = b.launch(s, config, "handle", False, "go").argv
    hook_file = tmp_path / "state" / "codex" / "a1.session-start.json"
    assert hook_file.parent.is_dir() and argv[-1] == "go"
    i = argv.index("--dangerously-bypass-hook-trust")
    assert argv[i + 1] == "-c" and argv[i + 2] == (
        'hooks.SessionStart=[{hooks = [{type = "command", command = "cat > '
        + str(hook_file) + '", timeout = 10}]}]')
    # no hook report yet: resume the newest session in the workdir
    assert b.launch(s, config, "handle", True, "").argv[-1] == "--last"
    # what Codex 0.169.0 writes to the hook's stdin (hooks/lifecycle.hooks.jsonl)
    hook_file.write_text(json.dumps({"session_id": CODEX_ID, "hook_event_name": "SessionStart", "source": "startup"}))
    assert b.hooked_session_id(config, "a1") == CODEX_ID
    assert b.launch(s, config, "handle", True, "").argv[-1] == "--last"  # id unknown to Codex: not trusted
    write_rollout(tmp_path / "home", CODEX_ID, tmp_path / "work")
    assert b.launch(s, config, "handle", True, "").argv[-1] == CODEX_ID
    off = spec("codex", tmp_path, options={"session_hook": False})
    assert "--dangerously-bypass-hook-trust" not in b.launch(off, config, "handle", False, "").argv
    hook_file.write_text("{broken")
    assert b.hooked_session_id(config, "a1") is None


def test_codex_home_prefers_codex_home_then_home(tmp_path):
    assert CodexBackend.codex_home(spec("codex", tmp_path)) == tmp_path / "home" / ".codex"
    s = spec("codex", tmp_path, env={"CODEX_HOME": str(tmp_path / "ch"), "HOME": "/nowhere"})
    assert CodexBackend.codex_home(s) == tmp_path / "ch"
    assert CodexBackend.codex_home(None, {"HOME": "/h"}) == Path("/h/.codex")


def test_codex_sessions_filtered_by_cwd_oldest_first(tmp_path):
    home = tmp_path / "home"
    other = "01a20241-cc66-71e0-b0b1-f584b43c0259"
    write_rollout(home, other, tmp_path / "work", stamp="2026-11-22T08-00-00")
    write_rollout(home, CODEX_ID, tmp_path / "work", stamp="2026-11-22T07-50-04")
    write_rollout(home, str(uuid.uuid4()), tmp_path / "elsewhere", stamp="2026-11-22T09-00-00")
    (home / ".codex" / "sessions" / "2026" / "11" / "22" / "notes.jsonl").write_text("{}\n")
    got = CodexBackend.sessions(home / ".codex", tmp_path / "work")
    assert [s.id for s in got] == [CODEX_ID, other]
    assert got[0].cwd == str(tmp_path / "work") and got[0].started == "2026-11-22T07:50:04.578Z"
    assert len(CodexBackend.sessions(home / ".codex")) == 3
    assert CodexBackend.sessions(tmp_path / "missing") == []


def test_codex_session_id_of_a_running_process_from_its_open_rollout(tmp_path):
    path = write_rollout(tmp_path / "home", CODEX_ID, tmp_path / "work")
    # a child process holding the rollout open, as the native codex does
    proc = subprocess.Popen([sys.executable, "-c", "import sys,time; f=open(sys.argv[1]); print('ok', flush=True); time.sleep(60)",
                             str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ok"
        assert CodexBackend.session_id_of_pid(proc.pid) == CODEX_ID
    finally:
        proc.kill()
        proc.wait()
    assert CodexBackend.session_id_of_pid(proc.pid) is None  # gone


@pytest.mark.parametrize("name,cmdline,expected", [
    ("node", ["node", "/x/.cache/npm/node_modules/.bin/codex", "--no-daemon"], True),
    ("codex", ["/x/vendor/bin/codex", "--dangerously-bypass-approvals-and-sandbox"], True),
    ("codex", ["/home/.codex/packages/bin/codex", "app-server", "--listen", "unix://"], False),
    ("node", ["node", "/x/bin/gemini"], False),
    ("bash", ["bash"], False),
])
def test_codex_is_agent_process(name, cmdline, expected):
    assert CodexBackend().is_agent_process(name, cmdline) is expected


# ----------------------------------------------------------------------- gemini


def test_gemini_fresh_and_resume_argv(tmp_path):
    sid = "11111111-2222-4333-8444-555555555555"
    b = GeminiBackend()
    plan = b.launch(spec("gemini", tmp_path, model="gemini-x"), CONFIG, sid.upper(), False, "start here")
    assert plan.argv == ["gemini", "--session-id", sid, "--yolo", "--skip-trust", "-m", "gemini-x", "start here"]
    assert plan.conversation_id == sid
    plan = b.launch(spec("gemini", tmp_path), CONFIG, sid, True, "")
    assert plan.argv == ["gemini", "--resume", sid, "--yolo", "--skip-trust"]
    s = spec("gemini", tmp_path, options={"skip_permissions": False, "approval_mode": "auto_edit", "skip_trust": False})
    assert b.launch(s, CONFIG, sid, False, "--help me").argv == [
        "gemini", "--session-id", sid, "--approval-mode", "auto_edit", "--", "--help me"]


def test_gemini_needs_a_uuid(tmp_path):
    with pytest.raises(ValueError, match="not a UUID.*new_conversation_id"):
        GeminiBackend().launch(spec("gemini", tmp_path), CONFIG, "not-an-id", False, "")
    assert uuid.UUID(GeminiBackend().new_conversation_id())


def test_gemini_sessions_read_the_header(tmp_path):
    home = tmp_path / "home" / ".gemini"
    chats = home / "tmp" / "proj" / "chats"
    chats.mkdir(parents=True)
    sid = "89529516-307d-4fea-bdcb-7b3de15a1958"
    (chats / "session-2026-11-22T07-53-89529516.jsonl").write_text(json.dumps(
        {"sessionId": sid, "startTime": "2026-11-22T07:53:44.498Z", "kind": "main"}) + "\n")
    (chats / "session-2026-11-22T07-54-deadbeef.jsonl").write_text("not json\n")
    got = GeminiBackend.sessions(home)
    assert [(s.id, s.project, s.started) for s in got] == [(sid, "proj", "2026-11-22T07:53:44.498Z")]
    assert GeminiBackend.gemini_home(spec("gemini", tmp_path)) == tmp_path / "home" / ".gemini"


@pytest.mark.parametrize("name,cmdline,expected", [
    ("node", ["node", "/x/node_modules/.bin/gemini", "--yolo"], True),
    ("node", ["/usr/bin/node", "--max-old-space-size=12052", "/x/node_modules/.bin/gemini", "--yolo"], True),
    ("gemini", ["gemini"], True),
    ("node", ["node", "/x/bin/codex"], False),
    ("node", ["node"], False),
])
def test_gemini_is_agent_process(name, cmdline, expected):
    assert GeminiBackend().is_agent_process(name, cmdline) is expected


# ------------------------------------------------------------------ screen layout


CODEX_IDLE = """\
› trigger a 400
■ {"error": {"message": "boom", "type": "invalid_request_error"}}

› Ask Codex to do anything

  scripted-model default · /tmp/proj · Scripted session
  ← for agents · ? for shortcuts
"""


def test_codex_placeholder_is_an_empty_box_and_old_errors_above_a_new_turn_do_not_count():
    b = CodexBackend()
    a = b.analyse(CODEX_IDLE)
    assert a.input_present and a.input_text == "" and a.state == AgentState.API_ERROR
    typed = CODEX_IDLE.replace("› Ask Codex to do anything", "› fix the bug please")
    a = b.analyse(typed)
    assert a.input_text == "fix the bug please" and a.state == AgentState.API_ERROR  # error is newest
    newer = CODEX_IDLE.replace("› Ask Codex to do anything",
                               "› next task\n\n• Done.\n\n› Ask Codex to do anything")
    assert b.analyse(newer).state == AgentState.IDLE
    assert b.analyse(newer.replace("› Ask Codex to do anything", "› draft")).state == AgentState.UNSENT_INPUT
    busy = newer.replace("• Done.", "◦ Working (12s • esc to interrupt)")
    assert b.analyse(busy).state == AgentState.BUSY
    assert b.analyse(newer, title="⠙ Scripted session | proj").state == AgentState.BUSY
    assert b.analyse(newer, title="Scripted session | proj").state == AgentState.IDLE


def test_codex_fingerprint_ignores_the_ticking_status_timer():
    b = CodexBackend()
    a1 = b.analyse(CODEX_IDLE.replace("■ {", "◦ Working (5s • esc to interrupt)\n■ {"))
    a2 = b.analyse(CODEX_IDLE.replace("■ {", "• Working (1m 05s • esc to interrupt)\n■ {"))
    assert a1.fingerprint == a2.fingerprint


GEMINI_IDLE = """\
 > commit please
✦ Committed.
                                                                     ? for shortcuts
────────────────────────────────────────────────────────────────────────────────
 YOLO Ctrl+Y
 *   Type your message or @path/to/file
 workspace (/directory)              branch             sandbox            /model
 /tmp/proj                           main               no sandbox         Auto
"""


def test_gemini_placeholder_typed_text_busy_and_title():
    b = GeminiBackend()
    a = b.analyse(GEMINI_IDLE)
    assert a.input_present and a.input_text == "" and a.state == AgentState.IDLE
    a = b.analyse(GEMINI_IDLE.replace(" *   Type your message or @path/to/file", " * run the tests"))
    assert a.state == AgentState.UNSENT_INPUT and a.input_text == "run the tests"
    busy = GEMINI_IDLE.replace("✦ Committed.", "✦ Commi\n ⠧ Thinking... (esc to cancel, 3s)")
    assert b.analyse(busy).state == AgentState.BUSY
    assert b.analyse(GEMINI_IDLE, title="✦  Working… (proj)").state == AgentState.BUSY
    assert b.analyse(GEMINI_IDLE, title="◇  Ready (proj)").state == AgentState.IDLE
    # default approval mode draws " > " for the box; the history turn above looks the same
    plain = GEMINI_IDLE.replace(" YOLO Ctrl+Y\n", "").replace(" *   Type", " >   Type")
    a = b.analyse(plain)
    assert a.input_present and a.input_text == "" and a.state == AgentState.IDLE


def test_gemini_error_only_in_the_newest_block():
    b = GeminiBackend()
    err = GEMINI_IDLE.replace("✦ Committed.", '✕ [API Error: {"error":{"code":400,"message":"The input token count '
                                               '(9) exceeds the maximum number of tokens allowed (8)."}}]')
    assert b.analyse(err).state == AgentState.CONTEXT_LIMIT
    later = err.replace("                                                                     ? for shortcuts",
                        " > go on\n✦ Fine now.")
    assert b.analyse(later).state == AgentState.IDLE
