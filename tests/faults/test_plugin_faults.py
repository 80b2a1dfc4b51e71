"""Scenario 6: a third-party check (the fleet's ``ccci_plugins.py``, loaded like any
local plugin) that raises every tick, hangs, or returns garbage. The watcher keeps
supervising (a killed agent is restarted), reports the plugin and disables it after 5
ticks with a ``plugin_disabled`` event."""
from __future__ import annotations


import pytest

pytestmark = [pytest.mark.faults, pytest.mark.tmux, pytest.mark.slow]

PLUGINS = {
    "raises": "def ccci_check_agent(agent):\n    raise RuntimeError('broken check')\n",
    "hangs": "import time\n\ndef ccci_check_agent(agent):\n    time.sleep(3600)\n",
    "garbage": "def ccci_check_agent(agent):\n    return {'state': 'ok', 'agent': agent.name}\n",
    "garbage_list": "def ccci_check_fleet(snapshot):\n    return ['stall', 42]\n",
}
EXPECT = {"raises": "RuntimeError", "hangs": "PluginTimeout", "garbage": "PluginResultError",
          "garbage_list": "PluginResultError"}


@pytest.mark.parametrize("kind", sorted(PLUGINS))
def test_a_faulty_check_is_disabled_and_supervision_goes_on(make_fleet, trials, kind):
    t = trials("6", "Plugin faults")
    fleet = make_fleet(checks={"check_timeout": 0.5}, agents={"handoff_role": "other"})
    (fleet.root / "ccci_plugins.py").write_text(PLUGINS[kind])
    w = fleet.watch("--quiet")
    disabled = fleet.wait(lambda: fleet.events("plugin_disabled"), 40)
    assert disabled and disabled[0]["data"]["plugin"] == "ccci_plugins"
    errors = [e for e in fleet.events("plugin_error") if e["data"].get("plugin") == "ccci_plugins"]
    assert errors and all(EXPECT[kind] in e["message"] for e in errors), errors[:2]
    assert fleet.wait(lambda: all(fleet.store.agent(a).state == "running" for a in fleet.AGENTS), 20)
    assert fleet.kill_and_wait_restart("builder", 15), "supervision stopped"
    n_err = len(fleet.events("plugin_error"))
    fleet.wait(lambda: False, 1.5)
    assert len(fleet.events("plugin_error")) == n_err, "a disabled plugin was still called"
    assert w.poll() is None and len(fleet.events("plugin_disabled")) == 1
    t.trial()
    t.check("a check that raises / hangs (check_timeout) / returns garbage is reported as plugin_error "
            "and disabled with one plugin_disabled event")
    t.check("the watcher keeps supervising: a kill -9 meanwhile is restarted; a disabled plugin is not called again")
