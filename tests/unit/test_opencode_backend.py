"""The opencode backend with fakes: launch argv, the API turn-outcome classification (on
responses recorded from opencode 1.18.33), turn-end resumes in the runner, and the
shared server's state handling. The real CLI runs in tests/e2e/opencode/."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from ccci.backends.opencode import opencode_serve
from ccci.backends.opencode import OpencodeBackend, ServerError, classify_message
from ccci.hookspecs import hookimpl
from ccci.model import AgentSpec, AgentState, Role

API = Path(__file__).resolve().parents[1] / "golden" / "opencode-1.18.33" / "api"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)


def _msg(error=None, text="", completed=True):
    info = {"role": "assistant", "time": {"created": 1, **({"completed": 2} if completed else {})}}
    if error is not None:
        info["error"] = error
    return {"info": info, "parts": [{"type": "text", "text": text}] if text else []}


def _api_error(status, message, headers=None):
    return {"name": "APIError", "data": {"message": message, "statusCode": status, "isRetryable": False,
                                         "responseHeaders": headers or {}}}


def test_recorded_thinking_400_is_fatal():
    msg = json.loads((API / "last_message_thinking_400.json").read_text())[-1]
    out = classify_message(msg, NOW)
    assert out.state == AgentState.FATAL_ERROR and out.status == 400
    assert "`thinking` or `redacted_thinking` blocks" in out.evidence


def test_recorded_reply_less_turn_after_5xx_is_an_api_error():
    msg = json.loads((API / "last_message_after_three_500s.json").read_text())[-1]
    assert msg["info"]["time"].get("completed") and not msg["info"].get("error")
    assert classify_message(msg, NOW).state == AgentState.API_ERROR


def test_recorded_clean_turn_is_a_turn_end():
    msg = json.loads((API / "last_message_clean_turn.json").read_text())[-1]
    out = classify_message(msg, NOW)
    assert out.state == AgentState.IDLE and out.text


@pytest.mark.parametrize("msg,state", [
    (_msg(_api_error(400, "prompt is too long: 210000 tokens > 200000 maximum")), AgentState.CONTEXT_LIMIT),
    (_msg(_api_error(500, "Internal server error")), AgentState.API_ERROR),
    (_msg(_api_error(429, "This request would exceed your account's rate limit.")), AgentState.API_ERROR),
    (_msg(_api_error(429, "Claude AI usage limit reached|1795340000",
                     {"anthropic-ratelimit-unified-reset": "1795340000"})), AgentState.USAGE_LIMIT),
    (_msg(completed=False), AgentState.API_ERROR),  # measured: repeated 429s end the run like this
    (None, AgentState.IDLE),
])
def test_classification(msg, state):
    assert classify_message(msg, NOW).state == state


def test_usage_limit_reset_from_headers():
    out = classify_message(_msg(_api_error(429, "usage limit reached", {"anthropic-ratelimit-unified-reset": "1795340000"})), NOW)
    assert out.reset_at == datetime.fromtimestamp(1795340000, tz=timezone.utc)
    out = classify_message(_msg(_api_error(429, "quota exceeded", {"retry-after": "30"})), NOW)
    assert out.state == AgentState.USAGE_LIMIT and (out.reset_at - NOW).total_seconds() == 30


class FakeClient:
    created: list[tuple[str, str]] = []
    last: dict | None = None

    def __init__(self, url):
        self.url = url

    def create_session(self, title, directory):
        FakeClient.created.append((title, directory))
        return f"ses_fake{len(FakeClient.created)}"

    def last_message(self, session_id):
        return FakeClient.last


def _backend():
    b = OpencodeBackend()
    b.server_url = lambda config: "http://127.0.0.1:4242"
    b.client_factory = FakeClient
    return b


def test_launch_fresh_creates_the_session_then_attaches(tmp_path):
    FakeClient.created = []
    spec = AgentSpec(name="builder", role=Role.LOOP, backend="opencode", workdir=tmp_path, model="scripted/model",
                     env={"HOME": "/h"})
    plan = _backend().launch(spec, SimpleNamespace(name="f1"), "ignored-uuid", False, "-starts with a dash")
    assert FakeClient.created == [("ccci-f1-builder", str(tmp_path))]
    assert plan.conversation_id == "ses_fake1"
    assert plan.argv == ["opencode", "run", "--attach", "http://127.0.0.1:4242", "--session", "ses_fake1",
                         "--dir", str(tmp_path), "--auto", "--model", "scripted/model", "--", "-starts with a dash"]
    assert plan.env["HOME"] == "/h" and plan.env["OPENCODE_DISABLE_AUTOUPDATE"] == "1"


def test_launch_resume_continues_the_session(tmp_path):
    FakeClient.created = []
    spec = AgentSpec(name="a", role=Role.LOOP, backend="opencode", workdir=tmp_path, options={"auto": False})
    plan = _backend().launch(spec, SimpleNamespace(name="f"), "ses_abc", True, "")
    assert FakeClient.created == []
    assert plan.argv[-3:] == ["--dir", str(tmp_path), "Continue."] and "--auto" not in plan.argv
    assert plan.argv[plan.argv.index("--session") + 1] == "ses_abc"
    with pytest.raises(ValueError, match="not an opencode session id"):
        _backend().launch(spec, SimpleNamespace(name="f"), "0b5f-uuid", True, "")


def test_launch_without_server_raises(tmp_path):
    b = OpencodeBackend()
    cfg = SimpleNamespace(name="f", state_dir=tmp_path / ".ccci")
    spec = AgentSpec(name="a", role=Role.LOOP, backend="opencode", workdir=tmp_path)
    with pytest.raises(ServerError, match="opencode serve is not running"):
        b.launch(spec, cfg, "x", False, "hi")


def test_agent_process_is_not_the_server():
    b = OpencodeBackend()
    bin_ = "/x/node_modules/.bin/opencode"
    assert b.is_agent_process("opencode", [bin_, "run", "--attach", "http://127.0.0.1:1", "hi"])
    assert not b.is_agent_process("opencode", [bin_, "serve", "--port", "4096"])
    assert not b.is_agent_process("bash", ["bash"])
    assert not b.is_ready_for_input(b.analyse("> build · model\n"))


# ------------------------------------------------------------------ the runner


@pytest.fixture
def oc_sup(make_supervisor, fake_tmux, monkeypatch):
    from ccci import lifecycle as lifecycle_mod

    backend = _backend()
    FakeClient.created, FakeClient.last = [], None
    real_which = lifecycle_mod.shutil.which
    monkeypatch.setattr(lifecycle_mod.shutil, "which",
                        lambda name: "/usr/bin/opencode" if name == "opencode" else real_which(name))

    def make(**checks):
        sup = make_supervisor(agents=({"name": "a", "backend": "opencode"},),
                              checks={"startup_grace": 0, **checks},
                              environ={"CCCI_DISABLE_PLUGINS": "opencode_serve"}, start=False)
        sup.backends["opencode"] = backend
        sup.agents["a"].backend = backend
        sup.adopt()
        return sup
    return make


def _settle(sup, fake_clock, n=2):
    for _ in range(n):
        fake_clock.advance(1.0)
        sup.tick()


def test_turn_end_is_resumed_not_restarted(oc_sup, fake_tmux, fake_clock):
    sup = oc_sup(max_resumes=2)
    _settle(sup, fake_clock)
    conv = sup.agents["a"].conversation_id
    assert conv == "ses_fake1"
    sup.queue_message("a", "New claim: abc123 claim(x). Verify it.")
    FakeClient.last = _msg(text="done")
    fake_tmux.pane("a").kill(status=0)
    _settle(sup, fake_clock)
    launches = fake_tmux.launches("a")
    assert len(launches) == 2
    assert launches[-1].argv[launches[-1].argv.index("--session") + 1] == conv
    assert launches[-1].argv[-1] == "New claim: abc123 claim(x). Verify it."  # the queued ping is the prompt
    assert sup.store.pending_messages("a") == []
    rec = sup.store.agent("a")
    # rewritten for issue 13: a turn end is neither a restart nor a resume after a
    # failure (max_resumes); it is recorded as a turn_end and counted by max_turns_per_hour
    assert rec.restarts == 0 and rec.resumes == 0
    assert sup.store.restart_count("a", "turn_end") == 1
    # more turn ends: no backoff, no restart intensity, and max_resumes (2) does not stop them
    for _ in range(3):
        fake_tmux.pane("a").kill(status=0)
        _settle(sup, fake_clock)
    kinds = [e["kind"] for e in sup.store.events()]
    assert "backoff" not in kinds
    assert kinds.count("agent_resumed") == 4 and "escalation" not in kinds
    assert sup.store.agent("a").resumes == 0 and sup.store.restart_count("a", "turn_end") == 4


def test_turn_ends_are_capped_by_max_turns_per_hour(oc_sup, fake_tmux, fake_clock):
    sup = oc_sup(max_resumes=2, max_turns_per_hour=3)
    _settle(sup, fake_clock)
    FakeClient.last = _msg(text="done")
    for _ in range(4):
        fake_tmux.pane("a").kill(status=0)
        _settle(sup, fake_clock)
    evs = sup.store.events()
    assert [e["kind"] for e in evs].count("agent_resumed") == 3
    esc = [e for e in evs if e["kind"] == "escalation"]
    assert len(esc) == 1 and "max_turns_per_hour (3) reached" in esc[0]["message"]
    assert sup.store.agent("a").given_up


def test_declared_wait_is_kept_until_a_message_arrives(oc_sup, fake_tmux, fake_clock):
    sup = oc_sup()
    _settle(sup, fake_clock)
    FakeClient.last = _msg(text="Nothing to do yet. WAITING-UNTIL: 2026-01-01T01:00:00Z")
    fake_tmux.pane("a").kill(status=0)
    _settle(sup, fake_clock, 5)
    assert len(fake_tmux.launches("a")) == 1  # not resumed: the agent declared a wait
    sup.queue_message("a", "New claim: 1234abc claim(y). Verify it.")
    _settle(sup, fake_clock, 2)
    launches = fake_tmux.launches("a")
    assert len(launches) == 2 and launches[-1].argv[-1] == "New claim: 1234abc claim(y). Verify it."


def test_declared_wait_ends_with_a_resume(oc_sup, fake_tmux, fake_clock):
    sup = oc_sup()
    _settle(sup, fake_clock)
    FakeClient.last = _msg(text="WAITING-UNTIL: 2026-01-01T00:00:30Z")
    fake_tmux.pane("a").kill(status=0)
    _settle(sup, fake_clock, 10)
    assert len(fake_tmux.launches("a")) == 1
    _settle(sup, fake_clock, 25)
    assert len(fake_tmux.launches("a")) == 2 and fake_tmux.launches("a")[-1].argv[-1] == "Continue."


def test_fatal_400_outcome_gives_a_fresh_session(oc_sup, fake_tmux, fake_clock):
    sup = oc_sup()
    _settle(sup, fake_clock)
    msg = json.loads((API / "last_message_thinking_400.json").read_text())[-1]
    FakeClient.last = msg
    fake_tmux.pane("a").kill(status=0)
    _settle(sup, fake_clock)
    events = sup.store.events()
    assert [e for e in events if e["kind"] == "agent_restarted_fresh"]
    assert not [e for e in events if e["kind"] == "agent_resumed"]
    assert sup.agents["a"].conversation_id == "ses_fake2"


def test_api_error_outcome_backs_off_then_continues(oc_sup, fake_tmux, fake_clock):
    sup = oc_sup(api_error_backoff=5)
    _settle(sup, fake_clock)
    FakeClient.last = json.loads((API / "last_message_after_three_500s.json").read_text())[-1]
    fake_tmux.pane("a").kill(status=0)
    _settle(sup, fake_clock, 3)
    assert len(fake_tmux.launches("a")) == 1  # held: no resume during the back-off
    assert [e for e in sup.store.events() if e["kind"] == "finding" and e["data"].get("check") == "api_error"]
    at = [e for e in sup.store.events() if e["kind"] == "scheduled"][0]["data"]["at"]
    while fake_clock.now().strftime("%Y-%m-%dT%H:%M:%SZ") <= at:
        _settle(sup, fake_clock, 1)
    _settle(sup, fake_clock, 1)
    launches = fake_tmux.launches("a")
    assert len(launches) == 2 and launches[-1].argv[-1] == "continue", "\n".join(
        f'{e["at"]} {e["kind"]} {e["message"]}' for e in sup.store.events())
    assert launches[-1].argv[launches[-1].argv.index("--session") + 1] == "ses_fake1"


def test_a_429_with_an_hours_retry_after_waits_for_the_reset_then_continues_once(oc_sup, fake_tmux, fake_clock):
    """Issue 14: a rate-limit rejection whose headers say it lasts an hour is waited for,
    like a usage limit, not poked every api_error_backoff seconds."""
    from datetime import timedelta

    from ccci.clock import iso

    sup = oc_sup(api_error_backoff=30)
    _settle(sup, fake_clock)
    FakeClient.last = _msg(_api_error(429, "This request would exceed your account's rate limit.",
                                      {"retry-after": "3600"}))
    fake_tmux.pane("a").kill(status=0)
    _settle(sup, fake_clock, 3)
    [finding] = [e for e in sup.store.events() if e["kind"] == "finding" and e["data"].get("check") == "api_error"]
    reset = fake_clock.now() - timedelta(seconds=3) + timedelta(seconds=3600)
    assert abs((datetime.fromisoformat(finding["data"]["reset_at"].replace("Z", "+00:00")) - reset).total_seconds()) <= 2
    [wait] = [e for e in sup.store.events() if e["kind"] == "remedy" and e["data"]["action"] == "wait"]
    assert finding["data"]["reset_at"][:16] in wait["message"] or iso(reset)[:15] in wait["message"]
    while fake_clock.now() < reset:
        _settle(sup, fake_clock, 1)
        assert len(fake_tmux.launches("a")) == 1, "continued before the announced reset"
    FakeClient.last = _msg(text="done")
    _settle(sup, fake_clock, 30)
    launches = fake_tmux.launches("a")
    assert [ln.argv[-1] for ln in launches[1:]] == ["continue"]  # one continue, after the reset
    assert len([e for e in sup.store.events() if e["kind"] == "remedy" and e["data"]["action"] == "wait"]) == 1
    assert not [e for e in sup.store.events() if e["kind"] == "escalation"]


class _ServeFacts:
    """Stands in for ccci.backends.opencode.opencode_serve's tick report (``facts["opencode_serve"]``)."""

    def __init__(self):
        self.facts = {"url": "http://127.0.0.1:1", "healthy": True, "pid": 1000, "restarts": 0}

    @hookimpl(tryfirst=True)
    def ccci_observe(self, snapshot):
        snapshot.facts["opencode_serve"] = dict(self.facts)


