"""The ``opencode`` backend: opencode (``opencode-ai``) attached to the fleet's shared server.

Registered through ``ccci_register_backends`` like any third-party backend. Facts used
here were measured with opencode 1.18.33 against ccci's scripted model server (see
``docs/agent-clis.md#opencode`` and ``tests/e2e/opencode/``):

* ``opencode serve --port P`` is one headless server per fleet (:mod:`ccci.backends.opencode.opencode_serve`
  starts and supervises it); ``opencode run --attach URL --session ID --dir DIR "msg"``
  sends one message to a session of that server, prints the turn, and EXITS when the
  turn ends (exit status 0, also when the turn ended in an API error). So the backend is
  :attr:`~OpencodeBackend.exits_at_turn_end`: a clean exit is resumed promptly with the
  next message, not treated as a crash.
* ``--session ID`` continues a session (the conversation), offline too; sessions live in
  the server's storage and survive a server restart. ccci creates each fresh session
  itself (``POST /session?directory=DIR`` with a title, :class:`ServerClient`) so it
  knows the id before the CLI runs, as ``claude --session-id`` does.
* The agent process in the pane is the ``opencode`` binary itself (psutil ``name()`` is
  ``opencode``, its exe ``.../opencode-ai/bin/opencode.exe``; tmux runs it directly, no
  shell, no node wrapper). The shared server is also named ``opencode`` (``opencode
  serve``): :meth:`OpencodeBackend.is_agent_process` tells them apart by the command line.
* The server is the source of truth; the pane text only fills gaps
  (``ccci/patterns/opencode-1.18.33.toml``, recorded in ``tests/golden/opencode-1.18.33/``)
  and never overrides a newer answer from the server (issue 13: an old ``Error: ...
  maximum context length`` line above a good answer restarted a healthy agent):

  - turn state: ``GET /session/status?directory=DIR``: an entry ``{"type": "busy"}`` or
    ``{"type": "retry", "attempt": N, "message": ..., "next": <epoch ms>}`` while a turn
    runs, nothing when idle. opencode 1.18.33 scopes it by instance directory: without
    ``?directory=`` (the agent's workdir) the answer is ``{}`` even while the turn runs.
  - how a turn ended: the newest *assistant* message of ``GET /session/<id>/message``
    (:func:`classify_session`), whose ``info.error`` holds the API error the turn ended
    with: ``{"name": "APIError", "data": {"message", "statusCode", "isRetryable",
    "responseHeaders"}}``. Not simply the newest message: a prompt queued behind a
    failing turn (a user message) is newer than the turn it waits for.
  - progress: the event stream ``GET /global/event`` (server-sent events, one stream for
    every directory: ``data: {"directory", "payload": {"type", "properties":
    {"sessionID", ...}}}``; ``message.part.delta`` for every streamed chunk,
    ``session.status`` at every retry). opencode 1.18.33 keeps a streaming text part
    empty in ``/message`` until the part ends, and ``opencode run`` prints nothing until
    then either, so neither the pane nor polling shows a slow healthy reply
    (:class:`EventWatcher`).
  - cancelling: ``POST /session/<id>/abort`` (-> ``true``) ends the server-side turn in
    about 0.15 s (measured); the turn's assistant message then has the error
    ``MessageAbortedError`` and an attached ``opencode run`` prints ``Error: Aborted``
    and exits 0. Killing ``opencode run`` alone leaves the turn running on the server
    (hanging or retrying), and the next ``opencode run`` queues its prompt behind it.
* Prompts: opencode 1.18.33 ``run`` joins its message arguments with spaces and wraps
  every argument that contains a space in double quotes (its ``run`` command:
  ``args.map(a => a.includes(" ") ? `"${a}"` : a).join(" ")``), so ``"fix the bug"``
  reached the model as ``"\"fix the bug\""``. ccci passes the prompt as its
  space-separated pieces after ``--`` (:func:`prompt_argv`): none contains a space, and
  the join gives back the exact text (measured: double spaces, newlines, quotes and
  leading dashes survive).

Agent options (``[agents.options]`` in ``ccci.toml``):

``auto`` (bool, default ``True``)
    Pass ``--auto``: approve tool permissions that are not explicitly denied, so a turn
    never stops at a permission question (no one could answer it: the CLI is not
    interactive).
``agent`` (str, default off)
    Pass ``--agent NAME`` (opencode's agent, e.g. ``build``).
"""
from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ccci.backends.base import Backend, LaunchPlan
from ccci.hookspecs import hookimpl
from ccci.stash import StashKey
from ccci.model import AgentSpec, AgentState, ScreenAnalysis

if TYPE_CHECKING:  # pragma: no cover
    from ccci.config import FleetConfig

#: opencode version the pattern file and these launch facts were checked against.
TESTED_VERSION = "1.18.33"
#: environment every opencode process gets: no self-update of the pinned CLI, no model
#: list fetch, no LSP downloads, no sharing (docs/agent-clis.md#opencode; all need the
#: network, which a loopback-only fleet does not have).
QUIET_ENV = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_SHARE": "1",
}
HTTP_TIMEOUT_S = 2.0  #: seconds for one request to the local server
#: seconds for ``POST /session`` (a fresh start). Measured on 2 cores with a load average of
#: 10-20: the first session creation right after the new server answered ``/global/health``
#: ran past 2 s in 3 of about 12 fleet starts, so the fleet's first launch failed
#: (``launch_failed``) and waited for the next tick's process-death remedy
CREATE_TIMEOUT_S = 10.0
TURN_MESSAGES = 20  #: newest messages read to find a turn's assistant message (queued prompts come after it)
ABORT_WAIT_S = 5.0  #: s to wait for an aborted turn to end on the server (measured: about 0.15 s)

