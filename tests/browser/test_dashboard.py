"""``ccci web`` in a real browser (Debian's chromium through Playwright) against a real
scripted fleet: the fleet page lists both agents and shows a ``kill -9`` as a restart
live (no reload), actions are refused without the token and work with it (an event
with ``source=web``), the pages fit a phone's width, and no page shows a secret from
an agent's environment.

Set ``CCCI_SCREENSHOTS=DIR`` to save the fleet and agent pages at desktop and phone
widths into DIR (docs/screenshots/ holds the committed ones).
"""
from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import pytest

from ccci.testing.fleet import poll_until

pytestmark = [pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(180)]

PHONE = {"width": 390, "height": 844}


wait_until = partial(poll_until, poll=0.2)


def cell(page, agent: str, col: str):
    return page.locator(f'#fleet tr[data-agent="{agent}"] td[data-col="{col}"]')


def test_fleet_page_lists_both_agents_with_their_pids(web, page):
    page.goto(web.url + "/")
    for agent in web.fleet.AGENTS:
        cell(page, agent, "name").wait_for(timeout=15000)
        assert cell(page, agent, "name").inner_text() == agent
        assert cell(page, agent, "state").inner_text().strip() not in ("", "-")
    # the page's pid is the pane's process, as tmux reports it
    assert wait_until(lambda: all(cell(page, a, "pid").inner_text() == str(web.fleet.live_pid(a))
                                  for a in web.fleet.AGENTS), 10)
    assert page.locator("#watcher").inner_text().startswith("pid ")
    assert page.locator("#live").inner_text() == "live"


def test_kill_9_shows_up_live_as_a_restart_without_reloading(web, page):
    fleet = web.fleet
    page.goto(web.url + "/")
    cell(page, "builder", "restarts").wait_for(timeout=15000)
    old_pid = fleet.live_pid("builder")
    assert wait_until(lambda: cell(page, "builder", "pid").inner_text() == str(old_pid), 10)
    before = int(cell(page, "builder", "restarts").inner_text())
    page.evaluate("window.__sameDocument = 'not reloaded'")
    os.kill(old_pid, signal.SIGKILL)
    page.wait_for_function(
        """([n, pid]) => {
             const row = document.querySelector('#fleet tr[data-agent="builder"]');
             const restarts = Number(row.querySelector('td[data-col="restarts"]').textContent);
             const p = row.querySelector('td[data-col="pid"]').textContent;
             return restarts === n + 1 && p !== '-' && p !== String(pid);
           }""", arg=[before, old_pid], timeout=30000)
    assert page.evaluate("window.__sameDocument") == "not reloaded"
    new_pid = int(cell(page, "builder", "pid").inner_text())
    assert wait_until(lambda: fleet.live_pid("builder") == new_pid, 10)
    # the restart's cause is on the page's event list, live too
    page.locator("#recent li[data-kind='remedy']", has_text="process_death").first.wait_for(timeout=10000)


