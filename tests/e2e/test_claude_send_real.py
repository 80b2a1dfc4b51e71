"""ccci's reliable send (:func:`ccci.send.deliver`, the path of ``ccci send`` and every
ping) measured on the real Claude Code TUI (the pinned 2.1.197; 2.1.332 with ``CCCI_CLAUDE_VERSION``): 20 messages of 600 to 3000
characters into an idle agent, each delivered exactly once and whole, as the model
server received it. The numbers (delivered/attempts/Enter retries) are printed with
``-s`` and written down in docs/backends.md.
"""
from __future__ import annotations

import random
import re
import time

import pytest
from real_cli import CLAUDE_VERSION

from ccci.clock import Clock
from ccci.config import DEFAULT_CHECKS
from ccci.model import AgentState
from ccci.send import deliver

pytestmark = [pytest.mark.e2e, pytest.mark.tmux, pytest.mark.slow, pytest.mark.timeout(600)]  # real CLIs: minutes

BANNER = f"Claude Code v{CLAUDE_VERSION}"  # the version the e2e run selected (conftest)
WORDS = ("supervisor agent tmux pane commit claim review origin branch resume fresh session limit reset "
         "hook spool state busy idle quota 'quoted' \"double\" $HOME `tick` 100% a&b x|y (paren) [bracket] "
         "{brace} naïve café → ✓ — ; : , . ! ?").split()


def _message(i: int, length: int, rng: random.Random) -> str:
    """A one-line message of exactly ``length`` characters with a unique tag."""
    head = f"MSG-{i:02d}-{length} "
    words = []
    size = len(head)
    while size < length:
        w = rng.choice(WORDS)
        words.append(w)
        size += len(w) + 1
    text = (head + " ".join(words))[:length].rstrip()
    text = text + "x" * (length - len(text))
    if i == 3:
        text = text[:-1] + ";"  # a trailing ';' must arrive (tmux would drop it unescaped)
    return text


#: Claude Code 2.1.332 sends a bracketed paste to the model wrapped in
#: ``\n\n<pasted_content id="5d2c">\n...\n</pasted_content id="5d2c">\n`` (2.1.197: the bare
#: text); a long paste the terminal delivered in two reads arrives as two such blocks
#: (same id) whose texts join to the whole message
PASTED = re.compile(r'<pasted_content id="(?P<id>[^"]*)">\n(?P<text>.*?)\n</pasted_content(?: id="(?P=id)")?>', re.S)


def _unwrap(text: str) -> str:
    """The text of the ``<pasted_content>`` blocks of a message, joined; else ``text``."""
    blocks = list(PASTED.finditer(text))
    if not blocks or PASTED.sub("", text).strip():
        return text
    return "".join(b.group("text") for b in blocks)


def _last_user_text(req: dict) -> str:
    for m in reversed(req["json"].get("messages") or []):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                text = c
            else:
                texts = [b.get("text", "") for b in c if isinstance(b, dict) and b.get("type") == "text"]
                text = texts[-1] if texts else ""
            return _unwrap(text)
    return ""


def test_twenty_long_messages_each_delivered_exactly_once(claude_session, tmp_path):
    s = claude_session([])  # every turn: the model server's Echo ("scripted reply #N: ...")
    s.wait_until(lambda sc, a: a.state == AgentState.IDLE and a.input_present and BANNER in sc, 45,
                 "the CLI to start idle")
    rng = random.Random(20261122)
    lengths = [600 + round(i * (3000 - 600) / 19) for i in range(20)]
    rng.shuffle(lengths)
    messages = [_message(i, n, rng) for i, n in enumerate(lengths)]
    settings = dict(DEFAULT_CHECKS)
    results = []
    for i, text in enumerate(messages):
        s.wait_until(lambda sc, a: s.backend.is_ready_for_input(a) and len(s.main_requests()) == i, 60,
                     f"the agent idle before message {i}")
        t0 = time.monotonic()
        res = deliver(s.tmux, s.pane_id, s.backend, text, settings, Clock(), tmpdir=tmp_path)
        results.append((res, time.monotonic() - t0))
        assert res.delivered, (i, res.detail, s.screen())
    s.wait_until(lambda sc, a: len(s.main_requests()) == 20 and a.state == AgentState.IDLE, 60, "the last reply")
    received = [_last_user_text(r) for r in s.main_requests()]
    for text in messages:
        assert received.count(text) == 1, (text[:30], [r[:30] for r in received])  # once, whole
    assert received == messages  # and in order, nothing else typed
    retries = sum(r.attempts - 1 for r, _ in results)
    print(f"\nreliable send on the real TUI: {sum(r.delivered for r, _ in results)}/20 delivered, "
          f"{sum(r.attempts for r, _ in results)} Enter presses, {retries} Enter retries, "
          f"lengths {min(lengths)}-{max(lengths)}, deliver() took "
          f"{min(d for _, d in results):.2f}-{max(d for _, d in results):.2f} s")