TOOL_RUN_MAX_S = 3600.0  #: s a running tool (e.g. a long build) counts as progress; a tool hung longer is a stall
RETRY_GRACE_S = 60.0  #: s past a retry's announced time ("next") before a retry status stops counting as progress
#: event stream reconnect delay (s) after the server went away
EVENTS_RECONNECT_S = 1.0
EVENTS_READ_TIMEOUT_S = 30.0  #: s without a byte before the stream is reopened (opencode sends heartbeats every 10 s)
#: s without any line (opencode 1.18.33 sends ``server.heartbeat`` every 10 s) while the API
#: says a turn runs: the stream is silent; progress then comes from polling the turn's
#: message (:func:`message_fingerprint`) and the stream is reopened
EVENTS_SILENT_S = 25.0
#: event types that wake the runner: a turn's state changed (busy, retry, idle, error)
WAKE_EVENTS = frozenset({"session.status", "session.idle", "session.error"})

#: API error classification (message regexes, checked in order; first match wins).
#: fatal: the Anthropic thinking-block 400 (a resume repeats it); context: the provider's
#: prompt-too-long 400s (opencode 1.18.33 compacts by itself first: an error left after
#: that needs a fresh session); usage: plan limits.
FATAL_RE = re.compile(r"`thinking` or `redacted_thinking` blocks", re.I)
CONTEXT_RE = re.compile(r"prompt is too long|context[_ ]length|maximum context|context window", re.I)
USAGE_RE = re.compile(r"usage limit|quota|insufficient_quota", re.I)
RESET_HEADERS = ("anthropic-ratelimit-unified-reset", "x-ratelimit-reset", "retry-after")


class ServerError(RuntimeError):
    """The shared ``opencode serve`` did not answer (down, or an unexpected reply)."""