def _post(web, body: dict, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(web.url + "/api/action", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, (json.loads(body) if exc.headers.get_content_type() == "application/json"
                          else {"error": body.decode()})


def test_an_action_without_the_token_is_refused_and_with_it_is_an_event(web, page):
    fleet = web.fleet
    page.goto(web.url + "/agent/adversary")
    page.locator("#screen").wait_for(timeout=15000)
    n0 = len(fleet.events("web_action"))
    page.fill("#send-text", "refused-without-token")
    page.click("#send-button")
    page.locator("#action-result.refused").wait_for(timeout=10000)
    assert "token" in page.locator("#action-result").inner_text()
    # a wrong token, another site's Origin with the right token, a rebinding Host: refused too
    assert _post(web, {"action": "stop", "agent": "adversary"}, {"X-CCCI-Token": "wrong"})[0] == 403
    assert _post(web, {"action": "stop", "agent": "adversary"},
                 {"X-CCCI-Token": web.token, "Origin": "http://evil.example"})[0] == 403
    assert _post(web, {"action": "stop", "agent": "adversary"},
                 {"X-CCCI-Token": web.token, "Host": "evil.example:80"})[0] == 403
    assert len(fleet.events("web_action")) == n0
    assert not any("refused-without-token" in m["text"] for m in fleet.store.messages_for("adversary"))
    assert not fleet.store.agent("adversary").stopped
    # with the token (typed into the page's token box): the message is queued and logged
    page.click(".tokenbox summary")
    page.fill("#token-input", web.token)
    page.click("#token-form button")
    page.fill("#send-text", f"hello from the dashboard {web.secret}")
    page.click("#send-button")
    page.locator("#action-result.ok").wait_for(timeout=15000)
    ev = wait_until(lambda: fleet.events("web_action"), 10)[-1]
    assert ev["data"]["source"] == "web" and ev["data"]["action"] == "send" and ev["agent"] == "adversary"
    assert web.secret not in json.dumps(ev)  # redacted on its way into the log
    assert any("hello from the dashboard" in m["text"] for m in fleet.store.messages_for("adversary"))
    # the watcher delivers it; the screen shows it, with the secret hidden
    assert wait_until(lambda: "hello from the dashboard" in fleet.screen("adversary"), 30)
    assert web.secret in fleet.screen("adversary")  # tmux has it...
    page.locator("#screen", has_text="hello from the dashboard").wait_for(timeout=15000)
    html = page.content()
    assert web.secret not in html and "hello from the dashboard ***" in page.locator("#screen").inner_text()  # ...the page not
    for path in ("/", "/events", "/agent/adversary", "/api/events", "/api/agent/adversary"):
        page.goto(web.url + path)
        page.wait_for_timeout(1500)
        assert web.secret not in page.content(), path


def test_stop_start_restart_from_the_page_go_through_the_ccci_commands(web, page):
    fleet = web.fleet
    page.goto(web.url + f"/agent/builder#token={web.token}")
    page.locator("#screen").wait_for(timeout=15000)
    page.click("button[data-action=stop]")
    page.locator("#action-result.ok").wait_for(timeout=20000)
    assert "stopped" in page.locator("#action-result").inner_text()
    assert fleet.store.agent("builder").stopped
    page.locator("#agent-state", has_text="stopped").wait_for(timeout=15000)
    stopped = [e for e in fleet.events("agent_stopped", "builder") if "ccci web" in e["message"]]
    assert stopped, fleet.events("agent_stopped")
    page.locator("#action-result").evaluate("e => { e.textContent = ''; e.className = 'result'; }")
    page.click("button[data-action=start]")
    page.locator("#action-result.ok").wait_for(timeout=20000)
    assert wait_until(lambda: fleet.live_pid("builder") and not fleet.store.agent("builder").stopped, 30)
    # restart: ccci stop then ccci start; the watcher resumes the conversation with a new process
    pid = wait_until(lambda: fleet.store.agent("builder").state == "running" and fleet.live_pid("builder"), 30)
    conv = fleet.store.agent("builder").conversation_id
    page.locator("#action-result").evaluate("e => { e.textContent = ''; e.className = 'result'; }")
    page.click("button[data-action=restart]")
    page.locator("#action-result.ok").wait_for(timeout=20000)
    assert wait_until(lambda: fleet.live_pid("builder") not in (None, pid), 30)
    assert wait_until(lambda: page.locator("#summary dd[data-field=pid]").inner_text() == str(fleet.live_pid("builder")),
                      20), (page.locator("#summary dd[data-field=pid]").inner_text(), fleet.live_pid("builder"))
    assert fleet.store.agent("builder").conversation_id == conv

    def web_actions():
        return [e["data"]["action"] for e in fleet.events("web_action") if e["data"].get("source") == "web"]

    assert wait_until(lambda: web_actions()[-3:] == ["stop", "start", "restart"], 10), \
        [(e["kind"], e["message"]) for e in fleet.events(agent="builder")[-20:]]


def _no_horizontal_overflow(page) -> tuple[int, int]:
    return page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")


def test_pages_fit_a_phone_and_the_event_filters_work(web, browser):
    shots = os.environ.get("CCCI_SCREENSHOTS")
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    web.fleet.store.set_usage("builder", now.strftime("%Y-%m-%d"), "conversation-x", "model-x",
                              {"input_tokens": 123456, "output_tokens": 7890}, now)
    for size, tag in ((PHONE, "phone"), ({"width": 1280, "height": 900}, "desktop")):
        ctx = browser.new_context(viewport=size, device_scale_factor=1)
        page = ctx.new_page()
        for path, name in (("/", "fleet"), ("/agent/builder", "agent"), ("/events?agent=builder&kind=agent_&since=1h", "events")):
            page.goto(web.url + path)
            if name == "fleet":
                cell(page, "adversary", "name").wait_for(timeout=15000)
            elif name == "agent":
                page.locator("#screen", has_text="scripted-agent").wait_for(timeout=15000)
                page.locator("#timeline .seg").first.wait_for(timeout=15000)
                tokens = page.locator("#tokens tbody tr").first
                tokens.wait_for(timeout=15000)
                assert "123456" in tokens.inner_text() and "7890" in tokens.inner_text()
            else:
                page.locator("#log tbody tr").first.wait_for(timeout=15000)
                rows = page.locator("#log tbody tr")
                agents = rows.locator("td[data-label=agent]").all_inner_texts()
                kinds = rows.locator("td[data-label=kind]").all_inner_texts()
                assert agents and set(agents) == {"builder"}, agents
                assert all(k.startswith("agent_") for k in kinds), kinds
            scroll, inner = _no_horizontal_overflow(page)
            assert scroll <= inner, f"{path} at {tag} width: scrollWidth {scroll} > innerWidth {inner}"
            if shots and name != "events":
                Path(shots).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(shots) / f"{name}-{tag}.png"), full_page=(name == "fleet"))
        ctx.close()
