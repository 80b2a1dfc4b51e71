"""A check that hangs is interrupted after check_timeout (UNKNOWN), the daemon keeps
supervising, and after 5 hanging ticks the plugin is disabled with an event."""
from __future__ import annotations

import time

from ccci import hookimpl


class HangingCheck:
    calls = 0

    @hookimpl
    def ccci_check_agent(self, agent):
        HangingCheck.calls += 1
        time.sleep(30)


def test_hanging_check_is_interrupted_then_disabled(make_supervisor, fake_clock):
    sup = make_supervisor(plugins=[(HangingCheck(), "hangs")], checks={"check_timeout": 0.2})
    sup.adopt()
    t0 = time.monotonic()
    for _ in range(6):
        sup.tick()
        fake_clock.advance(1)
    took = time.monotonic() - t0
    errors = [e for e in sup.store.events() if e["kind"] == "plugin_error" and e["data"].get("plugin") == "hangs"]
    assert errors and "PluginTimeout" in errors[0]["message"]
    assert [e for e in sup.store.events() if e["kind"] == "plugin_disabled" and e["data"].get("plugin") == "hangs"]
    assert sup.pm.get_plugin("hangs") is None
    assert took < 6 * 0.2 * len(sup.agents) + 3, f"ticks took {took:.1f}s: the hang was not cut short"
    # supervision went on: the agents were started and are still being checked
    assert all(rt.pid for rt in sup.agents.values())
