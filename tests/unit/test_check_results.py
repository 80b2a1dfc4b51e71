"""A check that returns something other than Finding / list of Findings / None is a
plugin error (UNKNOWN for that tick), and 5 such ticks disable it with an event."""
from __future__ import annotations

import pytest

from ccci import Finding, hookimpl
from ccci.testing.fakes import events, tick


class Garbage:
    def __init__(self, value):
        self.value = value

    @hookimpl
    def ccci_check_agent(self, agent):
        return self.value


@pytest.mark.parametrize("value", ["ok", {"state": "ok"}, 42, [Finding("x", "a", "y"), "junk"]])
def test_garbage_results_disable_the_check(make_supervisor, value):
    sup = make_supervisor(agents=["a"], plugins=[(Garbage(value), "garbage")])
    for _ in range(6):
        tick(sup)
    errs = [e for e in events(sup, "plugin_error") if e["data"].get("plugin") == "garbage"]
    assert len(errs) == 5 and "PluginResultError" in errs[0]["message"]
    assert [e["data"]["plugin"] for e in events(sup, "plugin_disabled")] == ["garbage"]
    assert sup.pm.get_plugin("garbage") is None


@pytest.mark.parametrize("value", [None, Finding("x", "a", "y", severity="info"), [], (Finding("x", "a", "y", severity="info"),)])
def test_well_formed_results_are_not_errors(make_supervisor, value):
    sup = make_supervisor(agents=["a"], plugins=[(Garbage(value), "fine")])
    for _ in range(6):
        tick(sup)
    assert not events(sup, "plugin_error") and sup.pm.get_plugin("fine") is not None
