"""The scripted model server (:mod:`ccci.testing.model_server`) on its own: driven with
urllib/http.client and a tiny SSE parser, no agent CLI."""
from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from ccci.testing.model_server import (
    Echo, Fail, ModelServer, Text, ToolUse, load_script, step_from_json, step_label, step_to_json,
)

TOOLS = [{"name": "Bash", "description": "run a command", "input_schema": {"type": "object"}}]


# ----------------------------------------------------------------------- helpers


def post(url: str, path: str, body: dict, headers: dict | None = None, timeout: float = 10):
    """POST JSON; returns (status, headers, raw body bytes) for 2xx and errors alike."""
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def sse(raw: bytes) -> list[tuple[str | None, object]]:
    """Parse server-sent events into ``[(event name or None, data)]``; ``data`` is JSON
    when it parses, else the raw string (``[DONE]``)."""
    out: list[tuple[str | None, object]] = []
    for block in raw.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:"):].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:"):].strip())
        text = "\n".join(data)
        try:
            out.append((name, json.loads(text)))
        except ValueError:
            out.append((name, text))
    return out


def msg(text: str = "hello", *, stream: bool = True, tools: list | None = TOOLS, **extra) -> dict:
    body = {"model": "claude-test", "max_tokens": 64000, "stream": stream,
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}], **extra}
    if tools is not None:
        body["tools"] = tools
    return body


def chat(text: str = "hello", *, stream: bool = True, tools: bool = True, **extra) -> dict:
    body = {"model": "gpt-test", "stream": stream, "messages": [{"role": "user", "content": text}], **extra}
    if tools:
        body["tools"] = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
    return body


@pytest.fixture
def server():
    servers: list[ModelServer] = []

    def make(script=None, **kw) -> ModelServer:
        s = ModelServer(script, **kw)
        s.start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


# ----------------------------------------------------------------- basic routes


def test_start_returns_loopback_url_and_root_answers(server):
    srv = server()
    assert srv.url.startswith("http://127.0.0.1:") and srv.port > 0
    for method in ("HEAD", "GET"):
        with urllib.request.urlopen(urllib.request.Request(srv.url + "/", method=method), timeout=5) as r:
            assert r.status == 200
    assert [r.method for r in srv.requests] == ["HEAD", "GET"]
    assert {r.kind for r in srv.requests} == {"other"}


def test_unknown_path_404_and_count_tokens(server):
    srv = server()
    status, _, body = post(srv.url, "/v1/nope", {})
    assert status == 404 and json.loads(body)["error"]["type"] == "not_found_error"
    status, _, body = post(srv.url, "/v1/messages/count_tokens", msg())
    assert status == 200 and json.loads(body)["input_tokens"] > 0
    assert srv.main_requests() == []


# ------------------------------------------------------------- anthropic stream


def test_text_stream_has_the_official_event_sequence(server):
    srv = server([Text("Hello, scripted world!", chunk=5)])
    status, headers, raw = post(srv.url, "/v1/messages?beta=true", msg())
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["request-id"].startswith("req_")
    events = sse(raw)
    names = [n for n, _ in events]
    assert names[:4] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    for name, data in events:  # every event's data names its own type
        assert data["type"] == name
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["model"] == "claude-test"
    assert start["id"].startswith("msg_") and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] > 0
    assert events[2][1] == {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert [d["text"] for d in deltas] == ["Hello", ", scr", "ipted", " worl", "d!"]
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0


def test_tool_use_streams_input_json_deltas_then_continues_after_tool_result(server):
    command = {"command": "git commit -am 'scripted' && git push", "description": "commit"}
    srv = server([ToolUse("Bash", command, id="toolu_fixed"), Text("Pushed.")])
    _, _, raw = post(srv.url, "/v1/messages", msg("commit please"))
    events = sse(raw)
    start = next(d for n, d in events if n == "content_block_start")
    assert start["content_block"] == {"type": "tool_use", "id": "toolu_fixed", "name": "Bash", "input": {}}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert all(d["type"] == "input_json_delta" for d in deltas)
    assert deltas[0]["partial_json"] == "" and len(deltas) > 2
    assert json.loads("".join(d["partial_json"] for d in deltas)) == command
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"

    # the client runs the tool and calls again with the tool_result: next step
    follow = msg("commit please")
    follow["messages"] += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_fixed", "name": "Bash", "input": command}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_fixed", "content": "ok"}]},
    ]
    _, _, raw = post(srv.url, "/v1/messages", follow)
    events = sse(raw)
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "Pushed."
    assert [r.step for r in srv.main_requests()] == ["tool_use:Bash", "text"]


