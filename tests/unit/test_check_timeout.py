"""A check that hangs is interrupted after check_timeout (UNKNOWN), the daemon keeps
supervising, and after 5 hanging ticks the plugin is disabled with an event."""
from __future__ import annotations

import time

import pytest

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


def test_a_tick_leaves_the_timer_disarmed(make_supervisor, fake_clock):
    """Within a tick the calls share one ITIMER_REAL; at the tick's end it is off, so
    nothing fires between ticks."""
    import signal

    sup = make_supervisor()
    sup.adopt()
    for _ in range(3):
        sup.tick()
        fake_clock.advance(1)
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert sup.calls._limits is None and not sup.calls._in_tick


@pytest.mark.timeout(30, method="thread")
def test_shared_timer_interrupts_each_call_at_its_own_deadline():
    """The timer left armed by an earlier call is moved earlier for a call with a nearer
    deadline, and one armed to fire before a call's deadline is armed again for the
    rest when it fires: each call is cut at its own limit, never before."""
    import signal

    from ccci import calls

    old = signal.signal(signal.SIGALRM, calls._on_alarm)
    try:
        t = time.monotonic()
        calls._ALARM.arm(t + 30, t)  # a remedy run (long limit) ended; the tick goes on
        calls._ALARM.deadline = None
        t = time.monotonic()
        calls._ALARM.arm(t + 0.2, t)  # a check: a nearer deadline moves the timer
        with pytest.raises(calls.PluginTimeout):
            time.sleep(10)
        assert 0.15 <= time.monotonic() - t < 5
        calls._ALARM.deadline = None
        t = time.monotonic()
        calls._ALARM.arm(t + 0.1, t)  # the first call of a tick arms for its deadline...
        calls._ALARM.deadline = None
        t2 = time.monotonic()
        calls._ALARM.arm(t2 + 0.5, t2)  # ...a later call's deadline is later: no re-arm
        assert calls._ALARM.armed_at == t + 0.1
        with pytest.raises(calls.PluginTimeout):
            time.sleep(10)
        assert 0.45 <= time.monotonic() - t2 < 5  # fired at 0.1, armed again, cut at 0.5
        # no timed call running: a firing timer does nothing
        calls._ALARM.deadline = None
        t = time.monotonic()
        calls._ALARM.arm(t + 0.05, t)
        calls._ALARM.deadline = None
        time.sleep(0.3)
        assert calls._ALARM.armed_at is None
    finally:
        calls._ALARM.disarm()
        signal.signal(signal.SIGALRM, old)
