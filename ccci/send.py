"""Reliable delivery of a message into an agent's input box.

Measured on Claude Code 2.1.197 (``docs/agent-clis.md#enter-after-paste``): text and Enter
in one tmux call lose the Enter for anything over ~20 characters; two calls with a
0.05-0.2 s gap submit reliably; a swallowed Enter leaves the draft in the box and a
second Enter 0.6 s later submitted it every time. So:

1. sanitise: control characters and ANSI escapes are removed (never interpreted as
   keys), line breaks become spaces unless the text is pasted;
2. refuse when the input box holds text that is not ours (a person's draft);
3. type the text literally (``send-keys -l``), or, over 4 KB or multi-line, paste it
   (``load-buffer`` + ``paste-buffer -p``);
4. after ``send_enter_delay`` seconds, and once the box shows the text (at most
   :data:`DRAFT_SHOW_S`), Enter in a separate tmux call;
5. verify: the box is empty or the agent went busy; else re-send Enter (only while the
   draft in the box is ours, and not before :data:`SUBMIT_SHOW_S` after the last one),
   at most ``send_retries`` times.

A message counts as submitted when the CLI accepted it: its own report (``accepted``: a
backend whose CLI tells, e.g. Claude Code's ``UserPromptSubmit`` hook), the agent busy,
the draft gone from a box that is still there, or the box replaced by what the turn
itself brought up (an error, or a dialog its first tool call opened: issue 14 saw a
message typed twice because a permission dialog drawn right after Enter read as "not
submitted"). :class:`SendResult` says whether the text was typed and whether its draft
is provably still in the box; only then may a caller type it again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ccci.model import AgentState

if TYPE_CHECKING:  # pragma: no cover
    from ccci.backends.base import Backend
    from ccci.clock import Clock
    from ccci.tmux import Tmux

ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
PASTE_OVER = 4000  # characters; a single tty line over ~4 KB is cut
#: states that end a turn: seen right after our Enter, with the input box gone, they
#: mean the message was taken (the model answered it with an error)
TURN_OUTCOMES = (AgentState.USAGE_LIMIT, AgentState.FATAL_ERROR, AgentState.CONTEXT_LIMIT, AgentState.API_ERROR)
#: what may replace the input box right after our Enter, meaning the CLI took the message:
#: a turn outcome, or a dialog the new turn opened (a permission question for its first
#: tool call, drawn 0.3-1.5 s after Enter; issue 14)
BOX_REPLACED_BY_TURN = TURN_OUTCOMES + (AgentState.WAITING_INPUT,)
VERIFY_GAP_S = 0.6  # a second Enter 0.6 s later submitted 30/30 (docs/agent-clis.md#enter-after-paste)
#: seconds the typed or pasted text may take to show in the box before Enter is pressed
#: anyway (a CLI still taking a paste in drops the Enter: Gemini CLI 0.61.0 needed a second
#: Enter for a 600-3000 character paste on a busy 2-core machine, in a CI rehearsal)
DRAFT_SHOW_S = 2.0
#: seconds after an Enter before it is pressed again: the CLI may be slow to show that it
#: took the message (on a loaded machine a CLI went busy later than the first look at 0.4 s)
SUBMIT_SHOW_S = 1.2


def _wait_for_draft(tmux: "Tmux", pane_id: str, backend: "Backend", clock: "Clock") -> None:
    """Wait (at most :data:`DRAFT_SHOW_S` seconds) until the box shows the text just typed
    or pasted, so that Enter reaches a CLI that has taken it in; returns at once when the
    box shows any text, is gone, or the agent is busy."""
    end = clock.monotonic() + DRAFT_SHOW_S
    while True:
        a = backend.analyse(tmux.capture([pane_id]).get(pane_id, ""))
        if a.input_text or not a.input_present or a.state == AgentState.BUSY or clock.monotonic() >= end:
            return
        clock.sleep(0.1)


def sanitize(text: str, keep_newlines: bool = False) -> str:
    """Remove ANSI escapes and control characters; fold line breaks to spaces unless
    ``keep_newlines``. Invalid surrogates are replaced."""
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    text = ANSI_RE.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    if not keep_newlines:
        text = " ".join(part for part in text.split("\n"))
        return CONTROL_RE.sub("", text).strip()
    return "\n".join(CONTROL_RE.sub("", ln) for ln in text.split("\n")).strip()


@dataclass
class SendResult:
    """Outcome of :func:`deliver`.

    Attributes:
        delivered: the agent accepted the message (box empty or agent busy after Enter).
        attempts: Enter presses used.
        detail: one line for the event log.
        retry_later: not attempted because the agent was not ready (queue it again).
        typed: the text was typed or pasted into the box (so it may have been submitted).
        draft_left: after the last Enter our text was still in the input box (so typing it
            again would not send it twice; the next attempt presses Enter only).
    """

    delivered: bool
    attempts: int
    detail: str
    retry_later: bool = False
    typed: bool = False
    draft_left: bool = False


def _norm(s: str) -> str:
    return " ".join(s.split())


def _ours(draft: str, text: str) -> bool:
    d, t = _norm(draft), _norm(text)
    if not d:
        return False
    if d.startswith(("[Pasted text", "[Pasted Content", "[Pasted Text")):
        # a paste collapsed by the CLI: Claude Code "[Pasted text #N +M lines]", Codex CLI
        # 0.169.0 and 0.171.0 "[Pasted Content N chars]", Gemini CLI 0.61.0 "[Pasted Text: N chars]"
        return True
    return t.startswith(d[:60]) or d.startswith(t[:60]) or t[-40:] in d


def deliver(
    tmux: "Tmux", pane_id: str, backend: "Backend", text: str, settings: dict, clock: "Clock",
    tmpdir: Path, accepted: "Callable[[float], bool | None] | None" = None,
) -> SendResult:
    """Type ``text`` into the pane and make sure it was submitted.

    :param tmux: the fleet's tmux.
    :param pane_id: target pane (``%N``).
    :param backend: reads the screen (input box, busy state).
    :param text: the message (sanitised here).
    :param settings: thresholds: ``send_enter_delay`` (s), ``send_retries``.
    :param clock: for the waits (a fake clock makes them instant).
    :param tmpdir: where a paste's temporary 0600 file goes.
    :param accepted: ``accepted(since)`` asks the CLI's own report whether it accepted a
        prompt at or after ``since`` (epoch seconds): ``True``/``False``, or ``None`` when
        it cannot tell (see :meth:`ccci.backends.base.Backend.prompt_accepted_since`).
    :returns: :class:`SendResult`.
    """
    multiline = "\n" in text.strip()
    clean = sanitize(text, keep_newlines=multiline)
    if not clean:
        return SendResult(False, 0, "empty after removing control characters")
    before = tmux.capture([pane_id]).get(pane_id, "")
    a0 = backend.analyse(before)
    if a0.input_text and not _ours(a0.input_text, clean):
        return SendResult(False, 0, f"input box holds someone else's draft ({a0.input_text[:40]!r}); not typing over it", retry_later=True)
    started = clock.now().timestamp()  # UTC epoch seconds: what the CLI's own reports are stamped with
    if not a0.input_text:
        # a backend may paste shorter text: CLIs that redraw per keystroke lose Enter
        # behind a long typed burst (Backend.paste_over, characters)
        paste_over = int(getattr(backend, "paste_over", PASTE_OVER) or PASTE_OVER)
        if multiline or len(clean) > paste_over:
            tmux.paste(pane_id, clean, tmpdir)
        else:
            tmux.send_literal(pane_id, clean)
    clock.sleep(float(settings.get("send_enter_delay", 0.2)))
    if not a0.input_text:
        _wait_for_draft(tmux, pane_id, backend, clock)
    retries = int(settings.get("send_retries", 3))
    attempts = 0
    for attempt in range(retries + 1):
        tmux.send_key(pane_id, "Enter")
        attempts += 1
        pressed = clock.monotonic()
        clock.sleep(VERIFY_GAP_S if attempt else 0.4)
        while True:
            after = tmux.capture([pane_id]).get(pane_id, "")
            a = backend.analyse(after)
            reported = accepted is not None and accepted(started) is True
            if reported or a.state == AgentState.BUSY or not a.input_present or not a.input_text \
                    or not _ours(a.input_text, clean) or clock.monotonic() - pressed >= SUBMIT_SHOW_S:
                break
            clock.sleep(0.2)  # our draft is still in the box: give the CLI a moment more
        if reported:
            return SendResult(True, attempts, f"submitted after {attempts} Enter (the CLI reported the prompt)",
                              typed=True)
        if a.state == AgentState.BUSY or (a.input_present and not a.input_text and after != before):
            return SendResult(True, attempts, f"submitted after {attempts} Enter", typed=True)
        if not a.input_present:
            if a0.input_present and a.state in BOX_REPLACED_BY_TURN:
                # the box took the Enter and the new turn replaced it: with an error
                # (Gemini CLI 0.61.0 draws its usage-limit dialog 0.4 s after Enter,
                # tests/golden/gemini-0.61.0/10_usage_limit_dialog.txt) or with a dialog
                # its first tool call opened (a permission question; issue 14)
                return SendResult(True, attempts, f"submitted after {attempts} Enter; the turn "
                                  f"{'opened a dialog' if a.state == AgentState.WAITING_INPUT else 'ended in ' + a.state.value}",
                                  typed=True)
            # no input box and not busy: the agent is not taking input (wedged, or a
            # dialog); pressing Enter again would only answer something else
            return SendResult(False, attempts, f"no input box and not busy after Enter (state {a.state.value})",
                              typed=True)
        if a.input_text and not _ours(a.input_text, clean):
            return SendResult(False, attempts, "input box changed to text that is not ours; stopped", typed=True)
    return SendResult(False, attempts, f"text still in the input box after {attempts} Enter", typed=True,
                      draft_left=True)
