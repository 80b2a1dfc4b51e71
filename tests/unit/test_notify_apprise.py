"""Pages through Apprise (issue 15, part 3): real Apprise URLs (json://, ntfy://) against
a loopback HTTP receiver this test starts; a dialog nobody answers pages exactly once
with its text and the lines that answer it; de-duplication, the rate limit, quiet hours
and the digest on a fake clock; a receiver that hangs or refuses never slows the tick and
yields notify_failed; secrets in URLs never reach events."""
from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ccci import config as config_mod
from ccci.config import ConfigError
from ccci.model import Event
from ccci.reporters.notify import Page, Pager, drain, validate
from ccci.testing.fakes import events, tick
from ccci.testing.http_receiver import Receiver

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "claude-2.1.332-recorded"
UTC = timezone.utc


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()




def notify_toml(urls: list[str], **keys) -> str:
    lines = ["[notify]", "urls = [" + ", ".join(json.dumps(u) for u in urls) + "]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n" + "\n".join(lines) + "\n"


def test_a_dialog_nobody_answers_pages_once_through_json_and_ntfy_with_its_text_and_the_answer(
        make_supervisor, fake_tmux, fake_clock, claude_on_path, receiver, tmp_path):
    urls = [f"json://127.0.0.1:{receiver.port}/hook", f"ntfy://127.0.0.1:{receiver.port}/ccci-topic"]
    sup = make_supervisor(agents=["a"], backend="claude", checks={"startup_grace": 0, "needs_input_wait": 60},
                          fleet={"tmux_socket": "ccci-sock"}, extra_toml=notify_toml(urls))
    pane = fake_tmux.pane("a")
    pane.set_screen((GOLDEN / "20_permission_dialog.txt").read_text(), input_box=None)
    for _ in range(200):
        tick(sup)
    assert drain(15)
    tick(sup)
    [esc] = events(sup, "escalation")
    assert esc["data"]["check"] == "needs_input"
    hooks = [g for g in receiver.got if g[1] == "/hook"]
    ntfy = [g for g in receiver.got if g[1] != "/hook"]
    assert len(hooks) == 1 and len(ntfy) == 1, receiver.got
    msg = json.loads(hooks[0][2])
    assert "needs input" in msg["title"] and "a" in msg["title"]
    body = msg["message"]
    assert "Do you want to proceed?" in body and "1. Yes" in body
    assert "tmux -L ccci-sock attach -t ccci-" in body
    assert f"ccci --fleet {tmp_path} attach a" in body
    assert f"ccci --fleet {tmp_path} send a" in body
    # ntfy's self-hosted form over plain http: ntfy://host:port/topic (Apprise posts JSON with the topic)
    assert "ccci-topic" in ntfy[0][1] + ntfy[0][2] and "Do you want to proceed?" in ntfy[0][2]
    assert not events(sup, "notify_failed")
    # the repeated escalation of the same dialog (an automatic retry) never pages
    sup.emit("escalation_repeated", "a dialog has waited again", agent="a", check="needs_input")
    assert drain(5) and len(receiver.got) == 2


def test_a_new_dialog_after_an_answered_one_pages_again_within_the_dedup_window(
        make_supervisor, fake_tmux, fake_clock, claude_on_path, receiver):
    """One page per dialog: the de-duplication key of a needs_input page is the time its
    dialog was first seen, so dedup_window (3600 s) never hides the next question."""
    sup = make_supervisor(agents=["a"], backend="claude", checks={"startup_grace": 0, "needs_input_wait": 10},
                          extra_toml=notify_toml([f"json://127.0.0.1:{receiver.port}/hook"]))
    pane = fake_tmux.pane("a")
    dialog = (GOLDEN / "20_permission_dialog.txt").read_text()
    for _ in range(2):
        pane.set_screen(dialog, input_box=None)
        for _ in range(30):
            tick(sup)
        pane.set_screen("❯ yes\n● done\n", input_box="─" * 20 + "\n❯\xa0\n" + "─" * 20 + "\n  ? for shortcuts")
        for _ in range(5):
            tick(sup)
    assert drain(10)
    assert len(events(sup, "escalation")) == 2
    assert len(receiver.got) == 2 and all("Do you want to proceed?" in b for _, _, b in receiver.got), receiver.got


def page(agent="a", reason="escalation"):
    return Page(reason, agent, f"{reason} {agent}", f"body of {reason} for {agent}")


T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def pager(**keys) -> Pager:
    return Pager(validate(keys, "ccci.toml"), "f")


def test_the_same_page_for_the_same_agent_and_reason_is_sent_once_per_window():
    p = pager(dedup_window=600)
    assert len(p.offer(page("a"), T0)) == 1
    assert p.offer(page("a"), T0 + timedelta(seconds=599)) == []  # a repeat: suppressed
    assert len(p.offer(page("b"), T0 + timedelta(seconds=1))) == 1  # another agent pages
    assert len(p.offer(page("a", "usage_limit"), T0 + timedelta(seconds=2))) == 1  # another reason pages
    assert len(p.offer(page("a"), T0 + timedelta(seconds=1200))) == 1  # the window passed
    assert p.stats["suppressed"] == 1


def test_at_most_max_per_hour_pages_the_rest_counted_into_the_next_page_or_the_digest():
    p = pager(max_per_hour=3, digest="08:00")
    sent = [x for i in range(5) for x in p.offer(page(f"a{i}"), T0 + timedelta(minutes=i))]
    assert [x.agent for x in sent] == ["a0", "a1", "a2"]
    assert p.stats["rate_limited"] == 2
    [nxt] = p.offer(page("b"), T0 + timedelta(minutes=61))  # the hour rolled on
    assert "2 more page(s) held by the rate limit" in nxt.body and "escalation a3" in nxt.body
    for i in range(3):
        p.offer(page(f"c{i}"), T0 + timedelta(minutes=62 + i))  # 2 sent, 1 held
    assert p.due(T0 + timedelta(minutes=70)) == []  # arms the digest for tomorrow 08:00 UTC
    [digest] = p.due(datetime(2026, 3, 3, 8, 0, tzinfo=UTC))
    assert digest.reason == "digest" and "1 page(s) still held by the rate limit" in digest.body


def test_quiet_hours_hold_pages_and_release_them_as_one_page_at_the_end():
    p = pager(quiet_hours="22:00-07:00", timezone="Europe/Paris", quiet_except=["breaker_open"])
    night = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)  # 23:30 in Paris (UTC+1 in March)
    assert p.offer(page("a"), night) == [] and p.offer(page("b", "needs_input"), night) == []
    assert len(p.offer(page(None, "breaker_open"), night)) == 1  # an exception pages at once
    assert p.due(datetime(2026, 3, 3, 5, 59, tzinfo=UTC)) == []  # 06:59 in Paris: still quiet
    [out] = p.due(datetime(2026, 3, 3, 6, 0, tzinfo=UTC))  # 07:00 in Paris
    assert out.reason == "quiet_hours" and "2 page(s) held" in out.title
    assert "body of escalation for a" in out.body and "body of needs_input for b" in out.body
    assert p.due(datetime(2026, 3, 3, 6, 1, tzinfo=UTC)) == []