def test_a_run_whose_server_died_is_resumed_once_the_server_is_back(oc_sup, fake_tmux, fake_clock):
    """opencode serve killed under a running turn: the half-written last message (no parts,
    no error) would read as the provider failing (an api_error back-off); it is a lost
    server instead, resumed at once when the server is healthy again."""
    sup = oc_sup(api_error_backoff=60)
    serve = _ServeFacts()
    sup.pm.register(serve, "fake_serve_facts")
    _settle(sup, fake_clock)
    FakeClient.last = json.loads((API / "last_message_after_three_500s.json").read_text())[-1]
    serve.facts.update(healthy=False, pid=None)
    fake_tmux.pane("a").kill(status=0)
    _settle(sup, fake_clock, 3)
    assert len(fake_tmux.launches("a")) == 1  # the server is down: nothing acts yet
    serve.facts.update(healthy=True, pid=2000, restarts=1)
    _settle(sup, fake_clock, 2)
    events = sup.store.events()
    launches = fake_tmux.launches("a")
    assert len(launches) == 2, "\n".join(f'{e["kind"]} {e["message"]}' for e in events)
    assert launches[-1].argv[launches[-1].argv.index("--session") + 1] == "ses_fake1"
    assert not [e for e in events if e["kind"] == "finding" and e["data"].get("check") == "api_error"]
    assert not [e for e in events if e["kind"] == "scheduled"]


