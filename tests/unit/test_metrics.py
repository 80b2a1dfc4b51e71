"""``[metrics]``: validation of the key (one line naming the file, the key and the fix;
loopback unless ``allow_remote = true``), and the metrics plugin on a fake fleet."""
from __future__ import annotations

import socket
import textwrap
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ccci import config as config_mod
from ccci.config import ConfigError, MetricsSettings
from ccci.reporters import metrics as metrics_plugin
from ccci.testing.fakes import events, run_ticks

AGENT = '[[agents]]\nname = "a"\n'


def load(tmp_path, metrics_toml: str):
    path = tmp_path / "ccci.toml"
    path.write_text(textwrap.dedent(metrics_toml) + AGENT, encoding="utf-8")
    return config_mod.load(path, environ={})


def test_metrics_are_off_by_default(tmp_path):
    assert load(tmp_path, "").metrics is None
    assert load(tmp_path, "[metrics]\n").metrics is None


@pytest.mark.parametrize("listen, host, port", [
    ("127.0.0.1:9464", "127.0.0.1", 9464),
    ("localhost:9464", "127.0.0.1", 9464),
    ("[::1]:9100", "::1", 9100),
    ("127.0.0.2:1", "127.0.0.2", 1),
])
def test_loopback_listen_values_are_accepted(tmp_path, listen, host, port):
    m = load(tmp_path, f'[metrics]\nlisten = "{listen}"\n').metrics
    assert m == MetricsSettings(host=host, port=port, allow_remote=False)


def test_a_non_loopback_address_needs_allow_remote(tmp_path):
    m = load(tmp_path, '[metrics]\nlisten = "0.0.0.0:9464"\nallow_remote = true\n').metrics
    assert (m.host, m.port, m.allow_remote, m.listen) == ("0.0.0.0", 9464, True, "0.0.0.0:9464")


BAD = {
    "not host:port": ('listen = "9464"', "is not HOST:PORT"),
    "port out of range": ('listen = "127.0.0.1:70000"', "is not 1-65535"),
    "port zero": ('listen = "127.0.0.1:0"', "is not 1-65535"),
    "a host name": ('listen = "metrics.example.org:9464"', "is not an IP address"),
    "not a string": ("listen = 9464", "expected a string"),
    "all interfaces without allow_remote": ('listen = "0.0.0.0:9464"', "allow_remote = true"),
    "a LAN address without allow_remote": ('listen = "192.168.1.5:9464"', "not a loopback address"),
    "allow_remote not a bool": ('listen = "127.0.0.1:9464"\nallow_remote = "yes"', "expected true or false"),
    "unknown key": ('listen = "127.0.0.1:9464"\nport = 9464', "unknown key"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_metrics_value_is_one_line_naming_file_key_and_fix(tmp_path, case):
    body, expected = BAD[case]
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[metrics]\n{body}\n")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{(tmp_path / 'ccci.toml').resolve()}: metrics.")
    assert expected in msg


def _families(registry) -> dict:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def _value(families, name, **labels):
    for fam in families.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_the_plugin_counts_a_restart_and_the_agent_states(make_supervisor, fake_tmux, tmp_path):
    sup = make_supervisor(agents=["a", "b"], checks={"startup_grace": 0},
                          extra_toml='[metrics]\nlisten = "127.0.0.1:%d"\n' % _free_port())
    exp = sup.stashes.get("metrics", None)[metrics_plugin.EXPORTER]
    for pane in ("a", "b"):
        fake_tmux.pane(pane).append("> ")
    run_ticks(sup, 3)
    fake_tmux.pane("a").kill(signal=9)
    run_ticks(sup, 4)
    assert events(sup, "agent_resumed", "a") or events(sup, "agent_restarted_fresh", "a")
    fams = _families(exp.registry)
    states = [s for s in fams["ccci_agent_state"].samples]
    assert {s.labels["state"] for s in states} == set(metrics_plugin.AGENT_STATES)
    assert sum(s.value for s in states) == 2  # one state per agent
    assert _value(fams, "ccci_restarts_total", agent="a", check="process_death", outcome="ok") == 1
    assert _value(fams, "ccci_restarts_total", agent="b") is None
    assert _value(fams, "ccci_detection_latency_seconds_count", check="process_death") == 1
    assert _value(fams, "ccci_tick_duration_seconds_count") == 7
    assert _value(fams, "ccci_events_total", kind="remedy") >= 1
    # the server answers over HTTP, and is gone after ccci_unconfigure
    host, port = exp.server.server_address[:2]
    body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    assert "ccci_agent_state{" in body
    sup.calls.call_all("ccci_unconfigure", {"config": sup.config})
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2)


