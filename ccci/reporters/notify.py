"""Notify a person: a shell command and/or a webhook (JSON POST) for the events that
need one (``escalation``, ``breaker_open``, ``phase_complete``, ``sequence_complete``
by default).

Configured in ``ccci.toml``::

    [notify]
    command = ["notify-send", "ccci"]     # argv; the event JSON arrives on stdin
    webhook = "https://hooks.example/ccci" # JSON POST of the event
    events = ["escalation", "breaker_open"]
    timeout = 5                            # seconds per notification

The command is run as an argv list (never through a shell) with the event as JSON on
stdin. Secrets are never sent: the event text was already redacted by the runner, and
the environment is not included. A failing notifier is reported on stderr, once per
kind of failure, and never stops supervision.
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from ccci.clock import iso
from ccci.hookspecs import hookimpl
from ccci.stash import StashKey

DEFAULT_EVENTS = ("escalation", "breaker_open", "phase_complete", "sequence_complete")

SETTINGS = StashKey[dict]("settings")  #: the ``[notify]`` table and the fleet name
FAILED = StashKey[list]("failed")  #: kinds of failure already reported on stderr


@hookimpl
def ccci_configure(config, stash):
    raw = config.raw.get("notify", {})
    stash[SETTINGS] = {**raw, "fleet": config.name} if isinstance(raw, dict) and raw else {}


def payload(event, fleet: str = "") -> dict:
    """The JSON object sent: ``fleet``, ``kind``, ``agent``, ``message``, ``at`` (UTC), ``data``."""
    return {"fleet": fleet, "kind": event.kind, "agent": event.agent,
            "message": event.message, "at": iso(event.at), "data": event.data}


@hookimpl
def ccci_report_event(event, stash):
    _settings = stash.get(SETTINGS) or {}
    if not _settings or event.kind not in tuple(_settings.get("events", DEFAULT_EVENTS)):
        return
    body = json.dumps(payload(event, _settings.get("fleet", "")), default=str).encode()
    timeout = float(_settings.get("timeout", 5))
    cmd = _settings.get("command")
    if cmd:
        argv = [cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
        try:
            subprocess.run(argv, input=body, timeout=timeout, capture_output=True, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            _warn(stash, "command", f"notify command {argv[0]!r} failed: {exc}")
    url = _settings.get("webhook")
    if url:
        req = urllib.request.Request(str(url), data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            urllib.request.urlopen(req, timeout=timeout).close()
        except Exception as exc:  # noqa: BLE001 - notification is best effort
            _warn(stash, "webhook", f"notify webhook failed: {type(exc).__name__}: {str(exc)[:120]}")


def _warn(stash, kind: str, msg: str) -> None:
    failed = stash.setdefault(FAILED, [])
    if kind not in failed:
        failed.append(kind)
        sys.stderr.write(f"ccci: {msg}\n")