@dataclass
class ServerClient:
    """A tiny client of the ``opencode serve`` HTTP API (loopback, no auth).

    :param url: base URL, e.g. ``http://127.0.0.1:4096``.
    :param timeout: seconds per request.
    """

    url: str
    timeout: float = HTTP_TIMEOUT_S

    def _request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
                 timeout: float | None = None) -> Any:
        full = self.url.rstrip("/") + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(full, data=data, method=method,
                                     headers={"content-type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:  # noqa: S310 - loopback URL from config
                raw = resp.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ServerError(f"{method} {path}: {exc}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise ServerError(f"{method} {path}: not JSON: {raw[:100]!r}") from None

    def health(self) -> dict:
        """``GET /global/health`` -> ``{"healthy": true, "version": "1.18.33"}``.

        :raises ServerError: when the server does not answer within ``timeout``.
        """
        return self._request("GET", "/global/health") or {}

    def create_session(self, title: str, directory: str) -> str:
        """``POST /session?directory=DIR`` with ``{"title": title}``; returns the new
        session id (``ses_...``). Waits up to :data:`CREATE_TIMEOUT_S` (or ``timeout``
        when longer): a start is rare and must not fail on a busy machine.

        :raises ServerError: on failure."""
        out = self._request("POST", "/session", {"title": title}, {"directory": directory},
                            timeout=max(self.timeout, CREATE_TIMEOUT_S))
        if not isinstance(out, dict) or not str(out.get("id", "")).startswith("ses"):
            raise ServerError(f"POST /session: unexpected reply {str(out)[:200]}")
        return str(out["id"])

    def statuses(self, directory: str) -> dict[str, dict]:
        """``GET /session/status?directory=DIR``: ``{session id: {"type": "busy" |
        "retry", ...}}`` for the sessions of ``directory`` with a turn running (idle
        sessions are absent; opencode 1.18.33 answers ``{}`` without the directory).

        :raises ServerError: when the server does not answer."""
        out = self._request("GET", "/session/status", query={"directory": directory})
        return out if isinstance(out, dict) else {}

    def messages(self, session_id: str, limit: int = 20) -> list[dict]:
        """The newest ``limit`` messages of a session, oldest first
        (``GET /session/<id>/message?limit=N``). :raises ServerError: on failure."""
        out = self._request("GET", f"/session/{urllib.parse.quote(session_id)}/message", query={"limit": str(limit)})
        return out if isinstance(out, list) else []

    def abort(self, session_id: str, directory: str) -> bool:
        """``POST /session/<id>/abort?directory=DIR``: end the session's running turn on
        the server (opencode 1.18.33 answers ``true``, also when nothing ran).

        :raises ServerError: when the server does not answer."""
        return bool(self._request("POST", f"/session/{urllib.parse.quote(session_id)}/abort",
                                  query={"directory": directory}))

    def last_message(self, session_id: str) -> dict | None:
        """The newest message of a session (``GET /session/<id>/message?limit=1``):
        ``{"info": {...}, "parts": [...]}``, or ``None`` for an empty session."""
        out = self._request("GET", f"/session/{urllib.parse.quote(session_id)}/message", query={"limit": "1"})
        return out[-1] if isinstance(out, list) and out else None


@dataclass
class TurnOutcome:
    """How an opencode turn ended, from the session's last message (API source).

    Attributes:
        state: :class:`ccci.model.AgentState`: ``IDLE`` (turn finished cleanly),
            ``FATAL_ERROR``, ``CONTEXT_LIMIT``, ``USAGE_LIMIT``, ``API_ERROR``.
        evidence: the error message (``""`` for a clean turn).
        status: the HTTP status of the error, 0 when none.
        reset_at: usage-limit reset (UTC) from the response headers, or ``None``.
        text: the last assistant text (for ``WAITING-UNTIL``), possibly ``""``.
    """

    state: AgentState
    evidence: str = ""
    status: int = 0
    reset_at: datetime | None = None
    text: str = ""


def classify_message(msg: dict | None, now: datetime) -> TurnOutcome:
    """Classify the last message of a session (see :class:`TurnOutcome`).

    The error shape is the one opencode 1.18.33 stores (``info.error.name`` ``APIError``,
    ``data.statusCode``, ``data.message``, ``data.responseHeaders``), recorded in
    ``tests/golden/opencode-1.18.33/api/``. A 429 is a usage limit when its message says
    so or it carries a reset header (unix seconds, or seconds for ``retry-after``), else
    an API error; 5xx and other errors are API errors.
    """
    if not msg:
        return TurnOutcome(AgentState.IDLE)
    info = msg.get("info") or {}
    text = "".join(p.get("text", "") for p in msg.get("parts") or [] if p.get("type") == "text")
    err = info.get("error")
    if not err:
        if info.get("role") == "assistant" and not msg.get("parts"):
            # measured (1.18.33, run --attach): opencode retries a 5xx/429 itself (backoff
            # about 2, 4, 8 s); when it gives up (seen after 3 and after 5 tries) the turn
            # ends with an assistant message that has no parts at all and no error
            # recorded; a real reply always has step-start/step-finish parts
            # (tests/golden/opencode-1.18.33/api/last_message_after_three_500s.json,
            # api/last_message_clean_turn.json)
            return TurnOutcome(AgentState.API_ERROR, "turn ended without a reply (the provider kept failing; "
                               "opencode recorded no error)")
        return TurnOutcome(AgentState.IDLE, text=text)
    data = err.get("data") or {}
    message = str(data.get("message") or err.get("name") or "error")[:500]
    status = int(data.get("statusCode") or 0)
    if FATAL_RE.search(message):
        return TurnOutcome(AgentState.FATAL_ERROR, message, status, text=text)
    if CONTEXT_RE.search(message) or err.get("name") == "ContextOverflowError":
        return TurnOutcome(AgentState.CONTEXT_LIMIT, message, status, text=text)
    headers = {str(k).lower(): str(v) for k, v in (data.get("responseHeaders") or {}).items()}
    reset = None
    for h in RESET_HEADERS:
        if h in headers:
            try:
                v = float(headers[h])
            except ValueError:
                continue
            reset = now + timedelta(seconds=v) if h == "retry-after" else datetime.fromtimestamp(v, tz=now.tzinfo)
            break
    if status == 429 and (USAGE_RE.search(message) or (reset is not None and "unified" in " ".join(headers))):
        return TurnOutcome(AgentState.USAGE_LIMIT, message, status, reset, text=text)
    return TurnOutcome(AgentState.API_ERROR, message, status, reset, text=text)


def outcome_kind(outcome: TurnOutcome) -> str:
    """``"auth"`` for an API error with HTTP 401 or 403 (credentials, permission: the
    ``api_error`` check escalates at once, docs/errors.md), else ``"retry"``."""
    return "auth" if outcome.state == AgentState.API_ERROR and outcome.status in (401, 403) else "retry"


def classify_session(msgs: list[dict], now: datetime) -> TurnOutcome:
    """How the session's last turn ended: :func:`classify_message` of its newest
    *assistant* message. User messages newer than it (a prompt queued while the turn
    ran, e.g. ccci's after a restart) do not hide the turn's error (issue 13: a failed
    turn read as clean because the newest message was ccci's prompt). A turn ccci (or a
    person) aborted (``MessageAbortedError``) ended cleanly: nothing to back off from.

    :param msgs: messages oldest first, as ``GET /session/<id>/message`` returns them.
    :param now: UTC now (for usage-limit resets).
    """
    for msg in reversed(msgs or []):
        if (msg.get("info") or {}).get("role") == "assistant":
            err = (msg.get("info") or {}).get("error") or {}
            if err.get("name") == "MessageAbortedError":
                return TurnOutcome(AgentState.IDLE, "turn aborted")
            return classify_message(msg, now)
    return TurnOutcome(AgentState.IDLE)


def prompt_argv(text: str) -> list[str]:
    """The prompt as ``opencode run`` arguments: ``["--", *text.split(" ")]``.

    opencode 1.18.33 joins its message arguments with one space and wraps each argument
    that contains a space in double quotes; split on single spaces, no piece contains
    one and the join restores ``text`` exactly (empty pieces keep double spaces; after
    ``--`` a piece starting with ``-`` is not an option)."""
    return ["--", *text.split(" ")]


class OpencodeBackend(Backend):
    """Launch, resume and read opencode attached to the fleet's ``opencode serve``.

    Class attributes (see :class:`ccci.backends.base.Backend`):
        name: ``"opencode"``.
        process_names: ``("opencode",)``: psutil ``name()`` of both ``opencode run`` and
            ``opencode serve`` (measured, 1.18.33).
        exits_at_turn_end: ``True``: ``opencode run`` exits (status 0) at every turn end.
        supports_resume: ``True``: ``--session <id>``.
        compact_command: ``""``: there is no input box to type ``/compact`` into; opencode
            1.18.33 compacts by itself when the provider says the prompt is too long.
    """

    name = "opencode"
    process_names = ("opencode",)
    exits_at_turn_end = True
    supports_resume = True
    compact_command = ""
    executable = "opencode"
    package = "opencode-ai"
    tested_versions = (TESTED_VERSION,)

    def __init__(self) -> None:
        super().__init__()
        #: ``(config) -> base URL`` of the fleet's server; :mod:`ccci.backends.opencode.opencode_serve`
        #: provides the default. Tests may replace it.
        self.server_url = _default_server_url
        #: ``(url) -> ServerClient``; tests may replace it.
        self.client_factory = ServerClient
        #: ``(url) -> EventWatcher`` reading the server's event stream, or ``None`` (no
        #: stream: progress then comes from the retry status and the pane only).
        self.events_factory: Any = EventWatcher

    def is_agent_process(self, name: str, cmdline: list[str]) -> bool:
        """An ``opencode`` process that is not the shared server (``opencode serve``)."""
        if name not in self.process_names and not any(a.endswith("/opencode") for a in cmdline[:1]):
            return False
        return "serve" not in cmdline[1:3]

    def launch_blocked(self, spec: AgentSpec, config: "FleetConfig") -> str | None:
        """``"opencode serve is starting"`` while the fleet's server has been started but
        does not answer yet (:func:`ccci.backends.opencode.opencode_serve.starting`):
        an ``opencode run --attach`` launched then fails or sits idle."""
        from ccci.backends.opencode import opencode_serve

        return opencode_serve.starting(config)

    def is_ready_for_input(self, analysis: ScreenAnalysis) -> bool:
        """Never: ``opencode run`` has no input box. Messages for the agent are given to
        its next ``opencode run`` as the prompt (the supervisor's resume at turn end)."""
        return False

    def session_title(self, spec: AgentSpec, config: "FleetConfig") -> str:
        """``ccci-<fleet>-<agent>``: the title of the agent's sessions on the server
        (the same string as its tmux session name)."""
        return f"ccci-{config.name}-{spec.name}"

    def launch(
        self,
        spec: AgentSpec,
        config: "FleetConfig",
        conversation_id: str,
        resume: bool,
        prompt: str,
    ) -> LaunchPlan:
        """The command that starts (``resume=False``) or resumes the agent.

        argv, executed directly by tmux (no shell):
        ``opencode run --attach URL --session ID --dir WORKDIR [--auto] [--model M]
        [--agent A] -- WORD...`` (the prompt split on spaces: :func:`prompt_argv`).

        A fresh start first creates the session on the server (``POST /session`` titled
        :meth:`session_title`), so the id is known before the CLI runs; ``conversation_id``
        (ccci's UUID) is then replaced by the server's ``ses_...`` id in the returned
        plan. A resume continues ``conversation_id``, which must be such an id.

        :param spec: the agent (``model`` as ``provider/model``, ``options``, ``env``).
        :param config: the fleet config (for the server URL and the title).
        :param conversation_id: the session to resume (``ses_...``), or any string for a
            fresh start.
        :param resume: continue ``conversation_id``.
        :param prompt: the message for this turn (``opencode run`` needs one: an empty
            prompt becomes ``"Continue."``).
        :returns: a :class:`ccci.backends.base.LaunchPlan` with ``cwd=spec.workdir``.
        :raises ServerError: when the fleet's ``opencode serve`` is not running or does
            not answer (the supervisor reports it; :mod:`ccci.backends.opencode.opencode_serve` restarts it).
        :raises ValueError: when resuming an id that is not an opencode session id.
        """
        url = self.server_url(config)
        if resume:
            if not str(conversation_id).startswith("ses"):
                raise ValueError(f"opencode backend: cannot resume {conversation_id!r} for agent {spec.name!r}: "
                                 "not an opencode session id (ses_...); start it fresh")
            session = str(conversation_id)
        else:
            session = self.client_factory(url).create_session(self.session_title(spec, config), str(spec.workdir))
        opts = spec.options or {}
        argv = ["opencode", "run", "--attach", url, "--session", session, "--dir", str(spec.workdir)]
        # the prompt goes last, split on spaces (prompt_argv: opencode quotes arguments with spaces)
        if bool(opts.get("auto", True)):
            argv.append("--auto")
        if spec.model:
            argv += ["--model", spec.model]
        if opts.get("agent"):
            argv += ["--agent", str(opts["agent"])]
        argv += prompt_argv(prompt or "Continue.")
        env = dict(QUIET_ENV)
        env.update(spec.env or {})
        return LaunchPlan(argv=argv, env=env, cwd=spec.workdir, conversation_id=session)

    # ------------------------------------------------------------------ API state
    def turn_outcome(self, config: "FleetConfig", session_id: str, now: datetime) -> TurnOutcome | None:
        """How the session's last turn ended, from the server (strongest source), or
        ``None`` when the server does not answer (then the pane text decides)."""
        if not str(session_id).startswith("ses"):
            return None
        try:
            client = self.client_factory(self.server_url(config))
            return classify_session(client.messages(session_id, TURN_MESSAGES), now)
        except ServerError:
            return None


    def read_usage(self, spec: AgentSpec, config: "FleetConfig", conversation_id: str,
                   since: str | None = None):
        """Usage from the session's messages on the fleet's server
        (:mod:`ccci.backends.opencode.usage`: the step-finish parts' tokens), the newest
        20 messages after the first read; ``None`` when the server does not answer or the
        id is not an opencode session."""
        from ccci.backends.opencode import usage

        if not str(conversation_id).startswith("ses"):
            return None
        seen = self.__dict__.setdefault("_usage_seen", {}).setdefault(conversation_id, usage.SessionUsage())
        try:
            usage.read_session(self.client_factory(self.server_url(config)), conversation_id, seen)
        except ServerError:
            return None
        return seen.reading(conversation_id, since)


def _default_server_url(config: "FleetConfig") -> str:
    from ccci.backends.opencode import opencode_serve

    return opencode_serve.server_url(config)


@hookimpl
def ccci_register_backends():
    return [OpencodeBackend()]


# --------------------------------------------------------------------------- checks
#: check names of the builtin checks whose remedies fit each API outcome
OUTCOME_CHECKS = {
    AgentState.FATAL_ERROR: "fatal_error",
    AgentState.CONTEXT_LIMIT: "context_limit",
    AgentState.USAGE_LIMIT: "usage_limit",
    AgentState.API_ERROR: "api_error",
}
#: (agent, pid of ``opencode run``) -> how that run's turn ended (fleet stash)
OUTCOMES = StashKey[dict]("outcomes")
#: (agent, pid of ``opencode run``) -> pid of the ``opencode serve`` that run was first seen alive with
SERVE_SEEN = StashKey[dict]("serve_seen")
#: pid of the exited run whose outcome was last reported (agent stash)
REPORTED_PID = StashKey[int]("reported_pid")


class EventWatcher:
    """Reads the server's event stream (``GET /global/event``) on a daemon thread: the
    first source for opencode agents. It remembers, per session, when the server last
    reported anything about it (progress), wakes the runner on a turn's state change, and
    knows when the stream itself went silent.

    opencode 1.18.33 serves two streams (its ``server`` routes, checked on the pinned
    binary): ``GET /event?directory=DIR`` (one instance directory, events unwrapped:
    ``data: {"type", "properties"}``) and ``GET /global/event`` (every directory, one
    connection for the fleet: ``data: {"directory", "payload": {"type", "properties":
    {"sessionID", ...}}}``), both starting with ``server.connected`` and sending
    ``server.heartbeat`` every 10 s. Per session: ``message.part.delta`` for each
    streamed chunk, ``message.part.updated``, ``session.status`` (busy, retry, idle),
    ``session.idle``, ``session.error`` and more. A dropped stream (the server
    restarted) is reopened after :data:`EVENTS_RECONNECT_S`.

    :param url: the server's base URL (loopback).
    :param clock: monotonic clock (seconds) for the activity times.
    :param on_event: called on the reader thread with ``(type, session id)`` for the
        events in :data:`WAKE_EVENTS` (``Services.wake``: the runner reads the turn's
        outcome at once instead of at the next tick); must be quick and thread-safe.

    Attributes:
        connected: a stream is open.
        events: events with a session read so far.
        last_line_mono: monotonic seconds of the newest line of any kind (heartbeats
            included), ``None`` before the first; :meth:`silent_for` reads it.
    """

    def __init__(self, url: str, clock: Any = time.monotonic, on_event: Any = None) -> None:
        self.url = url.rstrip("/")
        self.clock = clock
        self.on_event = on_event
        self.connected = False
        self.events = 0  #: events with a session read so far
        self.last_line_mono: float | None = None
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name="ccci-opencode-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                req = urllib.request.Request(self.url + "/global/event", headers={"accept": "text/event-stream"})
                with urllib.request.urlopen(req, timeout=EVENTS_READ_TIMEOUT_S) as resp:  # noqa: S310 - loopback
                    self._resp = resp
                    self.connected = True
                    self.last_line_mono = self.clock()
                    for raw in resp:
                        if self._stop.is_set():
                            return
                        line = raw.decode("utf-8", "replace").strip()
                        if line.startswith("data:"):
                            self.feed(line[5:].strip())
            except (urllib.error.URLError, OSError, ValueError, AttributeError):
                pass  # AttributeError: the response closed under the read by reopen()
            self.connected = False
            self._resp = None
            self._stop.wait(EVENTS_RECONNECT_S)

    def feed(self, data: str) -> None:
        """Take one ``data:`` payload (JSON text); ignores anything unreadable."""
        self.last_line_mono = self.clock()
        try:
            obj = json.loads(data)
        except ValueError:
            return
        payload = obj.get("payload", obj) if isinstance(obj, dict) else None
        if not isinstance(payload, dict):
            return
        props = payload.get("properties") or {}
        sid = props.get("sessionID") if isinstance(props, dict) else None
        if isinstance(sid, str) and sid:
            with self._lock:
                self._last[sid] = self.last_line_mono
                self.events += 1
                if len(self._last) > 1000:
                    self._last.pop(next(iter(self._last)))
            kind = str(payload.get("type", ""))
            cb = getattr(self, "on_event", None)
            if cb is not None and kind in WAKE_EVENTS:
                try:
                    cb(kind, sid)
                except Exception:  # noqa: BLE001 - the tick polls the server anyway
                    pass

    def last_activity(self, session_id: str) -> float | None:
        """Monotonic seconds of the newest event about ``session_id``, or ``None``."""
        with self._lock:
            return self._last.get(session_id)

    def silent_for(self, mono: float) -> float | None:
        """Seconds since the stream's newest line (heartbeats count), or ``None`` while
        no stream is open (then the API poll is the source anyway)."""
        if not self.connected or self.last_line_mono is None:
            return None
        return mono - self.last_line_mono

    def reopen(self) -> None:
        """Drop the current connection (a silent stream): its socket is shut down, which
        ends the reader's blocking read at once; the thread reconnects. (Without the
        socket, the read times out after :data:`EVENTS_READ_TIMEOUT_S` anyway.)"""
        import socket

        resp = self._resp
        sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """Stop reading (the thread ends at its next line or reconnect)."""
        self._stop.set()
        self.reopen()


#: the fleet's :class:`EventWatcher` (fleet stash)
EVENTS = StashKey[EventWatcher]("events")
#: agent -> monotonic s of the server activity last counted as progress (fleet stash)
PROGRESS_SEEN = StashKey[dict]("progress_seen")
#: tool part id -> monotonic s it was first seen running (fleet stash)
TOOLS_SEEN = StashKey[dict]("tools_seen")
#: agent -> fingerprint of its turn's newest message, polled while the stream is silent (fleet stash)
POLLED = StashKey[dict]("polled")
#: monotonic s the stream was last reported silent (fleet stash; one event per silence)
SILENT_SINCE = StashKey[float]("silent_since")
#: ``(agent, silent seconds)`` to report as ``opencode_events_silent`` events this tick (fleet stash)
SILENT_EVENTS = StashKey[list]("silent_events")


def message_fingerprint(msgs: list[dict]) -> str:
    """What changes in the newest assistant message while a turn makes progress: its
    parts' ids, types, tool states and text lengths (opencode 1.18.33 shows a streaming
    text part empty until it ends, so this moves at each part, not each chunk)."""
    for msg in reversed(msgs or []):
        if (msg.get("info") or {}).get("role") == "assistant":
            parts = msg.get("parts") or []
            return "|".join(f"{p.get('id', '')}:{p.get('type', '')}:{(p.get('state') or {}).get('status', '')}:"
                            f"{len(str(p.get('text', '')))}" for p in parts)
    return ""


def running_tools(msgs: list[dict]) -> list[str]:
    """Ids of the tool parts still running in the newest assistant message: opencode
    1.18.33 keeps ``{"type": "tool", "tool": "bash", "state": {"status": "running"}}``
    while the tool runs, and sends no event until it ends."""
    for msg in reversed(msgs or []):
        if (msg.get("info") or {}).get("role") == "assistant":
            return [str(p.get("id") or i) for i, p in enumerate(msg.get("parts") or [])
                    if p.get("type") == "tool" and (p.get("state") or {}).get("status") == "running"]
    return []


def _server_view(backend: "OpencodeBackend", config, rt, now: datetime, mono: float, stash, statuses: dict) -> None:
    """Replace a live opencode agent's screen reading with the server's (the source of
    truth) and count the server's activity as progress. ``statuses`` caches one
    ``/session/status`` answer per workdir for this tick.

    * a turn runs on the server (``busy``/``retry``): ``BUSY``, whatever the pane shows
      (an ``Error: ...`` line printed before opencode compacted and went on is stale);
    * no turn runs but the process is still alive (it exits within a second of the turn
      end): ``IDLE``, with the reply's declared wait;
    * any event about the session since the last tick, a ``retry`` status whose next
      attempt is not overdue, or a tool running for less than :data:`TOOL_RUN_MAX_S`
      (a long build prints and streams nothing): progress (``screen_changed_mono`` and
      ``content_changed_mono`` set to now, which the stall check reads).

    Nothing changes when the server does not answer: the pane decides then."""
    conv = str(rt.conversation_id or "")
    if not conv.startswith("ses"):
        return
    workdir = str(rt.spec.workdir)
    try:
        client = backend.client_factory(backend.server_url(config))
        if workdir not in statuses:
            statuses[workdir] = client.statuses(workdir)
        status = statuses[workdir].get(conv)
        msgs = client.messages(conv, TURN_MESSAGES if not status else 3)
        outcome = None if status else classify_session(msgs, now)
    except ServerError:
        return
    tools = running_tools(msgs) if status else []
    progressed = False
    watcher = stash.get(EVENTS)
    seen = stash.setdefault(PROGRESS_SEEN, {})
    last = watcher.last_activity(conv) if watcher is not None else None
    if last is not None and last > seen.get(rt.name, float("-inf")):
        seen[rt.name] = last
        progressed = True
    silent = watcher.silent_for(mono) if watcher is not None else None
    stream_ok = silent is not None and silent < EVENTS_SILENT_S
    if status and not stream_ok:
        # no stream, or a silent one (no line, not even a heartbeat, for EVENTS_SILENT_S while
        # the API says busy): the poll is the source of progress
        polled = stash.setdefault(POLLED, {})
        fp = message_fingerprint(msgs)
        if rt.name in polled and polled[rt.name] != fp:
            progressed = True
        polled[rt.name] = fp
        if silent is not None and watcher is not None and stash.get(SILENT_SINCE) is None:
            stash[SILENT_SINCE] = mono
            watcher.reopen()
            events_out = stash.setdefault(SILENT_EVENTS, [])
            events_out.append((rt.name, silent))
    elif stream_ok and stash.get(SILENT_SINCE) is not None:
        stash.pop(SILENT_SINCE)
    if status and status.get("type") == "retry":
        try:
            due_in = float(status.get("next") or 0) / 1000.0 - now.timestamp()
        except (TypeError, ValueError):
            due_in = 0.0
        progressed = progressed or due_in > -RETRY_GRACE_S  # opencode's own back-off, on schedule
    if tools:
        first = stash.setdefault(TOOLS_SEEN, {})
        for t in tools:
            first.setdefault(t, mono)
        while len(first) > 1000:
            first.pop(next(iter(first)))
        progressed = progressed or any(mono - first[t] < TOOL_RUN_MAX_S for t in tools)
    if progressed:
        rt.screen_changed_mono = rt.content_changed_mono = max(rt.screen_changed_mono, mono)
    if status:
        rt.analysis = replace(rt.analysis, state=AgentState.BUSY, waiting_until=None)
    elif outcome is not None:
        rt.analysis = replace(rt.analysis, state=AgentState.IDLE,
                              waiting_until=_declared_wait(outcome.text) or None)


def _ensure_events(backend: "OpencodeBackend", config, stash, wake: Any = None) -> None:
    """Start (or re-point) the fleet's :class:`EventWatcher` at the server's URL; its
    turn-state events call ``wake(reason)`` (``Services.wake``)."""
    try:
        url = backend.server_url(config)
    except (ServerError, OSError, ValueError):
        return
    w = stash.get(EVENTS)
    if w is not None and w.url == url.rstrip("/"):
        return
    if w is not None:
        w.close()
    if backend.events_factory is not None:
        w = backend.events_factory(url)
        if wake is not None and w is not None:
            w.on_event = lambda kind, sid: wake(f"opencode {kind} {sid}")
        stash[EVENTS] = w


@hookimpl
def ccci_unconfigure(stash):
    """Stop reading the event stream when the watcher stops."""
    w = stash.get(EVENTS)
    if w is not None:
        w.close()


@hookimpl
def ccci_observe(snapshot, config, agents, now, mono, stash, services):
    """The server is the source of truth for opencode agents (issue 13); its event
    stream is the first source: a turn's state change wakes the runner, and a stream
    silent for :data:`EVENTS_SILENT_S` while the API says busy is reported once
    (``opencode_events_silent``), reopened, and replaced by polling meanwhile.

    For an agent whose ``opencode run`` is alive: :func:`_server_view` (turn state and
    progress from the server; the fleet's :class:`EventWatcher` is started on first use).

    For each opencode agent whose ``opencode run`` exited, read how its turn ended
    from the server (once per exit) and publish it:
    ``snapshot.facts["turn_outcome"][agent]`` = :class:`ccci.model.AgentState` (``IDLE``
    for a clean turn end; the process-death check resumes only those) and
    ``snapshot.facts["opencode_outcome"][agent]`` = :class:`TurnOutcome`, and the
    reply's declared ``WAITING-UNTIL`` (UTC) as ``snapshot.facts["turn_wait"][agent]``; the
    agent's screen reading becomes ``EXITED`` with that wait, so an old ``Error:`` line
    on the dead pane cannot start a screen check (the server's error, if any, is
    reported by :func:`ccci_check_agent`). Nothing is
    published when the server does not answer (the pane text decides then). A run whose
    ``opencode serve`` died while it ran (``snapshot.facts["opencode_serve"]``, published by
    :mod:`ccci.backends.opencode.opencode_serve`, shows another pid or an unhealthy server than when the run
    was first seen alive) ended because its server went away: its outcome is ``UNKNOWN``
    (nothing acts) until the server is healthy again, then ``IDLE`` (resumed at once),
    whatever the half-written last message says."""
    backends = snapshot.facts.get("backends", {})
    serve = snapshot.facts.get("opencode_serve") or {}
    _outcomes = stash.setdefault(OUTCOMES, {})
    _serve_seen = stash.setdefault(SERVE_SEEN, {})
    statuses: dict[str, dict] = {}
    for name, pane in snapshot.panes.items():
        backend = backends.get(name)
        if not isinstance(backend, OpencodeBackend) or pane is None:
            continue
        key = (name, pane.pid)
        if not pane.dead:
            if serve.get("healthy") and serve.get("pid"):
                _serve_seen.setdefault(key, serve["pid"])
                if len(_serve_seen) > 1000:
                    _serve_seen.pop(next(iter(_serve_seen)))
            if name in agents and serve.get("healthy", True):
                _ensure_events(backend, config, stash, services.wake)
                _server_view(backend, config, agents[name], now, mono, stash, statuses)
                for agent_name, silent in stash.pop(SILENT_EVENTS, None) or []:
                    from ccci.model import Event

                    snapshot.events.append(Event(
                        "opencode_events_silent", f"the opencode server's event stream sent nothing for {silent:.0f}s "
                        f"while the API says a turn runs; polling the API for progress and reopening the stream",
                        agent=agent_name, data={"silent_s": round(silent, 1)}))
            continue
        if key not in _outcomes:
            seen = _serve_seen.get(key)
            if seen is not None and (serve.get("pid") != seen or not serve.get("healthy")):
                # the server this run was attached to died under it: the run ended because
                # its server went away, not because of the model (measured with 1.18.33: the
                # turn's assistant message is left with no parts, which otherwise reads as
                # the provider failing). Resume it once the server is back; until then
                # nothing acts on it (UNKNOWN is no turn end and no error)
                if not serve.get("healthy"):
                    snapshot.facts.setdefault("turn_outcome", {})[name] = AgentState.UNKNOWN
                    continue
                _outcomes[key] = TurnOutcome(AgentState.IDLE, "opencode serve restarted during the turn")
            else:
                conv = agents[name].conversation_id
                _outcomes[key] = backend.turn_outcome(config, conv, now)
            if len(_outcomes) > 1000:
                _outcomes.pop(next(iter(_outcomes)))
        outcome = _outcomes[key]
        if outcome is not None:
            snapshot.facts.setdefault("turn_outcome", {})[name] = outcome.state
            snapshot.facts.setdefault("opencode_outcome", {})[name] = outcome
            wait = _declared_wait(outcome.text)
            if wait is not None:
                snapshot.facts.setdefault("turn_wait", {})[name] = wait
            if name in agents:
                rt = agents[name]
                rt.analysis = replace(rt.analysis, state=AgentState.EXITED, waiting_until=wait)


@hookimpl
def ccci_before_launch(agent, spec, mode, config, services):
    """Cancel what is restarted (issue 13): before any (re)start of an opencode agent
    whose session has a turn running on the server (``busy`` or ``retry``), abort that
    turn (``POST /session/<id>/abort``) and wait up to :data:`ABORT_WAIT_S` for the
    server to report it ended. Killing ``opencode run`` alone leaves the turn running
    (hanging or retrying) and the next run's prompt queues behind it (4 identical
    nudges reached the model in one request).

    Logs ``opencode_turn_aborted`` (``session``, ``status``: what ran, ``waited_s``,
    ``ended``: the server reported the session idle). A turn that does not end in time
    vetoes this launch (returned reason; the remedy is tried again on a later tick) so
    no second prompt piles up. A server that does not answer vetoes nothing: the
    launch itself then fails and is reported."""
    backend = getattr(agent, "backend", None)
    conv = str(getattr(agent, "conversation_id", "") or "")
    if not isinstance(backend, OpencodeBackend) or not conv.startswith("ses"):
        return None
    workdir = str(spec.workdir)
    try:
        client = backend.client_factory(backend.server_url(config))
        status = client.statuses(workdir).get(conv)
        if not status:
            return None
        t0 = time.monotonic()
        client.abort(conv, workdir)
        ended = False
        while time.monotonic() - t0 < ABORT_WAIT_S:
            if not client.statuses(workdir).get(conv):
                ended = True
                break
            time.sleep(0.1)
    except ServerError:
        return None
    waited = round(time.monotonic() - t0, 3)
    services.emit("opencode_turn_aborted", f"aborted the running turn of {conv} on the server before the {mode} "
                  f"({status.get('type')}; {'ended' if ended else 'still running'} after {waited:.2f}s)",
                  agent=agent.name, session=conv, status=status, waited_s=waited, ended=ended, mode=mode,
                  happened_at=datetime.now(tz=_utc()).isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    if not ended:
        return (f"the server-side turn of {conv} did not end within {ABORT_WAIT_S:.0f}s of its abort; "
                "not starting another run behind it")
    return None


def _utc():
    from datetime import timezone

    return timezone.utc


def _declared_wait(text: str) -> datetime | None:
    """The last ``WAITING-UNTIL: <ISO-8601 UTC>`` of a reply (README "Declared waits")."""
    from ccci.clock import parse_utc
    from ccci.patterns import WAITING_UNTIL_RE

    found = None
    for m in WAITING_UNTIL_RE.finditer(text or ""):
        try:
            found = parse_utc(m.group("iso"))
        except ValueError:
            continue
    return found


@hookimpl
def ccci_check_agent(agent, backend, pane, snapshot, mono, stash):
    """An opencode turn that ended in an API error (read from the server) is reported under
    the builtin check's name (``fatal_error``, ``context_limit``, ``usage_limit``,
    ``api_error``), so that check's remedy applies: a fresh session, a wait for the reset,
    a back-off then ``continue``. Immediate: the process has exited, nothing will change
    on screen. Reported once per exited run (a wait's follow-up must not be re-armed when
    the hold ends) and not while a ``wait`` remedy holds the agent."""
    if not isinstance(backend, OpencodeBackend) or pane is None or not pane.dead:
        return None
    if mono < agent.hold_until_mono:
        return None
    outcome = snapshot.facts.get("opencode_outcome", {}).get(agent.name)
    if outcome is None or outcome.state not in OUTCOME_CHECKS:
        return None
    if stash.get(REPORTED_PID) == pane.pid:
        return None  # once per exited run: its remedy (a wait's follow-up, a fresh start) is under way
    stash[REPORTED_PID] = pane.pid
    from ccci.clock import iso
    from ccci.model import Finding

    check = OUTCOME_CHECKS[outcome.state]
    data: dict[str, Any] = {"source": "opencode API", "status": outcome.status}
    if outcome_kind(outcome) == "auth":
        data["kind"] = "auth"  # credentials or permission: a person must fix it (docs/errors.md)
    if outcome.state == AgentState.USAGE_LIMIT or outcome.reset_at is not None:
        data["reset_at"] = iso(outcome.reset_at)  # an API error's retry-after too (checks/api_error.py)
    return Finding(check, agent.name, f"opencode turn ended with {outcome.state.value}"
                   + (f" (HTTP {outcome.status})" if outcome.status else ""),
                   evidence=outcome.evidence[:300], immediate=True, structured=True, data=data)