def test_the_daily_digest_summarises_the_last_24_hours():
    p = pager(digest="08:00")
    assert p.due(datetime(2026, 3, 2, 7, 0, tzinfo=UTC)) == []
    p.record(Event("escalation", "a gave up", agent="a", at=datetime(2026, 3, 1, 7, 0, tzinfo=UTC)))  # > 24 h
    p.record(Event("escalation", "b gave up", agent="b", at=datetime(2026, 3, 2, 7, 30, tzinfo=UTC)))
    p.record(Event("remedy", "restart", agent="b", at=datetime(2026, 3, 2, 7, 31, tzinfo=UTC)))
    p.offer(page("b"), datetime(2026, 3, 2, 7, 30, tzinfo=UTC))
    [d] = p.due(datetime(2026, 3, 2, 8, 0, 1, tzinfo=UTC))
    assert "2 events since" in d.body and "1 escalation" in d.body and "[b] b gave up" in d.body
    assert "a gave up" not in d.body and "pages: 1 sent" in d.body
    assert p.due(datetime(2026, 3, 2, 9, 0, tzinfo=UTC)) == []  # once a day


def _hanging_server():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    held = []

    def accept():
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            held.append(c)  # never answers

    threading.Thread(target=accept, daemon=True).start()
    return s, held


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_receiver_that_hangs_or_refuses_never_blocks_the_tick_and_is_a_notify_failed_event(
        make_supervisor, fake_clock, capsys):
    hang, held = _hanging_server()
    token = "s3cr3t-tok-98765"
    urls = [f"json://ccci:{token}@127.0.0.1:{hang.getsockname()[1]}/hook?key=qwerty-123456",
            f"ntfy://127.0.0.1:{_closed_port()}/topic-{token}"]
    sup = make_supervisor(agents=["a"], extra_toml=notify_toml(urls, timeout=1.5))
    try:
        budget = float(sup.config.settings_for("a")["check_budget"])
        t0 = time.monotonic()
        sup.emit("escalation", "a: restart intensity exceeded", agent="a", check="runner")
        assert time.monotonic() - t0 < 0.5  # the report only queues the page
        durations = []
        deadline = time.monotonic() + 15
        while len(events(sup, "notify_failed")) < 2 and time.monotonic() < deadline:
            t = time.monotonic()
            tick(sup)
            durations.append(time.monotonic() - t)
            time.sleep(0.05)
        failed = events(sup, "notify_failed")
        assert len(failed) == 2, failed
        assert max(durations) < min(budget, 1.0), durations
        text = json.dumps(events(sup)) + "".join(capsys.readouterr())
        assert token not in text and "qwerty-123456" not in text
        assert any("urls[0] json://" in e["message"] for e in failed)
        assert any("urls[1] ntfy://" in e["message"] for e in failed)
    finally:
        hang.close()
        for c in held:
            c.close()


