"""A scripted model server on loopback: the Anthropic Messages API, OpenAI chat
completions, the OpenAI Responses API (Codex CLI) and the Gemini API (Gemini CLI),
answered from a script instead of a model. Standard library only.

It lets a real agent CLI (Claude Code, opencode) run offline, in tests and in
``ccci demo --backend claude``: the script decides every answer, including tool calls the
real CLI then executes (``ToolUse("Bash", {"command": "git commit ..."})``) and API
failures injected at a chosen turn. How the CLIs behave against it is written down in
``docs/agent-clis.md`` and ``docs/backends.md``.

Endpoints:

=================================  ==================================================
``HEAD /``, ``GET /``              200 (Claude Code probes ``HEAD /`` at start)
``POST /v1/messages[?beta=true]``  Anthropic Messages API; server-sent events when the
                                   request has ``"stream": true``, one JSON message
                                   otherwise
``POST /v1/messages/count_tokens`` ``{"input_tokens": N}`` (an estimate)
``POST /v1/chat/completions``      OpenAI chat completions (SSE ``data:`` chunks ending
                                   with ``data: [DONE]``, or one JSON completion)
``POST /v1/responses``             OpenAI Responses API, streamed (``response.*``
                                   events; Codex CLI 0.169.0 and 0.171.0 only speak
                                   this), or one JSON response
``POST /v1beta/models/M:streamGenerateContent``
                                   Gemini API, ``?alt=sse`` ``data:`` chunks (Gemini CLI
                                   0.61.0); ``:generateContent`` one JSON answer;
                                   ``:countTokens`` ``{"totalTokens": N}``
``GET /v1/models``                 a one-model list (both formats' clients accept it)
=================================  ==================================================

The script
----------
A list of steps (or a callable ``(request_json) -> step``); each *main* model call takes
the next step. A step is one of:

* :class:`Text` ``("...")``: an assistant message with one text block, ``end_turn``;
* :class:`ToolUse` ``("Bash", {"command": "..."})``: a ``tool_use`` block (OpenAI:
  a ``tool_calls`` entry), ``stop_reason`` ``tool_use``. The CLI runs the tool and calls
  again with the ``tool_result``; that call takes the next step (e.g. a ``Text``);
* a list of ``Text``/``ToolUse``: one message with several content blocks;
* :class:`Echo` ``()``: a text reply quoting the last user message (the default once
  the script is used up);
* a :class:`Failure`, made with :class:`Fail`: ``Fail.thinking_400()``,
  ``Fail.prompt_too_long()``, ``Fail.usage_limit(reset_epoch)``,
  ``Fail.rate_limit_429()``, ``Fail.overloaded_529()``, ``Fail.hang(seconds)``,
  ``Fail.http(status, type, message)``. A failure answers ``repeat`` consecutive main
  calls (default 1; ``None`` = every call from then on): the CLI retries 429/529 by
  itself, and each retry is a call.

*Side calls* do not take a step. Claude Code 2.1.197 makes a tool-less call for the
session title (``tools: []``, ``output_config.format`` a JSON schema asking for
``{"title": ...}``; measured: once per session, on the first prompt of more than a word,
alongside the main call) and main calls always carry its tool list. By default a request
without ``tools`` is a side call (``side_calls="no_tools"``) and gets a short canned answer
(a JSON object fitting the requested schema, when there is one); pass ``side_calls=None``
to script every call, or a callable ``(path, request_json) -> bool``.

Every request is recorded (:attr:`ModelServer.requests`; headers without credentials)
before its answer is sent and, with ``log=PATH``, appended to a JSON-lines file.

Example::

    from ccci.testing.model_server import ModelServer, Text, ToolUse, Fail

    with ModelServer(script=[ToolUse("Bash", {"command": "touch done.txt"}), Text("Done.")]) as srv:
        env = {"ANTHROPIC_BASE_URL": srv.url, "ANTHROPIC_API_KEY": "test"}
        ...  # run the CLI; then
        assert [r.step for r in srv.main_requests()] == ["tool_use:Bash", "text"]

Command line (for manual use and for running the server in another network namespace)::

    python -m ccci.testing.model_server --port 0 --script FILE.json [--log FILE.jsonl]

prints the base URL (``http://127.0.0.1:PORT``) on its first stdout line and serves until
SIGTERM/SIGINT. ``FILE.json`` is a list of steps (or ``{"steps": [...], "default": step}``)
written as JSON objects, see :func:`step_from_json`.
"""
from __future__ import annotations

import argparse
import json
import re
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union
from urllib.parse import urlsplit

__all__ = [
    "Echo", "Fail", "Failure", "ModelServer", "RecordedRequest", "Text", "ToolUse",
    "load_script", "step_from_json", "step_label", "step_to_json", "main",
]

#: request headers never recorded (credentials)
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "proxy-authorization", "cookie", "api-key"})

DEFAULT_MODEL = "scripted-model"
#: Gemini API model calls: ``/v1beta/models/<model>:<method>``
GEMINI_PATH = re.compile(r"^/v1(?:beta|alpha)?/models/(?P<model>[^/:]+):(?P<method>streamGenerateContent|generateContent|countTokens)$")
#: HTTP status -> google.rpc status name, for Gemini API error bodies
GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED", 529: "UNAVAILABLE"}
THINKING_400_MESSAGE = (
    "messages.{index}.content.0: `thinking` or `redacted_thinking` blocks in the latest "
    "assistant message cannot be modified. These blocks must remain as they were in the "
    "original response."
)


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Text:
    """An assistant text reply (``stop_reason`` ``end_turn``).

    :param text: the reply.
    :param delay: seconds to wait between streamed chunks (makes the turn visibly busy).
    :param chunk: characters per ``text_delta``.
    :param usage: token counts the answer reports instead of the estimates (Anthropic
        names: ``input_tokens``, ``output_tokens``, ``cache_read_input_tokens``,
        ``cache_creation_input_tokens``; a missing one keeps its default: the
        estimate, 0 for the cache counters), e.g. ``{"input_tokens": 160000}`` to make
        a CLI believe its context is nearly full. Anthropic Messages API, OpenAI chat
        completion (:func:`openai_usage`), Responses API (:func:`responses_usage`) and Gemini
        API (:func:`gemini_usage`) answers.
    """

    text: str
    delay: float = 0.0
    chunk: int = 16
    usage: Any = None


@dataclass(frozen=True)
class ToolUse:
    """An assistant tool call (``stop_reason`` ``tool_use``; OpenAI ``tool_calls``).

    :param name: tool name as the CLI declares it (Claude Code: ``"Bash"``, ``"Write"``...).
    :param input: the tool's input object (Bash: ``{"command": "...", "description": "..."}``).
    :param id: tool-use id; a fresh ``toolu_...`` (OpenAI ``call_...``) when empty.
    :param text: optional text block sent before the tool call.
    :param delay: seconds between streamed chunks.
    :param usage: token counts the answer reports, as for :class:`Text`.
    """

    name: str
    input: dict = field(default_factory=dict)
    id: str = ""
    text: str = ""
    delay: float = 0.0
    usage: Any = None


