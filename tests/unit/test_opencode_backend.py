"""The opencode backend with fakes: launch argv, the API turn-outcome classification (on
responses recorded from opencode 1.18.33), turn-end resumes in the runner, and the
shared server's state handling. The real CLI runs in tests/e2e/opencode/."""
from __future__ import annotations

import json
import time
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
    """Stands in for :class:`ServerClient`: ``last`` is the session's newest message,
    ``queued`` user messages come after it, ``status`` is the session's server status
    (``None``: idle); ``aborts`` records abort calls (an abort ends the turn)."""

    created: list[tuple[str, str]] = []
    last: dict | None = None
    queued: list[dict] = []
    status: dict | None = None
    aborts: list[str] = []
    abort_ends_turn = True
    create_fails = 0  #: the next N session creations time out (a server still starting)
    earlier: list[dict] = []  #: the session's messages before ``last``
    down = False  #: the server is gone: every message read fails

    def __init__(self, url):
        self.url = url

    def create_session(self, title, directory):
        if FakeClient.create_fails:
            FakeClient.create_fails -= 1
            raise ServerError("POST /session: timed out")
        FakeClient.created.append((title, directory))
        return f"ses_fake{len(FakeClient.created)}"

    def messages(self, session_id, limit=20):
        if FakeClient.down:
            raise ServerError("GET /message: connection refused")
        return (FakeClient.earlier + ([FakeClient.last] if FakeClient.last else []) + FakeClient.queued)[-limit:]

    def statuses(self, directory):
        return {f"ses_fake{len(FakeClient.created)}": FakeClient.status} if FakeClient.status else {}

    def abort(self, session_id, directory):
        FakeClient.aborts.append(session_id)
        if FakeClient.abort_ends_turn:
            FakeClient.status = None
        return True


def _reset_fake():
    FakeClient.created, FakeClient.last, FakeClient.queued, FakeClient.status = [], None, [], None
    FakeClient.aborts, FakeClient.abort_ends_turn, FakeClient.create_fails = [], True, 0
    FakeClient.earlier, FakeClient.down = [], False


def _backend():
    b = OpencodeBackend()
    b.server_url = lambda config: "http://127.0.0.1:4242"
    b.client_factory = FakeClient
    b.events_factory = None
    return b


def _prompt(argv):
    """What opencode 1.18.33 ``run`` makes of the argv's message arguments: joined with
    spaces, each argument that contains a space wrapped in double quotes (its ``run``
    command; measured against the real CLI in tests/e2e/opencode/test_opencode_server_truth.py)."""
    args = argv[argv.index("--") + 1:] if "--" in argv else argv[-1:]
    return " ".join(f'"{a}"' if " " in a else a for a in args)


def test_launch_fresh_creates_the_session_then_attaches(tmp_path):
    FakeClient.created = []
    spec = AgentSpec(name="builder", role=Role.LOOP, backend="opencode", workdir=tmp_path, model="scripted/model",
                     env={"HOME": "/h"})
    plan = _backend().launch(spec, SimpleNamespace(name="f1"), "ignored-uuid", False, "-starts with a dash")
    assert FakeClient.created == [("ccci-f1-builder", str(tmp_path))]
    assert plan.conversation_id == "ses_fake1"
    # the prompt split on spaces after "--" (opencode quotes arguments that contain a
    # space: the one-argument form reached the model as '"-starts with a dash"', issue 13)
    assert plan.argv == ["opencode", "run", "--attach", "http://127.0.0.1:4242", "--session", "ses_fake1",
                         "--dir", str(tmp_path), "--auto", "--model", "scripted/model", "--", "-starts", "with",
                         "a", "dash"]
    assert _prompt(plan.argv) == "-starts with a dash"
    assert plan.env["HOME"] == "/h" and plan.env["OPENCODE_DISABLE_AUTOUPDATE"] == "1"