def test_tool_use_with_preamble_and_multi_block_step(server):
    srv = server([ToolUse("Bash", {"command": "ls"}, text="Let me look."),
                  [Text("Two tools:"), ToolUse("Bash", {"command": "a"}), ToolUse("Bash", {"command": "b"})]])
    events = sse(post(srv.url, "/v1/messages", msg())[2])
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["text", "tool_use"]
    assert [d["index"] for n, d in events if n == "content_block_stop"] == [0, 1]
    events = sse(post(srv.url, "/v1/messages", msg())[2])
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use", "tool_use"]
    assert starts[1]["id"] != starts[2]["id"] and starts[1]["id"].startswith("toolu_")
    assert srv.main_requests()[1].step == "text+tool_use:Bash+tool_use:Bash"


def test_non_streaming_message(server):
    srv = server([ToolUse("Bash", {"command": "true"}, text="Running.")])
    status, headers, raw = post(srv.url, "/v1/messages", msg(stream=False))
    assert status == 200 and headers["content-type"] == "application/json"
    body = json.loads(raw)
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["content"][0] == {"type": "text", "text": "Running."}
    assert body["content"][1]["type"] == "tool_use" and body["content"][1]["input"] == {"command": "true"}
    assert body["stop_reason"] == "tool_use"


def test_keep_alive_serves_several_requests_on_one_connection(server):
    srv = server([Text("one"), Text("two")])
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        for expected in ("one", "two"):
            conn.request("POST", "/v1/messages?beta=true", body=json.dumps(msg()),
                         headers={"content-type": "application/json"})
            resp = conn.getresponse()
            assert resp.getheader("transfer-encoding") == "chunked"
            events = sse(resp.read())
            assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == expected
    finally:
        conn.close()


# ---------------------------------------------------------------------- failures


def _error(raw: bytes) -> dict:
    body = json.loads(raw)
    assert body["type"] == "error" and body["request_id"].startswith("req_")
    return body["error"]


def test_thinking_400(server):
    srv = server([Fail.thinking_400(), Text("after")])
    status, headers, raw = post(srv.url, "/v1/messages?beta=true", msg())
    assert status == 400 and headers["request-id"].startswith("req_")
    err = _error(raw)
    assert err["type"] == "invalid_request_error"
    assert err["message"] == (
        "messages.1.content.0: `thinking` or `redacted_thinking` blocks in the latest assistant "
        "message cannot be modified. These blocks must remain as they were in the original response.")
    assert post(srv.url, "/v1/messages", msg())[0] == 200  # one call only, then the next step


def test_prompt_too_long(server):
    srv = server([Fail.prompt_too_long(tokens=250_000, maximum=200_000)])
    status, _, raw = post(srv.url, "/v1/messages", msg())
    assert status == 400
    assert _error(raw) == {"type": "invalid_request_error",
                           "message": "prompt is too long: 250000 tokens > 200000 maximum"}


def test_usage_limit_429_with_unified_rate_limit_headers(server):
    srv = server([Fail.usage_limit(1795323116)])
    status, headers, raw = post(srv.url, "/v1/messages", msg())
    assert status == 429
    assert headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert headers["anthropic-ratelimit-unified-reset"] == "1795323116"
    assert headers["anthropic-ratelimit-unified-representative-claim"] == "five_hour"
    assert headers["anthropic-ratelimit-unified-overage-status"] == "rejected"
    assert headers["anthropic-ratelimit-unified-fallback"] == "unavailable"
    assert "retry-after" not in headers
    assert _error(raw) == {"type": "rate_limit_error", "message": "Claude AI usage limit reached|1795323116"}


def test_plain_429_and_overloaded_529(server):
    srv = server([Fail.rate_limit_429(retry_after=2), Fail.overloaded_529()])
    status, headers, raw = post(srv.url, "/v1/messages", msg())
    assert status == 429 and headers["retry-after"] == "2"
    assert "anthropic-ratelimit-unified-status" not in headers
    assert _error(raw)["type"] == "rate_limit_error"
    status, _, raw = post(srv.url, "/v1/messages", msg())
    assert status == 529 and _error(raw) == {"type": "overloaded_error", "message": "Overloaded"}