def test_a_watcher_that_never_stopped_cleanly_pages_when_the_next_one_starts(make_supervisor, receiver):
    toml = notify_toml([f"json://127.0.0.1:{receiver.port}/hook"])
    first = make_supervisor(agents=["a"], extra_toml=toml)
    first.emit("watcher_started", "watching (pid 1)", pid=1)
    first.emit("watcher_stopped", "stopped")
    second = make_supervisor(agents=["a"], extra_toml=toml)
    second.emit("watcher_started", "watching (pid 2)", pid=2)  # after a clean stop: no page
    assert drain(5) and receiver.got == []
    third = make_supervisor(agents=["a"], extra_toml=toml)  # the second was kill -9ed
    third.emit("watcher_started", "watching (pid 3)", pid=3)
    assert drain(5)
    [(_, _, body)] = receiver.got
    assert "watcher restarted after an unclean exit" in json.loads(body)["title"]


@pytest.mark.parametrize("notify, key, words", [
    ('urls = ["nosuchscheme://x/y"]', "notify.urls[0]", "Apprise cannot parse this 'nosuchscheme' URL"),
    ('urls = ["json://127.0.0.1/ok", "slak://tok-abcdef123/x"]', "notify.urls[1]", "fix its scheme"),
    ('quiet_hours = "22-07"', "notify.quiet_hours", "HH:MM"),
    ('digest = "8h"', "notify.digest", "HH:MM"),
    ('timezone = "Mars/Olympus"', "notify.timezone", "IANA"),
    ('max_per_hour = 0', "notify.max_per_hour", ">= 1"),
    ('urlz = []', "notify.urlz", "unknown key"),
])
def test_a_bad_notify_table_is_a_one_line_config_error(tmp_path, notify, key, words):
    from ccci.commands.init import render_config

    (tmp_path / "ccci.toml").write_text(render_config("n", "", "main", "scripted") + f"\n[notify]\n{notify}\n")
    with pytest.raises(ConfigError) as exc:
        config_mod.load(tmp_path, environ={})
    msg = str(exc.value)
    assert "\n" not in msg and str(tmp_path / "ccci.toml") in msg and key in msg and words in msg
    assert "tok-abcdef123" not in msg


def test_which_events_page():
    from ccci.reporters.notify import page_for

    def pf(kind, agent="a", restarted=False, **data):
        return page_for(Event(kind, f"{kind} message", agent=agent, at=T0, data=data), "f",
                        lambda a: "", lambda a: f"attach {a}", restarted=restarted)

    usage = pf("finding", check="usage_limit", reset_at="2026-03-02T17:00:00Z")
    assert usage.reason == "usage_limit" and "2026-03-02T17:00:00Z" in usage.body
    assert pf("escalation", check="runner").key == "escalation"
    assert pf("escalation", check="runner", final=True).key == "escalation:final"  # not de-duplicated with the first
    assert pf("escalation_repeated", check="runner") is None
    assert pf("finding", check="stall") is None
    assert pf("phase_complete", agent=None, phase="p1").reason == "phase_complete"
    assert pf("sequence_complete", agent=None).reason == "sequence_complete"
    assert pf("watcher_started", agent=None) is None
    assert pf("watcher_started", agent=None, restarted=True).reason == "watcher_restarted"