def test_no_metrics_table_no_server_and_no_cost(make_supervisor):
    sup = make_supervisor(agents=["a"])
    run_ticks(sup, 2)
    assert metrics_plugin.EXPORTER not in sup.stashes.get("metrics", None)


def test_a_port_in_use_is_one_event_and_supervision_goes_on(make_supervisor, fake_tmux):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sup = make_supervisor(agents=["a"], extra_toml=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        run_ticks(sup, 2)
    [ev] = events(sup, "metrics_unavailable")
    assert f"127.0.0.1:{port}" in ev["message"] and "[metrics] listen" in ev["message"]
    assert not events(sup, "plugin_error")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broken:
    """A check that raises on every call."""

    @staticmethod
    def ccci_check_agent(agent):
        raise RuntimeError("broken on purpose")


def test_usage_limit_wait_detection_latency_and_plugin_errors(make_supervisor, fake_tmux, fake_clock):
    from datetime import timedelta

    from ccci.clock import iso

    port = _free_port()
    sup = make_supervisor(agents=["a"], checks={"startup_grace": 0, "failure_threshold": 2},
                          plugins=[(Broken(), "broken")], extra_toml=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    exp = sup.stashes.get("metrics", None)[metrics_plugin.EXPORTER]
    run_ticks(sup, 1)
    reset = fake_clock.now() + timedelta(hours=2)
    fake_tmux.pane("a").append(
        "» next backlog item",
        f"● API Error: Request rejected (429) · usage limit reached|{int(reset.timestamp())} (resets {iso(reset)})",
        "✓ turn done in 0s")
    run_ticks(sup, 3)  # the fake clock moves 1 s per tick: seen on tick 1, acted on at tick 2
    assert [e["data"]["action"] for e in events(sup, "remedy")] == ["wait"]
    fams = _families(exp.registry)
    assert _value(fams, "ccci_waits_total", agent="a", check="usage_limit") == 1
    assert _value(fams, "ccci_remedies_total", action="wait", check="usage_limit", outcome="ok") == 1
    assert _value(fams, "ccci_detection_latency_seconds_count", check="usage_limit") == 1
    # failure_threshold 2: one tick (1 s of the fake clock) between first sight and action
    assert _value(fams, "ccci_detection_latency_seconds_sum", check="usage_limit") == pytest.approx(1.0)
    assert _value(fams, "ccci_detection_latency_seconds_bucket", check="usage_limit", le="0.5") == 0
    assert _value(fams, "ccci_detection_latency_seconds_bucket", check="usage_limit", le="1.0") == 1
    n_errors = len([e for e in events(sup, "plugin_error") if e["data"]["plugin"] == "broken"])
    assert n_errors >= 4
    assert _value(fams, "ccci_plugin_errors_total", plugin="broken", hook="ccci_check_agent") == n_errors
    assert _value(fams, "ccci_restarts_total") is None  # a usage limit is waited out, never restarted


def test_a_queued_message_is_counted_as_a_message_not_a_ping(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], checks={"startup_grace": 0},
                          extra_toml=f'[metrics]\nlisten = "127.0.0.1:{_free_port()}"\n')
    exp = sup.stashes.get("metrics", None)[metrics_plugin.EXPORTER]
    fake_tmux.pane("a").append("> ")
    sup.queue_message("a", "please rebase", None)
    sup.queue_message("a", "ccci: new claim pushed", "ping:abc123:a")
    run_ticks(sup, 6)
    fams = _families(exp.registry)
    assert _value(fams, "ccci_messages_total", kind="message", outcome="delivered") == 1
    assert _value(fams, "ccci_messages_total", kind="ping", outcome="delivered") == 1
    assert _value(fams, "ccci_message_delivery_latency_seconds_count", kind="ping") == 1
