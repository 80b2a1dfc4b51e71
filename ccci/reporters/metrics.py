"""Prometheus metrics of ``ccci watch``: an ordinary builtin plugin (``metrics``).

Off unless ``ccci.toml`` has::

    [metrics]
    listen = "127.0.0.1:9464"   # HOST:PORT; a non-loopback HOST also needs allow_remote = true

Then the watcher serves the Prometheus text format at ``http://HOST:PORT/metrics``
(any path answers) from :mod:`prometheus_client`'s HTTP server in a daemon thread,
started in ``ccci_configure`` and shut down in ``ccci_unconfigure``. Metrics are
read-only, so no token is asked for; they bind loopback unless the file says otherwise
(see :class:`ccci.config.MetricsSettings`). Each watcher has its own
:class:`prometheus_client.CollectorRegistry` (never the global one), kept in this
plugin's fleet stash.

Everything is counted from what the plugin API gives every plugin: the events
(``ccci_report_event``), the findings and duration of each tick (``ccci_tick_end``) and
the read-only agent views (``services.agent(name)``). The metrics, their labels and
their meaning are listed in the README ("Metrics"); :data:`AGENT_STATES` is the
``state`` label's value set.

A port that cannot be bound (in use, no such address) is one ``metrics_unavailable``
event; the watcher goes on supervising without metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ccci.hookspecs import hookimpl
from ccci.model import AgentState
from ccci.stash import StashKey

#: the values of ``ccci_agent_state``'s ``state`` label: the screen states, then the
#: runner's own (a restart in flight, ``ccci stop``, given up after an escalation)
AGENT_STATES: tuple[str, ...] = tuple(s.value for s in AgentState) + ("restarting", "stopped", "given_up")
#: remedy actions that (re)start an agent's process
RESTART_ACTIONS = frozenset({"restart", "resume", "fresh", "start"})
#: seconds; detection happens within a few ticks (1 s each), hysteresis included
DETECTION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
#: seconds; a tick is a tmux query, a process scan and the checks (tens of ms)
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: seconds; a message waits for the agent's turn to end (minutes, sometimes hours)
DELIVERY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0)


@dataclass
class Exporter:
    """One watcher's registry, metrics and HTTP server (kept in the fleet stash).

    ``first_seen``: ``(check, agent)`` -> monotonic seconds of the start of the first
    tick whose checks reported that finding (while they keep reporting it);
    ``detected``: the pairs whose detection latency was observed already.
    """

    registry: Any
    metrics: dict[str, Any]
    server: Any = None
    thread: Any = None
    tick_start_mono: float = 0.0
    usage_read_mono: float | None = None
    first_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    detected: set[tuple[str, str]] = field(default_factory=set)


EXPORTER = StashKey[Exporter]("exporter")  #: this watcher only (a registry is not JSON)


def build_registry(start_time_s: float) -> tuple[Any, dict[str, Any]]:
    """A fresh :class:`prometheus_client.CollectorRegistry` with every ccci metric.

    :param start_time_s: the watcher's start, seconds since the Unix epoch (UTC).
    :returns: ``(registry, {short name: metric})``.
    """
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

    reg = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=reg)  # process_cpu_seconds_total, process_resident_memory_bytes...
    m: dict[str, Any] = {
        "state": Gauge("ccci_agent_state", "1 for the state each agent is in, 0 for the others",
                       ["agent", "backend", "state"], registry=reg),
        "restarts": Counter("ccci_restarts", "Restart remedies (restart, resume, fresh, start) by the check that "
                            "asked and whether they were carried out", ["agent", "check", "outcome"], registry=reg),
        "remedies": Counter("ccci_remedies", "Remedies run, by action, check and outcome",
                            ["action", "check", "outcome"], registry=reg),
        "findings": Counter("ccci_findings", "Findings acted on or reported (finding events), by check",
                            ["check"], registry=reg),
        "detection": Histogram("ccci_detection_latency_seconds", "Seconds from the start of the first tick whose "
                               "checks reported a finding to the finding being acted on or reported",
                               ["check"], buckets=DETECTION_BUCKETS, registry=reg),
        "tick": Histogram("ccci_tick_duration_seconds", "Seconds one tick took (observation, checks, remedies)",
                          buckets=TICK_BUCKETS, registry=reg),
        "pings": Counter("ccci_handoff_pings_queued", "Handoff pings queued, by the agent pinged", ["agent"],
                         registry=reg),
        "messages": Counter("ccci_messages", "Messages finished, by kind (ping: a handoff ping) and outcome",
                            ["kind", "outcome"], registry=reg),
        "delivery": Histogram("ccci_message_delivery_latency_seconds", "Seconds from queueing a message to its "
                              "verified delivery, by kind (ping: a handoff ping)", ["kind"],
                              buckets=DELIVERY_BUCKETS, registry=reg),
        "waits": Counter("ccci_waits", "Wait remedies (a usage-limit reset, an API-error backoff), by check",
                         ["agent", "check"], registry=reg),
        "plugin_errors": Counter("ccci_plugin_errors", "Failed plugin calls (plugin_error events), by plugin and hook",
                                 ["plugin", "hook"], registry=reg),
        "plugins_disabled": Counter("ccci_plugins_disabled", "Plugins disabled after failing 5 ticks in a row",
                                    ["plugin"], registry=reg),
        "events": Counter("ccci_events", "Events logged, by kind", ["kind"], registry=reg),
        "cost": Gauge("ccci_agent_cost_today_usd", "USD the agent's recorded token usage costs on the current UTC "
                      "day (ccci/data/prices.toml and [prices]; unpriced models count 0)", ["agent"], registry=reg),
        "start": Gauge("ccci_watcher_start_time_seconds", "When this watcher started, seconds since the Unix epoch",
                       registry=reg),
        "context": Gauge("ccci_agent_context_fraction", "The agent's context use as a fraction of its model's window, "
                         "as its CLI recorded it (ccci.usage_watch)", ["agent"], registry=reg),
        "tokens": TokenCollector(),
    }
    reg.register(m["tokens"])
    m["start"].set(start_time_s)
    return reg, m


#: token kinds of ``ccci_agent_tokens_total`` -> the state store's counters
TOKEN_KINDS = {"input": "input_tokens", "output": "output_tokens", "cache_read": "cache_read_tokens",
               "cache_write": "cache_write_tokens"}
USAGE_REFRESH_S = 10.0  #: seconds between two reads of the usage table for the metrics


class TokenCollector:
    """``ccci_agent_tokens_total{agent,kind}``: tokens each agent's CLI recorded (all days,
    all models; ``kind`` in :data:`TOKEN_KINDS`). A custom collector because the state
    store keeps absolute totals (a CLI's records re-read give the same numbers), which a
    ``Counter`` cannot be set to; the value only grows while the records do."""

    def __init__(self) -> None:
        self.totals: dict[str, dict[str, int]] = {}

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        fam = CounterMetricFamily("ccci_agent_tokens", "Tokens used by the agent, as its CLI recorded them, by kind",
                                  labels=["agent", "kind"])
        for agent, kinds in sorted(dict(self.totals).items()):
            for kind, value in kinds.items():
                fam.add_metric([agent, kind], value)
        yield fam

    def describe(self):
        return []


def _refresh_usage(exp: Exporter, services) -> None:
    from ccci.usage import read_context

    totals: dict[str, dict[str, int]] = {}
    for r in services.usage_rows():
        t = totals.setdefault(r["agent"], dict.fromkeys(TOKEN_KINDS, 0))
        for kind, col in TOKEN_KINDS.items():
            t[kind] += int(r[col] or 0)
    exp.metrics["tokens"].totals = totals
    _update_cost(exp.metrics["cost"], services)
    for name in services.agents():
        rec = read_context(services.state, name)
        if rec and rec.get("fraction") is not None:
            exp.metrics["context"].labels(name).set(float(rec["fraction"]))


def _update_cost(gauge, services) -> None:
    """``ccci_agent_cost_today_usd``: today's (UTC) usage priced by :mod:`ccci.cost`."""
    from ccci.cost import PriceError, cost_today_rows, price_table, utc_day

    try:
        table = price_table(services.config)
    except PriceError:
        return
    spent = cost_today_rows(services.usage_rows(since_day=utc_day(services.now())), table, services.now())
    for agent in services.agents():
        gauge.labels(agent).set(spent.get(agent, 0.0))


@hookimpl
def ccci_configure(config, services):
    """Build the registry and start the HTTP server when ``[metrics] listen`` is set.

    A bind failure (``OSError``) is reported as one ``metrics_unavailable`` event."""
    settings = getattr(config, "metrics", None)
    if settings is None:
        return
    stash = services.stash()
    old = stash.get(EXPORTER)
    if old is not None:  # configured twice in one runner: keep one server
        _stop(old)
    reg, metrics = build_registry(services.now().timestamp())
    exp = Exporter(registry=reg, metrics=metrics, tick_start_mono=services.monotonic())
    stash[EXPORTER] = exp
    from prometheus_client import start_http_server

    try:
        exp.server, exp.thread = start_http_server(settings.port, addr=settings.host, registry=reg)
    except OSError as exc:
        services.emit("metrics_unavailable", f"metrics.listen {settings.listen}: cannot listen ({exc.strerror or exc}); "
                      "pick a free port in [metrics] listen; supervising without metrics", listen=settings.listen)
        return
    exp.thread.name = "ccci-metrics"


@hookimpl
def ccci_unconfigure(services):
    """Stop the HTTP server (the registry goes with the stash)."""
    exp = services.stash().get(EXPORTER)
    if exp is not None:
        _stop(exp)
        del services.stash()[EXPORTER]


def _stop(exp: Exporter) -> None:
    if exp.server is not None:
        exp.server.shutdown()
        exp.server.server_close()
        exp.server = None
    if exp.thread is not None:
        exp.thread.join(5)
        exp.thread = None


@hookimpl
def ccci_tick_start(mono, services):
    exp = services.stash().get(EXPORTER)
    if exp is not None:
        exp.tick_start_mono = mono


@hookimpl
def ccci_tick_end(findings, duration_s, services):
    exp = services.stash().get(EXPORTER)
    if exp is None:
        return
    m = exp.metrics
    m["tick"].observe(duration_s)
    present = {(f.check, f.agent or "") for f in findings}
    for key in present:
        exp.first_seen.setdefault(key, exp.tick_start_mono)
    for key in [k for k in exp.first_seen if k not in present]:  # the occurrence ended
        del exp.first_seen[key]
    exp.detected &= present
    for name in services.agents():
        view = services.agent(name)
        if view.given_up:
            state = "given_up"
        elif view.stopped:
            state = "stopped"
        elif view.pending_since_mono is not None:
            state = "restarting"
        else:
            state = getattr(view.analysis.state, "value", str(view.analysis.state))
        backend = getattr(view.backend, "name", "") or ""
        for s in AGENT_STATES:
            m["state"].labels(name, backend, s).set(1 if s == state else 0)
    now_mono = services.monotonic()
    if exp.usage_read_mono is None or now_mono - exp.usage_read_mono >= USAGE_REFRESH_S:
        exp.usage_read_mono = now_mono
        _refresh_usage(exp, services)


@hookimpl
def ccci_report_event(event, services):
    exp = services.stash().get(EXPORTER)
    if exp is None:
        return
    m, data, agent = exp.metrics, event.data or {}, event.agent or ""
    m["events"].labels(event.kind).inc()
    kind = event.kind
    if kind == "finding":
        check = str(data.get("check", ""))
        m["findings"].labels(check).inc()
        key = (check, agent)
        if key not in exp.detected:  # once per occurrence: a retried remedy logs its finding again
            exp.detected.add(key)
            since = exp.first_seen.get(key, exp.tick_start_mono)  # first seen this very tick
            m["detection"].labels(check).observe(max(0.0, services.monotonic() - since))
    elif kind in ("remedy", "remedy_failed"):
        action, check = str(data.get("action", "")), str(data.get("check", ""))
        outcome = "ok" if kind == "remedy" and data.get("ok") else ("failed" if kind == "remedy" else "not_run")
        m["remedies"].labels(action, check, outcome).inc()
        if action in RESTART_ACTIONS:
            m["restarts"].labels(agent, check, outcome).inc()
        elif action == "wait" and outcome == "ok":
            m["waits"].labels(agent, check).inc()
    elif kind == "ping_queued":
        m["pings"].labels(agent).inc()
    elif kind in ("message_delivered", "message_failed"):
        mkind = _message_kind(services, agent, data.get("message_id"))
        m["messages"].labels(mkind, "delivered" if kind == "message_delivered" else "failed").inc()
        if kind == "message_delivered" and isinstance(data.get("latency_s"), (int, float)):
            m["delivery"].labels(mkind).observe(max(0.0, float(data["latency_s"])))
    elif kind == "plugin_error":
        m["plugin_errors"].labels(str(data.get("plugin", "")), str(data.get("hook", ""))).inc()
    elif kind == "plugin_disabled":
        m["plugins_disabled"].labels(str(data.get("plugin", ""))).inc()


def _message_kind(services, agent: str, message_id: Any) -> str:
    """``ping`` for a handoff ping (its dedup key starts ``ping:``), else ``message``."""
    if not agent or message_id is None:
        return "message"
    for msg in services.recent_messages(agent, 50):
        if msg["id"] == message_id:
            return "ping" if str(msg.get("dedup_key") or "").startswith("ping:") else "message"
    return "message"
