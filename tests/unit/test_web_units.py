"""The dashboard's pure parts: ANSI to HTML (escaping, colours, secrets hidden across
escapes), the token file and request checks, ``[web]`` in ccci.toml, the timeline's
``since`` parsing. The server itself is tested in a real browser (tests/browser)."""
from __future__ import annotations

import base64
import os
import stat
import textwrap
from datetime import datetime, timedelta

import pytest

from ccci import config as config_mod
from ccci.clock import UTC
from ccci.config import ConfigError, WebSettings
from ccci.web import auth
from ccci.web.ansi import palette, to_html
from ccci.web.view import parse_since


# ------------------------------------------------------------------ ansi
def test_text_is_escaped_and_colours_become_spans():
    out = to_html('\x1b[1;31m<script>alert("x")</script>\x1b[0m & plain')
    assert "<script>" not in out
    assert '<span class="b" style="color:#cd0000">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</span>' in out
    assert out.endswith(" &amp; plain")


def test_256_and_rgb_colours_background_and_reset():
    out = to_html("\x1b[38;5;196mA\x1b[48;2;1;2;3mB\x1b[39;49mC\x1b[2mD")
    assert '<span style="color:#ff0000">A</span>' in out
    assert '<span style="color:#ff0000;background:#010203">B</span>' in out
    assert "C" in out and '<span class="f">D</span>' in out
    assert palette(232) == "#080808" and palette(16) == "#000000" and palette(231) == "#ffffff"


def test_other_escapes_are_dropped_not_shown():
    out = to_html("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\x1b[2Kb\x1b]0;title\x07c")
    assert out == "alinkbc"


def test_a_malformed_sgr_does_not_raise():
    assert "x" in to_html("\x1b[38;5mx\x1b[38;2;9mx\x1b[;;mx")


def test_a_secret_is_hidden_even_when_escapes_split_it():
    secret = "sk-live-123456"
    out = to_html("key: sk-li\x1b[32mve-123456 end; again sk-live-123456", [secret])
    assert "sk-li" not in out and "123456" not in out
    assert out.count("***") == 2


# ------------------------------------------------------------------ auth
def test_the_token_is_created_once_0600_and_reused(tmp_path):
    tok = auth.load_or_create_token(tmp_path)
    path = auth.token_path(tmp_path)
    assert len(tok) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o644)
    assert auth.load_or_create_token(tmp_path) == tok
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_token_comparison_and_where_a_request_carries_it():
    assert auth.token_ok("abc", "abc") and not auth.token_ok("abd", "abc") and not auth.token_ok("", "")
    assert auth.presented_token({"x-ccci-token": " t1 "}) == "t1"
    assert auth.presented_token({"authorization": "Bearer t2"}) == "t2"
    basic = base64.b64encode(b"me:t3").decode()
    assert auth.presented_token({"authorization": f"Basic {basic}"}) == "t3"
    assert auth.presented_token({"cookie": "token=t4"}) == ""  # never a cookie


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:8765", True), ("localhost:8765", True), ("[::1]:8765", True),
    ("evil.example:8765", False), ("evil.example", False), ("127.0.0.1:9999", False),
])
def test_a_loopback_server_answers_only_to_loopback_host_names(host, ok):
    assert auth.host_ok(host, "127.0.0.1", 8765) is ok
    assert auth.host_ok(host, "0.0.0.0", 8765) is True  # remote: the token decides


def test_origin_and_fetch_site_checks():
    assert auth.origin_ok({"host": "127.0.0.1:8765", "origin": "http://127.0.0.1:8765"})
    assert not auth.origin_ok({"host": "127.0.0.1:8765", "origin": "http://evil.example"})
    assert not auth.origin_ok({"host": "127.0.0.1:8765", "sec-fetch-site": "cross-site"})
    assert auth.origin_ok({"host": "127.0.0.1:8765"})  # curl: no Origin, the token alone decides


