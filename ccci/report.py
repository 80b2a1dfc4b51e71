"""The morning report's numbers, computed from the state database (no rendering here).

:func:`build_report` reads the event log, the message queue, the usage table and the
phase state of one fleet for a period and returns one JSON-able dict; ``ccci report``
(:mod:`ccci.commands.report`) renders it as a table, JSON, HTML or a timeline picture,
and other views (a web page) can reuse it. Nothing here reads the environment or a
pane: events were redacted when they were logged (:mod:`ccci.redact`).

Where each number comes from:

* **time in each state**: ``state_changed`` events (:mod:`ccci.reporters.states`); a
  state holds until the agent's next one. The state at the start of the period is the
  agent's last ``state_changed`` before it. A watcher that stopped (``watcher_stopping``)
  leaves every agent ``unwatched`` until the next watcher logs its state; so is the time
  before an agent's first ``state_changed``.
* **uptime %**: time in a state with the agent's process running (every state but
  :data:`DOWN_STATES`) over the watched time (the period minus ``unwatched``).
* **restarts**: every launch event (``agent_started``, ``agent_resumed``,
  ``agent_restarted_fresh``) by cause: the check named at the start of its ``reason``
  (``process_death``, ``fatal_error``, ``stall``...), else the reason with its numbers
  replaced by ``N`` (``not running at watcher start``, ``ccci start``...).
* **remedies**: every ``remedy`` and ``remedy_failed`` event by ``action (check)``;
  fleet remedies (handoff pings) under the fleet.
* **time lost**: in ``usage_limit``, ``context_limit`` and ``api_error`` states; to a
  stall from the time the screen went quiet (``quiet_s``, or the ``WAITING-UNTIL``
  deadline) until the agent is busy again or relaunched.
* **handoffs**: ``ping_queued`` events (a ``claim(``/``review(`` commit seen on origin),
  by subject prefix; the latency is from that event to the verified delivery of its ping
  (the message's ``done_at``).
* **escalations**: ``escalation`` and ``escalation_repeated`` events.
* **tokens and cost**: :meth:`ccci.state.StateStore.usage_rows` for the UTC days the
  period touches, priced by :mod:`ccci.cost` (whole days: the usage table is per day).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from ccci.clock import UTC, iso_ms, parse_utc
from ccci.cost import PriceTable, costs, price_table, utc_day

#: states in which the agent's process is not running under supervision
DOWN_STATES = frozenset({"exited", "restarting", "stopped", "given_up", "unwatched"})
#: states whose time is counted as lost to a limit
LIMIT_STATES = ("usage_limit", "context_limit", "api_error")
LAUNCH_KINDS = ("agent_started", "agent_resumed", "agent_restarted_fresh")
REMEDY_KINDS = ("remedy", "remedy_failed")
ESCALATION_KINDS = ("escalation", "escalation_repeated")
WATCHER_GONE_KINDS = ("watcher_stopping", "watcher_stopped")

_CAUSE_RE = re.compile(r"^([a-z][a-z0-9_]*):")


def parse_since(text: str, now: datetime) -> datetime:
    """``12h``, ``90m``, ``2d``, ``30s`` before ``now``, or an ISO-8601 UTC time.

    :raises ValueError: naming the accepted forms.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if m:
        n, unit = float(m.group(1)), m.group(2)
        return now - timedelta(seconds=n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])
    try:
        return parse_utc(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: expected a duration (30m, 12h, 2d) or an ISO-8601 UTC time "
                         "(2026-01-31T08:00:00Z)") from None


def launch_cause(reason: str) -> str:
    """The cause of a launch from its ``reason``: the leading check name, else the
    reason with numbers as ``N`` (at most 60 characters)."""
    m = _CAUSE_RE.match(reason or "")
    if m:
        return m.group(1)
    return re.sub(r"\d+", "N", (reason or "unknown").strip())[:60] or "unknown"


def _intervals(initial: str, changes: list[tuple[datetime, str]], since: datetime,
               until: datetime) -> list[tuple[datetime, datetime, str]]:
    """Merge a state at ``since`` and timed changes into contiguous intervals."""
    out: list[tuple[datetime, datetime, str]] = []
    cur_t, cur_s = since, initial
    for t, s in changes:
        t = min(max(t, since), until)
        if s == cur_s:
            continue
        if t > cur_t:
            out.append((cur_t, t, cur_s))
        cur_t, cur_s = max(cur_t, t), s
    if until > cur_t:
        out.append((cur_t, until, cur_s))
    merged: list[tuple[datetime, datetime, str]] = []
    for iv in out:
        if merged and merged[-1][2] == iv[2] and merged[-1][1] == iv[0]:
            merged[-1] = (merged[-1][0], iv[1], iv[2])
        else:
            merged.append(iv)
    return merged


