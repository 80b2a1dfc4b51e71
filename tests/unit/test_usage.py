"""Token usage and context use from what the CLI records (issue 16 part 5, issue 17 part 3):
Claude Code's transcript read on a real capture (tests/golden/claude-2.1.332-recorded/
transcripts/usage_turns.jsonl, recorded by tests/e2e/test_claude_usage_real.py with the
usage the model server sent beside it), the context windows, and compact_before_limit
in a real runner on the fakes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccci import config as config_mod
from ccci.backends.claude import ClaudeBackend, transcript
from ccci.model import AgentSpec, Role
from ccci.state import USAGE_COUNTERS
from ccci.testing.fakes import events
from ccci.usage import context_window, read_context

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "claude-2.1.332-recorded" / "transcripts"
CAPTURE = GOLDEN / "usage_turns.jsonl"
SENT = json.loads((GOLDEN / "usage_turns.sent.json").read_text())
AS_CCCI = {"input_tokens": "input_tokens", "output_tokens": "output_tokens",
           "cache_read_input_tokens": "cache_read_tokens", "cache_creation_input_tokens": "cache_write_tokens"}
#: a compact boundary as Claude Code 2.1.332 wrote it after /compact (e2e run, fields trimmed)
BOUNDARY = {"type": "system", "subtype": "compact_boundary", "timestamp": "2026-12-06T23:16:40.100Z",
            "compactMetadata": {"trigger": "manual", "preTokens": 41098, "postTokens": 2852}}


def _sent_sum() -> dict[str, int]:
    out = dict.fromkeys(USAGE_COUNTERS, 0)
    for s in SENT:
        for theirs, ours in AS_CCCI.items():
            out[ours] += s["usage"][theirs]
    return out


def _summed(reading) -> dict[str, int]:
    out = dict.fromkeys(USAGE_COUNTERS, 0)
    for counts in reading.totals.values():
        for k in USAGE_COUNTERS:
            out[k] += counts[k]
    return out


def test_real_transcript_totals_equal_what_the_server_sent():
    lines = [json.loads(ln) for ln in CAPTURE.read_text().splitlines()]
    ids = [ln["message"]["id"] for ln in lines if ln.get("type") == "assistant"]
    assert len(ids) > len(set(ids)), "the capture has an answer written as several lines (text + tool_use)"
    r = transcript.read_file(CAPTURE)
    assert _summed(r) == _sent_sum()
    last = SENT[-1]["usage"]
    assert r.context_tokens == sum(last.values())  # input + cache read + cache write + output
    assert r.model == "claude-opus-5-5" and {m for (_d, _s, m) in r.totals} == {"claude-opus-5-5"}
    assert {d for (d, _s, _m) in r.totals} == {lines[-1]["timestamp"][:10]}


def test_incremental_reads_of_a_growing_transcript_give_the_same_totals(tmp_path):
    data = CAPTURE.read_bytes()
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"")
    cur = transcript.TranscriptCursor(path)
    step = 997  # cuts lines (and multi-byte characters) anywhere
    for i in range(0, len(data), step):
        with open(path, "ab") as fh:
            fh.write(data[i:i + step])
        cur.read()
        assert cur.offset <= path.stat().st_size and (cur.offset == 0 or data[cur.offset - 1:cur.offset] == b"\n")
    assert cur.offset == len(data)
    assert _summed(cur.reading("s")) == _sent_sum()
    assert cur.read() is False  # nothing new
    # a compaction: the context is what Claude Code says remains
    with open(path, "a") as fh:
        fh.write(json.dumps(BOUNDARY) + "\n")
    cur.read()
    assert cur.reading("s").context_tokens == 2852 and _summed(cur.reading("s")) == _sent_sum()


def test_the_backend_finds_the_transcript_by_session_id_under_the_agents_home(tmp_path):
    sid = "43003667-92fc-4ffd-9239-8a3336b63583"
    d = tmp_path / "home" / ".claude" / "projects" / "-some-project"
    d.mkdir(parents=True)
    (d / f"{sid}.jsonl").write_bytes(CAPTURE.read_bytes())
    spec = AgentSpec(name="a", role=Role.LOOP, backend="claude", workdir=tmp_path, env={"HOME": str(tmp_path / "home")})
    b = ClaudeBackend()
    r = b.read_usage(spec, None, sid)
    assert _summed(r) == _sent_sum() and {s for (_d, s, _m) in r.totals} == {sid}
    assert b.read_usage(spec, None, "no-such-session") is None
    assert transcript.transcript_path("../x", {"HOME": str(tmp_path / "home")}) is None
    cfg_dir = tmp_path / "cfg"
    (cfg_dir / "projects" / "p").mkdir(parents=True)
    (cfg_dir / "projects" / "p" / f"{sid}.jsonl").write_text("")
    assert transcript.transcript_path(sid, {"CLAUDE_CONFIG_DIR": str(cfg_dir)}) == cfg_dir / "projects" / "p" / f"{sid}.jsonl"


def test_context_windows_shipped_and_overridden():
    assert context_window("claude-opus-5-5") == 200000
    assert context_window("claude-sonnet-4-5[1m]") == 1000000
    assert context_window("gemini-2.5-pro") == 1048576
    assert context_window("anthropic/claude-sonnet-4-5") == 200000
    assert context_window("unknown-model") is None and context_window("") is None
    assert context_window("claude-opus-5-5", {"claude-opus-*": 500000}) == 500000


def _load(tmp_path, extra: str):
    (tmp_path / "ccci.toml").write_text('[fleet]\nname = "f"\n[[agents]]\nname = "a"\nworkdir = "."\n' + extra)
    return config_mod.load(tmp_path / "ccci.toml", environ={})


def test_config_compact_at_and_context_windows(tmp_path):
    cfg = _load(tmp_path, '[checks]\ncompact_at = 0.7\n[context_windows]\n"my-model" = 32000\n')
    assert cfg.settings_for("a")["compact_at"] == 0.7 and cfg.context_windows == {"my-model": 32000}
    assert _load(tmp_path, "").settings_for("a")["compact_at"] == 0.8
    with pytest.raises(config_mod.ConfigError, match=r"checks\.compact_at: 80 is not allowed; use a fraction"):
        _load(tmp_path, "[checks]\ncompact_at = 80\n")
    with pytest.raises(config_mod.ConfigError, match=r"context_windows\.my-model: 'big' is not allowed"):
        _load(tmp_path, '[context_windows]\n"my-model" = "big"\n')


# ---------------------------------------------------------------- in a real runner (fakes)
CHECKS = {"failure_threshold": 1, "startup_grace": 0, "usage_interval": 1}


def _settle(sup, clock, n=1):
    for _ in range(n):
        clock.advance(1)
        sup.tick()


@pytest.fixture
def fed(tmp_path, monkeypatch):
    """The scripted agent's usage read from a transcript file the test writes (a copy of
    the real capture, then more lines), through the Claude transcript reader."""
    path = tmp_path / "transcript.jsonl"
    path.write_bytes(CAPTURE.read_bytes())
    cursors = {}

    def read_usage(self, spec, config, conversation_id, since=None):
        cur = cursors.setdefault(spec.name, transcript.TranscriptCursor(path))
        while cur.read():
            pass
        return cur.reading(conversation_id, since)

    from ccci.backends.scripted import ScriptedBackend
    monkeypatch.setattr(ScriptedBackend, "read_usage", read_usage, raising=False)
    return path


def _answer(path, msg_id: str, input_tokens: int) -> None:
    line = {"type": "assistant", "timestamp": "2026-12-06T23:20:00.000Z", "requestId": "req_" + msg_id,
            "message": {"id": msg_id, "model": "claude-opus-5-5", "role": "assistant", "content": [],
                        "usage": {"input_tokens": input_tokens, "output_tokens": 10, "cache_read_input_tokens": 0,
                                  "cache_creation_input_tokens": 0}}}
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def test_idle_above_compact_at_gets_compact_before_the_queued_message_once_per_crossing(
        make_supervisor, fake_tmux, fake_clock, fed):
    sup = make_supervisor(agents=["a"], checks=CHECKS)
    sup.config.context_windows = {"claude-opus-5-5": 45000}  # the capture's 41,098 tokens are 91 %
    pane = fake_tmux.pane("a")
    pane.busy(0)
    _settle(sup, fake_clock)
    sup.queue_message("a", "next task please")  # queued while the turn runs
    pane.idle()
    _settle(sup, fake_clock)
    # the turn ended above compact_at: /compact first, the message not in the same tick
    assert pane.submitted == ["/compact"]
    [f] = [e for e in events(sup, "finding", "a") if e["data"]["check"] == "compact_before_limit"]
    assert f["data"]["tokens"] == 41098 and f["data"]["window"] == 45000
    _settle(sup, fake_clock, 3)
    assert pane.submitted == ["/compact", "next task please"]
    _settle(sup, fake_clock, 5)
    assert pane.submitted.count("/compact") == 1  # still above (nothing new written): once per crossing
    # the compaction: context drops below, the crossing is over; a new one compacts again
    with open(fed, "a") as fh:
        fh.write(json.dumps(BOUNDARY) + "\n")
    _settle(sup, fake_clock, 2)
    assert read_context(sup.kv, "a")["tokens"] == 2852
    _answer(fed, "msg_big2", 44000)
    _settle(sup, fake_clock, 3)
    assert pane.submitted.count("/compact") == 2
    # the totals in the usage table are the transcript's: exact, absolute, not doubled by re-reads
    rows = sup.store.usage_rows("a")
    want = _sent_sum()
    assert [{k: r[k] for k in USAGE_COUNTERS} for r in rows] == [
        {**want, "input_tokens": want["input_tokens"] + 44000, "output_tokens": want["output_tokens"] + 10}]


def test_compact_at_zero_never_compacts_and_busy_agents_are_left_alone(make_supervisor, fake_tmux, fake_clock, fed):
    sup = make_supervisor(agents=["a"], checks={**CHECKS, "compact_at": 0})
    sup.config.context_windows = {"claude-opus-5-5": 45000}
    pane = fake_tmux.pane("a")
    _settle(sup, fake_clock, 4)
    assert "/compact" not in pane.submitted
    assert read_context(sup.kv, "a")["fraction"] == round(41098 / 45000, 4)
    sup2 = make_supervisor(agents=["a"], checks=CHECKS)
    sup2.config.context_windows = {"claude-opus-5-5": 45000}
    pane.busy(0)
    _settle(sup2, fake_clock, 4)
    assert "/compact" not in pane.submitted


# ---------------------------------------------------------------- Codex and opencode records
CODEX = Path(__file__).resolve().parents[1] / "golden" / "codex-0.171.0" / "rollout"


def test_codex_rollout_totals_equal_what_the_server_sent(tmp_path):
    from ccci.backends import codex_usage

    sent = json.loads((CODEX / "usage_turns.sent.json").read_text())
    want = dict.fromkeys(USAGE_COUNTERS, 0)
    for s in sent:
        for theirs, ours in AS_CCCI.items():
            want[ours] += s["usage"][theirs]
    r = codex_usage.read_file(CODEX / "usage_turns.jsonl", "sid")
    assert _summed(r) == want and {m for (_d, _s, m) in r.totals} == {"scripted-model"}
    last = sent[-1]["usage"]
    assert r.context_tokens == last["input_tokens"] + last["cache_read_input_tokens"] + last["output_tokens"]
    assert r.window and r.window > 0  # Codex records the window it uses
    # incremental, in pieces: the same
    data = (CODEX / "usage_turns.jsonl").read_bytes()
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"")
    cur = codex_usage.RolloutCursor(path)
    for i in range(0, len(data), 1500):
        with open(path, "ab") as fh:
            fh.write(data[i:i + 1500])
        cur.read()
    assert _summed(cur.reading("sid")) == want


OPENCODE_MSG = Path(__file__).resolve().parents[1] / "golden" / "opencode-1.18.33" / "api" / "last_message_clean_turn.json"


class _Client:
    """A stand-in for opencode's ``GET /session/<id>/message`` (unit test of the folding
    only; the real server is exercised by tests/e2e/opencode)."""

    def __init__(self, msgs):
        self.msgs, self.calls = msgs, []

    def messages(self, session_id, limit=20):
        self.calls.append(limit)
        return self.msgs[-limit:]


def test_opencode_steps_are_summed_once_and_the_newest_step_is_the_context():
    from ccci.backends.opencode import usage as oc_usage

    real = json.loads(OPENCODE_MSG.read_text())
    real = real[-1] if isinstance(real, list) else real
    # a second assistant message with two steps (a tool call, then the answer), built from the real one
    two = json.loads(json.dumps(real))
    two["info"]["id"] = "msg_two"
    two["info"]["time"]["created"] += 5000
    fin = [p for p in two["parts"] if p["type"] == "step-finish"][0]
    step1 = {**fin, "id": "prt_s1", "tokens": {"input": 100, "output": 7, "reasoning": 3, "cache": {"read": 50, "write": 2}}}
    step2 = {**fin, "id": "prt_s2", "tokens": {"input": 200, "output": 9, "reasoning": 0, "cache": {"read": 60, "write": 0}}}
    two["parts"] = [step1, step2]
    client = _Client([real, two])
    seen = oc_usage.SessionUsage()
    oc_usage.read_session(client, "ses_x", seen)
    oc_usage.read_session(client, "ses_x", seen)  # read again: nothing counted twice
    assert client.calls == [oc_usage.ALL, oc_usage.RECENT]
    r = seen.reading("ses_x")
    t0 = real["info"]["tokens"]
    assert _summed(r) == {"input_tokens": t0["input"] + 300, "output_tokens": t0["output"] + t0["reasoning"] + 19,
                          "cache_read_tokens": 110, "cache_write_tokens": 2}
    assert r.context_tokens == 200 + 9 + 60 and r.model == "scripted/model"


GEMINI = Path(__file__).resolve().parents[1] / "golden" / "gemini-0.61.0" / "session"


def test_gemini_session_totals_equal_what_the_server_sent():
    from ccci.backends import gemini_usage

    sent = json.loads((GEMINI / "usage_turns.sent.json").read_text())
    want = dict.fromkeys(USAGE_COUNTERS, 0)
    for s in sent:
        for theirs, ours in AS_CCCI.items():
            want[ours] += s["usage"][theirs]
    lines = [json.loads(ln) for ln in (GEMINI / "usage_turns.jsonl").read_text().splitlines()]
    ids = [ln["id"] for ln in lines if ln.get("type") == "gemini"]
    assert len(ids) > len(set(ids)), "the capture repeats an updated message (the newest line wins)"
    r = gemini_usage.read_file(GEMINI / "usage_turns.jsonl", "sid")
    assert _summed(r) == want
    last = sent[-1]["usage"]
    assert r.context_tokens == last["input_tokens"] + last["cache_read_input_tokens"] + last["output_tokens"]
    assert context_window(r.model) == 1048576


def test_metrics_export_the_tokens_and_the_context_fraction(make_supervisor, fake_tmux, fake_clock, fed):
    from prometheus_client import generate_latest

    from ccci.reporters import metrics

    sup = make_supervisor(agents=["a"], checks={**CHECKS, "compact_at": 0})
    _settle(sup, fake_clock, 2)
    reg, m = metrics.build_registry(0.0)
    exp = metrics.Exporter(registry=reg, metrics=m)
    metrics._refresh_usage(exp, sup.services("metrics"))
    text = generate_latest(reg).decode()
    want = _sent_sum()
    assert f'ccci_agent_tokens_total{{agent="a",kind="input"}} {float(want["input_tokens"])}' in text
    assert f'ccci_agent_tokens_total{{agent="a",kind="cache_read"}} {float(want["cache_read_tokens"])}' in text
    assert f'ccci_agent_context_fraction{{agent="a"}} {41098 / 200000:.4f}'.rstrip("0") in text


def test_status_cells_and_fields(tmp_path):
    from datetime import datetime, timezone

    from ccci.commands.cli import _ctx, _tokens, usage_fields
    from ccci.state import StateStore
    from ccci.usage import CONTEXT_KEY, context_record

    now = datetime.now(timezone.utc)
    st = StateStore(tmp_path)
    try:
        today = now.strftime("%Y-%m-%d")
        st.set_usage("a", today, "s1", "m", {"input_tokens": 1200, "output_tokens": 30, "cache_read_tokens": 800}, now)
        st.set_usage("a", "2020-01-01", "s0", "m", {"input_tokens": 99}, now)
        st.put(CONTEXT_KEY.format(agent="a"), json.dumps(context_record(164000, 200000, "m", now)))
        f = usage_fields(st, st.usage_rows(), "a", "claude")
        assert f["tokens_today"] == {"input": 1200, "output": 30, "cache_read": 800, "cache_write": 0}
        assert f["context"]["fraction"] == 0.82 and f["context"]["tokens"] == 164000
        assert _ctx(f["context"]) == "ctx 82%" and _tokens(f["tokens_today"]) == "2.0k in / 30 out"
        assert usage_fields(st, [], "b", "claude") == {"tokens_today": {"input": 0, "output": 0, "cache_read": 0,
                                                                          "cache_write": 0}, "context": None}
        assert _ctx(None) == "-" and _ctx(context_record(5000, None, "x", now)) == "ctx 5.0k"
    finally:
        st.close()


@pytest.mark.parametrize("kind", ["claude", "codex", "gemini"])
def test_a_rewritten_or_replaced_record_file_is_read_again_from_the_start(kind, tmp_path):
    """:class:`ccci.usage.JsonlCursor`, shared by the three file readers: a file that
    shrank (rewritten in place) or was replaced (another inode) is read from its start,
    every field back to its default, so the totals are those of the new content only."""
    from ccci.backends import codex_usage, gemini_usage

    capture, cls = {"claude": (CAPTURE, transcript.TranscriptCursor),
                    "codex": (CODEX / "usage_turns.jsonl", codex_usage.RolloutCursor),
                    "gemini": (GEMINI / "usage_turns.jsonl", gemini_usage.SessionCursor)}[kind]
    data = capture.read_bytes()
    path = tmp_path / "r.jsonl"
    path.write_bytes(data)
    cur = cls(path)
    assert cur.read() and cur.offset == len(data)
    whole = _summed(cur.reading("s"))
    assert whole != dict.fromkeys(USAGE_COUNTERS, 0)
    lines = data.splitlines(keepends=True)
    head = b"".join(lines[:len(lines) // 2])
    alone = tmp_path / "head.jsonl"
    alone.write_bytes(head)
    want = _summed(cls(alone).read_all("s"))
    assert want != whole, "the first half of the capture has less usage than the whole"
    path.write_bytes(head)  # same inode, shorter
    assert cur.read() and cur.offset == len(head)
    assert _summed(cur.reading("s")) == want
    with open(path, "ab") as fh:  # grows again: read on from where it was
        fh.write(data[len(head):])
    assert cur.read() and _summed(cur.reading("s")) == whole
    other = tmp_path / "other.jsonl"
    other.write_bytes(head + b"\n" * (len(data) - len(head)))
    other.replace(path)  # another inode, as long as what was read: only the inode tells
    assert cur.read() and _summed(cur.reading("s")) == want
