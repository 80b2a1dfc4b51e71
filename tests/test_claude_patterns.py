"""Claude Code 2.1.197 screens: pattern rules against the golden captures, and launch argv."""
from __future__ import annotations

import tomllib
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from ccci import patterns as patterns_mod
from ccci.backends.claude import ClaudeBackend, ccci_register_backends
from ccci.model import AgentSpec, AgentState, Role

GOLDEN = Path(__file__).parent / "golden" / "claude-2.1.197"
LABELS = tomllib.loads((GOLDEN / "LABELS.toml").read_text(encoding="utf-8"))
#: screens recorded from the real CLI by tests/e2e/test_claude_real.py (CCCI_E2E_RECORD=1)
RECORDED = GOLDEN.parent / "claude-2.1.197-recorded"
RECORDED_LABELS = tomllib.loads((RECORDED / "LABELS.toml").read_text(encoding="utf-8"))
PATTERN_FILE = Path(patterns_mod.__file__).parent / "patterns" / "claude-2.1.197.toml"
NBSP = "\xa0"


def _screen(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


@pytest.fixture(scope="module")
def backend() -> ClaudeBackend:
    # these screens are 2.1.197's: read them with its rules whatever `claude --version` on
    # PATH says (the backend picks the rules of the installed CLI; 2.1.332's screens:
    # tests/test_claude_patterns_332.py)
    return ClaudeBackend(cli_version="2.1.197")


# --------------------------------------------------------------------------- golden captures


def test_every_label_has_a_capture_and_states_are_valid():
    assert len(LABELS) >= 20
    for name, label in LABELS.items():
        assert (GOLDEN / name).is_file(), name
        AgentState(label["state"])  # raises on a typo in LABELS.toml


@pytest.mark.parametrize("name", sorted(LABELS))
def test_golden_capture(backend, name):
    label = LABELS[name]
    analysis = backend.analyse(_screen(name), "", _utc(label["now"]) if label.get("now") else None)
    assert analysis.state == AgentState(label["state"]), (
        f"{name}: got {analysis.state.value}, matches={[(m.rule, m.line) for m in analysis.matches]}"
    )
    if "reset_at" in label:
        assert analysis.reset_at == _utc(label["reset_at"])
    else:
        assert analysis.reset_at is None
    if analysis.state != AgentState.UNKNOWN:
        assert analysis.fingerprint


@pytest.mark.parametrize("name", sorted(RECORDED_LABELS))
def test_recorded_captures_read_as_labelled(backend, name, request):
    """The screens recorded by tests/e2e/test_claude_real.py (``claude-2.1.197-recorded/``)
    read as labelled, through ``analyse()`` with the label's title and capture time
    (tests/test_golden_diagnose.py checks the same files through ``ccci diagnose``). A
    label with ``known_gap`` is what ccci should conclude but the pattern file does not
    yet: it is an expected failure (strict, so a fix in the patterns shows up as XPASS)."""
    label = RECORDED_LABELS[name]
    if label.get("known_gap"):
        request.applymarker(pytest.mark.xfail(reason=label["known_gap"], strict=True))
    screen = (RECORDED / name).read_text(encoding="utf-8")
    now = _utc(label["now"]) if label.get("now") else None
    an = backend.analyse(screen, label.get("title", ""), now)
    assert an.state.value == label["state"], name
    expected = label.get("reset_at")
    got = an.reset_at.strftime("%Y-%m-%dT%H:%M:%SZ") if an.reset_at else None
    assert got == expected, name


def test_backend_uses_the_2_1_197_pattern_file(backend):
    assert backend.patterns.backend == "claude"
    assert backend.patterns.version == "2.1.197"


# --------------------------------------------------------------------------- details


def test_input_box_text_is_read(backend):
    assert backend.analyse(_screen("02_prompt_typed_not_submitted.txt")).input_text == "hello"
    long = backend.analyse(_screen("20_long_msg_typed_no_enter.txt")).input_text
    assert long.startswith("TOKmanual1 Please review")
    assert long.endswith("sed do eiusmod tempor")  # continuation lines up to the border
    pasted = backend.analyse(_screen("23_enter_swallowed_3000_same_call_pasted.txt"))
    assert pasted.input_text == "[Pasted text #74 +1 lines]"
    assert pasted.matches[0].rule == "claude.unsent_input.pasted"
    # a submitted turn ("❯ hello" in the history) is not input
    assert backend.analyse(_screen("04_reply_finished_idle.txt")).input_text == ""


def test_fatal_error_evidence(backend):
    a = backend.analyse(_screen("10_err_a_thinking400_t1.txt"))
    m = a.first(AgentState.FATAL_ERROR)
    assert m is not None and m.rule == "claude.fatal.thinking_block"
    assert m.line.startswith("● API Error: 400")
    assert "Claude Code 2.1.197" in m.source


def test_usage_limit_retry_screen_gives_the_reset_in_the_local_zone(backend, monkeypatch):
    now = _utc("2026-11-22T02:30:00Z")
    a = backend.analyse(_screen("14_err_c2_429_usage_limit_t2.txt"), "", now)
    m = a.first(AgentState.USAGE_LIMIT)
    assert m.rule == "claude.usage_limit.retrying"
    assert m.groups["limit"] == "Session limit"
    assert m.groups["reset_local"] == "4:51am"
    # a clock time without a date or zone: the next 4:51 in the CLI's zone, which is ccci's
    assert a.reset_at == _utc("2026-11-22T04:51:00Z")
    monkeypatch.setenv("TZ", "Europe/Paris")  # UTC+1 in November: 4:51 Paris is 3:51Z
    assert backend.analyse(_screen("14_err_c2_429_usage_limit_t2.txt"), "", now).reset_at == _utc("2026-11-22T03:51:00Z")


def test_usage_limit_retry_line_with_epoch_sets_reset_at(backend):
    text = _screen("14_err_c2_429_usage_limit_t2.txt").replace(
        "attempt 1/10", "attempt 1/10 · Claude AI usage limit reached|1795323116"
    )
    a = backend.analyse(text)
    assert a.state == AgentState.USAGE_LIMIT
    assert a.reset_at == datetime(2026, 11, 22, 4, 51, 56, tzinfo=timezone.utc)


def test_usage_limit_final_reset_time_from_epoch(backend):
    a = backend.analyse(_screen("17_usage_limit_final_derived.txt"))
    assert a.state == AgentState.USAGE_LIMIT
    assert a.first(AgentState.USAGE_LIMIT).groups["reset_epoch"] == "1795323116"
    assert a.reset_at == datetime(2026, 11, 22, 4, 51, 56, tzinfo=timezone.utc)


def test_old_usage_limit_above_a_newer_turn_is_ignored(backend):
    # 16: the usage-limit error with its epoch is two blocks up; the newest turn is busy
    a = backend.analyse(_screen("16_err_e_hang_t30.txt"))
    assert a.state == AgentState.BUSY
    assert a.first(AgentState.USAGE_LIMIT) is None
    assert a.reset_at is None


def test_exit_hint_gives_session_id(backend):
    a = backend.analyse(_screen("42_after_slash_exit.txt"))
    assert a.matches[0].rule == "claude.exited.resume_hint"
    assert a.matches[0].groups["session_id"] == "70561c5c-809c-4421-9bd4-4b4c1a66b486"


def test_title_spinner_means_busy(backend):
    idle = _screen("04_reply_finished_idle.txt")
    assert backend.analyse(idle, title="✳ Claude Code").state == AgentState.IDLE
    assert backend.analyse(idle, title="⠐ Claude Code").state == AgentState.BUSY


def test_bypass_permissions_footer_is_not_busy(backend):
    a = backend.analyse(_screen("05_skip_permissions_startup_and_early_input.txt"))
    assert a.state == AgentState.IDLE
    assert a.matches == []
    busy = _screen("05_skip_permissions_startup_and_early_input.txt").replace(
        "(shift+tab to cycle) · ← for agents", "(shift+tab to cycle) · esc to interrupt"
    )
    assert backend.analyse(busy).state == AgentState.BUSY


# --------------------------------------------------------------------------- newest block


def _replace_block(screen: str, marker: str, new_lines: list[str]) -> str:
    """Replace everything from the last line starting with ``marker`` down to (not
    including) the input box's top border with ``new_lines``."""
    lines = screen.split("\n")
    start = max(i for i, ln in enumerate(lines) if ln.startswith(marker))
    box = next(i for i, ln in enumerate(lines) if ln.startswith("❯" + NBSP) or ln == "❯")
    border = box - 1
    assert lines[border].startswith("───")
    return "\n".join(lines[:start] + new_lines + lines[border:])


def test_old_fatal_error_above_newer_successful_turn_reads_idle(backend):
    fatal = _screen("10_err_a_thinking400_t1.txt")
    assert backend.analyse(fatal).state == AgentState.FATAL_ERROR
    # the same screen after a fresh turn succeeded below the error
    later = fatal.replace(
        "✻ Baked for 0s\n",
        "✻ Baked for 0s\n\n❯ try again\n\n● Done: all tests pass.\n\n✻ Worked for 3s\n",
    )
    assert later != fatal
    a = backend.analyse(later)
    assert "API Error: 400" in later  # the old error is still on screen...
    assert a.state == AgentState.IDLE  # ...but only the newest block counts
    assert a.first(AgentState.FATAL_ERROR) is None


def test_old_context_limit_and_api_error_above_busy_turn(backend):
    # 13_err_c_429_final ends in an API error; a new turn below it is busy
    text = _replace_block(
        _screen("13_err_c_429_final.txt"),
        "✻ Worked for 3m 21s",
        ["✻ Worked for 3m 21s", "", "❯ next task", "", "✻ Pondering… (12s · ↓ 240 tokens)", ""],
    ).replace("? for shortcuts", "esc to interrupt")
    a = backend.analyse(text)
    assert a.state == AgentState.BUSY
    assert {m.state for m in a.matches} == {AgentState.BUSY}


def test_model_reply_quoting_dialog_text_is_not_a_dialog(backend):
    text = _replace_block(
        _screen("04_reply_finished_idle.txt"),
        "❯ hello",
        ["❯ hello", "", "● I will delete the build dir. Do you want to proceed?", "  ❯ 1. Yes", "",
         "✻ Worked for 1s", ""],
    )
    assert backend.analyse(text).state == AgentState.IDLE


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_ignores_timer_tokens_and_spinner_glyph(backend):
    a = backend.analyse(_screen("03_busy_1.txt"))  # ✻ Composing… (0s · ↓ 3 tokens)
    b = backend.analyse(_screen("03_busy_3.txt"))  # ✢ Composing… (1s · ↓ 11 tokens)
    assert _screen("03_busy_1.txt") != _screen("03_busy_3.txt")
    assert a.fingerprint == b.fingerprint
    hung = _screen("16_err_e_hang_t30.txt")
    later = hung.replace("* Brewing… (30s)", "✶ Brewing… (3m 50s)")
    assert backend.analyse(hung).fingerprint == backend.analyse(later).fingerprint


def test_fingerprint_sees_real_changes(backend):
    busy = backend.analyse(_screen("03_busy_1.txt"))
    idle = backend.analyse(_screen("04_reply_finished_idle.txt"))
    assert busy.fingerprint != idle.fingerprint
    retry1 = _screen("13_err_c_429_t5.txt")
    retry2 = retry1.replace("attempt 1/10", "attempt 2/10")
    assert backend.analyse(retry1).fingerprint != backend.analyse(retry2).fingerprint


# --------------------------------------------------------------------------- rule hygiene


def test_every_rule_has_a_source_naming_the_version():
    data = tomllib.loads(PATTERN_FILE.read_text(encoding="utf-8"))
    assert data["meta"]["backend"] == "claude" and data["meta"]["version"] == "2.1.197"
    ids = [r["id"] for r in data["rules"]]
    assert len(ids) == len(set(ids)), "duplicate rule ids"
    for rule in data["rules"]:
        src = rule.get("source", "")
        assert len(src) > 30, rule["id"]
        assert "2.1.197" in src or "tmux" in src, rule["id"]
        assert rule["id"].startswith("claude."), rule["id"]
    ps = patterns_mod.PatternSet.load(PATTERN_FILE)
    assert all(r.source for r in ps.rules)


def test_every_rule_fires_on_some_screen_or_is_documented_extra(backend):
    fired = set()
    for name in LABELS:
        fired |= {m.rule for m in backend.analyse(_screen(name)).matches}
    fired |= {m.rule for m in backend.analyse(_screen("04_reply_finished_idle.txt"), title="⠐ Claude Code").matches}
    for name in RECORDED_LABELS:
        fired |= {m.rule for m in backend.analyse((RECORDED / name).read_text(encoding="utf-8")).matches}
    # rules for screens the captures do not show at the bottom (documented in docs/agent-clis.md)
    extra = {"claude.exited.pane_dead_no_box", "claude.exited.root_refused"}  # resume_hint_no_box: recorded 16
    assert {r.id for r in backend.patterns.rules} - fired == extra


def test_input_box_condition_validated():
    with pytest.raises(patterns_mod.PatternError, match="input_box"):
        patterns_mod.PatternSet.from_dict(
            {"rules": [{"id": "x", "state": "idle", "regex": "a", "input_box": "maybe"}]}, "test"
        )


def test_dialog_rules_need_no_input_box(backend):
    dialog_rules = [r for r in backend.patterns.rules if r.state == AgentState.WAITING_INPUT]
    assert dialog_rules and all(r.input_box == "absent" for r in dialog_rules)


# --------------------------------------------------------------------------- launch


def _spec(tmp_path: Path, **kw) -> AgentSpec:
    base = dict(name="builder", role=Role.LOOP, backend="claude", workdir=tmp_path)
    base.update(kw)
    return AgentSpec(**base)


CONFIG = SimpleNamespace(name="fleet1")  # no state_dir: no hook settings (see test_launch_installs_hooks)
SID = "70561c5c-809c-4421-9bd4-4b4c1a66b486"


def test_launch_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(ClaudeBackend, "running_as_root", staticmethod(lambda: False))
    plan = ClaudeBackend().launch(_spec(tmp_path, model="opus"), CONFIG, SID, resume=False, prompt="do the work")
    assert plan.argv == [
        "claude", "--session-id", SID, "--dangerously-skip-permissions", "--model", "opus", "do the work",
    ]
    assert plan.argv[-1] == "do the work"
    assert plan.conversation_id == SID
    assert plan.cwd == tmp_path
    assert plan.env["DISABLE_AUTOUPDATER"] == "1"
    assert "IS_SANDBOX" not in plan.env


def test_launch_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(ClaudeBackend, "running_as_root", staticmethod(lambda: True))
    spec = _spec(tmp_path, options={"remote_control": True}, env={"ANTHROPIC_API_KEY": "k"})
    plan = ClaudeBackend().launch(spec, CONFIG, SID.upper(), resume=True, prompt="continue")
    assert plan.argv[:3] == ["claude", "--resume", SID]
    assert "--session-id" not in plan.argv
    assert "--model" not in plan.argv  # spec.model empty: CLI default
    i = plan.argv.index("--remote-control")
    assert plan.argv[i + 1] == "ccci-fleet1-builder"
    assert plan.argv[-1] == "continue"
    assert plan.env["IS_SANDBOX"] == "1"  # root + skip-permissions
    assert plan.env["ANTHROPIC_API_KEY"] == "k"
    assert plan.conversation_id == SID


def test_launch_options(tmp_path, monkeypatch):
    monkeypatch.setattr(ClaudeBackend, "running_as_root", staticmethod(lambda: True))
    spec = _spec(tmp_path, options={"skip_permissions": False, "remote_control": "rc-name"})
    plan = ClaudeBackend().launch(spec, CONFIG, SID, resume=False, prompt="")
    assert plan.argv == ["claude", "--session-id", SID, "--remote-control", "rc-name"]
    assert "IS_SANDBOX" not in plan.env  # only needed with skip-permissions
    dash = ClaudeBackend().launch(_spec(tmp_path), CONFIG, SID, resume=False, prompt="-x is a flag")
    assert dash.argv[-2:] == ["--", "-x is a flag"]


def test_launch_installs_hooks(tmp_path):
    cfg = SimpleNamespace(name="fleet1", state_dir=tmp_path / "state")
    plan = ClaudeBackend().launch(_spec(tmp_path), cfg, SID, resume=False, prompt="p")
    i = plan.argv.index("--settings")
    assert plan.argv[i + 1] == str(tmp_path / "state" / "hooks" / "builder.settings.json")
    assert plan.argv[-1] == "p"
    off = ClaudeBackend().launch(_spec(tmp_path, options={"hooks": False, "settings": "/x.json"}), cfg, SID,
                                 resume=False, prompt="p")
    assert off.argv[off.argv.index("--settings") + 1] == "/x.json"


def test_launch_rejects_non_uuid(tmp_path):
    with pytest.raises(ValueError, match="UUID"):
        ClaudeBackend().launch(_spec(tmp_path), CONFIG, "not-a-uuid", resume=False, prompt="x")


def test_new_conversation_id_is_accepted(tmp_path):
    b = ClaudeBackend()
    cid = b.new_conversation_id()
    assert b.launch(_spec(tmp_path), CONFIG, cid, resume=False, prompt="p").argv[2] == cid


def test_registration_hook():
    (b,) = ccci_register_backends()
    assert isinstance(b, ClaudeBackend)
    assert b.name == "claude" and b.process_names == ("claude",)
    assert b.compact_command == "/compact" and not b.exits_at_turn_end


# ------------------------------------------------------------- subscriber reset times

from datetime import datetime as _dt, timezone as _tz  # noqa: E402

from ccci.patterns import resolve_clock_time  # noqa: E402

pytestmark = pytest.mark.usefixtures("golden_zone")  # the recorded CLIs ran in UTC

SUBSCRIBER = ("❯ do some work\n  ⎿  You've hit your session limit · resets {clock} ({tz})\n\n✻ Churned for 0s\n\n"
              + "─" * 40 + "\n❯\xa0\n" + "─" * 40 + "\n  ⏵⏵ bypass permissions on (shift+tab to cycle)\n")


@pytest.mark.parametrize("clock,tz,now,expected", [
    ("8:34am", "UTC", "2026-11-22T06:04:00", "2026-11-22T08:34:00"),         # later today
    ("1:10am", "UTC", "2026-11-22T22:00:00", "2026-11-23T01:10:00"),         # tomorrow
    ("8:34am", "UTC", "2026-11-22T09:00:00", "2026-11-22T08:34:00"),         # just passed: lifted
    ("5pm", "Europe/Paris", "2026-11-22T13:30:00", "2026-11-22T16:00:00"),   # CET = UTC+1
    ("5pm", "Europe/Paris", "2026-07-22T13:30:00", "2026-07-22T15:00:00"),   # CEST = UTC+2
    ("12:50am", "America/Los_Angeles", "2026-07-04T05:00:00", "2026-07-04T07:50:00"),  # next local day
    ("12:05pm", "UTC", "2026-11-22T10:00:00", "2026-11-22T12:05:00"),
])
def test_subscriber_reset_clock_is_placed_on_the_right_day(backend, clock, tz, now, expected):
    now_dt = _dt.fromisoformat(now).replace(tzinfo=_tz.utc)
    an = backend.analyse(SUBSCRIBER.format(clock=clock, tz=tz), "", now_dt)
    assert an.state == AgentState.USAGE_LIMIT
    assert an.first(AgentState.USAGE_LIMIT).rule == "claude.usage_limit.subscriber"
    assert an.reset_at == _dt.fromisoformat(expected).replace(tzinfo=_tz.utc)


def test_reset_clock_unreadable_gives_no_reset():
    now = _dt(2026, 11, 22, 6, 0, tzinfo=_tz.utc)
    assert resolve_clock_time("8:34am", "Mars/Olympus", now) is None
    assert resolve_clock_time("13pm", "UTC", now) is None
    assert resolve_clock_time("8:34am", "UTC", now, date="Foo 3") is None
    assert resolve_clock_time("4am", "UTC", now, date="Nov 25") == _dt(2026, 11, 25, 4, 0, tzinfo=_tz.utc)
    assert resolve_clock_time("4am", "UTC", _dt(2026, 12, 30, tzinfo=_tz.utc), date="Jan 2") == \
        _dt(2027, 1, 2, 4, 0, tzinfo=_tz.utc)


def test_quoted_limit_text_in_an_older_block_is_not_the_state(backend):
    old = SUBSCRIBER.format(clock="8:34am", tz="UTC").replace("❯\xa0\n", "")
    screen = old.split("─" * 40)[0] + "❯ continue\n\n● Working again.\n\n✻ Worked for 2s\n\n" + "─" * 40 + "\n❯\xa0\n" + "─" * 40 + "\n"
    assert backend.analyse(screen).state == AgentState.IDLE


def test_busy_spinner_without_timer(backend):
    screen = "❯ say hello\n\n· Doodling…\n\n" + "─" * 40 + "\n❯\xa0\n" + "─" * 40 + "\n  ? for shortcuts\n"
    an = backend.analyse(screen)
    assert an.state == AgentState.BUSY and an.matches[0].rule == "claude.busy.spinner_no_timer"
    done = screen.replace("· Doodling…", "● hi\n\n✻ Churned for 0s")
    assert backend.analyse(done).state == AgentState.IDLE