def test_launch_resume_continues_the_session(tmp_path):
    FakeClient.created = []
    spec = AgentSpec(name="a", role=Role.LOOP, backend="opencode", workdir=tmp_path, options={"auto": False})
    plan = _backend().launch(spec, SimpleNamespace(name="f"), "ses_abc", True, "")
    assert FakeClient.created == []
    assert plan.argv[-4:] == ["--dir", str(tmp_path), "--", "Continue."] and "--auto" not in plan.argv
    assert plan.argv[plan.argv.index("--session") + 1] == "ses_abc"
    with pytest.raises(ValueError, match="not an opencode session id"):
        _backend().launch(spec, SimpleNamespace(name="f"), "0b5f-uuid", True, "")


def test_launch_without_server_raises(tmp_path):
    b = OpencodeBackend()
    cfg = SimpleNamespace(name="f", state_dir=tmp_path / ".ccci")
    spec = AgentSpec(name="a", role=Role.LOOP, backend="opencode", workdir=tmp_path)
    with pytest.raises(ServerError, match="opencode serve is not running"):
        b.launch(spec, cfg, "x", False, "hi")


def test_session_creation_waits_longer_than_the_other_requests():
    """``POST /session`` gets CREATE_TIMEOUT_S (a first launch on a busy machine timed out
    at the 2 s every other request gets); a local HTTP server that answers after 0.6 s."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from ccci.backends.opencode import CREATE_TIMEOUT_S, ServerClient

    class Slow(BaseHTTPRequestHandler):
        def _answer(self, body):
            time.sleep(0.6)
            raw = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self._answer({"id": "ses_slow1"})

        def do_GET(self):  # noqa: N802
            self._answer({})

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = ServerClient(f"http://127.0.0.1:{srv.server_address[1]}", timeout=0.3)
        assert CREATE_TIMEOUT_S >= 5
        assert client.create_session("t", "/tmp") == "ses_slow1"
        with pytest.raises(ServerError, match="timed out"):
            client.statuses("/tmp")
    finally:
        srv.shutdown()
        srv.server_close()


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
    _reset_fake()
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
    assert _prompt(launches[-1].argv) == "New claim: abc123 claim(x). Verify it."  # the queued ping is the prompt
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


def test_a_first_launch_that_failed_while_the_server_started_is_then_a_start(oc_sup, fake_tmux, fake_clock):
    """Seen in a CI run on 2 busy cores: the fleet's first launch found ``opencode serve``
    not answering ``POST /session`` yet (launch_failed); the launch a tick later is the
    agent's first start (``agent_started``, no restart counted), not a fresh restart."""
    FakeClient.create_fails = 1
    sup = oc_sup()
    failed = [e for e in sup.store.events() if e["kind"] == "launch_failed"]
    assert len(failed) == 1 and "POST /session: timed out" in failed[0]["message"]
    assert fake_tmux.launches("a") == [] and sup.store.agent("a").generation == 0
    _settle(sup, fake_clock)
    kinds = [e["kind"] for e in sup.store.events()]
    assert kinds.count("agent_started") == 1 and "agent_restarted_fresh" not in kinds, kinds
    started = [e for e in sup.store.events() if e["kind"] == "agent_started"][0]
    assert started["data"]["mode"] == "start" and started["data"]["conversation_id"] == "ses_fake1"
    rec = sup.store.agent("a")
    assert rec.generation == 1 and rec.restarts == 0 and len(fake_tmux.launches("a")) == 1
    # once it has run, a fresh session is a restart again (the fatal 400)
    FakeClient.last = json.loads((API / "last_message_thinking_400.json").read_text())[-1]
    fake_tmux.pane("a").kill(status=0)
    _settle(sup, fake_clock)
    kinds = [e["kind"] for e in sup.store.events()]
    assert kinds.count("agent_started") == 1 and kinds.count("agent_restarted_fresh") == 1, kinds
    assert sup.store.agent("a").restarts == 1


def _answer(n, input_tokens, output_tokens):
    """An assistant message of one model call as opencode 1.18.33 stores it: text, then
    the call's ``step-finish`` part with its tokens (ccci.backends.opencode.usage)."""
    return {"info": {"id": f"msg_{n}", "role": "assistant", "providerID": "scripted", "modelID": "model",
                     "time": {"created": 1767225600000 + n, "completed": 1767225600001 + n}},
            "parts": [{"id": f"prt_t{n}", "type": "text", "text": f"TURN-{n} done."},
                      {"id": f"prt_s{n}", "type": "step-finish",
                       "tokens": {"input": input_tokens, "output": output_tokens, "reasoning": 0,
                                  "cache": {"read": 0, "write": 0}}}]}


