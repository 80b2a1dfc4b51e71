"""Issue 13 on the real opencode 1.18.33 under a real ``ccci watch`` (loopback-only
network namespace, scripted model server): the shared server is the source of truth.

* a context limit opencode compacts by itself keeps the session (no fresh session, no
  restart), although the old ``Error:`` line stays on the pane;
* a timed 529 outage ends with one back-off sequence and no extra prompts;
* a hung turn is aborted on the server before the stall restart, and the model sees no
  duplicated prompt;
* the prompt reaches the model exactly as ccci gave it (no added quotes).

Timings are printed (``-s``), not asserted beyond what the behaviour needs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime

import pytest

from ccci.backends.base import Backend
from ccci.testing.model_server import Fail, Text


pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow]

#: seconds the 529 outage lasts: issue 13's was released after 3 minutes
#: (CCCI_E2E_OUTAGE_S=180: passed 3 of 3 runs, answer 197-207 s after the first failure);
#: the default run holds it 100 s, which still outlasts opencode's own retry loop (it gives
#: up about 75 s after the first 529), so ccci's back-off and its one 'continue' are tested
OUTAGE_S = float(os.environ.get("CCCI_E2E_OUTAGE_S", "100"))
FAR_WAIT = "WAITING-UNTIL: 2099-01-01T00:00:00Z"


def marker(agent: str) -> str:
    """The marker in ``agent``'s role prompt (tests/e2e/opencode/conftest.py)."""
    return f"ROLE-{agent.upper()}-MARK"


def _at(e: dict) -> float:
    return datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()


def _user_texts(req: dict) -> list[str]:
    """The user messages' texts of one chat-completions request, oldest first."""
    out = []
    for m in req["json"].get("messages", []):
        if m.get("role") != "user":
            continue
        c = m.get("content")
        out.append(c if isinstance(c, str) else "".join(p.get("text", "") for p in c or [] if isinstance(p, dict)))
    return out


