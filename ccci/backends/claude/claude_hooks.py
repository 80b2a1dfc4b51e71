"""Claude Code's own reports as the strongest state source: lifecycle hooks, then the
session file, then (elsewhere) the pane.

Sources, strongest first (docs/agent-clis.md#claude-code-lifecycle-hooks and
docs/agent-clis.md#claude-code-session-files; recorded events in
tests/golden/claude-2.1.197/hooks/):

1. **Hooks.** :func:`ccci.backends.claude.write_hook_settings` installs command hooks
   that run :mod:`ccci.backends.claude.hookrelay`, which appends each event to
   ``<state_dir>/hooks/<agent>.jsonl``. Every tick this plugin reads the new complete
   lines (the byte offset and the folded state are persisted in the state store, keys
   ``claude_hooks.offset.<agent>`` / ``claude_hooks.state.<agent>``) and folds them
   (:func:`fold`): SessionStart/Stop -> idle (after a Stop: once the transcript records
   the turn's answer, :data:`RECORD_WAIT_S` at most), UserPromptSubmit and an automatic
   PreCompact -> busy (a manual one, ``/compact``, changes nothing: when it fails
   ("Not enough messages to compact") no hook follows),
   PermissionRequest and Notification ``permission_prompt`` or ``agent_needs_input`` ->
   waiting_input, SessionEnd -> exited, StopFailure -> the API error's kind
   (:func:`classify`). A record with an ``agent_id`` comes from a subagent (the one that
   compacts, a Task agent) and never changes the main session's state. Hooks fire 20 to
   70 ms before the pane redraws.
2. **Session file** ``$HOME/.claude/sessions/<pid>.json`` (``"status": "busy" | "idle"``),
   used only while no hook has reported for the current process; it is left behind stale
   after ``kill -9``, so it is read only for a live process.
3. **The pane** (the backend's pattern data), which cross-checks (:func:`merge`).

Merging (:func:`merge`): the newer information wins. The source's state wins unless the
pane's content changed more than :data:`PANE_LAG_S` (+ one tick) after the source's event
(the pane then shows something the source did not report, e.g. a draft, a lost Stop), or
the source says busy while the pane, unchanged, says otherwise for :data:`STALE_BUSY_S`
(a stale hook; reported once as a ``hook_stale`` event). An idle source never hides a
draft (``unsent_input``) or a dialog (``waiting_input``) the pane shows.

Drift (:func:`disagreement`, :func:`track_drift`): when the source and the screen rules
disagree for :data:`DRIFT_TICKS` consecutive ticks, outside the cases the merge explains
(the pane lagging the event by up to :data:`PANE_LAG_S` + one tick; idle refined to a
draft or a dialog), one ``rules_drift`` event per episode names the CLI, the version its
rules are for, both states and the screen lines the rules matched (or the last
non-blank ones): the sign that the CLI changed its screens under the pattern file. An
episode ends on the first tick they agree (or there is no source or no live process).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ccci.clock import UTC, iso
from ccci.hookspecs import hookimpl
from ccci.stash import StashKey
from ccci.model import AgentState, Event, Match, ScreenAnalysis

PANE_LAG_S = 1.0  #: the pane may redraw this long after a hook (measured 20-70 ms) and still agree
DRIFT_TICKS = 5  #: consecutive ticks the source and the screen rules disagree before one ``rules_drift`` event
DRIFT_LINES = 5  #: non-blank screen lines a ``rules_drift`` event quotes when no rule matched
STALE_BUSY_S = 30.0  #: a busy hook with an unchanged idle pane this long after it is stale (seconds)
#: s a tick waits at most for the transcript entry of a usage limit the hook just reported
#: (Claude Code 2.1.332 appends it around the hook's time; once per limit, not per tick;
#: the ``hook_state`` event's ``transcript_wait_s`` says how long it took). An entry that
#: comes later still decides: every tick a usage-limit reading without an exact reset
#: looks at the transcript again when it changed (:func:`transcript_reset`), and the
#: usage_limit check moves its wait to the later reset (``usage_limit_rescheduled``)
TRANSCRIPT_WAIT_S = 2.0
#: s after a ``Stop`` hook the agent reads busy at most while its transcript has not
#: recorded the turn's end (Claude Code 2.1.332 writes the answer with its usage around the
#: hook; a CI run on 2 busy cores had it after more than 1 s). Only with a transcript.
RECORD_WAIT_S = 10.0
TRANSCRIPT_LOOK_S = 5.0  #: s between two per-tick searches for a session's transcript that is not there (a glob)
READ_MAX = 1 << 20  #: bytes of spool read per agent per tick at most
ROTATE_OVER = 4 << 20  #: a fully read spool larger than this is truncated (bytes)
SOURCE_NOTE = "Claude Code 2.1.197 lifecycle hook via ccci.backends.claude.hookrelay (docs/agent-clis.md#claude-code-lifecycle-hooks)"

THINKING_RE = re.compile(r"`(?:redacted_)?thinking`|\bthinking\b.*\bblocks?\b", re.I)
CONTEXT_RE = re.compile(r"prompt is too long|context (?:limit|window)|maximum context|request_too_large", re.I)
USAGE_RE = re.compile(r"usage limit reached(?:\|(?P<epoch>\d{9,12}))?|hit your [\w -]*limit|session limit reached", re.I)
#: a subscription limit's reset as Claude Code 2.1.332 words it: ``resets 12:44am (UTC)``,
#: ``resets Dec 8 at 7am (Europe/Paris)`` (a clock time and zone; :mod:`ccci.backends.claude.limits`
#: has the full instant from the transcript)
RESET_TEXT_RE = re.compile(r"resets (?:(?P<reset_date>[A-Z][a-z]{2} \d{1,2}) at )?"
                           r"(?P<reset_clock>\d{1,2}(?::\d{2})?\s?[ap]m)(?: \((?P<reset_tz>[^)]+)\))?")

IDLE_LIKE = (AgentState.UNSENT_INPUT, AgentState.WAITING_INPUT)
#: the hook's text already carries the reset instant (``...usage limit reached|<unix seconds>``)
EPOCH_IN_TEXT = re.compile(r"limit reached\|\d{9,12}").search
#: Notification types that mean the session waits for a person's answer
WAITING_NOTIFICATIONS = ("permission_prompt", "agent_needs_input")


@dataclass
class HookState:
    """What the newest hook events say about one agent.

    Attributes:
        state: the concluded state (``None`` before any event).
        event: the newest event's name (``StopFailure``...).
        at: its time, unix seconds (UTC).
        evidence: one line (event, error kind, the first 160 chars of the error text).
        reset_at: usage-limit reset (ISO-8601 UTC) when the error gives one, else ``""``.
        error: StopFailure ``error`` kind, ``""`` otherwise.
        session_id: the session id the event carried.
        reset_exact: ``reset_at`` is the instant to the second (the hook text's unix
            seconds or the transcript's ``resetsAt``), not a clock time read off the text.
    """

    state: str = ""
    event: str = ""
    at: float = 0.0
    evidence: str = ""
    reset_at: str = ""
    error: str = ""
    session_id: str = ""
    reset_exact: bool = False

    @property
    def agent_state(self) -> AgentState | None:
        return AgentState(self.state) if self.state else None


def classify(error: str, msg: str, at: float | None = None) -> tuple[AgentState, str]:
    """State for a ``StopFailure`` hook and the reset time it gives.

    Observed with 2.1.197 (hooks/api_errors.hooks.jsonl): ``error="unknown"`` with the
    thinking-block 400 text, ``error="rate_limit"`` for a 429. The usage-limit text
    ``Claude AI usage limit reached|<unix seconds>`` is the final screen's error line
    (captures 07_usage_limit_final). Prompt too long is matched on its API text.

    Claude Code 2.1.332 with a claude.ai login: ``error="rate_limit"``, ``You've hit your
    5-hour limit · resets 12:44am (UTC)`` (e2e, 2026-12-06): a usage limit whose reset
    is a clock time in a zone, placed at or after ``at``.

    :param error: the hook's ``error`` field.
    :param msg: the hook's error text (``last_assistant_message``), possibly ``""``.
    :param at: the hook's time (unix seconds), for a reset given as a clock time.
    :returns: ``(state, reset_at ISO-8601 UTC or "")``.
    """
    if THINKING_RE.search(msg) and "400" in msg:
        return AgentState.FATAL_ERROR, ""
    if CONTEXT_RE.search(msg):
        return AgentState.CONTEXT_LIMIT, ""
    m = USAGE_RE.search(msg)
    if m:
        epoch = m.group("epoch")
        if epoch:
            return AgentState.USAGE_LIMIT, iso(datetime.fromtimestamp(int(epoch), UTC))
        r = RESET_TEXT_RE.search(msg)
        if r and r.group("reset_tz"):
            from ccci.patterns import resolve_clock_time

            when = resolve_clock_time(r.group("reset_clock"), r.group("reset_tz"),
                                      datetime.fromtimestamp(at, UTC) if at else datetime.now(UTC),
                                      r.group("reset_date") or "")
            return AgentState.USAGE_LIMIT, iso(when) if when else ""
        return AgentState.USAGE_LIMIT, ""
    return AgentState.API_ERROR, ""


def fold(st: HookState, rec: dict[str, Any]) -> HookState:
    """The state after one spool record (see :mod:`ccci.backends.claude.hookrelay` for its fields).

    Unknown events, notifications that say nothing about the state and every record of
    a subagent (``agent_id`` set) leave ``st`` as it is (its time too). :returns: a new
    :class:`HookState`.
    """
    ev = str(rec.get("ev", ""))
    if rec.get("agent_id"):
        return st  # a subagent's hook (e.g. the compaction agent's StopFailure): not the session's state
    t = float(rec.get("t") or 0.0)
    sid = str(rec.get("sid", "")) or st.session_id
    new: AgentState | None = None
    evidence, reset, error, exact = ev, "", "", False
    if ev == "SessionStart":
        new, evidence = AgentState.IDLE, f"SessionStart source={rec.get('source', '?')}"
    elif ev == "UserPromptSubmit":
        new = AgentState.BUSY
    elif ev == "PreCompact":
        if rec.get("trigger") != "auto":
            return st  # a typed /compact: the pane shows it; a failed one fires nothing after
        new, evidence = AgentState.BUSY, "PreCompact trigger=auto"  # the CLI compacts mid-turn
    elif ev == "Stop":
        new = AgentState.IDLE
    elif ev == "StopFailure":
        error = str(rec.get("error", ""))
        msg, details = str(rec.get("msg", "")), str(rec.get("error_details", ""))
        new, reset = classify(error, f"{msg} {details}".strip(), t or None)
        exact = bool(reset) and bool(EPOCH_IN_TEXT(f"{msg} {details}"))
        msg = msg or details
        evidence = f"StopFailure error={error or '?'}: {' '.join(msg.split())[:160]}"
    elif ev == "PermissionRequest":
        new, evidence = AgentState.WAITING_INPUT, f"PermissionRequest tool={rec.get('tool', '?')}"
    elif ev == "Notification":
        ntype = str(rec.get("ntype", ""))
        if ntype in WAITING_NOTIFICATIONS:
            new = AgentState.WAITING_INPUT
        elif ntype == "idle_prompt" and st.state in ("", AgentState.IDLE.value, AgentState.BUSY.value):
            new = AgentState.IDLE  # fires 60 s after Stop; never hides an error state
        evidence = f"Notification {ntype or '?'}"
    elif ev == "SessionEnd":
        new, evidence = AgentState.EXITED, f"SessionEnd reason={rec.get('reason', '?')}"
    if new is None:
        return st
    return HookState(state=new.value, event=ev, at=t, evidence=evidence, reset_at=reset, error=error, session_id=sid,
                     reset_exact=exact)


def read_new_lines(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of ``path`` after byte ``offset`` (at most :data:`READ_MAX`).

    A file shorter than ``offset`` (replaced or truncated) is read from 0. Lines that are
    not JSON objects are skipped. :returns: ``(records, new offset)``.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return [], 0
    if size < offset:
        offset = 0
    if size == offset:
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read(READ_MAX)
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    out = []
    for line in chunk[: end + 1].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out, offset + end + 1


#: ``status`` of ``~/.claude/sessions/<pid>.json`` -> state. ``busy``/``idle``: Claude Code
#: 2.1.197 and 2.1.332; ``waiting``: 2.1.332 while a permission or auto-mode dialog asks
#: (tests/e2e/test_claude_screens.py, ``test_permission_dialog``, ``test_auto_mode_dialog``)
SESSION_FILE_STATES = {"busy": AgentState.BUSY, "idle": AgentState.IDLE, "waiting": AgentState.WAITING_INPUT}


def session_file_state(home: Path, pid: int | None, alive: bool) -> tuple[AgentState, float] | None:
    """``(state, mtime)`` from ``home/.claude/sessions/<pid>.json``, or ``None`` when the
    file is missing, unreadable, has no known ``status``, or the process is not alive
    (the file is left behind stale after ``kill -9``)."""
    if not pid or not alive:
        return None
    path = Path(home) / ".claude" / "sessions" / f"{pid}.json"
    try:
        mtime = path.stat().st_mtime
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    status = data.get("status") if isinstance(data, dict) else None
    state = SESSION_FILE_STATES.get(status) if isinstance(status, str) else None
    return (state, mtime) if state is not None else None


@dataclass
class _Tracked:
    """Per-agent bookkeeping between ticks (in memory; the spool offset is persisted)."""

    generation: int = -1
    hook: HookState | None = None
    pane: ScreenAnalysis | None = None
    merged: ScreenAnalysis | None = None
    stale_reported_at: float = 0.0
    transcript: Path | None = None  #: the session's transcript, once found
    transcript_sid: str = ""  #: the session id :attr:`transcript` belongs to
    transcript_sig: tuple = ()  #: (inode, size, mtime ns) when it was last read
    transcript_turn: Any = None  #: :func:`ccci.backends.claude.limits.last_turn` then
    recorded_stop: float = 0.0  #: the time of the newest Stop whose turn the transcript was seen to record
    transcript_looked: float = -1e9  #: monotonic s of the last search that found no transcript


def transcript_turn(tr: _Tracked, spec: Any, session_id: str, mono: float | None = None) -> Any:
    """The session's last turn as its transcript records it
    (:class:`ccci.backends.claude.limits.LastTurn`); the file is found once per session
    and read again only when it changed (inode, size or mtime), so calling this every
    tick costs one ``stat``. ``None`` when there is no transcript (yet); with ``mono``
    (the tick's monotonic s) a missing transcript is searched for (a glob) once per
    :data:`TRANSCRIPT_LOOK_S` at most."""
    from ccci.backends.claude.limits import last_turn
    from ccci.backends.claude.transcript import transcript_path

    if not session_id:
        return None
    if tr.transcript is None or tr.transcript_sid != session_id:
        if mono is not None and tr.transcript_sid == session_id and mono - tr.transcript_looked < TRANSCRIPT_LOOK_S:
            return None
        tr.transcript, tr.transcript_sid, tr.transcript_sig, tr.transcript_turn = None, session_id, (), None
        tr.transcript = transcript_path(session_id, getattr(spec, "env", None))
        if tr.transcript is None:
            if mono is not None:
                tr.transcript_looked = mono
            return None
    try:
        st = tr.transcript.stat()
    except OSError:
        tr.transcript = None
        return None
    sig = (st.st_ino, st.st_size, st.st_mtime_ns)
    if sig != tr.transcript_sig:
        tr.transcript_sig = sig
        tr.transcript_turn = last_turn(tr.transcript)
    return tr.transcript_turn


def transcript_reset(tr: _Tracked, spec: Any, session_id: str, mono: float | None = None) -> datetime | None:
    """The exact reset of the usage limit that ended the session's last turn, from its
    transcript (:func:`transcript_turn`), or ``None`` (no transcript yet, or its last
    turn did not end at a usage limit)."""
    turn = transcript_turn(tr, spec, session_id, mono)
    return turn.reset if turn is not None else None


#: the rule id of a usage-limit reset read from the transcript
TRANSCRIPT_RULE = "claude.transcript.usage_limit"
TRANSCRIPT_NOTE = ("Claude Code 2.1.332 transcript: the failed turn's assistant entry, apiErrorParams.rate_limit_info."
                   "resetsAt (unix seconds; ccci.backends.claude.limits)")


def with_exact_reset(an: ScreenAnalysis, exact: datetime) -> ScreenAnalysis:
    """``an`` (a usage-limit reading) with the transcript's exact reset: ``reset_at``
    replaced, and a structured match (:data:`TRANSCRIPT_RULE`) first, so the finding is
    the CLI's own structured report, the screen's or hook text's clock time only a
    cross-check."""
    match = Match(rule=TRANSCRIPT_RULE, state=AgentState.USAGE_LIMIT,
                  line=f"usage limit; resets {iso(exact)} (transcript resetsAt)", source=TRANSCRIPT_NOTE,
                  structured=True)
    return replace(an, reset_at=exact, matches=[match, *(m for m in an.matches if m.rule != TRANSCRIPT_RULE)])


TRACKED = StashKey[dict]("tracked")  #: agent name -> :class:`_Tracked` (fleet stash, this watcher only)


@dataclass
class _Drift:
    """One agent's disagreement between the source and the screen rules (between ticks).

    Attributes:
        generation: the agent's process generation it was counted for.
        ticks: consecutive ticks of disagreement so far (transient ticks neither count nor end it).
        reported: a ``rules_drift`` event was emitted for the current episode.
    """

    generation: int = -1
    ticks: int = 0
    reported: bool = False


DRIFT = StashKey[dict]("drift")  #: agent name -> :class:`_Drift` (fleet stash, this watcher only)


def disagreement(pane_state: AgentState, src_state: AgentState, src_mono: float, mono: float,
                 tick_s: float = 1.0) -> bool | None:
    """Do the screen rules and the source disagree in a way the merge does not explain?

    :returns: ``False`` when they agree (also an idle source with a draft or dialog on the
        pane: :func:`merge` refines idle so); ``None`` while the source's event is younger
        than :data:`PANE_LAG_S` + one tick (the pane may not have redrawn yet: neither
        agreement nor disagreement); ``True`` otherwise.
    """
    if pane_state == src_state or (src_state == AgentState.IDLE and pane_state in IDLE_LIKE):
        return False
    if mono - src_mono <= PANE_LAG_S + tick_s:
        return None
    return True


def screen_evidence(pane: ScreenAnalysis, screen: str) -> tuple[list[str], list[str]]:
    """``(rule ids, lines)`` the screen rules matched, or ``([], the last DRIFT_LINES
    non-blank lines of the screen)`` when none did (each line at most 200 characters)."""
    if pane.matches:
        return [m.rule for m in pane.matches], [m.line[:200] for m in pane.matches]
    lines = [ln.rstrip()[:200] for ln in screen.splitlines() if ln.strip()]
    return [], lines[-DRIFT_LINES:]


def track_drift(dr: _Drift, verdict: bool | None) -> bool:
    """Advance one agent's disagreement count by one tick's ``verdict`` (see
    :func:`disagreement`; ``False`` also when there is no source or no live process).

    :returns: ``True`` exactly once per episode: on the tick the disagreement reached
        :data:`DRIFT_TICKS` consecutive ticks.
    """
    if verdict is None:
        return False
    if not verdict:
        dr.ticks, dr.reported = 0, False
        return False
    dr.ticks += 1
    if dr.ticks >= DRIFT_TICKS and not dr.reported:
        dr.reported = True
        return True
    return False


def merge(pane: ScreenAnalysis, src_state: AgentState, src_mono: float, evidence: str, rule: str,
          content_changed_mono: float, mono: float, tick_s: float = 1.0,
          reset_at: datetime | None = None, groups: dict[str, str] | None = None,
          typed_mono: float = float("-inf")) -> tuple[ScreenAnalysis, str]:
    """Combine the pane's reading with a source's state.

    The newer information wins: the pane's when its content (timers and spinners
    normalised away) changed more than :data:`PANE_LAG_S` + one tick after the source's
    event (the redraw the event announced comes 20-70 ms after it and is seen up to a
    tick late), else the source's. Two refinements: an idle source keeps a draft
    (``unsent_input``) or dialog (``waiting_input``) the pane shows; a busy source whose
    pane reads anything but busy, unchanged for :data:`STALE_BUSY_S` since the event, is
    stale (a lost Stop, a failed ``/compact``).

    An error report (a ``StopFailure``: any state but busy and idle) is also over once
    ccci has typed into the pane after it (``typed_mono``): the pane decides until the
    CLI reports again. Claude Code 2.1.332 fires no hook when a typed ``/compact``
    starts (a manual ``PreCompact`` changes nothing, above), and the pane that changed
    0.6 s after the ``StopFailure`` still counted as lagging it: the old
    ``context_limit`` report read as the limit showing again and the agent got a fresh
    session in the middle of a compaction that succeeded (tests/e2e/test_claude_watch_real.py,
    2 of 26 runs under ``stress-ng --cpu 4`` before this rule, 0 of 60 after).

    :param pane: the backend's :class:`ScreenAnalysis` of the newest capture.
    :param src_state: what the source (hook, session file) says.
    :param src_mono: when the source's event happened (monotonic seconds).
    :param content_changed_mono: last real change of the pane's content (monotonic).
    :param mono: now (monotonic seconds).
    :param tick_s: the watcher's tick (seconds).
    :param reset_at: the source's usage-limit reset time (UTC), if any.
    :param groups: what the source's match carries (``{"error_kind": <StopFailure error>}``).
    :param typed_mono: when ccci last started typing into the pane (monotonic seconds;
        :attr:`ccci.runtime.AgentRuntime.typed_mono`).
    :returns: ``(analysis, winner)``; winner is ``"source"``, ``"pane"`` or ``"stale"``.
    """
    # a hook's report is the CLI's own (structured); the session file's busy/idle is too
    match = Match(rule=rule, state=src_state, line=evidence, groups=dict(groups or {}), source=SOURCE_NOTE,
                  structured=True)
    if pane.state == src_state:
        # agreed: the pane's rule stays first (its line is the evidence); the source is
        # noted, and its reset decides: the CLI's structured instant (to the second) over
        # the screen's clock time of the same limit (to the minute: 'resets 1:58am'). Only
        # a pane that changed after the source's event and shows another reset (more than
        # a minute off: a newer limit the source did not report) keeps its own.
        reset = reset_at or pane.reset_at
        if pane.reset_at and reset_at and abs((pane.reset_at - reset_at).total_seconds()) >= 60 \
                and content_changed_mono > src_mono + PANE_LAG_S + tick_s:
            reset = pane.reset_at
        return replace(pane, matches=[*pane.matches, match], reset_at=reset), "source"
    if content_changed_mono > src_mono + PANE_LAG_S + tick_s:
        return pane, "pane"  # the pane changed after the event: it shows something newer
    if typed_mono > src_mono and src_state not in (AgentState.BUSY, AgentState.IDLE):
        return pane, "pane"  # ccci typed after the error report: the CLI took new input
    if src_state == AgentState.IDLE and pane.state in IDLE_LIKE:
        return pane, "pane"  # idle, refined: a draft in the box or a dialog
    if src_state == AgentState.BUSY and mono - src_mono >= STALE_BUSY_S:
        return pane, "stale"
    return replace(pane, state=src_state, matches=[match, *pane.matches],
                   reset_at=reset_at or (pane.reset_at if src_state == AgentState.USAGE_LIMIT else None)), "source"


def _drift_event(name: str, rt: Any, pane: ScreenAnalysis, src_state: AgentState, src_evidence: str,
                 ticks: int) -> Event:
    """The ``rules_drift`` event: the CLI, the version its rules are for, both readings and
    the screen lines the rules matched (or the last non-blank ones)."""
    backend = rt.backend
    try:
        version = backend.patterns.version
    except Exception:  # noqa: BLE001 - a broken pattern set must not stop the report
        version = ""
    rules, lines = screen_evidence(pane, rt.screen or "")
    source = "session_file" if src_evidence.startswith("session file") else "hook"
    what = f"rules {', '.join(rules)} matched" if rules else "no rule matched"
    quoted = " | ".join(lines)[:300]
    return Event(
        "rules_drift",
        f"{backend.name} {version or '?'}: the screen rules read {pane.state.value} but the {source.replace('_', ' ')} "
        f"says {src_state.value} for {ticks} ticks ({what}: {quoted}); the CLI may have changed its screens, "
        f"see ccci doctor",
        agent=name,
        data={"cli": backend.name, "version": version, "screen_state": pane.state.value,
              "source_state": src_state.value, "source": source, "source_evidence": src_evidence[:200],
              "rules": rules, "lines": lines, "ticks": ticks})


def _home(spec: Any) -> Path:
    return Path((spec.env or {}).get("HOME") or os.environ.get("HOME") or "~").expanduser()


#: the fleet's :class:`ccci.backends.claude.spool_watch.SpoolWatcher` (fleet stash, this watcher only)
SPOOL_WATCH = StashKey[Any]("spool_watch")


@hookimpl
def ccci_configure(config, services, stash):
    """Start the hook-spool watcher when the fleet has a ``claude`` agent: a write to
    ``<state_dir>/hooks/<agent>.jsonl`` calls ``services.wake`` (inotify; see
    :mod:`ccci.backends.claude.spool_watch`), so the next tick folds it at once. Without
    inotify one ``hook_wake_unavailable`` event says why and the tick reads the spools."""
    if not any(a.backend == "claude" for a in config.agents):
        return
    from ccci.backends.claude import hook_paths
    from ccci.backends.claude.spool_watch import SpoolWatcher

    old = stash.get(SPOOL_WATCH)
    if old is not None:
        old.close()
    directory = hook_paths(config.state_dir, "x")[1].parent
    w = SpoolWatcher(directory, lambda agent: services.wake(f"hook spool {agent}"))
    stash[SPOOL_WATCH] = w
    if not w.available:
        services.emit("hook_wake_unavailable", f"hook spools are read every tick only: {w.error}", error=w.error)


@hookimpl
def ccci_unconfigure(stash):
    """Stop the hook-spool watcher's thread."""
    w = stash.get(SPOOL_WATCH)
    if w is not None:
        w.close()
        stash.pop(SPOOL_WATCH)


@hookimpl
def ccci_observe(snapshot, config, state, now, mono, agents, stash):
    from ccci.backends.claude import hook_paths

    tick_s = float(getattr(config, "tick_seconds", 1.0))
    tracked = stash.setdefault(TRACKED, {})
    drifts = stash.setdefault(DRIFT, {})
    for name, rt in agents.items():
        if rt.backend.name != "claude":
            continue
        tr = tracked.setdefault(name, _Tracked())
        dr = drifts.setdefault(name, _Drift())
        if dr.generation != rt.generation:
            dr.generation, dr.ticks, dr.reported = rt.generation, 0, False
        if tr.generation != rt.generation:
            # a new process: what the old one reported no longer holds
            tr.generation = rt.generation
            tr.hook = None
            saved = state.get(f"claude_hooks.state.{name}")
            if saved and rt.generation:  # a watcher restart: what this process reported before
                try:
                    h = HookState(**json.loads(saved))
                    started_wall = now.timestamp() - (mono - rt.started_mono)
                    conv = str(getattr(rt, "conversation_id", "") or "")
                    # the current process's own report only: a fresh session started within
                    # a second of the old one's StopFailure must not inherit it (its
                    # finding, structured, would act at once and restart it again)
                    same = not (h.session_id and conv) or h.session_id == conv
                    tr.hook = h if same and h.at >= started_wall - 1.0 else None
                except (TypeError, ValueError):
                    tr.hook = None
        # events since the last tick
        _settings, spool = hook_paths(config.state_dir, name)
        offset = int(state.get(f"claude_hooks.offset.{name}", "0") or 0)
        records, new_offset = read_new_lines(spool, offset)
        if new_offset != offset:
            started_wall = now.timestamp() - (mono - rt.started_mono)
            hook = tr.hook or HookState()
            before = hook.state
            for rec in records:
                if float(rec.get("t") or 0.0) < started_wall - 1.0:
                    continue  # from a process before the current one
                hook = fold(hook, rec)
            tr.hook = hook if hook.state else None
            waited = None
            if tr.hook is not None and tr.hook.agent_state == AgentState.USAGE_LIMIT and tr.hook.event == "StopFailure" \
                    and not tr.hook.reset_exact:
                # the transcript's structured reset (unix seconds) beats a clock time in the text
                sid = tr.hook.session_id or str(getattr(rt, "conversation_id", "") or "")
                t0 = time.monotonic()
                exact = transcript_reset(tr, rt.spec, sid)
                while exact is None and time.monotonic() - t0 < TRANSCRIPT_WAIT_S:
                    time.sleep(0.02)  # the CLI appends the entry around the hook's time
                    exact = transcript_reset(tr, rt.spec, sid)
                waited = round(time.monotonic() - t0, 3)
                if exact is not None:
                    tr.hook = replace(tr.hook, reset_at=iso(exact), reset_exact=True,
                                      evidence=f"{tr.hook.evidence} (reset {iso(exact)} from the transcript)")
            state.put(f"claude_hooks.offset.{name}", str(new_offset))
            if tr.hook is not None:
                state.put(f"claude_hooks.state.{name}", json.dumps(asdict(tr.hook)))
                if tr.hook.state != before and tr.hook.agent_state not in (AgentState.BUSY, AgentState.IDLE):
                    snapshot.events.append(Event(
                        "hook_state", f"hook {tr.hook.event}: {tr.hook.state} ({tr.hook.evidence[:160]})", agent=name,
                        data={"state": tr.hook.state, "event": tr.hook.event, "error": tr.hook.error,
                              "reset_at": tr.hook.reset_at or None, "reset_exact": tr.hook.reset_exact,
                              "hook_at": tr.hook.at, "transcript_wait_s": waited}))
            if new_offset > ROTATE_OVER:
                try:
                    if spool.stat().st_size == new_offset:
                        os.truncate(spool, 0)
                        state.put(f"claude_hooks.offset.{name}", "0")
                except OSError:
                    pass
        # the pane's own reading (a new capture replaced our merged one)
        if rt.analysis is not tr.merged:
            tr.pane = rt.analysis
        if tr.pane is None:
            continue
        src: tuple[AgentState, float, str, str, datetime | None] | None = None
        recording = False
        if tr.hook is not None and tr.hook.agent_state is not None:
            h = tr.hook
            reset = datetime.fromisoformat(h.reset_at.replace("Z", "+00:00")) if h.reset_at else None
            src = (h.agent_state, mono - (now.timestamp() - h.at), f"hook {h.evidence}", f"claude.hook.{h.event}", reset)
            if h.event == "Stop" and h.agent_state == AgentState.IDLE and tr.recorded_stop != h.at:
                # the turn is over once its records are written: its answer's usage is
                # what compact_before_limit and usage_watch read at the turn's end
                sid = str(getattr(rt, "conversation_id", "") or "") or h.session_id
                turn = transcript_turn(tr, rt.spec, sid, mono)
                if turn is None or turn.ended or now.timestamp() - h.at >= RECORD_WAIT_S:
                    tr.recorded_stop = h.at  # recorded (or no transcript to wait for, or waited enough)
                else:
                    recording = True
                    src = (AgentState.BUSY, src[1], "hook Stop; the transcript has not recorded the turn's end yet",
                           "claude.hook.Stop.recording", None)
        else:
            proc = snapshot.processes.get(name)
            sf = session_file_state(_home(rt.spec), rt.pid, bool(proc and proc.alive))
            if sf is not None:
                src = (sf[0], mono - (now.timestamp() - sf[1]), f"session file status={sf[0].value}",
                       "claude.session_file.status", None)
        if src is None:
            track_drift(dr, False)
            exact = _exact_reset_to_add(tr, rt, tr.pane, mono)
            tr.merged = with_exact_reset(tr.pane, exact) if exact else None
            if tr.merged is not None:
                rt.analysis = tr.merged
            continue
        proc = snapshot.processes.get(name)
        alive = bool(proc and proc.alive)
        verdict = disagreement(tr.pane.state, src[0], src[1], mono, tick_s) if alive and not recording else False
        if track_drift(dr, verdict):
            snapshot.events.append(_drift_event(name, rt, tr.pane, src[0], src[2], dr.ticks))
        kind = {"error_kind": tr.hook.error} if src[3] == "claude.hook.StopFailure" and tr.hook and tr.hook.error else {}
        merged, winner = merge(tr.pane, src[0], src[1], src[2], src[3], rt.content_changed_mono, mono, tick_s,
                               src[4], kind, getattr(rt, "typed_mono", float("-inf")))
        if winner == "stale" and tr.stale_reported_at != src[1]:
            tr.stale_reported_at = src[1]
            snapshot.events.append(Event("hook_stale", f"{src[2]} {mono - src[1]:.0f}s ago but the unchanged pane reads "
                                         f"{merged.state.value}; trusting the pane", agent=name))
        exact = _exact_reset_to_add(tr, rt, merged, mono)
        if exact:
            merged = with_exact_reset(merged, exact)
        tr.merged = merged
        rt.analysis = merged


def _exact_reset_to_add(tr: _Tracked, rt: Any, an: ScreenAnalysis, mono: float) -> datetime | None:
    """The transcript's exact reset for a usage-limit reading that lacks one (the screen's
    or the hook text's clock time, or no reset at all; the transcript entry came after the
    hook was read, or hooks are off), else ``None``. Re-read only when the transcript
    changed (:func:`transcript_reset`)."""
    if an.state != AgentState.USAGE_LIMIT:
        return None
    h = tr.hook
    if h is not None and h.reset_exact and h.agent_state == AgentState.USAGE_LIMIT and an.reset_at is not None \
            and iso(an.reset_at) == h.reset_at:
        return None  # the hook's own instant already decides
    sid = str(getattr(rt, "conversation_id", "") or "") or (h.session_id if h else "")
    exact = transcript_reset(tr, rt.spec, sid, mono)
    return exact if exact is not None and exact != an.reset_at else None