def _tokens(sup):
    return [(r["input_tokens"], r["output_tokens"]) for r in sup.store.usage_rows("a")]


def test_the_last_turns_usage_is_read_before_the_given_up_agents_server_goes(oc_sup, fake_tmux, fake_clock):
    """The CI failure of the turn-end e2e test (2 busy cores: 7540/10 tokens read where the
    model server sent 10101/22): the last turn ended, the agent was given up at
    max_turns_per_hour, the next tick stopped the server (no opencode agent needs it) and
    the last turn's usage was never read. The read in the tick the pane is seen dead (a
    final read, whatever usage_interval says) has it before the server goes."""
    sup = oc_sup(max_turns_per_hour=1, usage_interval=3600)
    _settle(sup, fake_clock)
    FakeClient.last = _answer(1, 3000, 3)
    fake_tmux.pane("a").kill(status=0)
    _settle(sup, fake_clock)
    assert _tokens(sup) == [(3000, 3)]  # read at the turn end, not after 3600 s
    assert len(fake_tmux.launches("a")) == 2  # resumed
    FakeClient.earlier, FakeClient.last = [FakeClient.last], _answer(2, 4540, 7)
    fake_tmux.pane("a").kill(status=0)
    fake_clock.advance(1.0)
    sup.tick()
    assert sup.store.agent("a").given_up  # max_turns_per_hour (1) reached in that tick
    FakeClient.down = True  # the server is stopped the tick after
    _settle(sup, fake_clock, 3)
    assert _tokens(sup) == [(3000 + 4540, 3 + 7)]


def test_a_final_read_the_server_did_not_answer_is_tried_again(oc_sup, fake_tmux, fake_clock):
    sup = oc_sup(max_turns_per_hour=1, usage_interval=3600)
    _settle(sup, fake_clock)
    FakeClient.last = _answer(1, 100, 1)
    FakeClient.down = True  # slow or restarting: the read in the tick of the exit fails
    fake_tmux.pane("a").kill(status=0)
    fake_clock.advance(1.0)
    sup.tick()
    assert _tokens(sup) == []
    FakeClient.down = False
    _settle(sup, fake_clock)
    assert _tokens(sup) == [(100, 1)]


def test_ccci_stop_reads_the_usage_before_the_server_is_stopped(oc_sup, fake_tmux, fake_clock):
    """``agent_stopped`` (here: the watcher's own stop; ``ccci stop`` emits the same event)
    reads the agent's usage at once, before the opencode server plugin hears of it and
    stops the server: no tick comes in between."""
    sup = oc_sup(usage_interval=3600)
    _settle(sup, fake_clock)
    FakeClient.last = _answer(1, 2561, 12)  # a step ended since the last read
    seen = []

    @hookimpl
    def ccci_report_event(event):
        if event.kind == "agent_stopped":
            seen.append(_tokens(sup))
            FakeClient.down = True  # what opencode_serve does when no agent needs the server
    sup.pm.register(SimpleNamespace(ccci_report_event=ccci_report_event), "stops_the_server")
    sup.lifecycle.stop("a", "ccci stop")
    assert seen == [[(2561, 12)]]


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
    assert len(launches) == 2 and _prompt(launches[-1].argv) == "New claim: 1234abc claim(y). Verify it."