@dataclass(frozen=True)
class Echo:
    """A text reply quoting the last user message: ``scripted reply #N: "..."``."""

    prefix: str = "scripted reply"


@dataclass(frozen=True)
class Failure:
    """An injected API failure; build one with :class:`Fail`.

    :param kind: short name (``thinking_400``, ``usage_limit``, ``hang``...).
    :param status: HTTP status (0 for ``hang``: no response at all).
    :param error_type: Anthropic error type (``invalid_request_error``...).
    :param message: the error message.
    :param headers: extra response headers, ``((name, value), ...)``.
    :param seconds: for ``hang``: how long to hold the request before dropping it.
    :param repeat: consecutive main calls this step answers; ``None`` = all remaining.
    :param for_s: an outage by duration instead: the step answers every main call for
        this many seconds from the first call it answered, then the script moves on
        (``repeat`` is ignored). ``None``: by count.
    """

    kind: str
    status: int
    error_type: str = ""
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    repeat: int | None = 1
    for_s: float | None = None

    def anthropic_body(self, request_id: str) -> dict:
        return {"type": "error", "error": {"type": self.error_type, "message": self.message},
                "request_id": request_id}

    def openai_body(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type, "param": None,
                          "code": self.error_type}}

    def responses_body(self) -> dict:
        """The OpenAI Responses API error body. A usage limit uses the type Codex CLI
        reads as "usage limit reached" (``usage_limit_reached`` with ``resets_at``, unix
        seconds; codex-rs ``api-client/src/error.rs`` ``UsageLimitReached``)."""
        if self.kind == "usage_limit":
            reset = int(dict(self.headers).get("anthropic-ratelimit-unified-reset", "0") or 0)
            return {"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                              "plan_type": "plus", "resets_at": reset, "resets_in_seconds":
                              max(0, reset - int(time.time()))}}
        code = {"prompt_too_long": "context_length_exceeded", "rate_limit_429": "rate_limit_exceeded",
                "overloaded_529": "server_is_overloaded"}.get(self.kind, self.error_type)
        return {"error": {"message": self.message, "type": self.error_type, "param": None, "code": code}}

    def gemini_body(self) -> dict:
        """The Google API error body (``{"error": {"code", "message", "status",
        "details"}}``); a usage limit carries a ``QuotaFailure`` and ``RetryInfo`` as the
        Gemini API sends for an exhausted quota."""
        status = GOOGLE_STATUS.get(self.status, "UNKNOWN")
        message = self.message
        details: list[dict] = []
        if self.kind == "usage_limit":
            reset = int(dict(self.headers).get("anthropic-ratelimit-unified-reset", "0") or 0)
            wait = max(1, reset - int(time.time()))
            message = ("You exceeded your current quota, please check your plan and billing details. "
                       "Quota exceeded for metric: generativelanguage.googleapis.com/generate_requests_per_day, "
                       f"limit: 100. Please retry in {wait}s.")
            details = [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                    "quotaMetric": "generativelanguage.googleapis.com/generate_requests_per_day",
                    "quotaId": "GenerateRequestsPerDayPerProjectPerModel", "quotaValue": "100"}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait}s"},
            ]
        elif self.kind == "prompt_too_long":
            message = "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
        return {"error": {"code": self.status, "message": message, "status": status, "details": details}}


class Fail:
    """Factories for :class:`Failure` steps, with the status codes, bodies and headers
    the real API sends (Claude Code 2.1.197 renders each one differently; see
    docs/agent-clis.md#claude-code-api-failures)."""

    @staticmethod
    def thinking_400(message_index: int = 1, repeat: int | None = 1) -> Failure:
        """HTTP 400: ``messages.N.content.0: `thinking` or `redacted_thinking` blocks in the
        latest assistant message cannot be modified...`` (only a fresh session fixes it)."""
        return Failure("thinking_400", 400, "invalid_request_error",
                       THINKING_400_MESSAGE.format(index=message_index), repeat=repeat)

    @staticmethod
    def prompt_too_long(tokens: int = 210_000, maximum: int = 200_000,
                        repeat: int | None = 1) -> Failure:
        """HTTP 400 ``prompt is too long: N tokens > M maximum``."""
        return Failure("prompt_too_long", 400, "invalid_request_error",
                       f"prompt is too long: {tokens} tokens > {maximum} maximum", repeat=repeat)

    @staticmethod
    def usage_limit(reset_epoch: int | float, claim: str = "five_hour",
                    repeat: int | None = 1) -> Failure:
        """HTTP 429 with the unified rate-limit headers Claude Code reads for a plan usage
        limit (``anthropic-ratelimit-unified-status: rejected``, ``-reset: <unix
        seconds>``, ``-representative-claim: five_hour`` = "Session limit"), and the body
        message ``Claude AI usage limit reached|<unix seconds>``.

        :param reset_epoch: when the limit resets, unix seconds.
        :param claim: ``five_hour`` (session), ``seven_day`` (weekly), ``seven_day_opus``...
        """
        reset = str(int(reset_epoch))
        headers = (
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", reset),
            ("anthropic-ratelimit-unified-representative-claim", claim),
            ("anthropic-ratelimit-unified-fallback", "unavailable"),
            ("anthropic-ratelimit-unified-overage-status", "rejected"),
            ("anthropic-ratelimit-unified-overage-disabled-reason", "org_level_disabled"),
        )
        return Failure("usage_limit", 429, "rate_limit_error",
                       f"Claude AI usage limit reached|{reset}", headers=headers, repeat=repeat)

    @staticmethod
    def rate_limit_429(repeat: int | None = 1, retry_after: int | None = None) -> Failure:
        """HTTP 429 ``rate_limit_error`` without unified headers (an ordinary rate limit)."""
        headers = (("retry-after", str(retry_after)),) if retry_after is not None else ()
        return Failure("rate_limit_429", 429, "rate_limit_error",
                       "This request would exceed your account's rate limit. Please try again later.",
                       headers=headers, repeat=repeat)

    @staticmethod
    def overloaded_529(repeat: int | None = 1, for_s: float | None = None) -> Failure:
        """HTTP 529 ``overloaded_error`` / ``Overloaded``; ``for_s``: an outage of that many
        seconds (every call from the first one on) instead of ``repeat`` calls."""
        return Failure("overloaded_529", 529, "overloaded_error", "Overloaded",
                       repeat=None if for_s is not None else repeat, for_s=for_s)

    @staticmethod
    def hang(seconds: float, repeat: int | None = 1) -> Failure:
        """Accept the request, send nothing for ``seconds``, then drop the connection."""
        return Failure("hang", 0, seconds=float(seconds), repeat=repeat)

    @staticmethod
    def http(status: int, error_type: str, message: str,
             headers: dict[str, str] | None = None, repeat: int | None = 1) -> Failure:
        """Any other error response."""
        return Failure(f"http_{status}", status, error_type, message,
                       headers=tuple((headers or {}).items()), repeat=repeat)