def test_crash_exit_is_a_restart(oc_sup, fake_tmux, fake_clock):
    sup = oc_sup()
    _settle(sup, fake_clock)
    fake_tmux.pane("a").kill(signal=9)
    _settle(sup, fake_clock)
    assert sup.store.agent("a").restarts == 1


# ------------------------------------------------------------------ the server


def test_serve_config_errors_are_one_line(fleet_config):
    cfg = fleet_config(extra_toml="[opencode]\nport = 70000\n")
    with pytest.raises(opencode_serve.ServeConfigError, match=r"ccci.toml: opencode.port: 70000 is not a port"):
        opencode_serve.settings(cfg)
    cfg = fleet_config(extra_toml="[opencode]\nprot = 1\n")
    with pytest.raises(opencode_serve.ServeConfigError, match="opencode.prot: unknown key"):
        opencode_serve.settings(cfg)
    assert opencode_serve.settings(fleet_config())["port"] == 0


def test_stale_state_is_cleared_before_a_start(fleet_config, fake_tmux, monkeypatch):
    cfg = fleet_config(agents=({"name": "a", "backend": "opencode"},))
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    (cfg.state_dir / opencode_serve.STATE_FILE).write_text(json.dumps({"pid": 999999999, "port": 4321}))
    monkeypatch.setattr(opencode_serve.shutil, "which", lambda name: None)  # no CLI: the start fails, reported
    m = opencode_serve.ServeManager(cfg, fake_tmux)
    assert m.ensure() is False
    kinds = [e.kind for e in m.take_events()]
    assert kinds == ["opencode_serve_stale_cleared", "opencode_serve_failed"]
    assert not (cfg.state_dir / opencode_serve.STATE_FILE).exists()
    assert m.next_start_mono > 0  # backed off before the next try


def test_server_env_secrets_are_redacted(fleet_config):
    from ccci.redact import collect_secrets

    cfg = fleet_config(extra_toml='[opencode]\nenv = { OPENAI_API_KEY = "sk-serve-secret-123", HOME = "/home/x" }\n')
    secrets = collect_secrets(cfg, environ={})
    assert "sk-serve-secret-123" in secrets and "/home/x" not in secrets
