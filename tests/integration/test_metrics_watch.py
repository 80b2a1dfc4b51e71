"""``[metrics] listen``: ``ccci watch`` on a real tmux fleet serves Prometheus text that
a scraper reads over HTTP while the fleet runs (handoff pings, a kill -9, shutdown)."""
from __future__ import annotations

import signal
import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(url: str) -> list | None:
    """Every sample of the endpoint, or ``None`` while it does not answer."""
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except (urllib.error.URLError, ConnectionError, OSError):
        return None
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def _value(samples, name: str, **labels) -> float | None:
    vals = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(vals) if vals else None


def test_watch_serves_metrics_a_scraper_can_read(fleet):
    port = _free_port()
    with open(fleet.root / "ccci.toml", "a") as f:
        f.write(f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    url = f"http://127.0.0.1:{port}/metrics"
    started = time.time()
    watcher = fleet.watch("--quiet")

    # every agent is in exactly one state, and both end up idle after the handoff round
    # (a claim pinged to the adversary, its review pinged to the builder)
    def idle_after_handoff():
        s = _scrape(url)
        if s and (_value(s, "ccci_message_delivery_latency_seconds_count", kind="ping") or 0) >= 2 \
                and all(_value(s, "ccci_agent_state", agent=a, state="idle") == 1 for a in fleet.AGENTS):
            return s
        return None

    samples = fleet.wait(idle_after_handoff, 60, poll=0.5)
    assert samples, f"no idle fleet with 2 delivered pings in the metrics; last scrape: {_scrape(url)}"
    states = [s for s in samples if s.name == "ccci_agent_state"]
    assert sum(s.value for s in states) == len(fleet.AGENTS)
    for agent in fleet.AGENTS:
        assert sum(s.value for s in states if s.labels["agent"] == agent) == 1
        assert {s.labels["backend"] for s in states if s.labels["agent"] == agent} == {"scripted"}
    assert _value(samples, "ccci_handoff_pings_queued_total") == 2
    assert _value(samples, "ccci_handoff_pings_queued_total", agent="adversary") == 1
    assert _value(samples, "ccci_messages_total", kind="ping", outcome="delivered") == 2
    assert 0 < _value(samples, "ccci_message_delivery_latency_seconds_sum", kind="ping") < 60
    assert _value(samples, "ccci_restarts_total") is None  # nothing died yet
    assert started - 5 <= _value(samples, "ccci_watcher_start_time_seconds") <= time.time()
    ticks = _value(samples, "ccci_tick_duration_seconds_count")
    assert ticks >= 3
    assert 0 < _value(samples, "ccci_tick_duration_seconds_sum") / ticks < 1.0  # a tick is well under its second
    assert _value(samples, "ccci_plugin_errors_total") is None
    assert _value(samples, "process_resident_memory_bytes") > 0

    # kill -9 of the builder: one restart for process_death, detected within a tick
    assert fleet.wait(lambda: fleet.settled(), 40), "fleet did not settle"
    assert fleet.kill_and_wait_restart("builder"), "builder was not restarted"

    def restart_counted():
        s = _scrape(url)
        return s if s and _value(s, "ccci_restarts_total", agent="builder", check="process_death") else None

    samples = fleet.wait(restart_counted, 10, poll=0.2)
    assert samples, "the restart is not in the metrics"
    assert _value(samples, "ccci_restarts_total", agent="builder", check="process_death", outcome="ok") == 1
    assert _value(samples, "ccci_restarts_total", agent="adversary") is None
    assert _value(samples, "ccci_remedies_total", check="process_death", outcome="ok") == 1
    assert _value(samples, "ccci_detection_latency_seconds_count", check="process_death") == 1
    # process death is immediate (no hysteresis): acted on in the tick that saw it
    assert _value(samples, "ccci_detection_latency_seconds_sum", check="process_death") < 1.0
    assert _value(samples, "ccci_events_total", kind="agent_resumed") == 1
    # the count of series is what the README says: 13 state series per agent
    assert len(states) == 13 * len(fleet.AGENTS)

    # shutdown stops the server
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(15) == 0
    assert _scrape(url) is None