Block = Union[Text, ToolUse]
Step = Union[Text, ToolUse, Echo, Failure, Sequence[Block]]
Script = Union[Sequence[Step], Callable[[Any], Any]]


def step_label(step: Any) -> str:
    """A short description of a step for records: ``text``, ``tool_use:Bash``,
    ``echo``, ``fail:usage_limit``, ``side``, or ``+``-joined for several blocks."""
    if isinstance(step, Text):
        return "text"
    if isinstance(step, ToolUse):
        return f"tool_use:{step.name}"
    if isinstance(step, Echo):
        return "echo"
    if isinstance(step, Failure):
        return f"fail:{step.kind}"
    if isinstance(step, (list, tuple)):
        return "+".join(step_label(s) for s in step)
    return type(step).__name__


def step_from_json(obj: Any) -> Step:
    """One step from its JSON form (the ``--script`` file).

    * ``"some text"`` or ``{"text": "...", "delay": 0.1}``; ``"usage": {"input_tokens": N, ...}``
      on a text or tool_use object: the token counts its answer reports (:class:`Text`)
    * ``{"tool_use": "Bash", "input": {"command": "..."}, "text": "optional preamble"}``
    * ``{"echo": true}``
    * ``{"fail": "thinking_400" | "prompt_too_long" | "rate_limit_429" | "overloaded_529",
      "repeat": 1}``, ``{"fail": "usage_limit", "reset": 1795323116}``,
      ``{"fail": "hang", "seconds": 30}``, ``{"fail": "http", "status": 500,
      "type": "api_error", "message": "..."}``; ``"repeat": null`` = every later call
    * ``"for_s": 180`` on any failure: an outage by duration (every main call for 180 s
      from the first one it answered), see :class:`Failure`
    * a list of text/tool_use objects: one message with several blocks

    :raises ValueError: on an unknown step.
    """
    if isinstance(obj, str):
        return Text(obj)
    if isinstance(obj, list):
        blocks = [step_from_json(o) for o in obj]
        if not all(isinstance(b, (Text, ToolUse)) for b in blocks):
            raise ValueError(f"a multi-block step may hold only text and tool_use: {obj!r}")
        return tuple(blocks)  # type: ignore[return-value]
    if not isinstance(obj, dict):
        raise ValueError(f"not a script step: {obj!r}")
    if "fail" in obj:
        step = _failure_from_json(obj)
        if obj.get("for_s") is not None:
            step = replace(step, for_s=float(obj["for_s"]), repeat=None)
        return step
    if "tool_use" in obj:
        return ToolUse(obj["tool_use"], dict(obj.get("input") or {}), obj.get("id", ""),
                       obj.get("text", ""), float(obj.get("delay", 0.0)), _usage_from_json(obj))
    if "text" in obj:
        return Text(str(obj["text"]), float(obj.get("delay", 0.0)), int(obj.get("chunk", 16)),
                    _usage_from_json(obj))
    if obj.get("echo"):
        return Echo(obj.get("prefix", "scripted reply"))
    raise ValueError(f"not a script step: {obj!r}")


#: the usage counters a step may set (Anthropic Messages API names)
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def _usage_from_json(obj: dict) -> dict | None:
    """The ``usage`` of a step's JSON form, checked.

    :raises ValueError: for an unknown counter or a value that is not a whole number >= 0.
    """
    usage = obj.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise ValueError(f"usage must be an object: {usage!r}")
    for k, v in usage.items():
        if k not in USAGE_FIELDS or not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"usage: {k!r}={v!r}: expected one of {', '.join(USAGE_FIELDS)} with a whole number >= 0")
    return dict(usage)


def _failure_from_json(obj: dict) -> Failure:
    """The :class:`Failure` of a ``{"fail": ...}`` step (see :func:`step_from_json`).

    :raises ValueError: on an unknown failure.
    """
    if True:
        kind = obj["fail"]
        repeat = obj.get("repeat", 1)
        if kind == "thinking_400":
            return Fail.thinking_400(int(obj.get("index", 1)), repeat=repeat)
        if kind == "prompt_too_long":
            return Fail.prompt_too_long(repeat=repeat)
        if kind == "usage_limit":
            reset = obj.get("reset")
            if reset is None:
                reset = int(time.time()) + int(obj.get("reset_in", 3600))
            return Fail.usage_limit(int(reset), obj.get("claim", "five_hour"), repeat=repeat)
        if kind == "rate_limit_429":
            return Fail.rate_limit_429(repeat=repeat, retry_after=obj.get("retry_after"))
        if kind == "overloaded_529":
            return Fail.overloaded_529(repeat=repeat)
        if kind == "hang":
            return Fail.hang(float(obj.get("seconds", 3600)), repeat=repeat)
        if kind == "http":
            return Fail.http(int(obj["status"]), obj.get("type", "api_error"),
                             obj.get("message", ""), obj.get("headers"), repeat=repeat)
        raise ValueError(f"unknown failure {kind!r}")


def step_to_json(step: Any) -> Any:
    """The ``--script`` JSON form of a step (inverse of :func:`step_from_json`), to hand a
    script to a server running in another process (``python -m ccci.testing.model_server
    --script FILE``).

    :raises TypeError: when ``step`` is not a step.
    """
    if isinstance(step, Text):
        out = {"text": step.text, "delay": step.delay, "chunk": step.chunk}
        return {**out, "usage": dict(step.usage)} if step.usage else out
    if isinstance(step, ToolUse):
        out = {"tool_use": step.name, "input": step.input, "id": step.id, "text": step.text,
               "delay": step.delay}
        return {**out, "usage": dict(step.usage)} if step.usage else out
    if isinstance(step, Echo):
        return {"echo": True, "prefix": step.prefix}
    if isinstance(step, Failure):
        out = _failure_to_json(step)
        if step.for_s is not None:
            out["for_s"] = step.for_s
        return out
    if isinstance(step, (list, tuple)):
        return [step_to_json(s) for s in step]
    raise TypeError(f"not a step: {step!r}")


def _failure_to_json(step: Failure) -> dict:
    if True:
        if step.kind == "usage_limit":
            headers = dict(step.headers)
            return {"fail": "usage_limit", "reset": int(headers["anthropic-ratelimit-unified-reset"]),
                    "claim": headers["anthropic-ratelimit-unified-representative-claim"],
                    "repeat": step.repeat}
        if step.kind == "hang":
            return {"fail": "hang", "seconds": step.seconds, "repeat": step.repeat}
        if step.kind.startswith("http_"):
            return {"fail": "http", "status": step.status, "type": step.error_type,
                    "message": step.message, "headers": dict(step.headers), "repeat": step.repeat}
        return {"fail": step.kind, "repeat": step.repeat}


def _first_user_text(body: Any) -> str:
    """The text of the first user message of an Anthropic or OpenAI request (a session's
    opening prompt: every later call of the session repeats it)."""
    if not isinstance(body, dict):
        return ""
    for msg in body.get("messages") or []:
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return ""