def test_generic_http_failure(server):
    srv = server([Fail.http(500, "api_error", "Internal server error", {"x-extra": "1"})])
    status, headers, raw = post(srv.url, "/v1/messages", msg())
    assert status == 500 and headers["x-extra"] == "1"
    assert _error(raw) == {"type": "api_error", "message": "Internal server error"}


def test_repeat_answers_several_calls_and_none_repeats_forever(server):
    srv = server([Fail.overloaded_529(repeat=3), Text("ok"), Fail.usage_limit(1, repeat=None)])
    assert [post(srv.url, "/v1/messages", msg())[0] for _ in range(4)] == [529, 529, 529, 200]
    assert [post(srv.url, "/v1/messages", msg())[0] for _ in range(5)] == [429] * 5
    assert srv.remaining_steps == 1


def test_hang_holds_the_request_then_drops_it(server):
    srv = server([Fail.hang(0.6), Text("after the hang")])
    t0 = time.monotonic()
    with pytest.raises((urllib.error.URLError, http.client.RemoteDisconnected, ConnectionError)):
        post(srv.url, "/v1/messages", msg(), timeout=10)
    elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed < 5
    rec = srv.main_requests()[0]
    assert rec.step == "fail:hang" and rec.status == 0
    assert post(srv.url, "/v1/messages", msg())[0] == 200


def test_hang_is_recorded_on_arrival_and_ended_by_stop(server):
    srv = server([Fail.hang(30)])
    errors: list[BaseException] = []

    def call() -> None:
        try:
            post(srv.url, "/v1/messages", msg(), timeout=30)
        except BaseException as e:  # noqa: BLE001 - the dropped connection
            errors.append(e)

    t = threading.Thread(target=call)
    t.start()
    assert srv.wait_for(lambda rs: any(r.step == "fail:hang" for r in rs), timeout=5)
    t0 = time.monotonic()
    srv.stop()
    t.join(timeout=5)
    assert not t.is_alive() and errors
    assert time.monotonic() - t0 < 5


def test_failures_in_openai_format(server):
    srv = server([Fail.usage_limit(1795323116)])
    status, headers, raw = post(srv.url, "/v1/chat/completions", chat())
    assert status == 429 and headers["anthropic-ratelimit-unified-reset"] == "1795323116"
    assert json.loads(raw)["error"]["message"] == "Claude AI usage limit reached|1795323116"


# --------------------------------------------------------------------- side calls


def test_side_calls_without_tools_do_not_take_a_step(server):
    srv = server([Text("main answer")])
    title_call = msg("<session>\nfix the bug\n</session>", tools=[], output_config={"format": {
        "type": "json_schema", "schema": {"type": "object", "properties": {"title": {"type": "string"}},
                                          "required": ["title"], "additionalProperties": False}}})
    events = sse(post(srv.url, "/v1/messages?beta=true", title_call)[2])
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert json.loads(text) == {"title": "Scripted session"}
    events = sse(post(srv.url, "/v1/messages?beta=true", msg(tools=None))[2])  # no "tools" key at all
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "Scripted session"
    events = sse(post(srv.url, "/v1/messages?beta=true", msg())[2])
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "main answer"
    assert [(r.kind, r.step) for r in srv.requests] == [("side", "side"), ("side", "side"), ("main", "text")]
    assert len(srv.side_requests()) == 2


def test_side_call_detection_can_be_off_or_custom(server):
    srv = server([Text("scripted")], side_calls=None)
    post(srv.url, "/v1/messages", msg(tools=[]))
    assert [r.kind for r in srv.requests] == ["main"]
    srv2 = server([Text("scripted")], side_calls=lambda path, body: body.get("max_tokens", 0) < 100)
    post(srv2.url, "/v1/messages", msg(max_tokens=1))
    post(srv2.url, "/v1/messages", msg(tools=[]))
    assert [r.kind for r in srv2.requests] == ["side", "main"]


# ----------------------------------------------------------------------- records


