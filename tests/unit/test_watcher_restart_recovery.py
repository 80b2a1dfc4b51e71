"""What a new watcher finds after its predecessor died mid-remedy: messages left
'sending' and an interrupted (re)start (see tests/faults/test_watcher_killed_mid_remedy.py
for the same on a real fleet)."""
from __future__ import annotations

from ccci.lifecycle import INTENT_KEY
from ccci.testing.fakes import tick

PING = "ccci: new claim pushed to origin/main: {sha} claim(step {n}): parser. Verify it adversarially."


def test_only_the_message_seen_on_screen_is_marked_delivered(make_supervisor, fake_tmux):
    # two pings whose first 40 characters are the same (the sha differs after that)
    sup = make_supervisor(agents=["a"])
    tick(sup)
    one, two = PING.format(sha="1aaaaaaaaa", n=1), PING.format(sha="1bbbbbbbbb", n=2)
    ids = [sup.queue_message("a", one), sup.queue_message("a", two)]
    assert one[:40] == two[:40]
    sup.store.db.execute("UPDATE messages SET status='sending'")
    fake_tmux.pane("a").append(f"» {one}")  # only the first was typed before the watcher died
    sup.outbox.recover_sending(fake_tmux.list_panes())
    status = {r["id"]: r["status"] for r in sup.store.db.execute("SELECT id, status FROM messages")}
    assert status == {ids[0]: "delivered", ids[1]: "queued"}


def test_an_interrupted_resume_is_completed_as_a_resume(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"])
    tick(sup)
    conv = sup.agents["a"].conversation_id
    # the previous watcher stopped the agent for a restart and died before starting it
    sup.store.put(INTENT_KEY.format(agent="a"), "restart")
    fake_tmux.kill_session(sup.agents["a"].session)
    again = make_supervisor(agents=["a"])
    again.adopt()
    [launch] = fake_tmux.launches("a")[1:]
    assert "--resume" in launch.argv and again.agents["a"].conversation_id == conv
    assert again.store.get(INTENT_KEY.format(agent="a")) == ""


def test_an_identical_earlier_message_in_the_log_does_not_count(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"])
    tick(sup)
    log = sup.log_dir / "a.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("> please run the tests again\n» please run the tests again\n")  # delivered yesterday
    mid = sup.queue_message("a", "please run the tests again")
    sup.store.db.execute("UPDATE messages SET status='sending', detail=? WHERE id=?", (f"log_offset={log.stat().st_size}", mid))
    fake_tmux.pane("a").append("» please run the tests again")  # the old one, still on screen
    sup.outbox.recover_sending(fake_tmux.list_panes())
    assert sup.store.db.execute("SELECT status FROM messages WHERE id=?", (mid,)).fetchone()[0] == "queued"
    # typed this time before the watcher died: it is in the log after the offset
    sup.store.db.execute("UPDATE messages SET status='sending' WHERE id=?", (mid,))
    with open(log, "a") as fh:
        fh.write("\x1b[2K> please run\x1b[0m the tests again\r\n")
    sup.outbox.recover_sending(fake_tmux.list_panes())
    assert sup.store.db.execute("SELECT status FROM messages WHERE id=?", (mid,)).fetchone()[0] == "delivered"


def test_a_delivery_that_raises_does_not_leave_the_message_sending(make_supervisor, fake_tmux, monkeypatch):
    # the chaos soak (bench/soak.py) killed the tmux server while a ping was being typed:
    # send-keys failed, the tick raised, and the row stayed 'sending' until the next
    # watcher start (pending_messages() only takes 'queued' ones): a lost handoff
    import pytest

    from ccci.testing.fakes import events
    from ccci.tmux import TmuxError

    sup = make_supervisor(agents=["a"])
    tick(sup)
    mid = sup.queue_message("a", PING.format(sha="1ccccccccc", n=3))

    real = {"send_literal": fake_tmux.send_literal, "paste": fake_tmux.paste}
    down = {"on": True}

    def maybe_gone(kind):
        def call(pane_id, *args):
            if down["on"]:
                raise TmuxError("no server running on /tmp/tmux-0/ccci-t")
            return real[kind](pane_id, *args)
        return call

    monkeypatch.setattr(fake_tmux, "send_literal", maybe_gone("send_literal"))
    monkeypatch.setattr(fake_tmux, "paste", maybe_gone("paste"))
    sup.outbox.deliver_pending()  # a lost tmux is no tick error: the next tick restores it
    row = sup.store.message(mid)
    assert row["status"] == "queued"  # nothing reached the pane: queued again, not 'sending'
    [retry] = [e for e in events(sup, "message_retry") if e["data"].get("message_id") == mid]
    assert "no server running" in retry["message"]
    # any other exception still fails the tick, with the row decided first
    sup.store.db.execute("UPDATE messages SET status='queued'")
    monkeypatch.setattr(sup.outbox, "deliver_now", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        sup.outbox.deliver_pending()
    assert sup.store.message(mid)["status"] == "queued"
    monkeypatch.setattr(sup.outbox, "deliver_now", type(sup.outbox).deliver_now.__get__(sup.outbox))
    down["on"] = False
    for _ in range(5):
        tick(sup)
        if sup.store.message(mid)["status"] == "delivered":
            break
    assert sup.store.message(mid)["status"] == "delivered"
    assert [t for t in fake_tmux.pane("a").submitted if "1ccccccccc" in t] != []


def test_a_message_typed_but_not_submitted_when_the_watcher_died_is_submitted_by_the_next_one(
        make_supervisor, fake_tmux):
    """The 2-hour chaos soak (2026-12-07): the watcher was killed between typing a ping
    and pressing Enter. Its echo was in the pane log, so the next watcher counted it
    delivered, while the agent sat in ``unsent_input`` with the ping in its box and every
    later message queued behind it (2 minutes, until an unrelated restart). Now the draft
    is recognised as ccci's own and submitted with Enter, once, without typing it again."""
    from ccci.testing.fakes import events

    sup = make_supervisor(agents=["a"], checks={"startup_grace": 0})
    tick(sup)
    pane = fake_tmux.pane("a")
    ping = PING.format(sha="1ddddddddd", n=4)
    log = sup.log_dir / "a.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("earlier output\n")
    mid = sup.queue_message("a", ping)
    later = sup.queue_message("a", PING.format(sha="1eeeeeeeee", n=5))
    sup.store.db.execute("UPDATE messages SET status='sending', detail=? WHERE id=?", (f"log_offset={log.stat().st_size}", mid))
    pane.type(ping)  # typed; the watcher died before Enter
    with open(log, "a") as fh:
        fh.write(f"> {ping}\r\n")  # the echo of the typing is in the log
    again = make_supervisor(sup.config)
    assert again.store.message(mid)["status"] == "queued"
    for _ in range(8):
        tick(again)
        if pane.input == "":
            pane.idle()
    assert pane.submitted == [ping, PING.format(sha="1eeeeeeeee", n=5)]
    assert pane.typed == [ping, PING.format(sha="1eeeeeeeee", n=5)]  # the draft was not typed twice
    assert [again.store.message(i)["status"] for i in (mid, later)] == ["delivered", "delivered"]
    assert not events(again, "message_failed")


def test_someone_elses_draft_is_never_submitted(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], checks={"startup_grace": 0})
    tick(sup)
    pane = fake_tmux.pane("a")
    mid = sup.queue_message("a", PING.format(sha="1fffffffff", n=6))
    pane.type("a person is typing a question")
    for _ in range(5):
        tick(sup)
    assert pane.submitted == [] and pane.input == "a person is typing a question"
    assert sup.store.message(mid)["status"] == "queued"
