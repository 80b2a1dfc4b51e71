"""Claude Code 2.1.332 screens (issue 12): ccci/patterns/claude-2.1.332.toml against the
screens recorded from the real CLI (tests/golden/claude-2.1.332-recorded/), and the send
path on its placeholder. The 2.1.197 rules and screens stay checked by
tests/test_claude_patterns.py."""
from __future__ import annotations

import tomllib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ccci import patterns as patterns_mod
from ccci.backends.claude import ClaudeBackend
from ccci.model import AgentState
from ccci.send import deliver
from ccci.testing.fakes import ScreenSequence

pytestmark = pytest.mark.usefixtures("golden_zone")  # the recorded CLIs ran in UTC

VERSION = "2.1.332"
RECORDED = Path(__file__).parent / "golden" / f"claude-{VERSION}-recorded"
LABELS = tomllib.loads((RECORDED / "LABELS.toml").read_text(encoding="utf-8"))
PATTERN_FILE = Path(patterns_mod.__file__).parent / "patterns" / f"claude-{VERSION}.toml"


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _screen(name: str) -> str:
    return (RECORDED / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def backend() -> ClaudeBackend:
    b = ClaudeBackend()
    b.use_cli_version(VERSION)
    return b


def test_backend_reads_2_1_332_with_its_own_file(backend):
    assert backend.patterns.version == VERSION
    assert backend.patterns.origin.endswith(f"claude-{VERSION}.toml")


def test_every_label_has_a_capture_and_valid_fields():
    assert len(LABELS) >= 20
    for name, label in LABELS.items():
        assert (RECORDED / name).is_file(), name
        AgentState(label["state"])
    states = {label["state"] for label in LABELS.values()}
    assert {"idle", "busy", "unsent_input", "waiting_input", "fatal_error", "context_limit", "usage_limit",
            "api_error", "exited"} <= states


@pytest.mark.parametrize("name", sorted(LABELS))
def test_recorded_capture_reads_as_labelled(backend, name):
    label = LABELS[name]
    now = _utc(label["now"]) if label.get("now") else None
    an = backend.analyse(_screen(name), label.get("title", ""), now)
    assert an.state.value == label["state"], (name, [(m.rule, m.line) for m in an.matches])
    got = an.reset_at.strftime("%Y-%m-%dT%H:%M:%SZ") if an.reset_at else None
    assert got == label.get("reset_at"), name
    if "input_text" in label:
        assert an.input_text == label["input_text"], name
    if an.state != AgentState.UNKNOWN:
        assert an.fingerprint


# --------------------------------------------------------------------------- issue 12, one by one


@pytest.mark.parametrize("name,placeholder", [
    ("07_prompt_too_long_context_limit.txt", "Once fixed, resend your message"),
    ("11_overloaded_529_final_placeholder.txt", "Resend your message to try again"),
    ("15_request_timeout_placeholder.txt", "Resend your message to try again"),
])
def test_placeholder_is_an_empty_box_not_a_draft(backend, name, placeholder):
    screen = _screen(name)
    assert "❯\xa0" + placeholder in screen  # drawn in the box, as typed text would be
    an = backend.analyse(screen)
    assert an.input_present and an.input_text == ""
    assert an.first(AgentState.UNSENT_INPUT) is None


def test_text_typed_over_the_placeholder_is_a_draft(backend):
    an = backend.analyse(_screen("12_typed_over_placeholder.txt"))
    assert an.input_text == "continue"
    assert an.first(AgentState.UNSENT_INPUT) is not None


def test_request_timeout_is_an_api_error(backend):
    an = backend.analyse(_screen("15_request_timeout_placeholder.txt"))
    assert an.state == AgentState.API_ERROR
    assert an.matches[0].rule == "claude.api_error.timeout"
    assert an.matches[0].groups["error"].startswith("Request timed out.")


def test_new_usage_limit_retry_line(backend):
    now = _utc("2026-12-02T04:31:40Z")
    an = backend.analyse(_screen("08_usage_limit_retrying.txt"), "", now)
    m = an.first(AgentState.USAGE_LIMIT)
    assert an.state == AgentState.USAGE_LIMIT and m.rule == "claude.usage_limit.retrying"
    assert m.groups["limit"] == "5-hour limit" and m.groups["reset_local"] == "7:01am"
    # a local clock time without date or zone: the next 7:01 in ccci's zone (the CLI's)
    assert an.reset_at == _utc("2026-12-02T07:01:00Z")
    # the tester's form, without the attempt count
    line = "✻ 5-hour limit reached · retrying in 3s (3:22am)"
    text = _screen("08_usage_limit_retrying.txt").replace(
        "✻ 5-hour limit reached · retrying in 1s (7:01am) · attempt 1/3", line)
    assert line in text
    an = backend.analyse(text, "", _utc("2026-12-02T01:00:00Z"))
    assert an.state == AgentState.USAGE_LIMIT and an.reset_at == _utc("2026-12-02T03:22:00Z")
    assert {m.rule for m in an.matches} >= {"claude.usage_limit.retrying", "claude.busy.retrying"}


def test_lowercase_api_retry_line_is_busy(backend):
    an = backend.analyse(_screen("10_overloaded_529_retrying.txt"))
    m = an.first(AgentState.BUSY)
    assert an.state == AgentState.BUSY
    retry = next(x for x in an.matches if x.rule == "claude.busy.retrying")
    assert retry.groups == {"attempt": "1", "attempts": "3"}
    assert m is not None


@pytest.mark.parametrize("name", ["18_after_exit.txt", "19_after_sigterm.txt", "23_after_exit_before_pane_dead.txt"])
def test_cleared_exit_screen_gives_the_session_id(backend, name):
    an = backend.analyse(_screen(name))
    assert an.state == AgentState.EXITED
    m = next(x for x in an.matches if x.rule == "claude.exited.resume_hint_no_box")
    assert len(m.groups["session_id"]) == 36


def test_resume_hint_under_an_input_box_with_flags(backend):
    screen = _screen("03_reply_finished_idle.txt").rstrip("\n") + (
        "\n\nResume this session with:\nclaude --dangerously-skip-permissions --model opus --resume "
        "70561c5c-809c-4421-9bd4-4b4c1a66b486\n")
    an = backend.analyse(screen)
    assert an.state == AgentState.EXITED and an.matches[0].rule == "claude.exited.resume_hint"
    assert an.matches[0].groups["session_id"] == "70561c5c-809c-4421-9bd4-4b4c1a66b486"


def test_auto_mode_dialog_waits_for_input(backend):
    an = backend.analyse(_screen("22_auto_mode_dialog.txt"))
    assert an.state == AgentState.WAITING_INPUT and not an.input_present
    assert an.matches[0].rule == "claude.waiting.auto_mode_check"


def test_model_reply_quoting_the_auto_mode_dialog_is_not_a_dialog(backend):
    screen = _screen("03_reply_finished_idle.txt").replace(
        "● E2E-REPLY-ONE:", "● Auto mode can't check actions in this session\n  Enter to stay in auto mode\n● E2E-REPLY-ONE:")
    assert backend.analyse(screen).state == AgentState.IDLE


def test_title_spinner_of_2_1_332(backend):
    idle = _screen("03_reply_finished_idle.txt")
    assert backend.analyse(idle, title="✳ Claude Code").state == AgentState.IDLE
    for glyph in "◐◓◑◒":
        assert backend.analyse(idle, title=f"{glyph} Claude Code").state == AgentState.BUSY
    # the kitty graphics query that tmux shows as the title right after start is not busy
    assert backend.analyse(idle, title="Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA").state == AgentState.IDLE


def test_fingerprint_ignores_the_retry_countdown(backend):
    a = _screen("10_overloaded_529_retrying.txt")
    b = a.replace("retrying in 1s", "retrying in 7s")
    assert backend.analyse(a).fingerprint == backend.analyse(b).fingerprint
    c = a.replace("attempt 1/3", "attempt 2/3")
    assert backend.analyse(a).fingerprint != backend.analyse(c).fingerprint


# --------------------------------------------------------------------------- send on a placeholder


class _Clock:
    t = 0.0

    def sleep(self, s):  # instant: the waits of deliver() pass on this clock only
        self.t += s

    def monotonic(self):
        return self.t

    def now(self):  # deliver() stamps when typing began (the CLI's own reports are compared with it)
        return datetime.now(timezone.utc)


@pytest.mark.parametrize("name,text", [
    ("07_prompt_too_long_context_limit.txt", "/compact"),
    ("11_overloaded_529_final_placeholder.txt", "continue"),
    ("15_request_timeout_placeholder.txt", "continue"),
])
def test_send_types_over_the_placeholder(backend, tmp_path, name, text):
    """Issue 12: deliver() refused to type `continue` / `/compact` into the empty box
    because the placeholder read as someone else's draft."""
    before = _screen(name)
    busy = _screen("02_streaming_busy.txt")
    pane = ScreenSequence([before, busy])
    res = deliver(pane, "%1", backend, text, {"send_enter_delay": 0, "send_retries": 1}, _Clock(), tmp_path)
    assert res.delivered, res.detail
    assert pane.typed == [text] and pane.keys == ["Enter"]


# --------------------------------------------------------------------------- rule hygiene


def test_every_rule_has_a_source_naming_the_version():
    data = tomllib.loads(PATTERN_FILE.read_text(encoding="utf-8"))
    assert data["meta"] == {**data["meta"], "backend": "claude", "version": VERSION}
    ids = [r["id"] for r in data["rules"]]
    assert len(ids) == len(set(ids)), "duplicate rule ids"
    for rule in data["rules"]:
        src = rule.get("source", "")
        assert len(src) > 30, rule["id"]
        assert VERSION in src or "tmux" in src, rule["id"]
        assert rule["id"].startswith("claude."), rule["id"]


def test_every_rule_fires_on_a_recorded_screen_or_is_kept_from_2_1_197(backend):
    fired: set[str] = set()
    for name, label in LABELS.items():
        fired |= {m.rule for m in backend.analyse(_screen(name), label.get("title", "")).matches}
    fired |= {m.rule for m in backend.analyse(_screen("03_reply_finished_idle.txt") + "\nResume this session with:\n"
                                              "claude --resume 70561c5c-809c-4421-9bd4-4b4c1a66b486\n").matches}
    fired |= {m.rule for m in backend.analyse(_screen("03_reply_finished_idle.txt") + "\nPane is dead (status 0)\n").matches}
    kept = {r.id for r in backend.patterns.rules if "kept from Claude Code 2.1.197" in r.source}
    assert {r.id for r in backend.patterns.rules} - fired == kept
    assert kept == {"claude.exited.no_conversation", "claude.exited.root_refused", "claude.waiting.api_key",
                    "claude.usage_limit.subscriber_dialog",
                    "claude.usage_limit.subscriber_dialog_reset", "claude.context_limit.prompt_too_long",
                    "claude.context_limit.compact_failed"}


def test_dialog_rules_need_no_input_box(backend):
    dialog_rules = [r for r in backend.patterns.rules if r.state == AgentState.WAITING_INPUT]
    assert dialog_rules and all(r.input_box == "absent" for r in dialog_rules)


def test_subscriber_limit_continues_by_itself(backend):
    name = "24_subscriber_usage_limit_auto_continue.txt"
    an = backend.analyse(_screen(name), "", _utc(LABELS[name]["now"]))
    rules = {m.rule: m for m in an.matches}
    assert an.state == AgentState.USAGE_LIMIT and an.matches[0].rule == "claude.usage_limit.subscriber"
    assert rules["claude.usage_limit.auto_continue"].groups["reset_local"] == "7:15am"
    assert an.reset_at == datetime(2026, 12, 2, 7, 15, tzinfo=timezone.utc)