def test_requests_are_recorded_without_credentials(server, tmp_path):
    log = tmp_path / "requests.jsonl"
    srv = server([Text("x")], log=log)
    post(srv.url, "/v1/messages?beta=true", msg("record me"),
         headers={"x-api-key": "sk-secret", "Authorization": "Bearer sk-secret",
                  "X-Claude-Code-Session-Id": "abc"})
    rec = srv.requests[0]
    assert rec.method == "POST" and rec.path == "/v1/messages?beta=true" and rec.kind == "main"
    assert rec.headers["x-claude-code-session-id"] == "abc"
    assert "x-api-key" not in rec.headers and "authorization" not in rec.headers
    assert rec.json["messages"][0]["content"][0]["text"] == "record me"
    assert rec.status == 200 and rec.time > 0
    lines = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["step"] == "text"
    assert "sk-secret" not in log.read_text()


def test_wait_for_times_out(server):
    srv = server()
    t0 = time.monotonic()
    assert srv.wait_for(lambda rs: len(rs) > 0, timeout=0.3) is False
    assert time.monotonic() - t0 >= 0.25


# ----------------------------------------------------------- script flavours


def test_default_echo_after_the_script_and_callable_scripts(server):
    srv = server([Text("only")])
    post(srv.url, "/v1/messages", msg())
    body = msg()
    body["messages"][0]["content"] = [{"type": "text", "text": "<system-reminder>\nctx\n</system-reminder>"},
                                      {"type": "text", "text": "what now?"}]
    events = sse(post(srv.url, "/v1/messages", body)[2])
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == 'scripted reply #2: I received 9 chars: "what now?"'

    seen: list[dict] = []

    def script(req: dict):
        seen.append(req)
        return Fail.overloaded_529() if len(seen) == 1 else None  # None: the default

    srv2 = server(script, default=Text("fallback"))
    assert post(srv2.url, "/v1/messages", msg())[0] == 529
    events = sse(post(srv2.url, "/v1/messages", msg())[2])
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "fallback"
    assert len(seen) == 2 and seen[0]["model"] == "claude-test"


def test_a_callable_returning_no_step_gets_a_500(server):
    srv = server(lambda req: "not a step")
    status, _, raw = post(srv.url, "/v1/messages", msg())
    assert status == 500 and "not a script step" in json.loads(raw)["error"]["message"]
    assert srv.main_requests()[0].status == 500


def test_add_steps_extends_a_running_script(server):
    srv = server([])
    srv.add_steps(Text("late"))
    events = sse(post(srv.url, "/v1/messages", msg())[2])
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "late"


def test_text_delay_paces_the_stream(server):
    srv = server([Text("abcd", delay=0.1, chunk=1)])
    t0 = time.monotonic()
    post(srv.url, "/v1/messages", msg())
    assert time.monotonic() - t0 >= 0.35


# ----------------------------------------------------------------------- OpenAI