def _union_seconds(spans: list[tuple[datetime, datetime]]) -> float:
    total, end = 0.0, None
    for a, b in sorted(spans):
        if end is not None and a < end:
            a = end
        if b > a:
            total += (b - a).total_seconds()
            end = b if end is None else max(end, b)
    return total


def _latency_stats(values: list[float]) -> dict[str, Any]:
    vs = sorted(values)
    if not vs:
        return {"count": 0, "median_s": None, "max_s": None}
    mid = len(vs) // 2
    med = vs[mid] if len(vs) % 2 else (vs[mid - 1] + vs[mid]) / 2
    return {"count": len(vs), "median_s": round(med, 3), "max_s": round(vs[-1], 3)}


def build_report(store: Any, config: Any, since: datetime, until: datetime | None = None,
                 prices: PriceTable | None = None) -> dict[str, Any]:
    """Everything ``ccci report`` shows for ``since <= t < until`` (UTC; ``until``
    ``None``: now), as one JSON-able dict.

    :param store: the fleet's :class:`ccci.state.StateStore` (read only).
    :param config: its :class:`ccci.config.FleetConfig` (agents, phases, ``[prices]``).
    :param prices: the price table (default: :func:`ccci.cost.price_table` of ``config``).
    :returns: ``{"fleet", "since", "until", "period_s", "agents": {name: {...}},
        "fleet_remedies", "handoffs", "phases", "cost", "event_counts", "markers"}``;
        times are ISO-8601 UTC strings, durations seconds, costs USD (``None`` when a
        model is unpriced and nothing else was priced). The README ("ccci report")
        lists every field.
    """
    from ccci import phases as ph

    until = until or datetime.now(UTC)
    prices = prices or price_table(config)
    names = [a.name for a in config.agents]
    events = store.events_between(since, until)
    counts: dict[str, int] = {}
    for e in events:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    last_state = store.last_events_before(since, "state_changed")
    initial = {a: e["data"].get("state", "unknown") for a, e in last_state.items()}
    # a watcher that stopped before the period, and no state logged for the agent since
    gone = store.last_event_before(since, WATCHER_GONE_KINDS)
    if gone is not None:
        for a in list(initial):
            if last_state[a]["id"] < gone["id"]:
                initial[a] = "unwatched"

    changes: dict[str, list[tuple[datetime, str]]] = {a: [] for a in names}
    agents: dict[str, dict[str, Any]] = {}
    fleet_remedies: dict[str, Any] = {"total": 0, "failed": 0, "by_cause": {}, "event_ids": []}
    handoffs: dict[str, int] = {}
    markers: list[dict[str, Any]] = []
    stall_spans: dict[str, list[tuple[datetime, datetime | None]]] = {a: [] for a in names}
    wake_marks: dict[str, list[datetime]] = {a: [] for a in names}
    pings: dict[str, list[float]] = {a: [] for a in names}
    pending_pings: dict[str, int] = {a: 0 for a in names}
    ping_msgs: dict[int, tuple[str, datetime]] = {}  # message id -> (agent pinged, when the push was seen)
    delivered_at: dict[int, datetime] = {}

    def agent_rec(name: str) -> dict[str, Any]:
        if name not in agents:
            agents[name] = {
                "restarts": {"total": 0, "by_cause": {}, "event_ids": []},
                "remedies": {"total": 0, "failed": 0, "by_cause": {}, "event_ids": []},
                "escalations": {"total": 0, "event_ids": [], "reasons": []},
                "pings_received": 0,
            }
            changes.setdefault(name, [])
            stall_spans.setdefault(name, [])
            wake_marks.setdefault(name, [])
            pings.setdefault(name, [])
            pending_pings.setdefault(name, 0)
        return agents[name]

    for n in names:
        agent_rec(n)
    for e in events:
        kind, agent, at, data = e["kind"], e["agent"], parse_utc(e["at"]), e["data"]
        if kind == "state_changed" and agent:
            agent_rec(agent)
            changes[agent].append((at, str(data.get("state", "unknown"))))
            if data.get("state") == "busy":
                wake_marks[agent].append(at)
        elif kind in WATCHER_GONE_KINDS:
            for a in list(changes):
                changes[a].append((at, "unwatched"))
        elif kind in LAUNCH_KINDS and agent:
            r = agent_rec(agent)["restarts"]
            cause = launch_cause(str(data.get("reason", "")))
            r["total"] += 1
            r["by_cause"][cause] = r["by_cause"].get(cause, 0) + 1
            r["event_ids"].append(e["id"])
            wake_marks[agent].append(at)
            markers.append({"at": e["at"], "agent": agent, "kind": "restart", "label": cause, "event_id": e["id"]})
        elif kind in REMEDY_KINDS:
            r = agent_rec(agent)["remedies"] if agent else fleet_remedies
            cause = f"{data.get('action', '?')} ({data.get('check', '?')})"
            r["total"] += 1
            r["failed"] += int(kind == "remedy_failed" or data.get("ok") is False)
            r["by_cause"][cause] = r["by_cause"].get(cause, 0) + 1
            r["event_ids"].append(e["id"])
            if agent and data.get("action") not in ("restart", "resume", "fresh", "start"):
                markers.append({"at": e["at"], "agent": agent, "kind": "remedy", "label": cause, "event_id": e["id"]})
        elif kind in ESCALATION_KINDS:
            r = agent_rec(agent)["escalations"] if agent else None
            if r is not None:
                r["total"] += 1
                r["event_ids"].append(e["id"])
                r["reasons"].append(e["message"][:200])
            markers.append({"at": e["at"], "agent": agent, "kind": "escalation", "label": e["message"][:60],
                            "event_id": e["id"]})
        elif kind == "finding" and agent and data.get("check") == "stall":
            before = float(data.get("quiet_s") or data.get("overdue_s") or 0.0)
            stall_spans[agent].append((at - timedelta(seconds=before), at))
        elif kind == "ping_queued" and agent:
            subject = str(data.get("subject", ""))
            prefix = subject.split("(", 1)[0] + "(" if "(" in subject else "other"
            handoffs[prefix] = handoffs.get(prefix, 0) + 1
            agent_rec(agent)["pings_received"] += 1
            markers.append({"at": e["at"], "agent": agent, "kind": "commit", "label": subject[:60],
                            "sha": str(data.get("sha", ""))[:10], "event_id": e["id"]})
            msgs = store.message_by_key(f"ping:{data.get('sha', '')}:{agent}")
            for m in msgs:
                ping_msgs[int(m["id"])] = (agent, at)
            if not msgs:
                pending_pings[agent] += 1  # its message is gone from the queue: not known delivered
        elif kind == "message_delivered" and data.get("message_id") is not None:
            delivered_at[int(data["message_id"])] = at

    for mid, (agent, at) in ping_msgs.items():
        if mid in delivered_at:  # the delivery's event: milliseconds, as the ping_queued event
            pings[agent].append(max(0.0, (delivered_at[mid] - at).total_seconds()))
        else:
            pending_pings[agent] += 1
    # usage: whole UTC days the period touches
    rows = [r for r in store.usage_rows(since_day=utc_day(since)) if r["day"] <= utc_day(until)]
    money = costs(rows, prices)
    period_s = max(0.0, (until - since).total_seconds())
    for name, rec in agents.items():
        ivs = _intervals(initial.get(name, "unwatched"), changes.get(name, []), since, until)
        in_state: dict[str, float] = {}
        for a, b, s in ivs:
            in_state[s] = in_state.get(s, 0.0) + (b - a).total_seconds()
        watched = period_s - in_state.get("unwatched", 0.0)
        up = sum(v for s, v in in_state.items() if s not in DOWN_STATES)
        lost = {s: round(in_state.get(s, 0.0), 3) for s in LIMIT_STATES}
        spans = []
        for a, b in stall_spans.get(name, []):
            ends = [t for t in wake_marks.get(name, []) if t > b]
            spans.append((max(a, since), min(min(ends) if ends else until, until)))
        lost["stall"] = round(_union_seconds(spans), 3)
        rec.update({
            "time_in_state_s": {s: round(v, 3) for s, v in sorted(in_state.items(), key=lambda kv: -kv[1])},
            "uptime_pct": round(100.0 * up / watched, 2) if watched > 0 else None,
            "watched_s": round(watched, 3),
            "timeline": [[iso_ms(a), iso_ms(b), s] for a, b, s in ivs],
            "time_lost_s": lost,
            "handoff_latency": {**_latency_stats(pings.get(name, [])), "undelivered": pending_pings.get(name, 0)},
            "tokens": money["tokens_by_agent"].get(name, {}),
            "cost_usd": round(money["by_agent"][name], 6) if name in money["by_agent"] else 0.0,
            "cost_by_day_usd": {d: round(v, 6) for d, v in money["by_agent_day"].get(name, {}).items()},
            "configured": name in names,
        })
    order = ph.order(config, store) if config is not None else []
    cur = ph.current(config, store) if order else None
    phase_events = [{"at": e["at"], "kind": e["kind"], "message": e["message"]} for e in events
                    if e["kind"] in ("phase_moved", "phase_complete", "sequence_complete")]
    done = order.index(cur) if cur in order else (len(order) if order else 0)
    return {
        "fleet": config.name,
        "since": iso_ms(since),
        "until": iso_ms(until),
        "period_s": round(period_s, 3),
        "agents": agents,
        "fleet_remedies": fleet_remedies,
        "handoffs": handoffs,
        "phases": {"order": order, "current": cur, "completed": done, "total": len(order), "events": phase_events},
        "cost": {"total_usd": round(money["total_usd"], 6), "unpriced_models": money["unpriced"],
                 "prices_source": prices.source, "days": sorted({r["day"] for r in rows})},
        "event_counts": dict(sorted(counts.items())),
        "markers": markers,
    }
