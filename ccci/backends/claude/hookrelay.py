"""The relay Claude Code's lifecycle hooks run: ``python <this file> <spool-file>``.

Claude Code (2.1.197) runs each command hook with the event as one JSON object on stdin
(docs/agent-clis.md#claude-code-lifecycle-hooks). This relay appends ONE line to the
agent's spool file (JSON Lines, opened ``O_APPEND``, created 0600) with only what ccci
needs, and exits 0 whatever happens, so it can never fail or block the CLI:

``{"ev": str, "t": float (unix seconds, UTC), "pid": int (the claude process), "sid":
str (session id), ...}`` plus, when present: ``source`` (SessionStart: startup |
resume | clear | compact), ``reason`` (SessionEnd), ``error`` (StopFailure: the API error
kind, e.g. ``rate_limit``, ``unknown``), ``msg`` (StopFailure only: the first
:data:`MSG_CHARS` characters of the API error text the CLI shows, e.g. ``API Error: 400
... `thinking` ...``; that is the server's error, never the user's prompt),
``ntype`` (Notification: ``permission_prompt`` | ``idle_prompt`` | ``agent_needs_input``
...), ``tool`` (PermissionRequest: the tool name), ``trigger`` (PreCompact: manual | auto),
``agent_id`` (set when a subagent fired the hook, e.g. the one that compacts; the main
session's hooks have none), ``error_details`` (the first :data:`MSG_CHARS` characters of
the error details the CLI gives, a JSON text when they are not a string).

Never copied: ``prompt`` (UserPromptSubmit), ``tool_input``/``tool_response``,
``last_assistant_message`` of a successful Stop, ``transcript_path``, ``cwd``.

Standard library only and importable without ccci on ``sys.path`` (the agent's
environment is not ccci's): the settings file ccci writes names this file by its
absolute path. Stdin is read up to :data:`MAX_STDIN` bytes; the whole run takes a Python
start-up (about 30-60 ms here), well inside what the CLI waits for a hook.
"""
from __future__ import annotations

import json
import os
import sys
import time

MAX_STDIN = 1 << 20  #: bytes of hook input read at most (a huge tool output is cut, then ignored)
MSG_CHARS = 400  #: characters of a StopFailure's error text kept
KEEP = {"source": "source", "reason": "reason", "error": "error", "notification_type": "ntype",
        "tool_name": "tool", "trigger": "trigger"}


def record(raw: bytes, now: float, pid: int) -> dict:
    """The spool record for one hook input (``raw``: the JSON bytes from stdin).

    :returns: a dict (``{"ev": "?"}`` plus time and pid for unreadable input).
    """
    try:
        data = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {"ev": "?", "t": now, "pid": pid}
    out: dict = {"ev": str(data.get("hook_event_name", "?"))[:40], "t": now, "pid": pid,
                 "sid": str(data.get("session_id", ""))[:64]}
    for key, short in KEEP.items():
        value = data.get(key)
        if isinstance(value, str) and value:
            out[short] = value[:80]
    if out["ev"] == "StopFailure":
        msg = data.get("last_assistant_message")
        if isinstance(msg, str):
            out["msg"] = msg[:MSG_CHARS]
    agent_id = data.get("agent_id")
    if agent_id not in (None, "") and not isinstance(agent_id, (dict, list)):
        out["agent_id"] = str(agent_id)[:80]  # a subagent's hook: never the main session's state
    details = data.get("error_details")
    if details not in (None, "", {}, []):
        if not isinstance(details, str):
            try:
                details = json.dumps(details, ensure_ascii=True, default=str)
            except (TypeError, ValueError):
                details = str(details)
        out["error_details"] = details[:MSG_CHARS]
    return out


def main(argv: list[str]) -> int:
    """Append the record for stdin's hook input to ``argv[1]``; always returns 0."""
    try:
        if len(argv) < 2:
            return 0
        raw = sys.stdin.buffer.read(MAX_STDIN)
        line = json.dumps(record(raw, time.time(), os.getppid()), ensure_ascii=True) + "\n"
        fd = os.open(argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("ascii"))  # one write: lines of concurrent hooks never interleave
        finally:
            os.close(fd)
    except BaseException:  # noqa: BLE001 - a hook must never fail the CLI
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