class ByMarker:
    """A callable script with one step list per conversation: the list whose marker (any
    string) occurs in the request's first user message answers it. Several agents can
    then share one server, each with its own script (e.g. ``ROLE-BUILDER`` in the
    builder's prompt). A request matching no marker, or whose list is used up, gets the
    server's ``default``. Failures honour ``repeat``.

    :param scripts: ``{marker: [step, ...]}``.
    """

    def __init__(self, scripts: dict[str, Sequence[Step]]) -> None:
        self._lists = {m: list(steps) for m, steps in scripts.items()}
        self._uses = {m: 0 for m in scripts}
        self._since: dict[str, float] = {}  #: marker -> when its current for_s outage began
        self._lock = threading.Lock()

    def __call__(self, body: Any) -> Step | None:
        first = _first_user_text(body)
        with self._lock:
            for marker, steps in self._lists.items():
                if marker not in first:
                    continue
                while steps and isinstance(steps[0], Failure) and steps[0].for_s is not None:
                    began = self._since.setdefault(marker, time.monotonic())
                    if time.monotonic() - began < steps[0].for_s:
                        return steps[0]
                    steps.pop(0)  # the outage is over
                    del self._since[marker]
                if not steps:
                    return None
                step = steps[0]
                repeat = step.repeat if isinstance(step, Failure) else 1
                self._uses[marker] += 1
                if repeat is not None and self._uses[marker] >= repeat:
                    steps.pop(0)
                    self._uses[marker] = 0
                return step
        return None


def load_script(path: str | Path) -> tuple[Script, Step]:
    """Read a ``--script`` JSON file: a list of steps, ``{"steps": [...], "default":
    step}``, or ``{"by_marker": {"MARKER": [...], ...}, "default": step}`` (a
    :class:`ByMarker` script). Returns ``(script, default)``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    default: Step = Echo()
    if isinstance(data, dict):
        if data.get("default") is not None:
            default = step_from_json(data["default"])
        if isinstance(data.get("by_marker"), dict):
            return ByMarker({str(m): [step_from_json(o) for o in steps]
                             for m, steps in data["by_marker"].items()}), default
        data = data.get("steps", [])
    if not isinstance(data, list):
        raise ValueError(f"{path}: a script is a JSON list of steps")
    return [step_from_json(o) for o in data], default


# ------------------------------------------------------------------------ records


@dataclass
class RecordedRequest:
    """One request the server received.

    Attributes:
        method: ``"POST"``, ``"GET"``, ``"HEAD"``.
        path: path with the query string (``/v1/messages?beta=true``).
        headers: request headers, names lower-cased, credentials removed.
        json: parsed JSON body (``None`` when there was none or it was not JSON).
        kind: ``"main"`` (took a script step), ``"side"`` (answered without one) or
            ``"other"`` (probes, model lists, token counts, unknown paths).
        step: :func:`step_label` of the step that answered (``"side"`` for side calls,
            ``""`` for others).
        status: HTTP status of the answer (0 when the connection was dropped, e.g.
            ``hang``; the log file has the status planned before sending).
        time: ``time.time()`` when the request arrived.
        usage: the token counts the answer reports, in Anthropic names
            (``{"input_tokens", "output_tokens", "cache_read_input_tokens",
            "cache_creation_input_tokens"}``, the final values of a stream): Anthropic
            Messages API, OpenAI chat completion (:func:`chat_usage`), Responses API
            (:func:`responses_usage_recorded`) and Gemini API
            (:func:`gemini_usage_recorded`) answers;
            ``None`` for other answers and failures.
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    kind: str = "other"
    step: str = ""
    status: int = 0
    time: float = 0.0
    usage: dict | None = None

    def to_json(self) -> dict:
        return {"method": self.method, "path": self.path, "headers": self.headers,
                "json": self.json, "kind": self.kind, "step": self.step,
                "status": self.status, "time": self.time, "usage": self.usage}


