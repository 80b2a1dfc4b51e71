"""``ccci report``'s numbers from a real state database with a hand-made event log."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from ccci.commands.report import STATE_COLOURS, render_html, render_png, rows
from ccci.model import Event
from ccci.report import build_report, launch_cause, parse_since
from ccci.state import StateStore

T0 = datetime(2026, 12, 6, 8, 0, tzinfo=timezone.utc)


def cfg(tmp_path: Path, raw: dict | None = None):
    return SimpleNamespace(name="f", agents=[SimpleNamespace(name="builder"), SimpleNamespace(name="adversary")],
                           raw=raw or {}, path=tmp_path / "ccci.toml")


def ev(st: StateStore, s: float, kind: str, agent: str | None = None, message: str = "", **data) -> int:
    return st.append_event(Event(kind=kind, message=message or kind, agent=agent, at=T0 + timedelta(seconds=s), data=data))


def test_states_uptime_restarts_remedies_and_lost_time(tmp_path):
    st = StateStore(tmp_path)
    ev(st, -50, "state_changed", "builder", state="idle")  # before the period: the state at its start
    ev(st, 10, "state_changed", "builder", state="busy")
    ev(st, 40, "finding", "builder", check="stall", quiet_s=20.0)
    ev(st, 40.5, "remedy", "builder", action="send", check="stall", ok=False)
    ev(st, 50, "state_changed", "builder", state="restarting")
    rid = ev(st, 50.2, "agent_resumed", "builder", reason="stall: no progress for 20s", mode="resume")
    ev(st, 50.3, "remedy", "builder", action="restart", check="stall", ok=True)
    ev(st, 60, "state_changed", "builder", state="usage_limit")
    ev(st, 90, "state_changed", "builder", state="busy")
    ev(st, 95, "remedy_failed", "builder", action="ping", check="handoff")
    ev(st, 96, "remedy", None, action="ping", check="handoff", ok=True)
    ev(st, 97, "escalation", "adversary", message="restart intensity exceeded", check="runner")
    ev(st, 98, "agent_started", "adversary", reason="automatic retry 2 of 3 after escalation")
    rep = build_report(st, cfg(tmp_path), T0, T0 + timedelta(seconds=100))
    b = rep["agents"]["builder"]
    assert b["time_in_state_s"] == {"busy": 50.0, "usage_limit": 30.0, "idle": 10.0, "restarting": 10.0}
    assert b["uptime_pct"] == 90.0  # 10 s restarting of 100
    assert b["restarts"] == {"total": 1, "by_cause": {"stall": 1}, "event_ids": [rid]}
    assert b["remedies"]["by_cause"] == {"send (stall)": 1, "restart (stall)": 1, "ping (handoff)": 1}
    assert b["remedies"]["failed"] == 2  # ok=False and remedy_failed
    assert rep["fleet_remedies"]["by_cause"] == {"ping (handoff)": 1}
    assert b["time_lost_s"]["usage_limit"] == 30.0
    # quiet since 20 s (20 s before the finding at 40) until the relaunch at 50.2
    assert b["time_lost_s"]["stall"] == pytest.approx(30.2)
    a = rep["agents"]["adversary"]
    assert a["escalations"]["total"] == 1 and a["escalations"]["reasons"] == ["restart intensity exceeded"]
    assert a["restarts"]["by_cause"] == {"automatic retry N of N after escalation": 1}
    assert a["uptime_pct"] is None and a["time_in_state_s"] == {"unwatched": 100.0}
    assert {m["kind"] for m in rep["markers"]} == {"restart", "remedy", "escalation"}
    json.dumps(rep)  # JSON-able as it is


def test_watcher_stop_makes_agents_unwatched_until_the_next_state(tmp_path):
    st = StateStore(tmp_path)
    ev(st, 0, "state_changed", "builder", state="busy")
    ev(st, 30, "watcher_stopping")
    ev(st, 70, "state_changed", "builder", state="idle")
    b = build_report(st, cfg(tmp_path), T0, T0 + timedelta(seconds=100))["agents"]["builder"]
    assert b["time_in_state_s"] == {"unwatched": 40.0, "busy": 30.0, "idle": 30.0}
    assert b["watched_s"] == 60.0 and b["uptime_pct"] == 100.0
    # a report starting while the watcher was gone begins unwatched
    b2 = build_report(st, cfg(tmp_path), T0 + timedelta(seconds=40), T0 + timedelta(seconds=100))["agents"]["builder"]
    assert b2["timeline"][0][2] == "unwatched"


def test_handoffs_latency_from_ping_queued_to_its_delivery(tmp_path):
    st = StateStore(tmp_path)
    sha = "a" * 40
    mid = st.queue_message("adversary", "ccci: new claim", T0, dedup_key=f"ping:{sha}:adversary")
    ev(st, 5, "ping_queued", "adversary", sha=sha, subject="claim(step 1): x")
    ev(st, 7.5, "message_delivered", "adversary", message_id=mid)
    ev(st, 8, "ping_queued", "builder", sha="b" * 40, subject="review(step 1): ok")  # never delivered
    rep = build_report(st, cfg(tmp_path), T0, T0 + timedelta(seconds=60))
    assert rep["handoffs"] == {"claim(": 1, "review(": 1}
    assert rep["agents"]["adversary"]["handoff_latency"] == {"count": 1, "median_s": 2.5, "max_s": 2.5, "undelivered": 0}
    assert rep["agents"]["builder"]["handoff_latency"]["undelivered"] == 1
    assert [m["kind"] for m in rep["markers"]] == ["commit", "commit"]


def test_tokens_and_cost_per_agent_from_usage_rows(tmp_path):
    st = StateStore(tmp_path)
    st.set_usage("builder", "2026-12-06", "conv", "claude-sonnet-4-5-20250929",
                 {"input_tokens": 1_000_000, "output_tokens": 100_000, "cache_read_tokens": 2_000_000}, T0)
    st.set_usage("builder", "2026-12-05", "conv", "claude-sonnet-4-5", {"output_tokens": 1_000_000}, T0)  # another day
    st.set_usage("adversary", "2026-12-06", "s", "mystery-model", {"input_tokens": 5}, T0)
    rep = build_report(st, cfg(tmp_path), T0, T0 + timedelta(hours=1))
    b = rep["agents"]["builder"]
    assert b["cost_usd"] == pytest.approx(3.0 + 1.5 + 0.6)  # $3/M in, $15/M out, $0.30/M cache read
    assert b["tokens"]["input_tokens"] == 1_000_000
    assert rep["cost"]["unpriced_models"] == ["mystery-model"]
    assert rep["agents"]["adversary"]["tokens"]["input_tokens"] == 5
    # [prices] in ccci.toml wins over the shipped file
    raw = {"prices": {"mystery-model": {"input": 1_000_000.0, "output": 0.0}}}
    rep2 = build_report(st, cfg(tmp_path, raw), T0, T0 + timedelta(hours=1))
    assert rep2["agents"]["adversary"]["cost_usd"] == pytest.approx(5.0) and rep2["cost"]["unpriced_models"] == []


def test_renderers_print_user_text_literally_and_escape_html(tmp_path):
    st = StateStore(tmp_path)
    ev(st, 1, "escalation", "builder", message="<script>alert(1)</script> [red]x[/red]")
    ev(st, 2, "agent_started", "builder", reason="<b>ccci start</b>")
    ev(st, 3, "state_changed", "builder", state="busy")
    rep = build_report(st, cfg(tmp_path), T0, T0 + timedelta(seconds=10))
    page = render_html(rep, render_png(rep))
    assert "<script>alert(1)" not in page and "&lt;b&gt;ccci start&lt;/b&gt;" in page
    assert 'src="data:image/png;base64,' in page
    assert not re.search(r'(?:src|href)="(?!data:)', page), "self-contained: no external resource"
    r = rows(rep)[0]
    assert r["restarts"] == "1: <b>ccci start</b> 1"


def test_png_has_a_lane_per_agent_in_the_state_colours(tmp_path):
    from io import BytesIO

    from PIL import Image

    st = StateStore(tmp_path)
    ev(st, 0, "state_changed", "builder", state="busy")
    ev(st, 0, "state_changed", "adversary", state="idle")
    ev(st, 50, "state_changed", "adversary", state="usage_limit")
    rep = build_report(st, cfg(tmp_path), T0, T0 + timedelta(seconds=100))
    png = render_png(rep, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes() == png and png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(BytesIO(png)).convert("RGB")
    colours = {c for _, c in img.getcolors(1 << 20)}
    for state in ("busy", "idle", "usage_limit"):
        hexc = STATE_COLOURS[state]
        assert tuple(int(hexc[i:i + 2], 16) for i in (1, 3, 5)) in colours, state


def test_parse_since_and_launch_cause():
    now = T0
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2026-12-06T07:00:00Z", now) == now - timedelta(hours=1)
    with pytest.raises(ValueError, match="--since 'yesterday'"):
        parse_since("yesterday", now)
    assert launch_cause("process_death: agent process exited (signal 9)") == "process_death"
    assert launch_cause("not running at watcher start") == "not running at watcher start"
