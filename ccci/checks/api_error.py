"""API error left on screen after the CLI's own retries (Claude Code 2.1.197 retries a
429/529 ten times over about 200 s, then prints ``● API Error: ...``; opencode's turn
ends with the error recorded, see :mod:`ccci.backends.opencode`).

Remedy, per outage (the API errors of one agent from the first until a healthy turn):

* **An announced reset** (``reset_at``: the screen's reading, a hook's, or a backend's
  finding, e.g. opencode's ``retry-after``/``x-ratelimit-reset`` response headers):
  wait until it (+ :data:`RESET_SLACK_S`), then one ``continue``, as for a usage limit.
  The outage clock starts again at the reset: the server said how long it would last.
* **Otherwise, back off exponentially:** the ``n``-th ``continue`` of the outage (n = 1,
  2, ...) comes ``api_error_backoff * 2**(n-1)`` seconds after the error was seen again,
  at most ``api_error_backoff_max`` (defaults: 60, 120, 240, 480, 900, 900 s).
* **At most one outstanding:** a ``continue`` is answered when the agent went busy and
  that turn ended (a CLI that exits at every turn end: a new run started and ended).
  Until then no other ``continue`` is sent, and none is typed into a busy agent, a
  dialog, or a box that already holds text: the scheduled ``continue`` re-checks the
  agent's state when it is due (:data:`CONTINUE`).
* **Escalate once** (the ``escalate`` remedy: a person is told, the agent is given up)
  when, at a decision, ``api_error_max_attempts`` continues of the outage were answered
  by the error again, or the outage has lasted ``api_error_escalate_after`` seconds.
* **Authentication, billing and a missing model** (``data["kind"] == "auth"``: a screen
  rule whose id ends in ``.auth`` or that captured ``auth``; a Claude Code
  ``StopFailure`` hook whose ``error`` is in :data:`AUTH_ERRORS`; opencode's 401/403):
  no ``continue`` can fix them; escalate at once (docs/errors.md).
* **A healthy turn ends the outage** (the back-off starts again at
  ``api_error_backoff``): the agent was busy and its turn ended idle (input box back, no
  error); for a CLI that exits at every turn end: the run that answered the
  ``continue`` ended without an API error and another one started.

State is kept in this plugin's stash (:data:`OUTAGE`, persisted: a watcher restart does
not forget an outstanding ``continue``).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ccci.checks import screen_finding
from ccci.clock import iso, parse_utc
from ccci.hookspecs import hookimpl
from ccci.model import AgentState, Finding, Remedy, RemedyResult
from ccci.stash import StashKey

CHECK = "api_error"
VERIFY_S = 20.0  #: checks stay paused this long after 'continue' (the turn it starts must answer first)
RESET_SLACK_S = 5  #: s: resume a little after an announced reset (as :mod:`ccci.checks.usage_limit`)
#: the remedy action this plugin carries out itself: send ``continue`` if nothing is outstanding
CONTINUE = "api_error_continue"
#: the outage of one agent (JSON): ``since`` (ISO-8601 UTC: start of the outage clock),
#: ``attempts`` (continues sent), ``sent`` (the outstanding continue: ``{"at": ISO UTC,
#: "pid": pane pid when sent, "busy": went busy since, "run_pid": the pid of the run
#: that took it}``, or ``None``), ``answered_pid`` (the run that answered the last one),
#: ``escalated`` (bool)
OUTAGE = StashKey[dict]("outage", persist=True)
#: the state this check saw on the previous tick (a healthy turn is BUSY, then IDLE)
LAST_STATE = StashKey[str]("last_state")
#: states in which nothing may be typed: the agent is working, a dialog asks, or the box
#: holds text already (a 'continue' behind it would be sent as one message with it)
NEVER_TYPE_INTO = (AgentState.BUSY, AgentState.WAITING_INPUT, AgentState.UNSENT_INPUT)
#: Claude Code 2.1.332's assistant-message ``error`` kinds (the ``StopFailure`` hook's
#: ``error``) that a person must fix: credentials, plan, account, model (its bundle's enum
#: ``authentication_failed, oauth_org_not_allowed, account_on_hold, verification_required,
#: billing_error, rate_limit, overloaded, invalid_request, model_not_found, server_error,
#: unknown, max_output_tokens, cloud_credential_error``; docs/errors.md)
AUTH_ERRORS = frozenset({"authentication_failed", "oauth_org_not_allowed", "account_on_hold", "verification_required",
                         "billing_error", "model_not_found", "cloud_credential_error"})


def error_kind(analysis: Any) -> str:
    """``"auth"`` when the API error needs a person (see :data:`AUTH_ERRORS`), else ``"retry"``."""
    for m in analysis.matches:
        if m.state == AgentState.API_ERROR and (m.rule.endswith(".auth") or m.groups.get("auth")
                                                or m.groups.get("error_kind") in AUTH_ERRORS):
            return "auth"
    return "retry"


def backoff_s(attempts: int, settings: dict) -> float:
    """Seconds to wait before the ``attempts + 1``-th ``continue`` of an outage.

    :param attempts: continues already sent in this outage (0 for the first wait).
    :param settings: thresholds: ``api_error_backoff`` (the first wait, s) doubled per
        attempt, at most ``api_error_backoff_max`` (s).
    """
    base, cap = float(settings["api_error_backoff"]), float(settings["api_error_backoff_max"])
    return min(cap, base * 2 ** min(attempts, 30))


@hookimpl
def ccci_check_agent(agent, pane, analysis, backend, now, stash):
    _follow(agent, pane, analysis, backend, stash)
    reset = analysis.reset_at if analysis.state == AgentState.API_ERROR else None
    if analysis.state != AgentState.API_ERROR:
        return None
    kind = error_kind(analysis)
    return screen_finding(CHECK, agent, analysis, AgentState.API_ERROR,
                          "API error after the CLI's retries" if kind == "retry" else
                          "authentication, billing or model error: a person must fix it",
                          kind=kind, **({"reset_at": iso(reset)} if reset else {}))


def _follow(agent: Any, pane: Any, analysis: Any, backend: Any, stash: Any) -> None:
    """Every tick: is the outstanding continue answered? was there a healthy turn?"""
    state = analysis.state
    prev = stash.get(LAST_STATE)
    stash[LAST_STATE] = state.value
    out = stash.get(OUTAGE)
    if not out:
        return
    sent = out.get("sent")
    changed = False
    if getattr(backend, "exits_at_turn_end", False):
        # each turn is a run of its own (opencode): a new pid took the continue; a later
        # one started without an API error decided in between: that turn was healthy
        alive = pane is not None and not pane.dead
        if sent and alive and pane.pid != sent.get("pid") and not sent.get("run_pid"):
            sent["run_pid"], changed = pane.pid, True
        elif sent and sent.get("run_pid") and alive and pane.pid not in (sent["pid"], sent["run_pid"]):
            stash.pop(OUTAGE)
            return
    elif sent:
        if state == AgentState.BUSY and not sent.get("busy"):
            sent["busy"], changed = True, True
        elif sent.get("busy") and state not in (AgentState.BUSY, AgentState.UNKNOWN):
            out["sent"], changed = None, True  # went busy, and that turn ended: answered
            if state == AgentState.IDLE:
                stash.pop(OUTAGE)  # ... without an error: a healthy turn
                return
    elif prev == AgentState.BUSY.value and state == AgentState.IDLE:
        stash.pop(OUTAGE)  # a turn (not ours: a message, a person) ended healthy
        return
    if changed:
        stash[OUTAGE] = out


@hookimpl
def ccci_choose_remedy(finding, agent, settings, now, stash):
    if finding.check != CHECK or agent is None:
        return None
    if finding.data.get("kind") == "auth":
        return Remedy("escalate", agent.name, Finding(
            CHECK, agent.name, f"the API refuses the credentials, plan or model; retrying cannot fix it: "
            f"{finding.evidence[:200]}", evidence=finding.evidence, data=dict(finding.data)))
    out = stash.get(OUTAGE)
    if not out or out.get("escalated"):
        # a new outage (an escalated one is over once a person started the agent again)
        out = {"since": iso(now), "attempts": 0, "sent": None, "escalated": False}
    sent = out.get("sent")
    if sent and agent.backend.exits_at_turn_end and agent.pid != sent.get("pid"):
        out["sent"] = sent = None  # the run that took the continue ended with this error: answered
    failed = int(out["attempts"]) - (1 if sent else 0)  # continues answered by the error again
    max_attempts = int(settings["api_error_max_attempts"])
    limit = float(settings["api_error_escalate_after"])
    reset = finding.data.get("reset_at")
    reset_at = parse_utc(reset) if reset else None
    if failed < max_attempts and reset_at is not None and reset_at > now and not sent:
        at = reset_at + timedelta(seconds=RESET_SLACK_S)
        out["since"] = iso(at)  # the outage clock starts at the announced reset
        stash[OUTAGE] = out
        return _wait(agent.name, finding, at, f"the announced reset {iso(reset_at)}", out)
    lasted = max(0.0, (now - parse_utc(out["since"])).total_seconds())
    if failed >= max_attempts or lasted >= limit:
        out["escalated"] = True
        stash[OUTAGE] = out
        why = (f"API errors for {lasted:.0f}s, {failed} continue(s) answered by the error again "
               f"(api_error_max_attempts {max_attempts}, api_error_escalate_after {limit:.0f}s): {finding.evidence[:160]}")
        return Remedy("escalate", agent.name, Finding(CHECK, agent.name, why, evidence=finding.evidence,
                                                      data=dict(finding.data)))
    stash[OUTAGE] = out
    if sent:
        return None  # a continue is outstanding (typed, not answered yet): never a second one
    wait = backoff_s(out["attempts"], settings)
    return _wait(agent.name, finding, now + timedelta(seconds=wait), f"back-off {wait:.0f}s", out)


def _wait(name: str, finding: Finding, at: datetime, why: str, out: dict) -> Remedy:
    return Remedy("wait", name, finding, not_before=at,
                  data={"then": CONTINUE, "text": "continue", "verify_s": VERIFY_S, "why": why,
                        "attempt": out["attempts"] + 1})


@hookimpl
def ccci_run_remedy(remedy, services, stash):
    """The scheduled ``continue``: sent through the ``send`` remedy only if no other one
    is outstanding and the agent shows the error (not busy, no dialog, no draft)."""
    if remedy.action != CONTINUE or remedy.agent is None:
        return None
    name = remedy.agent
    view = services.agent(name)
    out = stash.get(OUTAGE) or {"since": iso(services.now()), "attempts": 0, "sent": None, "escalated": False}
    state = view.analysis.state
    if out.get("escalated"):
        return RemedyResult(True, "not sent: escalated", pending=False)
    if out.get("sent"):
        return RemedyResult(True, "not sent: a continue is outstanding (not answered yet)", pending=False)
    if state in NEVER_TYPE_INTO:
        return RemedyResult(True, f"not sent: the agent is {state.value}", pending=False)
    pane = services.pane(name)
    exited = view.backend.exits_at_turn_end and (pane is None or pane.dead)
    if state != AgentState.API_ERROR and not exited:
        return RemedyResult(True, f"not sent: the agent reads {state.value}, not an API error", pending=False)
    pid = view.pid
    result = services.run_remedy(Remedy("send", name, remedy.reason, text=remedy.text or "continue",
                                        data={"now": True}))
    if result is not None and result.ok:
        out["attempts"] = int(out.get("attempts", 0)) + 1
        out["sent"] = {"at": iso(services.now()), "pid": pid, "busy": False, "run_pid": None}
        stash[OUTAGE] = out
    return result