def _server_get(f, path: str):
    """GET ``path`` from the fleet's opencode serve (it listens on loopback inside the namespace)."""
    code = ("import json,sys,urllib.request;"
            "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")
    out = subprocess.run(["ip", "netns", "exec", f.netns, sys.executable, "-c", code, f.serve_state()["url"] + path],
                         capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


@pytest.mark.timeout(240)
def test_a_context_limit_opencode_compacts_by_itself_keeps_the_session(oc_fleet):
    """The provider's context-length 400 (OpenAI's wording, as the tester saw it); opencode
    1.18.33 compacts and re-runs the turn by itself and the turn ends cleanly with a far
    declared wait. The ``Error:`` line printed before the compaction stays on the pane:
    ccci keeps the session and does nothing (issue 13 restarted it in a fresh session)."""
    overflow = Fail.http(400, "invalid_request_error", "This model's maximum context length is 128000 tokens. "
                         "However, your messages resulted in 130512 tokens. Please reduce the length of the messages.")
    good = Text(f"GOOD-ANSWER after compaction. {FAR_WAIT}")
    # measured: opencode 1.18.33 answers the 400 with a tool-less summary call (the
    # compaction; a side call here) and re-runs the turn on the summary, whose first user
    # message no longer holds the role marker: the server's default step answers it
    f = oc_fleet({"builder": [overflow, good]}, checks={"stall_idle": 30}, default=good)
    started = f.wait_event(lambda evs: [e for e in evs if e["kind"] == "agent_started"], 90, "the agent to start")
    conv = started[0]["data"]["conversation_id"]
    f.wait(lambda: any("GOOD-ANSWER" in f.capture("builder") for _ in [0]), 120, "the good answer on the pane")
    screen = f.capture("builder")
    print("\n--- pane after the compaction ---\n" + screen)
    t_end = time.time()
    time.sleep(25)  # the tester's restart came 15 s after the good answer
    evs = f.events()
    assert not [e for e in evs if e["kind"] in ("agent_restarted_fresh", "agent_resumed", "agent_restarted")], \
        [e["message"] for e in evs if e["kind"].startswith("agent_")]
    mine = [e for e in evs if e["kind"] == "finding" and e.get("agent") == "builder"]
    assert not mine, [e["message"] for e in mine]
    st = f.store()
    try:
        assert st.agent("builder").conversation_id == conv
    finally:
        st.close()
    reqs = [r for r in f.requests() if r["kind"] in ("main", "side")]
    assert reqs[0]["status"] == 400 and reqs[0]["kind"] == "main"
    assert [r["kind"] for r in reqs[1:]].count("side") >= 1, "opencode compacted (a tool-less summary call)"
    main = [r for r in reqs if r["kind"] == "main"]
    assert len(main) == 2 and main[1]["status"] == 200, [(r["kind"], r["step"], r["status"]) for r in reqs]
    print(f"context limit: {len(main)} main calls, {len(f.requests()) - len(main)} other; quiet for "
          f"{time.time() - t_end:.0f}s after the good answer; Error line on the pane: {'Error:' in screen}")


@pytest.mark.timeout(600)
def test_a_529_outage_ends_with_one_back_off_and_no_extra_prompts(oc_fleet):
    """A 529 outage of ``OUTAGE_S`` seconds (100 by default; ``CCCI_E2E_OUTAGE_S=180`` for
    the tester's 3 minutes). Measured with opencode 1.18.33: it retries a
    529 itself 5 times (after about 2, 4, 8, 20 and 40 s; ``/session/status`` says
    ``retry`` with the next attempt's time), then gives up about 75 s after the first
    failure; the turn ends with an empty assistant message. ccci must not call the quiet
    retry loop a stall (stall_idle 30 s here, shorter than opencode's 40 s retry gap),
    then backs off once (api_error_backoff) and sends one ``continue``; opencode's retries
    of that turn outlast the outage. A shorter outage that still outlasts opencode's own
    retries (over 75 s) exercises the same path."""
    f = oc_fleet({"builder": [Fail.overloaded_529(for_s=OUTAGE_S), Text(f"BACK-AFTER-OUTAGE. {FAR_WAIT}")]},
                 checks={"stall_idle": 30, "api_error_backoff": 60})
    started = f.wait_event(lambda evs: [e for e in evs if e["kind"] == "agent_started"], 90, "the agent to start")
    conv = started[0]["data"]["conversation_id"]
    ok = f.wait(lambda: [r for r in f.main_requests("builder") if r["status"] == 200], OUTAGE_S + 240,
                "the first answer after the outage")
    main = f.main_requests("builder")
    fails = [r for r in main if r["status"] == 529]
    evs = f.events()
    findings = [e for e in evs if e["kind"] == "finding"]
    print(f"\n529 outage {OUTAGE_S:.0f}s: {len(fails)} failed calls at "
          f"{[round(r['time'] - fails[0]['time'], 1) for r in fails]} s; answer after "
          f"{ok[0]['time'] - fails[0]['time']:.0f}s; findings {[e['data'].get('check') for e in findings]}; "
          f"ccci events {[e['kind'] for e in evs if e.get('agent') == 'builder']}")
    assert ok[0]["time"] - fails[0]["time"] >= OUTAGE_S - 1
    assert not [e for e in findings if e["data"].get("check") == "stall"], "opencode's retry loop is no stall"
    assert not [e for e in evs if e["kind"] in ("agent_restarted", "agent_restarted_fresh")]
    assert not [e for e in evs if e["kind"] == "opencode_turn_aborted"]
    api = [e for e in findings if e["data"].get("check") == "api_error"]
    assert len(api) <= 1, "one back-off sequence"
    # the prompts the model saw in the answered call: the role prompt once, and one
    # 'continue' per back-off, nothing else (no nudges, no restart notes, no duplicates)
    users = _user_texts(ok[0])
    assert users[0].startswith(marker("builder")) and users.count(users[0]) == 1
    assert users[1:] == ["continue"] * len(api), users
    resumed = [e for e in evs if e["kind"] == "agent_resumed" and e.get("agent") == "builder"]
    assert {e["data"]["conversation_id"] for e in resumed} <= {conv}


@pytest.mark.timeout(300)
def test_a_hung_turn_is_aborted_on_the_server_before_the_restart(oc_fleet):
    """The model server holds the request and sends nothing. After stall_idle (20 s) the
    nudge is due, but ``opencode run`` has no input box and a turn runs, so it is dropped,
    not queued behind the turn (``nudge_dropped``); after its own wait (20 s more) the
    restart: ccci first aborts the turn on the server (``POST /session/<id>/abort``) and
    sees it end, then starts the new run. The model then sees the original prompt and the
    restart note once each, and no nudge (issue 13: 4 identical nudges in one request)."""
    f = oc_fleet({"builder": [Fail.hang(400), Text(f"AFTER-RESTART. {FAR_WAIT}")]},
                 checks={"stall_idle": 20, "nudges_before_restart": 1})
    started = f.wait_event(lambda evs: [e for e in evs if e["kind"] == "agent_started"], 90, "the agent to start")
    conv = started[0]["data"]["conversation_id"]
    ok = f.wait(lambda: [r for r in f.main_requests("builder") if r["status"] == 200], 200, "the answer after the restart")
    evs = f.events()
    aborted = [e for e in evs if e["kind"] == "opencode_turn_aborted"]
    resumed = [e for e in evs if e["kind"] == "agent_resumed" and e.get("agent") == "builder"]
    stalls = [e for e in evs if e["kind"] == "finding" and e["data"].get("check") == "stall"]
    print(f"\nhung turn: stall findings at {[e['at'] for e in stalls]}; abort {aborted[:1] and aborted[0]['data']}; "
          f"resumed at {[e['at'] for e in resumed]}")
    assert len(aborted) == 1 and aborted[0]["data"]["ended"] and aborted[0]["data"]["session"] == conv
    assert resumed and _at(aborted[0]) <= _at(resumed[0])
    assert len(stalls) == 2 and _at(stalls[1]) - _at(stalls[0]) >= 15, "the nudge got its own wait"
    # the server's own record: the hung turn ended aborted before the new prompt arrived
    msgs = _server_get(f, f"/session/{conv}/message")
    aborted_msgs = [m for m in msgs if (m["info"].get("error") or {}).get("name") == "MessageAbortedError"]
    assert len(aborted_msgs) == 1
    later_users = [m for m in msgs if m["info"]["role"] == "user"
                   and m["info"]["time"]["created"] > aborted_msgs[0]["info"]["time"]["created"]]
    assert later_users and aborted_msgs[0]["info"]["time"]["completed"] <= later_users[0]["info"]["time"]["created"]
    # the model: one hung call, then one call with the role prompt and the restart note once each
    main = f.main_requests("builder")
    assert [r["step"] for r in main].count("fail:hang") == 1
    users = _user_texts(ok[0])
    assert len(users) == 2 and users[1].startswith("ccci restarted this session (stall"), users
    assert not [u for u in users if Backend.nudge_text in u]
    assert [e for e in evs if e["kind"] == "nudge_dropped"]
    assert users[0].startswith(marker("builder"))


@pytest.mark.timeout(180)
def test_the_prompt_reaches_the_model_without_added_quotes(oc_fleet):
    """opencode 1.18.33 ``run`` wraps any message argument that contains a space in double
    quotes; ccci passes the prompt split on spaces, so a queued message arrives as typed
    (issue 13 saw ``"S2-QUEUED-MSG-7Q please check this"`` with the quotes)."""
    f = oc_fleet({"builder": [Text(f"first. {FAR_WAIT}"), Text(f"second. {FAR_WAIT}")]})
    f.wait(lambda: f.main_requests("builder"), 90, "the first turn")
    f.wait_event(lambda evs: [e for e in evs if e["kind"] == "agent_started"], 30, "the start event")
    f.wait(lambda: "first." in f.capture("builder"), 60, "the first turn to end")
    text = 'S2-QUEUED-MSG-7Q please  check "this"\n-x  and --that'
    subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(f.fleet), "send", "builder", text],
                   check=True, capture_output=True, text=True, timeout=60)
    f.wait(lambda: len(f.main_requests("builder")) >= 2, 90, "the queued message's turn")
    users = _user_texts(f.main_requests("builder")[-1])
    assert users[0].startswith(marker("builder")) and '"' not in users[0][:1]
    assert users[-1] == text, users