# ------------------------------------------------------------------ config
def _load(tmp_path, body: str):
    path = tmp_path / "ccci.toml"
    path.write_text(textwrap.dedent(body) + '[[agents]]\nname = "a"\n', encoding="utf-8")
    return config_mod.load(path, environ={})


def test_web_defaults_to_loopback(tmp_path):
    assert _load(tmp_path, "").web == WebSettings("127.0.0.1", 8765, False)
    assert _load(tmp_path, '[web]\nlisten = "localhost:9000"\n').web == WebSettings("127.0.0.1", 9000, False)
    w = _load(tmp_path, '[web]\nlisten = "0.0.0.0:9000"\nallow_remote = true\n').web
    assert (w.host, w.allow_remote) == ("0.0.0.0", True)


@pytest.mark.parametrize("body, expected", [
    ('listen = "0.0.0.0:8765"', "allow_remote = true"),
    ('listen = "8765"', "is not HOST:PORT"),
    ('port = 1', "unknown key"),
])
def test_a_bad_web_table_is_one_line_naming_file_key_and_fix(tmp_path, body, expected):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f"[web]\n{body}\n")
    msg = str(info.value)
    assert "\n" not in msg and ": web." in msg and expected in msg


def test_since_parsing():
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert parse_since("", now) is None
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("2026-12-06T10:00:00Z", now) == datetime(2026, 12, 6, 10, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_since("yesterday", now)


# ------------------------------------------------------------------ the guard (ASGI, no server)
def _call(guard, headers: dict) -> tuple[int, dict]:
    import asyncio

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/api/fleet", "raw_path": b"/api/fleet", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "http_version": "1.1",
             "scheme": "http", "server": ("10.0.0.1", 8765), "client": ("10.0.0.9", 5000), "root_path": ""}
    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


def _inner():
    from starlette.responses import PlainTextResponse

    return PlainTextResponse("fleet")


def test_on_a_non_loopback_address_every_read_needs_the_token():
    from ccci.web.app import Guard

    guard = Guard(_inner(), "tok-123", "0.0.0.0", 8765)
    status, headers = _call(guard, {"host": "10.0.0.1:8765"})
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert _call(guard, {"host": "10.0.0.1:8765", "x-ccci-token": "nope"})[0] == 401
    basic = base64.b64encode(b"me:tok-123").decode()
    status, headers = _call(guard, {"host": "10.0.0.1:8765", "authorization": f"Basic {basic}"})
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
    assert _call(guard, {"host": "10.0.0.1:8765", "x-ccci-token": "tok-123"})[0] == 200


def test_on_loopback_reads_are_open_but_the_host_must_be_loopback():
    from ccci.web.app import Guard

    guard = Guard(_inner(), "tok-123", "127.0.0.1", 8765)
    assert _call(guard, {"host": "127.0.0.1:8765"})[0] == 200
    assert _call(guard, {"host": "rebound.example:8765"})[0] == 403


# ------------------------------------------------------------------ the command's bad input
def test_ccci_web_token_and_bad_listen_values(tmp_path):
    from click.testing import CliRunner

    from ccci.commands.cli import main
    from ccci.commands.init import init_fleet

    init_fleet(tmp_path / "f", demo=True, name="webcli")
    runner = CliRunner()
    r = runner.invoke(main, ["web", "--fleet", str(tmp_path / "f"), "--token"])
    assert r.exit_code == 0 and len(r.output.strip()) >= 40
    path = auth.token_path(tmp_path / "f" / ".ccci")
    assert path.read_text().strip() == r.output.strip() and stat.S_IMODE(path.stat().st_mode) == 0o600
    r = runner.invoke(main, ["--fleet", str(tmp_path / "f"), "web", "--listen", "0.0.0.0:8765"])
    assert r.exit_code == 2 and "allow_remote = true" in r.output and r.output.count("\n") == 1
    r = runner.invoke(main, ["--fleet", str(tmp_path / "f"), "web", "--listen", "somewhere"])
    assert r.exit_code == 2 and "is not HOST:PORT" in r.output