def _rand(n: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _estimate_tokens(obj: Any) -> int:
    try:
        return max(1, len(json.dumps(obj)) // 4)
    except (TypeError, ValueError):
        return 1


def _chunks(s: str, size: int) -> list[str]:
    size = max(1, size)
    return [s[i:i + size] for i in range(0, len(s), size)] or [""]


def _last_user_text(body: Any) -> str:
    """The text of the last user message of an Anthropic or OpenAI request."""
    if not isinstance(body, dict):
        return ""
    if isinstance(body.get("input"), (list, str)):  # OpenAI Responses API
        if isinstance(body["input"], str):
            return body["input"]
        for item in reversed(body["input"]):
            if isinstance(item, dict) and item.get("role") == "user" and isinstance(item.get("content"), list):
                texts = [c.get("text", "") for c in item["content"] if isinstance(c, dict)
                         and c.get("type") == "input_text"]
                return "\n".join(texts)
        return ""
    if isinstance(body.get("contents"), list):  # Gemini API
        for item in reversed(body["contents"]):
            if isinstance(item, dict) and item.get("role") == "user":
                texts = [p["text"] for p in item.get("parts") or [] if isinstance(p, dict) and "text" in p]
                if texts:
                    return "\n".join(texts)
        return ""
    for msg in reversed(body.get("messages") or []):
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [c.get("text", "") for c in content
                     if isinstance(c, dict) and c.get("type") == "text"
                     and not str(c.get("text", "")).lstrip().startswith("<system-reminder>")]
            if texts:
                return "\n".join(texts)
            return ""
    return ""


def _sample(schema: Any, text: str) -> Any:
    """A value that satisfies a (simple) JSON schema, strings set to ``text``."""
    if not isinstance(schema, dict):
        return text
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    if isinstance(t, str):
        t = t.lower()  # the Gemini API writes "OBJECT", "STRING"...
    if t == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: _sample(v, text) for k, v in props.items()}
    if t == "array":
        return []
    if t == "boolean":
        return False
    if t in ("integer", "number"):
        return 0
    if t == "null":
        return None
    return text


def default_side_call(path: str, body: Any) -> bool:
    """The default side-call test: a model call whose request declares no ``tools``
    (Claude Code's per-prompt title call and its other helper calls are tool-less; its
    main calls always carry the tool list)."""
    return isinstance(body, dict) and not body.get("tools")


# ------------------------------------------------------------------------- server


class _Dropped(Exception):
    """The handler dropped the connection on purpose (hang) or the client went away."""


class ModelServer:
    """A scripted model server on loopback.

    :param script: a list of steps (see the module docstring) or a callable
        ``(request_json) -> step`` called for each main call (``None`` = ``default``).
    :param default: the step used once the script is used up (default :class:`Echo`).
    :param host: address to bind (loopback by default).
    :param port: port to bind; 0 = any free port.
    :param side_calls: ``"no_tools"`` (default: a request without ``tools`` is a side
        call), ``None`` (every model call takes a step), or ``(path, json) -> bool``.
    :param side_text: the text side calls get.
    :param log: optional JSON-lines file; every request is appended as it arrives.
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        default: Step | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        side_calls: str | Callable[[str, Any], bool] | None = "no_tools",
        side_text: str = "Scripted session",
        log: str | Path | None = None,
    ) -> None:
        if script is None:
            script = []
        self._callable = script if callable(script) else None
        self._steps: list[Any] = [] if callable(script) else list(script)
        self.default: Step = default if default is not None else Echo()
        self.host = host
        self.port = port
        if side_calls == "no_tools":
            self._is_side: Callable[[str, Any], bool] | None = default_side_call
        elif side_calls is None or callable(side_calls):
            self._is_side = side_calls  # type: ignore[assignment]
        else:
            raise ValueError(f"side_calls must be 'no_tools', None or a callable, not {side_calls!r}")
        self.side_text = side_text
        self.log_path = Path(log) if log else None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._index = 0  # next script step
        self._uses = 0  # calls the current step has answered (for repeat)
        self._since: float | None = None  # when the current for_s outage began (monotonic s)
        self._main_count = 0
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT`` (valid after :meth:`start`)."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> str:
        """Bind and serve in a background thread; returns the base URL."""
        if self._httpd is not None:
            return self.url
        server = self

        class Handler(_Handler):
            model_server = server

        httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"model-server:{self.port}", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving: ends hung requests and open connections too."""
        self._stopping.set()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ModelServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ script
    def add_steps(self, *steps: Step) -> None:
        """Append steps to a list script (e.g. between turns of a running test)."""
        with self._lock:
            self._steps.extend(steps)

    @property
    def remaining_steps(self) -> int:
        """Script steps not yet (fully) used; 0 for a callable script."""
        with self._lock:
            return max(0, len(self._steps) - self._index)

    def _next_step(self, body: Any) -> Any:
        with self._lock:
            self._main_count += 1
            while self._callable is None and self._index < len(self._steps):
                step = self._steps[self._index]
                if not (isinstance(step, Failure) and step.for_s is not None):
                    break
                if self._since is None:
                    self._since = time.monotonic()
                if time.monotonic() - self._since < step.for_s:
                    return step
                self._index += 1  # the outage is over
                self._since = None
            if self._callable is None and self._index < len(self._steps):
                step = self._steps[self._index]
                repeat = step.repeat if isinstance(step, Failure) else 1
                self._uses += 1
                if repeat is not None and self._uses >= repeat:
                    self._index += 1
                    self._uses = 0
                return step
            callable_script = self._callable
        if callable_script is not None:
            step = callable_script(body)
            return self.default if step is None else step
        return self.default

    def is_side_call(self, path: str, body: Any) -> bool:
        return bool(self._is_side and self._is_side(path, body))

    # ------------------------------------------------------------------ records
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def main_requests(self) -> list[RecordedRequest]:
        """Requests that took a script step."""
        return [r for r in self.requests if r.kind == "main"]

    def side_requests(self) -> list[RecordedRequest]:
        """Model calls answered as side calls."""
        return [r for r in self.requests if r.kind == "side"]

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool],
                 timeout: float = 10.0) -> bool:
        """Block until ``predicate(requests)`` holds (checked on each new request);
        returns whether it did before ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._requests)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _record(self, rec: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(rec)
            self._cond.notify_all()
        if self.log_path is not None:
            line = json.dumps(rec.to_json(), ensure_ascii=False)
            with self._lock, open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    # ------------------------------------------------------------------ replies
    def side_answer(self, body: Any) -> str:
        """The text a side call gets: :attr:`side_text`, or a JSON object built from the
        request's JSON schema when it asks for structured output (Claude Code's title
        call sends ``output_config.format`` ``{"type": "json_schema", "schema": {...}}``
        and expects ``{"title": "..."}``; OpenAI clients send ``response_format``)."""
        schema = None
        if isinstance(body, dict):
            fmt = (body.get("output_config") or {}).get("format") if isinstance(body.get("output_config"), dict) else None
            if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
                schema = fmt.get("schema")
            rf = body.get("response_format")
            if isinstance(rf, dict) and rf.get("type") == "json_schema":
                schema = (rf.get("json_schema") or {}).get("schema")
            tf = body.get("text")  # Responses API: {"format": {"type": "json_schema", "schema"}}
            if isinstance(tf, dict) and isinstance(tf.get("format"), dict) and tf["format"].get("type") == "json_schema":
                schema = tf["format"].get("schema")
            gc = body.get("generationConfig")  # Gemini API
            if isinstance(gc, dict):
                schema = gc.get("responseJsonSchema") or gc.get("responseSchema") or schema
        if not isinstance(schema, dict):
            return self.side_text
        return json.dumps(_sample(schema, self.side_text))

    def echo_text(self, step: Echo, body: Any) -> str:
        text = " ".join(_last_user_text(body).split())
        with self._lock:
            n = self._main_count
        quoted = text[:80] + ("..." if len(text) > 80 else "")
        return f'{step.prefix} #{n}: I received {len(text)} chars: "{quoted}"'


def _fails_in_stream(step: Failure, api: str, body: dict) -> bool:
    """True when ``step`` is answered as an in-stream ``response.failed`` (an over-long
    input on the streamed Responses API) instead of an HTTP error."""
    return api == "responses" and step.kind == "prompt_too_long" and bool(body.get("stream"))


def anthropic_usage(blocks: list[Block], body: Any) -> dict[str, int]:
    """The usage an Anthropic answer of ``blocks`` to ``body`` reports: estimates
    (``input_tokens`` ~ request JSON length / 4, ``output_tokens`` ~ content JSON length /
    4, cache counters 0), overridden by the first block's ``usage`` that sets one."""
    content = [{"type": "tool_use", "name": b.name, "input": b.input} if isinstance(b, ToolUse)
               else {"type": "text", "text": b.text} for b in blocks]
    usage = {"input_tokens": _estimate_tokens(body.get("messages") if isinstance(body, dict) else None),
             "output_tokens": max(1, sum(len(json.dumps(c)) for c in content) // 4),
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return _with_step_usage(usage, blocks)


def _openai_estimate(blocks: list[Block], body: Any) -> dict[str, int]:
    text = "".join(b.text for b in blocks)
    calls = [b for b in blocks if isinstance(b, ToolUse)]
    return {"input_tokens": _estimate_tokens(body.get("messages") if isinstance(body, dict) else None),
            "output_tokens": max(1, (len(text) + sum(len(json.dumps(b.input)) for b in calls)) // 4),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def _with_step_usage(usage: dict[str, int], blocks: list[Block]) -> dict[str, int]:
    for b in blocks:
        if b.usage:
            usage.update({k: int(v) for k, v in b.usage.items() if k in USAGE_FIELDS})
            break
    return usage


def openai_usage(blocks: list[Block], body: Any) -> dict[str, Any]:
    """The ``usage`` object of an OpenAI chat completion of ``blocks``: the estimates, or
    the step's ``usage`` (Anthropic names) translated: ``prompt_tokens`` = input + cache
    read (OpenAI counts cached tokens inside the prompt, in
    ``prompt_tokens_details.cached_tokens``), ``completion_tokens`` = output; a cache
    write has no OpenAI field and is dropped."""
    u = chat_usage(blocks, body)
    prompt = u["input_tokens"] + u["cache_read_input_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": u["output_tokens"],
            "total_tokens": prompt + u["output_tokens"],
            "prompt_tokens_details": {"cached_tokens": u["cache_read_input_tokens"]}}


def chat_usage(blocks: list[Block], body: Any) -> dict[str, int]:
    """What an OpenAI chat completion of ``blocks`` reports, in Anthropic names (as
    :attr:`RecordedRequest.usage` records it; ``cache_creation_input_tokens`` always 0)."""
    u = _with_step_usage(_openai_estimate(blocks, body), blocks)
    u["cache_creation_input_tokens"] = 0
    return u


def responses_usage(blocks: list[Block], body: Any) -> dict[str, Any]:
    """The ``usage`` of an OpenAI Responses API answer of ``blocks`` (Codex CLI): the
    estimates (input ~ the request's ``input`` JSON length / 4), or the step's ``usage``
    translated as for :func:`openai_usage` (``input_tokens`` includes the cached ones,
    ``input_tokens_details.cached_tokens`` = cache read)."""
    u = responses_usage_recorded(blocks, body)
    prompt = u["input_tokens"] + u["cache_read_input_tokens"]
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": u["cache_read_input_tokens"]},
            "output_tokens": u["output_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + u["output_tokens"]}


def responses_usage_recorded(blocks: list[Block], body: Any) -> dict[str, int]:
    """What a Responses API answer of ``blocks`` reports, in Anthropic names (as
    :attr:`RecordedRequest.usage` records it)."""
    est = _openai_estimate(blocks, None)
    est["input_tokens"] = _estimate_tokens(body.get("input") if isinstance(body, dict) else None)
    u = _with_step_usage(est, blocks)
    u["cache_creation_input_tokens"] = 0
    return u


def _gemini_parts(blocks: list[Block]) -> list[dict]:
    parts: list[dict] = []
    for b in blocks:
        if b.text:
            parts.append({"text": b.text})
        if isinstance(b, ToolUse):
            call: dict[str, Any] = {"name": b.name, "args": b.input}
            if b.id:
                call["id"] = b.id
            parts.append({"functionCall": call})
    return parts


def gemini_usage_recorded(blocks: list[Block], body: Any) -> dict[str, int]:
    """What a Gemini API answer of ``blocks`` reports, in Anthropic names (as
    :attr:`RecordedRequest.usage` records it): estimates (input ~ ``contents`` JSON
    length / 4, output ~ the answer's parts) or the step's ``usage``."""
    u = {"input_tokens": _estimate_tokens(body.get("contents") if isinstance(body, dict) else None),
         "output_tokens": max(1, len(json.dumps(_gemini_parts(blocks))) // 4),
         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    u = _with_step_usage(u, blocks)
    u["cache_creation_input_tokens"] = 0
    return u


def gemini_usage(blocks: list[Block], body: Any) -> dict[str, int]:
    """The ``usageMetadata`` of a Gemini API answer: ``promptTokenCount`` = input + cache
    read (Gemini counts cached tokens inside the prompt, in ``cachedContentTokenCount``),
    ``candidatesTokenCount`` = output."""
    u = gemini_usage_recorded(blocks, body)
    prompt = u["input_tokens"] + u["cache_read_input_tokens"]
    out = {"promptTokenCount": prompt, "candidatesTokenCount": u["output_tokens"],
           "totalTokenCount": prompt + u["output_tokens"]}
    if u["cache_read_input_tokens"]:
        out["cachedContentTokenCount"] = u["cache_read_input_tokens"]
    return out


def _blocks_of(step: Any, server: ModelServer, body: Any) -> list[Block]:
    if isinstance(step, Echo):
        return [Text(server.echo_text(step, body))]
    if isinstance(step, (Text, ToolUse)):
        return [step]
    if isinstance(step, (list, tuple)) and step and all(isinstance(b, (Text, ToolUse)) for b in step):
        return list(step)
    raise TypeError(f"model server: not a script step: {step!r}")


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; SSE bodies use chunked transfer encoding."""

    protocol_version = "HTTP/1.1"
    server_version = "ccci-model-server/1"
    model_server: ModelServer  # set by ModelServer.start

    # quiet: the records are the log
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        with self.model_server._lock:
            self.model_server._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.model_server._lock:
                self.model_server._conns.discard(self.connection)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _Dropped:  # the client went away mid-answer
            self.close_connection = True

    # ------------------------------------------------------------------ plumbing
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _record(self, body: Any, kind: str, step: str, status: int, t0: float,
                usage: dict | None = None) -> RecordedRequest:
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() not in SECRET_HEADERS}
        rec = RecordedRequest(self.command, self.path, headers, body, kind, step, status, t0, usage)
        self.model_server._record(rec)
        return rec

    def _send_json(self, status: int, obj: Any, headers: Iterable[tuple[str, str]] = (),
                   head_only: bool = False) -> None:
        data = json.dumps(obj).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            if not head_only:
                self.wfile.write(data)
            self.wfile.flush()
        except OSError as e:
            raise _Dropped() from e

    def _start_sse(self, headers: Iterable[tuple[str, str]] = ()) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.flush()
        except OSError as e:
            raise _Dropped() from e

    def _chunk(self, data: bytes) -> None:
        if self.model_server._stopping.is_set():
            raise _Dropped()
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError) as e:
            raise _Dropped() from e

    def _end_chunks(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError as e:
            raise _Dropped() from e

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.model_server._stopping.wait(seconds):
            raise _Dropped()

    # ------------------------------------------------------------------ verbs
    def do_HEAD(self) -> None:  # noqa: N802
        self._record(None, "other", "", 200, time.time())
        self._send_json(200, {}, head_only=True)

    def do_GET(self) -> None:  # noqa: N802
        t0 = time.time()
        path = urlsplit(self.path).path
        if path in ("/", ""):
            status, obj = 200, {"ok": True, "server": "ccci model server"}
        elif path.rstrip("/") == "/v1/models":
            status, obj = 200, {
                "object": "list", "has_more": False, "first_id": DEFAULT_MODEL, "last_id": DEFAULT_MODEL,
                "data": [{"id": DEFAULT_MODEL, "object": "model", "type": "model", "created": 0,
                          "created_at": "2026-01-01T00:00:00Z", "owned_by": "ccci",
                          "display_name": "Scripted model"}],
            }
        else:
            status, obj = 404, {"type": "error", "error": {"type": "not_found_error", "message": f"no route {path}"}}
        self._record(None, "other", "", status, t0)
        self._send_json(status, obj)

    def do_POST(self) -> None:  # noqa: N802
        t0 = time.time()
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = urlsplit(self.path).path.rstrip("/")
        srv = self.model_server
        if path == "/v1/messages/count_tokens":
            self._record(body, "other", "", 200, t0)
            self._send_json(200, {"input_tokens": _estimate_tokens(body)})
            return
        gm = GEMINI_PATH.match(path)
        if gm and gm.group("method") == "countTokens":
            self._record(body, "other", "", 200, t0)
            self._send_json(200, {"totalTokens": _estimate_tokens(body)})
            return
        if path not in ("/v1/messages", "/v1/chat/completions", "/v1/responses") and gm is None:
            self._record(body, "other", "", 404, t0)
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                              "message": f"no route {path}"}})
            return
        if not isinstance(body, dict):
            self._record(body, "other", "", 400, t0)
            self._send_json(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                              "message": "body is not a JSON object"}})
            return
        api = ("openai" if path == "/v1/chat/completions" else "responses" if path == "/v1/responses"
               else "gemini" if gm is not None else "anthropic")
        if gm is not None:
            body = {**body, "model": gm.group("model"),
                    "stream": gm.group("method") == "streamGenerateContent"}
        if srv.is_side_call(self.path, body):
            kind, step = "side", Text(srv.side_answer(body))
            label = "side"
        else:
            kind, step = "main", srv._next_step(body)
            label = step_label(step)
        if isinstance(step, Failure) and step.kind == "hang":
            # recorded on arrival: a hung request may outlive the server
            self._record(body, kind, label, 0, t0)
            try:
                self._sleep(step.seconds)
            except _Dropped:
                pass
            self.close_connection = True
            return
        # recorded before the answer goes out, so a client that has its answer always
        # finds the request in the records; the status is corrected if the send fails
        status = step.status if isinstance(step, Failure) else 200
        if isinstance(step, Failure) and _fails_in_stream(step, api, body):
            status = 200  # the failure is a response.failed event inside a 200 stream
        blocks = None
        if not isinstance(step, Failure):
            try:
                blocks = _blocks_of(step, srv, body)  # once: an Echo quotes the call count
            except TypeError:
                blocks = None
        usage = (None if blocks is None else anthropic_usage(blocks, body) if api == "anthropic"
                 else chat_usage(blocks, body) if api == "openai"
                 else responses_usage_recorded(blocks, body) if api == "responses"
                 else gemini_usage_recorded(blocks, body) if api == "gemini" else None)
        rec = self._record(body, kind, label, status, t0, usage)
        try:
            self._answer(step, body, api, blocks)
        except _Dropped:
            self.close_connection = True
            rec.status = 0
        except TypeError as e:  # a callable script returned something that is no step
            rec.status = 500
            self._send_json(500, {"type": "error", "error": {"type": "api_error", "message": str(e)}})

    # ------------------------------------------------------------------ answers
    def _answer(self, step: Any, body: dict, api: str, blocks: list[Block] | None = None) -> int:
        """Send the answer for one step; returns the HTTP status (0 = dropped).

        :param api: ``"anthropic"``, ``"openai"`` (chat completions), ``"responses"``
            or ``"gemini"``.
        """
        request_id = "req_" + _rand(24)
        model = str(body.get("model") or DEFAULT_MODEL)
        stream = bool(body.get("stream"))
        if isinstance(step, Failure):
            if _fails_in_stream(step, api, body):
                # the Responses API reports an over-long input inside the stream:
                # response.failed with code context_length_exceeded (Codex CLI maps it to
                # its context-window error)
                return self._responses_failed(step, model)
            obj = {"openai": step.openai_body, "responses": step.responses_body,
                   "gemini": step.gemini_body}.get(api, lambda: step.anthropic_body(request_id))()
            self._send_json(step.status, obj, [("request-id", request_id), *step.headers])
            return step.status
        if blocks is None:
            blocks = _blocks_of(step, self.model_server, body)
        if api == "openai":
            return self._openai(blocks, body, model, stream)
        if api == "responses":
            return self._responses(blocks, body, model, stream)
        if api == "gemini":
            return self._gemini(blocks, body, model, stream)
        return self._anthropic(blocks, body, model, stream, request_id)

    # OpenAI Responses API (Codex CLI 0.169.0 and 0.171.0: wire_api = "responses", always streamed)
    def _responses_event(self, data: dict) -> None:
        self._seq = getattr(self, "_seq", 0) + 1
        data = {**data, "sequence_number": self._seq}
        self._chunk(f"event: {data['type']}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode("utf-8"))

    def _responses_failed(self, step: Failure, model: str) -> int:
        rid = "resp_" + _rand(24)
        self._seq = 0
        self._start_sse()
        self._responses_event({"type": "response.created", "response": {
            "id": rid, "object": "response", "status": "in_progress", "model": model, "output": []}})
        err = step.responses_body()["error"]
        self._responses_event({"type": "response.failed", "response": {
            "id": rid, "object": "response", "status": "failed", "model": model, "output": [],
            "error": {"code": err.get("code") or err.get("type"), "message": err.get("message", "")}}})
        self._end_chunks()
        return 200

    def _responses(self, blocks: list[Block], body: dict, model: str, stream: bool) -> int:
        rid = "resp_" + _rand(24)
        # (output item, seconds between chunks, characters per chunk)
        items: list[tuple[dict, float, int]] = []
        for b in blocks:
            text = b.text
            if text:
                items.append(({"type": "message", "id": "msg_" + _rand(24), "status": "completed",
                               "role": "assistant",
                               "content": [{"type": "output_text", "text": text, "annotations": []}]},
                              b.delay, b.chunk if isinstance(b, Text) else 16))
            if isinstance(b, ToolUse):
                items.append(({"type": "function_call", "id": "fc_" + _rand(24), "status": "completed",
                               "call_id": b.id or "call_" + _rand(24), "name": b.name,
                               "arguments": json.dumps(b.input, ensure_ascii=False)}, b.delay, 12))
        output = [it for it, _, _ in items]
        usage = responses_usage(blocks, body)
        done = {"id": rid, "object": "response", "created_at": int(time.time()), "status": "completed",
                "model": model, "output": output, "usage": usage}
        if not stream:
            self._send_json(200, done)
            return 200
        self._seq = 0
        self._start_sse()
        ev = self._responses_event
        ev({"type": "response.created", "response": {**done, "status": "in_progress", "output": [],
                                                     "usage": None}})
        ev({"type": "response.in_progress", "response": {**done, "status": "in_progress", "output": [],
                                                         "usage": None}})
        for n, (item, delay, size) in enumerate(items):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                ev({"type": "response.output_item.added", "output_index": n,
                    "item": {**item, "status": "in_progress", "content": []}})
                part = {"type": "output_text", "text": "", "annotations": []}
                ev({"type": "response.content_part.added", "item_id": item["id"], "output_index": n,
                    "content_index": 0, "part": part})
                for piece in _chunks(text, size):
                    self._sleep(delay)
                    ev({"type": "response.output_text.delta", "item_id": item["id"], "output_index": n,
                        "content_index": 0, "delta": piece})
                ev({"type": "response.output_text.done", "item_id": item["id"], "output_index": n,
                    "content_index": 0, "text": text})
                ev({"type": "response.content_part.done", "item_id": item["id"], "output_index": n,
                    "content_index": 0, "part": {**part, "text": text}})
            else:
                ev({"type": "response.output_item.added", "output_index": n,
                    "item": {**item, "status": "in_progress", "arguments": ""}})
                for piece in _chunks(item["arguments"], size):
                    self._sleep(delay)
                    ev({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                        "output_index": n, "delta": piece})
                ev({"type": "response.function_call_arguments.done", "item_id": item["id"],
                    "output_index": n, "arguments": item["arguments"]})
            ev({"type": "response.output_item.done", "output_index": n, "item": item})
        ev({"type": "response.completed", "response": done})
        self._end_chunks()
        return 200

    # Gemini API (Gemini CLI 0.61.0: GOOGLE_GEMINI_BASE_URL, streamGenerateContent?alt=sse)
    def _gemini(self, blocks: list[Block], body: dict, model: str, stream: bool) -> int:
        parts_paced: list[tuple[dict, float, int]] = []
        for b in blocks:
            if b.text:
                parts_paced.append(({"text": b.text}, b.delay, b.chunk if isinstance(b, Text) else 16))
            if isinstance(b, ToolUse):
                call: dict[str, Any] = {"name": b.name, "args": b.input}
                if b.id:
                    call["id"] = b.id
                parts_paced.append(({"functionCall": call}, b.delay, 0))
        usage = gemini_usage(blocks, body)
        rid = _rand(20)

        def answer(parts: list[dict], finish: bool) -> dict:
            cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if finish:
                cand["finishReason"] = "STOP"
            obj: dict[str, Any] = {"candidates": [cand], "modelVersion": model, "responseId": rid}
            if finish:
                obj["usageMetadata"] = usage
            return obj

        if not stream:
            self._send_json(200, answer([p for p, _, _ in parts_paced], True))
            return 200
        self._start_sse()
        pieces: list[tuple[dict, float]] = []
        for part, delay, size in parts_paced:
            if "text" in part:
                pieces += [({"text": t}, delay) for t in _chunks(part["text"], size)]
            else:
                pieces.append((part, delay))
        if not pieces:
            pieces = [({"text": ""}, 0.0)]
        for n, (part, delay) in enumerate(pieces):
            self._sleep(delay)
            obj = answer([part], n == len(pieces) - 1)
            self._chunk(f"data: {json.dumps(obj, ensure_ascii=False)}\r\n\r\n".encode("utf-8"))
        self._end_chunks()
        return 200

    def _anthropic(self, blocks: list[Block], body: dict, model: str, stream: bool,
                   request_id: str) -> int:
        msg_id = "msg_" + _rand(24)
        # (content block, seconds between chunks, characters per text chunk)
        parts: list[tuple[dict, float, int]] = []
        for b in blocks:
            if isinstance(b, ToolUse):
                if b.text:
                    parts.append(({"type": "text", "text": b.text}, b.delay, 16))
                parts.append(({"type": "tool_use", "id": b.id or "toolu_" + _rand(24),
                               "name": b.name, "input": b.input}, b.delay, 12))
            else:
                parts.append(({"type": "text", "text": b.text}, b.delay, b.chunk))
        content = [c for c, _, _ in parts]
        stop_reason = "tool_use" if any(c["type"] == "tool_use" for c in content) else "end_turn"
        usage = anthropic_usage(blocks, body)
        output_tokens = usage["output_tokens"]
        if not stream:
            self._send_json(200, {
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop_reason, "stop_sequence": None,
                "usage": usage,
            }, [("request-id", request_id)])
            return 200

        def event(name: str, data: dict) -> None:
            self._chunk(f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode("utf-8"))

        self._start_sse([("request-id", request_id)])
        event("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1}}})
        event("ping", {"type": "ping"})
        for index, (c, delay, size) in enumerate(parts):
            if c["type"] == "text":
                event("content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": {"type": "text", "text": ""}})
                for piece in _chunks(c["text"], size):
                    self._sleep(delay)
                    event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                  "delta": {"type": "text_delta", "text": piece}})
            else:
                event("content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": {"type": "tool_use", "id": c["id"],
                                                                "name": c["name"], "input": {}}})
                event("content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "input_json_delta", "partial_json": ""}})
                for piece in _chunks(json.dumps(c["input"], ensure_ascii=False), size):
                    self._sleep(delay)
                    event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                  "delta": {"type": "input_json_delta", "partial_json": piece}})
            event("content_block_stop", {"type": "content_block_stop", "index": index})
        event("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                "usage": {"output_tokens": output_tokens}})
        event("message_stop", {"type": "message_stop"})
        self._end_chunks()
        return 200

    def _openai(self, blocks: list[Block], body: dict, model: str, stream: bool) -> int:
        cid = "chatcmpl-" + _rand(24)
        created = int(time.time())
        text = "".join(b.text for b in blocks)
        calls = [b for b in blocks if isinstance(b, ToolUse)]
        call_ids = [b.id or "call_" + _rand(24) for b in calls]
        finish = "tool_calls" if calls else "stop"
        usage = openai_usage(blocks, body)
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = [
                    {"id": cid_, "type": "function",
                     "function": {"name": b.name, "arguments": json.dumps(b.input)}}
                    for b, cid_ in zip(calls, call_ids)]
            self._send_json(200, {"id": cid, "object": "chat.completion", "created": created,
                                  "model": model, "choices": [{"index": 0, "message": message,
                                                               "finish_reason": finish}],
                                  "usage": usage})
            return 200

        def chunk(delta: dict, finish_reason: str | None = None, with_usage: bool = False) -> None:
            obj: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                                   "model": model, "choices": [{"index": 0, "delta": delta,
                                                                "finish_reason": finish_reason}]}
            if with_usage:
                obj["usage"] = usage
            self._chunk(f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode("utf-8"))

        self._start_sse()
        chunk({"role": "assistant", "content": ""})
        for b in blocks:
            if b.text:
                size = b.chunk if isinstance(b, Text) else 16
                for piece in _chunks(b.text, size):
                    self._sleep(b.delay)
                    chunk({"content": piece})
        for n, (b, call_id) in enumerate(zip(calls, call_ids)):
            chunk({"tool_calls": [{"index": n, "id": call_id, "type": "function",
                                   "function": {"name": b.name, "arguments": ""}}]})
            for piece in _chunks(json.dumps(b.input, ensure_ascii=False), 12):
                self._sleep(b.delay)
                chunk({"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
        chunk({}, finish, with_usage=True)
        self._chunk(b"data: [DONE]\n\n")
        self._end_chunks()
        return 200


# ---------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m ccci.testing.model_server``: serve a JSON script until SIGTERM."""
    ap = argparse.ArgumentParser(prog="python -m ccci.testing.model_server",
                                 description="Scripted Anthropic/OpenAI model server on loopback.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    ap.add_argument("--script", help="JSON file: a list of steps, or {\"steps\": [...], \"default\": step}")
    ap.add_argument("--log", help="append every request to this JSON-lines file")
    ap.add_argument("--all-calls-scripted", action="store_true",
                    help="no side calls: every model call takes a script step")
    args = ap.parse_args(argv)
    steps: Script = []
    default: Step = Echo()
    if args.script:
        steps, default = load_script(args.script)
    srv = ModelServer(steps, default=default, host=args.host, port=args.port,
                      side_calls=None if args.all_calls_scripted else "no_tools", log=args.log)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    url = srv.start()
    print(url, flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