@pytest.mark.timeout(240)
def test_the_shared_server_stops_when_no_opencode_agent_needs_it(oc_fleet):
    """``opencode serve`` (about 600 MB) is stopped when no opencode agent needs it: by a
    watcher that exits while the agent is between turns (its run exited after declaring a
    wait; the next watcher starts the server again), and by ``ccci stop`` of the last
    opencode agent, which the running watcher then does not restart."""
    import psutil
    from real_cli import stop_process

    f = oc_fleet({"builder": [Text(f"done. {FAR_WAIT}")]}, default=Text(f"again. {FAR_WAIT}"))
    f.wait_event(lambda evs: [e for e in evs if e["kind"] == "opencode_serve_started"], 90, "the server")
    pid = f.serve_state()["pid"]
    f.wait(lambda: f.tmux("list-panes", "-t", "=ccci-ocfleet-builder:", "-F", "#{pane_dead}").strip() == "1",
           90, "the first turn to end")
    t0 = time.time()
    stop_process(f.watcher, group=True, timeout=15)  # SIGTERM, as Ctrl-C
    # stopped on purpose: wait() must not take its exit for a failure (CI, 2026-12-07: the
    # server's pid still existed at the first poll, 20 ms after its stop event)
    f.watcher = None
    f.wait(lambda: not psutil.pid_exists(pid), 15, "the server to stop with the watcher")
    stopped = f.events("opencode_serve_stopped")
    assert stopped and "watcher exited" in stopped[-1]["message"] and not f.serve_state()
    print(f"\nwatcher exit -> server gone {time.time() - t0:.1f}s")
    f.watch()
    f.wait_event(lambda evs: len([e for e in evs if e["kind"] == "opencode_serve_started"]) >= 2, 90, "a new server")
    pid2 = f.serve_state()["pid"]
    assert pid2 != pid and psutil.pid_exists(pid2)
    out = subprocess.run([sys.executable, "-m", "ccci", "--fleet", str(f.fleet), "stop", "builder"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    f.wait(lambda: not psutil.pid_exists(pid2), 15, "the server to stop with the last agent")
    # either `ccci stop` itself or the watcher's next tick (it sees the agent stopped) ends it first
    last = f.events("opencode_serve_stopped")[-1]["message"]
    assert "ccci stop" in last or "no opencode agent left" in last, last
    time.sleep(5)  # the watcher keeps it stopped: nobody needs it
    assert len(f.events("opencode_serve_started")) == 2 and not f.serve_state()


@pytest.mark.timeout(240)
def test_a_slow_healthy_reply_is_progress_not_a_stall(oc_fleet):
    """A reply streaming one chunk every 6 s for about a minute: ``opencode run`` prints
    nothing until the text part ends (measured with 1.18.33), so the pane is frozen for
    far longer than stall_idle (15 s here). The server's event stream
    (``message.part.delta`` per chunk) is the progress: no stall, no nudge, no restart
    (issue 13 restarted such a reply)."""
    reply = "SLOW-HEALTHY-REPLY " + " ".join(f"w{i:02d}" for i in range(30)) + f" {FAR_WAIT}"
    f = oc_fleet({"builder": [Text(reply, delay=6.0, chunk=12)]}, checks={"stall_idle": 15})
    f.wait_event(lambda evs: [e for e in evs if e["kind"] == "agent_started"], 90, "the agent to start")
    first = f.wait(lambda: f.main_requests("builder"), 90, "the model call")
    t0 = time.time()
    seen_frozen = []
    while "SLOW-HEALTHY-REPLY" not in f.capture("builder") and time.time() - t0 < 150:
        seen_frozen.append(time.time() - t0)
        time.sleep(2)
    took = time.time() - t0
    assert "SLOW-HEALTHY-REPLY" in f.capture("builder"), "the reply finished"
    evs = f.events()
    mine = [e for e in evs if e.get("agent") == "builder" and e["kind"] in
            ("finding", "agent_resumed", "agent_restarted", "agent_restarted_fresh", "opencode_turn_aborted")]
    print(f"\nslow reply: {took:.0f}s streaming, pane without the reply for {seen_frozen[-1] if seen_frozen else 0:.0f}s; "
          f"ccci acted: {[e['kind'] for e in mine]}")
    assert took > 30, "the reply streamed for longer than stall_idle twice over"
    assert not mine, [e["message"] for e in mine]
    assert len(f.main_requests("builder")) == 1 and first[0]["step"] == "text"