def test_declared_wait_ends_with_a_resume(oc_sup, fake_tmux, fake_clock):
    sup = oc_sup()
    _settle(sup, fake_clock)
    FakeClient.last = _msg(text="WAITING-UNTIL: 2026-01-01T00:00:30Z")
    fake_tmux.pane("a").kill(status=0)
    _settle(sup, fake_clock, 10)
    assert len(fake_tmux.launches("a")) == 1
    _settle(sup, fake_clock, 25)
    assert len(fake_tmux.launches("a")) == 2 and _prompt(fake_tmux.launches("a")[-1].argv) == "Continue."


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
    assert len(launches) == 2 and _prompt(launches[-1].argv) == "continue", "\n".join(
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


# ------------------------------------------------------------------ the server is the source of truth (issue 13)


def _user(text="ccci restarted this session"):
    return {"info": {"role": "user", "time": {"created": 3}}, "parts": [{"type": "text", "text": text}]}


def test_an_error_belongs_to_its_turn_whatever_was_queued_after_it():
    """A prompt queued behind a failing turn (ccci's, after a stall restart) is the
    newest message when opencode's retry loop gives up: the turn still ended in an error."""
    from ccci.backends.opencode import classify_session

    failed = _msg(_api_error(529, "Overloaded"))
    assert classify_session([_user("go"), failed, _user()], NOW).state == AgentState.API_ERROR
    replyless = json.loads((API / "last_message_after_three_500s.json").read_text())[-1]
    assert classify_session([replyless, _user(), _user()], NOW).state == AgentState.API_ERROR
    assert classify_session([_user("go"), _msg(text="done")], NOW).state == AgentState.IDLE
    aborted = _msg({"name": "MessageAbortedError", "data": {"message": "Aborted"}})
    assert classify_session([_user("go"), aborted], NOW).state == AgentState.IDLE  # ccci's own abort
    assert classify_session([], NOW).state == AgentState.IDLE


def test_api_error_with_a_queued_prompt_backs_off(oc_sup, fake_tmux, fake_clock):
    sup = oc_sup(api_error_backoff=30)
    _settle(sup, fake_clock)
    FakeClient.last = _msg(_api_error(529, "Overloaded"))
    FakeClient.queued = [_user()]
    fake_tmux.pane("a").kill(status=0)
    _settle(sup, fake_clock, 5)
    assert len(fake_tmux.launches("a")) == 1, "no resume at once: the turn failed"
    assert [e for e in sup.store.events() if e["kind"] == "finding" and e["data"].get("check") == "api_error"]


def test_a_stale_error_line_on_the_pane_does_not_override_the_server(oc_sup, fake_tmux, fake_clock):
    """Issue 13: opencode hit the context limit, compacted and re-ran the turn by itself;
    the server says the turn ended cleanly with a declared wait, while the old
    ``Error: ... maximum context length`` line is still on the (dead) pane. Nothing acts:
    no fresh session, no restart, until the wait is over."""
    sup = oc_sup()
    _settle(sup, fake_clock)
    conv = sup.agents["a"].conversation_id
    pane = fake_tmux.pane("a")
    pane.input_box = None
    pane.set_screen("> build · model\nError: This model's maximum context length is 128000 tokens. "
                    "However, your messages resulted in 130000 tokens.\nCompacted. Done.\n"
                    "WAITING-UNTIL: 2026-01-01T00:10:00Z")
    assert sup.agents["a"].backend.analyse(pane.capture()).state == AgentState.CONTEXT_LIMIT  # the pane alone acts
    FakeClient.last = _msg(text="Compacted. Done. WAITING-UNTIL: 2026-01-01T00:10:00Z")
    FakeClient.status = {"type": "busy"}
    _settle(sup, fake_clock, 3)
    assert sup.agents["a"].analysis.state == AgentState.BUSY  # a turn runs on the server
    FakeClient.status = None
    pane.kill(status=0)
    _settle(sup, fake_clock, 30)
    events = sup.store.events()
    assert not [e for e in events if e["kind"] == "finding"], [e["message"] for e in events if e["kind"] == "finding"]
    assert len(fake_tmux.launches("a")) == 1 and sup.agents["a"].conversation_id == conv


def test_a_restart_first_aborts_the_turn_on_the_server(oc_sup, fake_tmux, fake_clock):
    """A stall restart of a hung turn: the server-side turn is aborted (and seen to end)
    before the new ``opencode run`` starts; the nudge is not queued behind the running turn,
    so the restart note is the one prompt."""
    sup = oc_sup(stall_idle=60, failure_threshold=1)
    _settle(sup, fake_clock)
    FakeClient.status = {"type": "busy"}
    pane = fake_tmux.pane("a")
    pane.input_box = None
    pane.set_screen("> build · model\n")
    _settle(sup, fake_clock, 65)
    assert FakeClient.aborts == [] and len(fake_tmux.launches("a")) == 1  # nudged, not restarted
    # the nudge is not queued behind the running turn (it would pile up: issue 13)
    assert sup.store.pending_messages("a") == []
    assert len([e for e in sup.store.events() if e["kind"] == "nudge_dropped"]) == 1
    _settle(sup, fake_clock, 30)
    assert len(fake_tmux.launches("a")) == 1, "the nudge gets its own wait"
    _settle(sup, fake_clock, 40)
    launches = fake_tmux.launches("a")
    assert FakeClient.aborts == ["ses_fake1"] and len(launches) == 2
    ev = [e for e in sup.store.events() if e["kind"] in ("opencode_turn_aborted", "agent_resumed")]
    assert [e["kind"] for e in ev] == ["opencode_turn_aborted", "agent_resumed"] and ev[0]["data"]["ended"]
    prompt = _prompt(launches[-1].argv)  # one prompt: the restart note, not nudge + restart note
    assert prompt.startswith("ccci restarted this session (stall") and sup.agents["a"].backend.nudge_text not in prompt


def test_a_turn_that_does_not_end_after_its_abort_vetoes_the_launch(oc_sup, fake_tmux, fake_clock, monkeypatch):
    from ccci.backends import opencode as oc

    monkeypatch.setattr(oc, "ABORT_WAIT_S", 0.3)
    sup = oc_sup(stall_idle=30, failure_threshold=1, nudges_before_restart=0)
    _settle(sup, fake_clock)
    FakeClient.status, FakeClient.abort_ends_turn = {"type": "retry", "attempt": 9, "next": 0}, False
    pane = fake_tmux.pane("a")
    pane.input_box = None
    pane.set_screen("> build · model\n")
    _settle(sup, fake_clock, 100)
    assert FakeClient.aborts and len(fake_tmux.launches("a")) == 1  # not launched behind the running turn
    ev = [e for e in sup.store.events() if e["kind"] == "opencode_turn_aborted"]
    assert ev and not ev[0]["data"]["ended"]


def test_server_retry_and_events_are_progress(oc_sup, fake_tmux, fake_clock):
    """opencode run prints nothing until a part completes: the server's events (and a
    retry on schedule) are the progress the stall check sees."""
    from ccci.backends.opencode import EVENTS

    class Events:
        url = "http://127.0.0.1:4242"

        def __init__(self):
            self.t = None

        def last_activity(self, sid):
            return self.t

        def silent_for(self, mono):
            return 0.0  # an open stream with heartbeats

        def close(self):
            pass

    sup = oc_sup(stall_idle=60, failure_threshold=1)
    _settle(sup, fake_clock)
    events = Events()
    sup.stashes.get("opencode", None)[EVENTS] = events
    FakeClient.status = {"type": "busy"}
    pane = fake_tmux.pane("a")
    pane.input_box = None
    pane.set_screen("> build · model\n")
    for _ in range(30):  # a chunk every 5 s for 150 s
        events.t = fake_clock.monotonic()
        _settle(sup, fake_clock, 5)
    FakeClient.status = {"type": "retry", "attempt": 5, "message": "Overloaded",
                         "next": int((fake_clock.now().timestamp() + 100) * 1000)}
    _settle(sup, fake_clock, 90)
    assert not [e for e in sup.store.events() if e["kind"] == "finding"]
    FakeClient.status = {"type": "busy"}
    _settle(sup, fake_clock, 70)
    assert [e for e in sup.store.events() if e["kind"] == "finding" and e["data"]["check"] == "stall"]


def test_event_stream_lines_count_per_session():
    from ccci.backends.opencode import EventWatcher

    w = EventWatcher.__new__(EventWatcher)  # no thread: feed lines by hand
    import threading
    w._last, w._lock, w.events, w.clock = {}, threading.Lock(), 0, iter([9.0, 10.0, 11.0]).__next__
    w.connected, w.last_line_mono, w.on_event = True, None, None
    w.feed('{"payload": {"type": "server.heartbeat", "properties": {}}}')
    w.feed('{"directory": "/w", "payload": {"type": "message.part.delta", "properties": '
           '{"sessionID": "ses_1", "delta": "chunk"}}}')
    w.feed("not json")
    assert w.last_activity("ses_1") == 10.0 and w.last_activity("ses_2") is None and w.events == 1
    assert w.silent_for(20.0) == 9.0  # every line counts for the stream's liveness, heartbeats too


def test_the_server_is_needed_only_while_an_opencode_agent_is():
    spec = SimpleNamespace(backend="opencode")
    a = SimpleNamespace(spec=spec, stopped=False, given_up=False)
    b = SimpleNamespace(spec=spec, stopped=True, given_up=False)
    c = SimpleNamespace(spec=SimpleNamespace(backend="claude"), stopped=False, given_up=False)
    assert opencode_serve._needing({"a": a, "b": b, "c": c}, {}) == ["a"]
    a.given_up = True
    assert opencode_serve._needing({"a": a, "b": b, "c": c}, {}) == []
    assert opencode_serve._needing({"a": a, "b": b}, {"b": True}) == ["b"]  # a run in flight keeps it


def test_a_running_tool_is_progress_for_a_bounded_time(oc_sup, fake_tmux, fake_clock, monkeypatch):
    """A long build: the server says busy, the tool part says running, nothing streams.
    That is progress for up to TOOL_RUN_MAX_S; a tool hung longer is a stall."""
    from ccci.backends import opencode as oc

    monkeypatch.setattr(oc, "TOOL_RUN_MAX_S", 200.0)
    sup = oc_sup(stall_idle=60, failure_threshold=1)
    _settle(sup, fake_clock)
    FakeClient.status = {"type": "busy"}
    FakeClient.last = {"info": {"role": "assistant", "time": {"created": 1}},
                       "parts": [{"type": "step-start"}, {"id": "prt_1", "type": "tool", "tool": "bash",
                                                           "state": {"status": "running"}}]}
    pane = fake_tmux.pane("a")
    pane.input_box = None
    pane.set_screen("> build · model\n")
    _settle(sup, fake_clock, 190)
    assert not [e for e in sup.store.events() if e["kind"] == "finding"]
    _settle(sup, fake_clock, 80)
    assert [e for e in sup.store.events() if e["kind"] == "finding" and e["data"]["check"] == "stall"]


def test_the_event_stream_wakes_on_turn_state_and_a_silent_stream_is_seen(tmp_path):
    """A real SSE stream on loopback, shaped as opencode 1.18.33's /global/event: a
    ``session.status`` event calls ``on_event`` (the runner's wake); deltas do not; after
    the last line (no heartbeat follows) ``silent_for`` grows; ``close`` ends the thread."""
    import http.server
    import threading
    import time as _time

    from ccci.backends.opencode import EventWatcher

    release = threading.Event()

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            for payload in ({"type": "server.connected", "properties": {}},
                            {"type": "message.part.delta", "properties": {"sessionID": "ses_1", "delta": "x"}},
                            {"type": "session.status", "properties": {"sessionID": "ses_1", "status": {"type": "idle"}}}):
                self.wfile.write(f"data: {json.dumps({'directory': '/w', 'payload': payload})}\n\n".encode())
                self.wfile.flush()
            release.wait(10)  # then silence: no heartbeat

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    woke: list[tuple[str, str]] = []
    w = EventWatcher(f"http://127.0.0.1:{srv.server_address[1]}", on_event=lambda k, s: woke.append((k, s)))
    try:
        end = _time.monotonic() + 10
        while not woke and _time.monotonic() < end:
            _time.sleep(0.01)
        assert woke == [("session.status", "ses_1")] and w.events == 2 and w.connected
        t0 = w.silent_for(_time.monotonic())
        _time.sleep(0.3)
        assert w.silent_for(_time.monotonic()) >= t0 + 0.25
    finally:
        w.close()
        release.set()
        srv.shutdown()
        srv.server_close()
    w._thread.join(5)
    assert not w._thread.is_alive()


def test_a_silent_stream_while_busy_is_reported_once_and_polling_gives_progress(oc_sup, fake_tmux, fake_clock):
    """The stream is open but silent (no heartbeat for EVENTS_SILENT_S) while the API says
    busy: one ``opencode_events_silent`` event, the stream is reopened, and a change of
    the turn's message (polled) is progress, so a slow healthy turn is no stall."""
    from ccci.backends.opencode import EVENTS

    class Silent:
        url = "http://127.0.0.1:4242"
        reopened = 0

        def last_activity(self, sid):
            return None

        def silent_for(self, mono):
            return mono  # nothing since monotonic 0

        def reopen(self):
            Silent.reopened += 1

        def close(self):
            pass

    sup = oc_sup(stall_idle=60, failure_threshold=1)
    _settle(sup, fake_clock)
    sup.stashes.get("opencode", None)[EVENTS] = Silent()
    FakeClient.status = {"type": "busy"}
    pane = fake_tmux.pane("a")
    pane.input_box = None
    pane.set_screen("> build · model\n")
    for i in range(20):  # a new part every 5 s for 100 s, seen only by polling
        FakeClient.last = {"info": {"role": "assistant", "time": {"created": 1}},
                           "parts": [{"id": f"prt_{j}", "type": "text", "text": "x" * j} for j in range(i + 1)]}
        _settle(sup, fake_clock, 5)
    silent = [e for e in sup.store.events() if e["kind"] == "opencode_events_silent"]
    assert len(silent) == 1 and Silent.reopened == 1
    assert not [e for e in sup.store.events() if e["kind"] == "finding"]
    _settle(sup, fake_clock, 70)  # the message stops changing: a stall after all
    assert [e for e in sup.store.events() if e["kind"] == "finding" and e["data"]["check"] == "stall"]


def test_a_restart_on_the_tick_path_never_blocks_for_the_start_timeout(fleet_config, fake_tmux, monkeypatch):
    """Under load the server's restart waited up to start_timeout (30 s) inside the
    plugin's ccci_observe, past its check_timeout (10 s): the interrupted start read as
    a dead server, the next tick killed it and started another, and after 5 timeouts the
    plugin was disabled. A restart now returns at once and each tick probes once."""
    cfg = fleet_config(agents=({"name": "a", "backend": "opencode"},))
    clock = {"t": 1000.0}
    m = opencode_serve.ServeManager(cfg, fake_tmux, mono=lambda: clock["t"])
    m.pid, m.port, m.url, m.healthy = 4242, 4321, "http://127.0.0.1:4321", True
    answers = {"healthy": False}
    alive = {4242: False}
    monkeypatch.setattr(opencode_serve.shutil, "which", lambda name: "/usr/bin/opencode")
    monkeypatch.setattr(opencode_serve, "_is_serve", lambda pid, port=None: bool(alive.get(pid)))
    monkeypatch.setattr(opencode_serve, "_alive", lambda pid: bool(alive.get(pid)))
    monkeypatch.setattr(opencode_serve, "port_free", lambda port: True)
    monkeypatch.setattr(m, "probe", lambda url=None: answers["healthy"])
    monkeypatch.setattr(opencode_serve.time, "sleep", lambda s: pytest.fail("the tick path slept"))
    m.check()  # the process died: a new one is started, not waited for
    [pane] = fake_tmux.launches(opencode_serve.session_name(cfg))
    alive[pane.pid] = True
    assert m.starting is not None and m.pid == pane.pid and not m.healthy
    assert [e.kind for e in m.take_events()] == ["opencode_serve_died"]
    for _ in range(3):  # starting: one probe per tick, no new start, nothing killed
        clock["t"] += 1
        m.check()
        assert m.take_events() == [] and len(fake_tmux.launches(opencode_serve.session_name(cfg))) == 1
    answers["healthy"] = True
    clock["t"] += 1
    m.check()
    evs = m.take_events()
    assert [e.kind for e in evs] == ["opencode_serve_started", "opencode_serve_restarted"]
    assert evs[1].data["latency_s"] == 4.0 and m.healthy and m.restarts == 1 and m.starting is None
    # a start that never answers fails at start_timeout, killed, backed off
    alive[pane.pid] = False
    answers["healthy"] = False
    m.check()
    [second] = fake_tmux.launches(opencode_serve.session_name(cfg))[1:]
    alive[second.pid] = True
    m.take_events()
    killed = []
    monkeypatch.setattr("ccci.processes.kill_tree", lambda pid: killed.append(pid))
    clock["t"] += opencode_serve.settings(cfg)["start_timeout"] + 1
    m.check()
    assert [e.kind for e in m.take_events()] == ["opencode_serve_failed"]
    assert killed == [second.pid] and m.pid is None and m.starting is None and m.next_start_mono > clock["t"]


def test_no_agent_is_given_the_url_of_a_server_that_is_still_starting(fleet_config, fake_tmux, monkeypatch):
    """e2e under load: an agent relaunched while the restarted server was not listening
    yet attached to it and sat idle for good. server_url() refuses until it answers."""
    cfg = fleet_config(agents=({"name": "a", "backend": "opencode"},))
    m = opencode_serve.ServeManager(cfg, fake_tmux)
    monkeypatch.setattr(opencode_serve.shutil, "which", lambda name: "/usr/bin/opencode")
    monkeypatch.setattr(opencode_serve, "port_free", lambda port: True)
    monkeypatch.setattr(opencode_serve, "_is_serve", lambda pid, port=None: pid is not None and pid == m.pid)
    monkeypatch.setattr(opencode_serve, "_alive", lambda pid: pid is not None and pid == m.pid)
    answers = {"healthy": False}
    monkeypatch.setattr(m, "probe", lambda url=None: answers["healthy"])
    assert m.ensure(wait=False) is False and m.starting is not None
    with pytest.raises(ServerError, match="is starting"):
        opencode_serve.server_url(cfg)
    answers["healthy"] = True
    m.check()
    assert opencode_serve.server_url(cfg) == m.url


def test_a_restart_waits_for_a_starting_server_without_backoff(make_supervisor, fake_tmux, fake_clock, monkeypatch):
    """e2e under load (load average 15): the server failed 3 health checks and was
    restarted; the agent, dead with it, was relaunched into the starting server three
    times, each a failed launch with a growing backoff. A launch now waits for the
    server (Backend.launch_blocked) without counting a restart."""
    from ccci.backends.opencode import OpencodeBackend
    from ccci.testing.fakes import events, tick

    sup = make_supervisor(agents=["a"], checks={"startup_grace": 0, "failure_threshold": 1})
    tick(sup)
    why = {"now": "opencode serve is starting (pid 1, http://127.0.0.1:1)"}
    monkeypatch.setattr(sup.agents["a"].backend, "launch_blocked", lambda spec, config: why["now"])
    fake_tmux.pane("a").kill(status=1)
    for _ in range(5):
        tick(sup)
    assert len(fake_tmux.launches("a")) == 1 and not events(sup, "backoff") and not events(sup, "launch_failed")
    waits = [e for e in events(sup, "finding", "a") if "the launch waits" in e["message"]]
    assert len(waits) == 1  # said once, not every tick
    why["now"] = None
    tick(sup)
    tick(sup)
    assert len(fake_tmux.launches("a")) == 2 and not events(sup, "backoff")
    assert OpencodeBackend().launch_blocked is not None


def test_a_busy_server_is_restarted_only_after_failing_health_checks_for_unhealthy_min_s(
        fleet_config, fake_tmux, monkeypatch):
    cfg = fleet_config(agents=({"name": "a", "backend": "opencode"},))
    clock = {"t": 1000.0}
    m = opencode_serve.ServeManager(cfg, fake_tmux, mono=lambda: clock["t"])
    m.pid, m.port, m.url, m.healthy = 4242, 4321, "http://127.0.0.1:4321", True
    monkeypatch.setattr(opencode_serve, "_is_serve", lambda pid, port=None: pid == 4242)
    monkeypatch.setattr(m, "probe", lambda url=None: False)
    killed = []
    monkeypatch.setattr("ccci.processes.kill_tree", lambda pid: killed.append(pid))
    monkeypatch.setattr(m, "_restart", lambda why: None)
    for _ in range(opencode_serve.UNHEALTHY_LIMIT + 3):  # one check a second: slow, not dead
        m.check()
        clock["t"] += 1
    assert killed == [] and not [e for e in m.take_events() if e.kind == "opencode_serve_unhealthy"]
    clock["t"] += opencode_serve.UNHEALTHY_MIN_S
    m.check()
    assert killed == [4242] and [e.kind for e in m.take_events()] == ["opencode_serve_unhealthy"]