def test_openai_stream_text(server):
    srv = server([Text("Hello there", chunk=4)])
    status, headers, raw = post(srv.url, "/v1/chat/completions", chat())
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse(raw)
    assert all(name is None for name, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [d for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello there"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" in chunks[-1]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_openai_stream_tool_calls(server):
    srv = server([ToolUse("bash", {"command": "git push"})])
    events = sse(post(srv.url, "/v1/chat/completions", chat())[2])
    chunks = [d for _, d in events if isinstance(d, dict)]
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["id"].startswith("call_") and calls[0]["function"]["name"] == "bash"
    assert calls[0]["type"] == "function" and all(tc["index"] == 0 for tc in calls)
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"command": "git push"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_non_streaming_and_side_calls(server):
    srv = server([ToolUse("bash", {"command": "ls"}, text="Looking.")])
    body = json.loads(post(srv.url, "/v1/chat/completions", chat("title please", stream=False, tools=False))[2])
    assert body["choices"][0]["message"]["content"] == "Scripted session"  # tool-less: side call
    body = json.loads(post(srv.url, "/v1/chat/completions", chat(stream=False))[2])
    m = body["choices"][0]["message"]
    assert body["object"] == "chat.completion" and m["content"] == "Looking."
    assert json.loads(m["tool_calls"][0]["function"]["arguments"]) == {"command": "ls"}
    assert body["choices"][0]["finish_reason"] == "tool_calls"


# ------------------------------------------------------------- JSON scripts, CLI


def test_step_from_json_forms():
    assert step_from_json("hi") == Text("hi")
    assert step_from_json({"text": "hi", "delay": 0.5}) == Text("hi", delay=0.5)
    assert step_from_json({"tool_use": "Bash", "input": {"command": "ls"}}) == ToolUse("Bash", {"command": "ls"})
    assert step_from_json({"echo": True}) == Echo()
    assert step_from_json({"fail": "thinking_400"}) == Fail.thinking_400()
    assert step_from_json({"fail": "prompt_too_long"}) == Fail.prompt_too_long()
    assert step_from_json({"fail": "usage_limit", "reset": 123, "repeat": None}) == Fail.usage_limit(123, repeat=None)
    assert step_from_json({"fail": "overloaded_529", "repeat": 2}) == Fail.overloaded_529(repeat=2)
    assert step_from_json({"fail": "rate_limit_429"}) == Fail.rate_limit_429()
    assert step_from_json({"fail": "hang", "seconds": 2}) == Fail.hang(2)
    assert step_from_json({"fail": "http", "status": 503, "type": "api_error", "message": "m"}).status == 503
    multi = step_from_json(["a", {"tool_use": "Bash", "input": {}}])
    assert step_label(multi) == "text+tool_use:Bash"
    for bad in ({"fail": "nope"}, {"what": 1}, 3, [{"fail": "thinking_400"}]):
        with pytest.raises(ValueError):
            step_from_json(bad)


def test_load_script_list_or_object(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps(["a", {"fail": "overloaded_529"}]))
    steps, default = load_script(p)
    assert steps == [Text("a"), Fail.overloaded_529()] and default == Echo()
    p.write_text(json.dumps({"steps": ["a"], "default": {"text": "d"}}))
    assert load_script(p) == ([Text("a")], Text("d"))


def test_cli_prints_url_serves_script_and_logs(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"text": "from the CLI"}]))
    log = tmp_path / "log.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "ccci.testing.model_server", "--port", "0",
                             "--script", str(script), "--log", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        events = sse(post(url, "/v1/messages?beta=true", msg())[2])
        assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "from the CLI"
        assert json.loads(log.read_text().splitlines()[0])["step"] == "text"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert rc == 0


# ------------------------------------------- OpenAI Responses API (Codex CLI 0.169.0)


def responses(prompt: str = "hello", *, stream: bool = True, tools: bool = True, **extra) -> dict:
    """A request shaped like Codex CLI 0.169.0's (``input`` items, ``store: false``)."""
    body = {"model": "scripted-model", "stream": stream, "store": False,
            "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sys"}]},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]}],
            **extra}
    if tools:
        body["tools"] = [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}]
    return body


