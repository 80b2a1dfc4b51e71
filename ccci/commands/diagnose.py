"""``ccci diagnose``: run every check on a saved pane capture (an ``explain`` for the
pattern data). The screen is read as if the agent's process were alive and the screen
had just changed, so the time-based checks (stall) stay quiet and the conclusion is what
the screen alone says.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from ccci.clock import Clock, iso
from ccci.config import DEFAULT_CHECKS
from ccci.model import AgentSpec, PaneInfo, ProcessInfo, Role
from ccci.stash import Stash
from ccci.plugins import CcciPluginManager, collect_backends
from ccci.runtime import AgentRuntime, FleetSnapshot
from ccci.screen import Screen



class DiagnoseError(ValueError):
    """Unknown backend or unreadable capture; one-line message."""


def diagnose(pm: CcciPluginManager, screen: str, backend_name: str, title: str = "",
             now: "datetime | None" = None, cli_version: str | None = None) -> dict[str, Any]:
    """Classify one capture and run every ``ccci_check_agent`` implementation on it.

    :param pm: plugin manager (builtins + plugins; their checks all run).
    :param screen: the capture's text; a ``capture-pane -p -e`` capture (with escapes) is
        read as ``ccci watch`` reads it, so text drawn faint in the input box counts as a
        placeholder (:mod:`ccci.screen`).
    :param backend_name: backend whose pattern data reads the screen.
    :param title: optional pane title.
    :param now: when the capture was taken (UTC; default: now): places a reset time
        shown without a date (``resets 8:34am (UTC)``) and is the checks' ``now``.
    :param cli_version: read with the pattern file of this CLI version (e.g. ``2.1.332``
        for a capture of Claude Code 2.1.332); default: the backend's own choice.
    :returns: ``{"state": str, "findings": [{"check", "evidence", ...}], "reset_at":
        ISO-8601 UTC or None, "matches": [...], "input_text": str, "placeholder": str, "backend": str,
        "patterns": str, "errors": [str]}``.
    :raises DiagnoseError: for an unknown backend.
    """
    backends = collect_backends(pm)
    if backend_name not in backends:
        raise DiagnoseError(f"unknown backend {backend_name!r}; known: {', '.join(sorted(backends))}")
    backend = backends[backend_name]
    if cli_version:
        backend.use_cli_version(cli_version)
    screen = Screen.from_styled(screen) if "\x1b" in screen else screen
    # a backend written before ``now`` existed takes (screen, title) only
    analysis = backend.analyse(screen, title, now) if now is not None else backend.analyse(screen, title)
    clock = Clock()
    now, mono = now or clock.now(), clock.monotonic()
    from pathlib import Path

    spec = AgentSpec(name="diagnose", role=Role.LOOP, backend=backend_name, workdir=Path("."))
    rt = AgentRuntime(spec=spec, backend=backend, session="ccci-diagnose", pane_id="%0", pid=1,
                      started_mono=mono - 3600, screen=screen, analysis=analysis,
                      screen_changed_mono=mono, content_changed_mono=mono)
    pane = PaneInfo(session_name="ccci-diagnose", pane_id="%0", pid=1, title=title)
    snap = FleetSnapshot(tick=0, now=now, mono=mono, panes={"diagnose": pane},
                         processes={"diagnose": ProcessInfo(pid=1, alive=True)})
    kwargs = {"agent": rt, "spec": spec, "pane": pane, "process": snap.processes["diagnose"], "screen": screen,
              "analysis": analysis, "backend": backend, "settings": dict(DEFAULT_CHECKS), "snapshot": snap,
              "now": now, "mono": mono}
    findings, errors = [], []
    for impl in reversed(pm.hook.ccci_check_agent.get_hookimpls()):
        try:
            # one capture, no history: each check gets an empty stash of its own
            stash = Stash(impl.plugin_name, "diagnose", {}, None)
            res = impl.function(*[stash if a == "stash" else kwargs[a] for a in impl.argnames])
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{impl.plugin_name}: {type(exc).__name__}: {exc}")
            continue
        for f in (res if isinstance(res, list) else [res]):
            if f is not None:
                d = f.as_dict()
                d["agent"] = None
                findings.append(d)
    return {
        "state": analysis.state.value,
        "findings": findings,
        "reset_at": iso(analysis.reset_at),
        "waiting_until": iso(analysis.waiting_until),
        "input_text": analysis.input_text,
        "placeholder": analysis.placeholder,
        "matches": [{"rule": m.rule, "state": m.state.value, "line": m.line, "source": m.source} for m in analysis.matches],
        "backend": backend_name,
        "patterns": backend.patterns.origin,
        "errors": errors,
    }