def test_responses_stream_text_event_sequence(server):
    srv = server([Text("Hello, codex!", chunk=5)])
    status, headers, raw = post(srv.url, "/v1/responses", responses())
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse(raw)
    names = [n for n, _ in events]
    assert names == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
                     "response.output_text.delta", "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    for name, data in events:  # every event's data names its own type; sequence numbers rise
        assert data["type"] == name
    assert [d["sequence_number"] for _, d in events] == list(range(1, len(events) + 1))
    assert "".join(d["delta"] for n, d in events if n == "response.output_text.delta") == "Hello, codex!"
    item = events[-2][1]["item"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"] == [{"type": "output_text", "text": "Hello, codex!", "annotations": []}]
    done = events[-1][1]["response"]
    assert done["status"] == "completed" and done["id"].startswith("resp_") and done["output"] == [item]
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["total_tokens"] >= done["usage"]["output_tokens"] > 0
    assert [(r.kind, r.step) for r in srv.requests] == [("main", "text")]


def test_responses_function_call_streams_arguments(server):
    srv = server([ToolUse("exec_command", {"cmd": "git push"}, text="Pushing."), Text("done")])
    events = sse(post(srv.url, "/v1/responses", responses())[2])
    items = [d["item"] for n, d in events if n == "response.output_item.done"]
    assert [i["type"] for i in items] == ["message", "function_call"]
    call = items[1]
    assert call["name"] == "exec_command" and json.loads(call["arguments"]) == {"cmd": "git push"}
    assert call["call_id"].startswith("call_") and call["status"] == "completed"
    args = "".join(d["delta"] for n, d in events if n == "response.function_call_arguments.delta")
    assert json.loads(args) == {"cmd": "git push"}
    assert events[-1][1]["response"]["output"][1] == call
    # the tool result comes back as a function_call_output item: the next step answers it
    follow = responses()
    follow["input"].append({"type": "function_call_output", "call_id": call["call_id"], "output": "ok"})
    events = sse(post(srv.url, "/v1/responses", follow)[2])
    assert "".join(d["delta"] for n, d in events if n == "response.output_text.delta") == "done"


def test_responses_non_streaming_and_echo(server):
    srv = server([], default=Echo())
    status, _, raw = post(srv.url, "/v1/responses", responses("quote me", stream=False))
    out = json.loads(raw)
    assert status == 200 and out["status"] == "completed"
    assert 'I received 8 chars: "quote me"' in out["output"][0]["content"][0]["text"]


def test_responses_failures(server):
    srv = server([Fail.thinking_400(), Fail.usage_limit(1795323116), Fail.rate_limit_429(), Fail.prompt_too_long()])
    status, _, raw = post(srv.url, "/v1/responses", responses())
    assert status == 400 and "`thinking`" in json.loads(raw)["error"]["message"]
    status, _, raw = post(srv.url, "/v1/responses", responses())
    err = json.loads(raw)["error"]
    assert status == 429 and err["type"] == "usage_limit_reached" and err["resets_at"] == 1795323116
    status, _, raw = post(srv.url, "/v1/responses", responses())
    assert status == 429 and json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    # an over-long input fails inside the stream (response.failed), as Codex expects
    status, _, raw = post(srv.url, "/v1/responses", responses())
    events = sse(raw)
    assert status == 200 and [n for n, _ in events] == ["response.created", "response.failed"]
    assert events[1][1]["response"]["error"]["code"] == "context_length_exceeded"
    assert [r.step for r in srv.requests] == ["fail:thinking_400", "fail:usage_limit", "fail:rate_limit_429",
                                              "fail:prompt_too_long"]
    assert [r.status for r in srv.requests] == [400, 429, 429, 200]


def test_responses_title_side_call_gets_its_json_schema(server):
    srv = server([Text("main")])
    body = responses("Generate a concise title", tools=False, text={"format": {
        "type": "json_schema", "name": "codex_output_schema", "strict": True,
        "schema": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}})
    body["tools"] = []
    events = sse(post(srv.url, "/v1/responses", body)[2])
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert json.loads(text) == {"title": "Scripted session"}
    assert [r.kind for r in srv.requests] == ["side"] and srv.remaining_steps == 1


# --------------------------------------------------- Gemini API (Gemini CLI 0.61.0)


def gemini(text: str = "hello", *, tools: bool = True, **extra) -> dict:
    body = {"contents": [{"role": "user", "parts": [{"text": "<session_context>"}]},
                         {"role": "user", "parts": [{"text": text}]}], **extra}
    if tools:
        body["tools"] = [{"functionDeclarations": [{"name": "run_shell_command"}]}]
    return body


STREAM = "/v1beta/models/gemini-test:streamGenerateContent?alt=sse"


def test_gemini_stream_text_chunks_end_with_stop(server):
    srv = server([Text("Hello, gemini!", chunk=6)])
    status, headers, raw = post(srv.url, STREAM, gemini())
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert b"\r\n\r\n" in raw  # the Gemini API separates its SSE events with CRLF
    chunks = [d for _, d in sse(raw.replace(b"\r\n", b"\n"))]
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks] == ["Hello,", " gemin", "i!"]
    assert all(c["candidates"][0]["content"]["role"] == "model" for c in chunks)
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, "STOP"]
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] > 0 and chunks[-1]["modelVersion"] == "gemini-test"
    assert [(r.kind, r.step, r.json["model"]) for r in srv.requests] == [("main", "text", "gemini-test")]


def test_gemini_function_call_and_non_streaming(server):
    srv = server([ToolUse("run_shell_command", {"command": "git push"}), Text("ok")])
    chunks = [d for _, d in sse(post(srv.url, STREAM, gemini())[2].replace(b"\r\n", b"\n"))]
    assert chunks[-1]["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "run_shell_command", "args": {"command": "git push"}}}]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    status, _, raw = post(srv.url, "/v1beta/models/gemini-test:generateContent", gemini())
    assert status == 200 and json.loads(raw)["candidates"][0]["content"]["parts"] == [{"text": "ok"}]
    status, _, raw = post(srv.url, "/v1beta/models/gemini-test:countTokens", gemini())
    assert status == 200 and json.loads(raw)["totalTokens"] > 0


def test_gemini_failures_use_google_error_bodies(server):
    srv = server([Fail.thinking_400(), Fail.prompt_too_long(), Fail.usage_limit(int(time.time()) + 600),
                  Fail.overloaded_529()])
    status, _, raw = post(srv.url, STREAM, gemini())
    err = json.loads(raw)["error"]
    assert status == 400 and err["status"] == "INVALID_ARGUMENT" and "`thinking`" in err["message"]
    status, _, raw = post(srv.url, STREAM, gemini())
    assert status == 400 and "exceeds the maximum number of tokens" in json.loads(raw)["error"]["message"]
    status, _, raw = post(srv.url, STREAM, gemini())
    err = json.loads(raw)["error"]
    assert status == 429 and err["status"] == "RESOURCE_EXHAUSTED"
    kinds = {d["@type"].rsplit(".", 1)[-1]: d for d in err["details"]}
    assert kinds["QuotaFailure"]["violations"][0]["quotaId"].startswith("GenerateRequestsPerDay")
    assert 590 <= int(kinds["RetryInfo"]["retryDelay"].rstrip("s")) <= 600
    status, _, raw = post(srv.url, STREAM, gemini())
    assert status == 529 and json.loads(raw)["error"]["status"] == "UNAVAILABLE"


def test_gemini_routing_side_call_fits_its_upper_case_schema(server):
    srv = server([Text("main")])
    body = gemini("route me", tools=False, generationConfig={"responseJsonSchema": {
        "type": "OBJECT", "properties": {"complexity_reasoning": {"type": "STRING"},
                                         "complexity_score": {"type": "INTEGER"}}}})
    status, _, raw = post(srv.url, "/v1beta/models/flash-lite:generateContent", body)
    answer = json.loads(json.loads(raw)["candidates"][0]["content"]["parts"][0]["text"])
    assert status == 200 and answer == {"complexity_reasoning": "Scripted session", "complexity_score": 0}
    assert [r.kind for r in srv.requests] == ["side"] and srv.remaining_steps == 1


def test_gemini_echo_quotes_the_last_user_text(server):
    srv = server([], default=Echo())
    chunks = [d for _, d in sse(post(srv.url, STREAM, gemini("what now?"))[2].replace(b"\r\n", b"\n"))]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert 'I received 9 chars: "what now?"' in text


def test_step_to_json_round_trips():
    steps = [Text("a", delay=0.1, chunk=3), ToolUse("exec_command", {"cmd": "ls"}, text="t"), Echo("p"),
             Fail.thinking_400(), Fail.usage_limit(1795323116, repeat=2), Fail.hang(3.0),
             Fail.http(500, "api_error", "boom"), (Text("x"), ToolUse("Bash", {}))]
    for step in steps:
        again = step_from_json(json.loads(json.dumps(step_to_json(step))))
        assert step_to_json(again) == step_to_json(step)


def test_an_outage_by_duration_answers_every_call_until_it_is_over():
    """``for_s``: a failure answers every main call for that many seconds from the first
    call it answered, then the script moves on (a timed 529 outage, issue 13)."""
    import time

    from ccci.testing.model_server import ByMarker, Fail, ModelServer, Text, step_from_json, step_to_json

    step = Fail.overloaded_529(for_s=0.6)
    assert step_from_json(step_to_json(step)) == step and step.repeat is None
    assert step_from_json({"fail": "http", "status": 500, "for_s": 2}).for_s == 2.0
    srv = ModelServer(script=[step, Text("BACK")])
    by = ByMarker({"M": [step, Text("BACK")]})
    body = {"messages": [{"role": "user", "content": "M hello"}]}
    seen, seen_by = [], []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.5:
        seen.append(srv._next_step(body))
        seen_by.append(by(body))
        time.sleep(0.05)
    assert len(seen) >= 5 and all(s == step for s in seen + seen_by)  # many calls, all failed
    time.sleep(0.3)
    assert srv._next_step(body) == Text("BACK") and by(body) == Text("BACK")
