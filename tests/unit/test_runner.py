"""The runner (ccci.supervisor): detection, hysteresis, guard rails and plugin isolation,
on a fake tmux and a fake clock."""
from __future__ import annotations

import pytest

from ccci import Finding, Remedy, RemedyResult, hookimpl
from ccci.backends.scripted.scripted_agent import FATAL_TEXT
from ccci.calls import PLUGIN_ERROR_LIMIT
from ccci.supervisor import PENDING_TIMEOUT_S
from ccci.testing.fakes import events, run_ticks, tick

RESTARTS = ("agent_resumed", "agent_restarted_fresh")


def restarts(sup, agent=None):
    return [e for e in events(sup, agent=agent) if e["kind"] in RESTARTS]


def show_fatal(pane):
    pane.append("» try again", FATAL_TEXT, "✓ turn done in 0s")


# --------------------------------------------------------------------------- process death


def test_process_death_acts_at_once_and_resumes_the_conversation(make_supervisor, fake_tmux):
    # a high failure_threshold and a long startup grace: a death is acted on regardless
    sup = make_supervisor(agents=["a"], checks={"failure_threshold": 5, "startup_grace": 60})
    tick(sup)
    conv = sup.agents["a"].conversation_id
    old = fake_tmux.pane("a")
    old.kill(status=1)

    findings = tick(sup)

    assert [(f.check, f.immediate) for f in findings] == [("process_death", True)]
    new = fake_tmux.pane("a")
    assert new is not old and not new.dead
    assert old.pid in fake_tmux.killed_pids  # the old process tree was killed first
    assert "--resume" in new.argv and new.argv[new.argv.index("--conversation") + 1] == conv
    [ev] = restarts(sup)
    assert ev["kind"] == "agent_resumed" and ev["data"]["conversation_id"] == conv
    assert sup.store.agent("a").conversation_id == conv
    assert sup.store.agent("a").resumes == 1


@pytest.mark.parametrize("how", ["session_gone", "zombie", "signal"])
def test_every_kind_of_death_restarts(make_supervisor, fake_tmux, how):
    sup = make_supervisor(agents=["a"])
    tick(sup)
    pane = fake_tmux.pane("a")
    if how == "session_gone":
        del fake_tmux.panes[pane.session_name]
    elif how == "zombie":
        pane.process_alive = False
    else:
        pane.kill(signal=9)
    [f] = tick(sup)
    assert f.check == "process_death"
    assert len(restarts(sup)) == 1
    assert fake_tmux.pane("a").pid != pane.pid


def test_death_without_a_conversation_starts_fresh(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"])
    tick(sup)
    old_conv = sup.agents["a"].conversation_id
    sup.agents["a"].conversation_id = ""
    fake_tmux.pane("a").kill()
    tick(sup)
    [ev] = restarts(sup)
    assert ev["kind"] == "agent_restarted_fresh"
    assert "--resume" not in fake_tmux.pane("a").argv
    assert sup.agents["a"].conversation_id not in ("", old_conv)


# --------------------------------------------------------------------------- hysteresis


def test_screen_finding_acts_only_after_failure_threshold_ticks(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], checks={"failure_threshold": 3, "startup_grace": 0})
    tick(sup)
    show_fatal(fake_tmux.pane("a"))
    for n in (1, 2):
        assert [f.check for f in tick(sup)] == ["fatal_error"], n
        assert restarts(sup) == [], f"acted after {n} failing ticks"
    tick(sup)
    assert [e["kind"] for e in restarts(sup)] == ["agent_restarted_fresh"]


def test_a_flicker_resets_the_count(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], checks={"failure_threshold": 3, "startup_grace": 0})
    tick(sup)
    pane = fake_tmux.pane("a")
    healthy = pane.screen
    for _ in range(3):
        show_fatal(pane)
        run_ticks(sup, 2)
        pane.set_screen(healthy)  # the error scrolled away: a flicker
        assert tick(sup) == []
    assert restarts(sup) == []
    show_fatal(pane)
    run_ticks(sup, 3)
    assert len(restarts(sup)) == 1


def test_startup_grace_suppresses_screen_findings_but_not_death(make_supervisor, fake_tmux, fake_clock):
    fake_tmux.on_new_session = show_fatal  # the agent shows the fatal error from the start
    sup = make_supervisor(agents=["a", "b"], checks={"startup_grace": 10, "failure_threshold": 2})
    started = fake_clock.monotonic()
    fake_tmux.pane("b").kill()  # death inside the grace period: acted on at once
    tick(sup)
    assert [e["agent"] for e in restarts(sup)] == ["b"]
    for _ in range(8):  # up to 9 s after the start: findings, but no action
        assert "fatal_error" in [f.check for f in tick(sup) if f.agent == "a"]
    assert fake_clock.monotonic() - started == 9
    assert restarts(sup, "a") == []
    tick(sup)  # 10 s: grace is over; the finding has failed long enough already
    assert [e["kind"] for e in restarts(sup, "a")] == ["agent_restarted_fresh"]


# --------------------------------------------------------------------------- remedy in flight


class Recorder:
    """A check that records which agents it was asked about, per tick."""

    def __init__(self):
        self.seen: list[tuple[float, str]] = []

    @hookimpl
    def ccci_check_agent(self, agent, mono):
        self.seen.append((mono, agent.name))


def test_one_remedy_in_flight_checks_paused_until_back(make_supervisor, fake_tmux, fake_clock):
    rec = Recorder()
    sup = make_supervisor(agents=["a", "b"], plugins=[rec])
    tick(sup)
    # the restarted process never comes up (e.g. stuck before exec)
    fake_tmux.on_new_session = lambda pane: setattr(pane, "process_alive", False)
    fake_tmux.pane("a").kill()
    tick(sup)
    assert len(restarts(sup, "a")) == 1
    restarted_at = fake_clock.monotonic()
    rec.seen.clear()
    while fake_clock.monotonic() - restarted_at < PENDING_TIMEOUT_S - 1:
        tick(sup)
    # a was not evaluated (no second restart) while b was, every tick
    assert {name for _, name in rec.seen} == {"b"}
    assert len(restarts(sup, "a")) == 1
    assert events(sup, "remedy_timeout") == []
    tick(sup)  # 30 s: not back: evaluated again, process death fires, restarted again
    assert len(events(sup, "remedy_timeout", "a")) == 1
    assert len(restarts(sup, "a")) == 2


class Alert:
    """An immediate finding on every tick, with its own remedy (``note``)."""

    def __init__(self):
        self.noted: list[str] = []

    @hookimpl
    def ccci_check_agent(self, agent):
        return Finding("alert", agent.name, "always alerting", immediate=True)

    @hookimpl
    def ccci_choose_remedy(self, finding, agent):
        if finding.check == "alert":
            return Remedy("note", agent.name, finding)

    @hookimpl
    def ccci_run_remedy(self, remedy):
        if remedy.action == "note":
            self.noted.append(remedy.agent)
            return RemedyResult(True, "noted", pending=False)


def test_one_remedy_per_agent_per_tick_process_death_first(make_supervisor, fake_tmux):
    alert = Alert()
    sup = make_supervisor(agents=["a"], plugins=[alert])
    tick(sup)
    assert alert.noted == ["a"]
    fake_tmux.pane("a").kill()
    # two immediate findings for one agent: one remedy, and process death comes first
    assert sorted(f.check for f in tick(sup)) == ["alert", "process_death"]
    assert alert.noted == ["a"]
    assert len(restarts(sup)) == 1
    tick(sup)  # back: the other finding gets its turn
    assert alert.noted == ["a", "a"]


# --------------------------------------------------------------------------- restart guards


def kill_and_tick(sup, fake_tmux, agent="a"):
    fake_tmux.pane(agent).kill()
    tick(sup)


def test_restart_intensity_exceeded_escalates_and_gives_up(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], checks={"restart_intensity": 3, "restart_period": 600,
                                                "backoff_initial": 1, "backoff_max": 1})
    tick(sup)
    for n in range(3):
        kill_and_tick(sup, fake_tmux)
        assert len(restarts(sup)) == n + 1
        tick(sup)  # back
    kill_and_tick(sup, fake_tmux)  # the 4th death within the period
    assert len(restarts(sup)) == 3
    [esc] = events(sup, "escalation", "a")
    assert "restart intensity exceeded" in esc["message"]
    assert sup.agents["a"].given_up and sup.store.agent("a").given_up
    run_ticks(sup, 120, step=10)
    assert len(restarts(sup)) == 3, "a given-up agent is not restarted"
    assert fake_tmux.pane("a").dead
    assert len(events(sup, "escalation")) == 1


def test_exponential_backoff_between_restarts(make_supervisor, fake_tmux, fake_clock):
    sup = make_supervisor(agents=["a"], checks={"restart_intensity": 20, "backoff_initial": 2, "backoff_max": 10})
    tick(sup)
    restart_times = []
    pid = fake_tmux.pane("a").pid
    fake_tmux.pane("a").kill()
    for _ in range(40):
        tick(sup)
        pane = fake_tmux.pane("a")
        if pane.pid != pid:  # restarted this tick
            restart_times.append(fake_clock.monotonic())
            pid = pane.pid
        elif not pane.dead and sup.agents["a"].pending_since_mono is None:
            pane.kill()  # it is back: crash again at once
    gaps = [b - a for a, b in zip(restart_times, restart_times[1:])]
    assert gaps[:4] == [2, 4, 8, 10], restart_times  # doubling, capped at backoff_max
    deferred = events(sup, "backoff", "a")
    assert deferred and all(e["data"]["seconds"] > 0 for e in deferred)


def test_backoff_resets_after_backoff_reset_healthy(make_supervisor, fake_tmux, fake_clock):
    # restart_period longer than backoff_reset: the reset must still bring the delay back
    sup = make_supervisor(agents=["a"], checks={"restart_intensity": 20, "restart_period": 3600,
                                                "backoff_initial": 2, "backoff_max": 300, "backoff_reset": 60})
    tick(sup)
    for _ in range(3):  # three quick crashes: the next delay is 16 s
        kill_and_tick(sup, fake_tmux)
        run_ticks(sup, 20)
    assert len(restarts(sup)) == 3
    run_ticks(sup, 120, step=5)  # healthy for longer than backoff_reset
    kill_and_tick(sup, fake_tmux)
    assert len(restarts(sup)) == 4
    restarted_at = fake_clock.monotonic()
    tick(sup)
    kill_and_tick(sup, fake_tmux)
    while len(restarts(sup)) == 4:
        tick(sup)
    assert fake_clock.monotonic() - restarted_at == 2, "backoff did not start again from backoff_initial"


def test_max_resumes_then_escalation(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], checks={"max_resumes": 2, "restart_intensity": 100, "backoff_initial": 0})
    tick(sup)
    for n in range(2):
        kill_and_tick(sup, fake_tmux)
        assert [e["kind"] for e in restarts(sup)] == ["agent_resumed"] * (n + 1)
        tick(sup)
    kill_and_tick(sup, fake_tmux)
    assert len(restarts(sup)) == 2, "resumed beyond max_resumes"
    [esc] = events(sup, "escalation", "a")
    assert "max_resumes" in esc["message"]
    assert sup.agents["a"].given_up
    run_ticks(sup, 30)
    assert len(restarts(sup)) == 2


def test_fresh_restart_resets_the_resume_count(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], checks={"max_resumes": 1, "restart_intensity": 100, "backoff_initial": 0,
                                                "failure_threshold": 1, "startup_grace": 0})
    tick(sup)
    kill_and_tick(sup, fake_tmux)  # resume 1 of 1
    tick(sup)
    show_fatal(fake_tmux.pane("a"))  # fresh: a new conversation, resumes back to 0
    tick(sup)
    tick(sup)
    kill_and_tick(sup, fake_tmux)  # may resume again
    assert [e["kind"] for e in restarts(sup)] == ["agent_resumed", "agent_restarted_fresh", "agent_resumed"]
    assert events(sup, "escalation") == []


# --------------------------------------------------------------------------- fleet breaker


BREAKER = {"breaker_min_agents": 3, "breaker_fraction": 0.5, "breaker_window": 60, "breaker_cooldown": 30}


def test_fleet_breaker_opens_when_many_agents_fail_at_once(make_supervisor, fake_tmux, fake_clock):
    sup = make_supervisor(agents=["a", "b", "c", "d"], checks=BREAKER)
    tick(sup)
    for name in "abc":
        fake_tmux.pane(name).kill()
    tick(sup)
    [opened] = events(sup, "breaker_open")
    assert opened["data"]["agents"] == ["a", "b", "c"]
    [esc] = events(sup, "escalation")
    assert esc["agent"] is None and "breaker" in esc["message"]
    assert restarts(sup) == []
    held = [e for e in events(sup, "finding") if "fleet breaker open" in e["message"]]
    assert {e["agent"] for e in held} == {"a", "b", "c"}
    # while open, nothing is restarted, not even a fourth agent dying
    fake_tmux.pane("d").kill()
    run_ticks(sup, 28)
    assert restarts(sup) == []
    assert not any(sup.agents[n].given_up for n in "abcd")  # the breaker gives nobody up


def test_fleet_breaker_closes_after_the_cooldown(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a", "b", "c", "d"], checks=BREAKER)
    tick(sup)
    for name in "abc":
        fake_tmux.pane(name).kill()
    tick(sup)
    run_ticks(sup, 29)
    assert restarts(sup) == []
    tick(sup)  # 30 s: the cooldown is over; the same outage does not open it again
    assert sorted(e["agent"] for e in restarts(sup)) == ["a", "b", "c"]
    assert len(events(sup, "breaker_open")) == 1


def test_few_failures_do_not_open_the_breaker(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a", "b", "c", "d"], checks=BREAKER)
    tick(sup)
    fake_tmux.pane("a").kill()
    fake_tmux.pane("b").kill()
    tick(sup)
    assert events(sup, "breaker_open") == []
    assert sorted(e["agent"] for e in restarts(sup)) == ["a", "b"]


# --------------------------------------------------------------------------- plugin isolation


class Raising:
    def __init__(self):
        self.calls = 0

    @hookimpl
    def ccci_check_agent(self, agent):
        self.calls += 1
        raise RuntimeError("boom in a check")


def test_raising_check_is_reported_unknown_and_disabled_after_5_ticks(make_supervisor, fake_tmux):
    bad = Raising()
    sup = make_supervisor(agents=["a"], plugins=[(bad, "bad")])
    assert tick(sup) == []  # raised: UNKNOWN, not a finding
    [error] = events(sup, "plugin_error")
    assert error["data"]["plugin"] == "bad" and error["data"]["hook"] == "ccci_check_agent"
    assert "RuntimeError: boom in a check" in error["message"] and "UNKNOWN" in error["message"]
    fake_tmux.pane("a").kill()  # the raising check must not hide process death
    assert [f.check for f in tick(sup)] == ["process_death"]
    assert len(restarts(sup)) == 1
    run_ticks(sup, PLUGIN_ERROR_LIMIT - 3)
    assert len(events(sup, "plugin_error")) == PLUGIN_ERROR_LIMIT - 1
    assert events(sup, "plugin_disabled") == []
    tick(sup)  # the 5th raising tick in a row
    [disabled] = events(sup, "plugin_disabled")
    assert disabled["data"]["plugin"] == "bad"
    assert sup.pm.get_plugin("bad") is None
    calls = bad.calls
    run_ticks(sup, 3)
    assert bad.calls == calls
    assert len(events(sup, "plugin_error")) == PLUGIN_ERROR_LIMIT


def test_raising_plugin_is_disabled_only_after_consecutive_ticks(make_supervisor):
    class Flaky:
        n = 0

        @hookimpl
        def ccci_check_agent(self):
            self.n += 1
            if self.n % PLUGIN_ERROR_LIMIT:  # raises 4 ticks out of 5
                raise ValueError("flaky")

    sup = make_supervisor(agents=["a"], plugins=[(Flaky(), "flaky")])
    run_ticks(sup, 4 * PLUGIN_ERROR_LIMIT)
    assert len(events(sup, "plugin_error")) >= 3 * (PLUGIN_ERROR_LIMIT - 1)
    assert events(sup, "plugin_disabled") == []


def test_essential_plugins_are_never_disabled(make_supervisor, fake_tmux, monkeypatch):
    sup = make_supervisor(agents=["a"])
    tick(sup)
    [impl] = [i for i in sup.pm.hook.ccci_check_agent.get_hookimpls() if i.plugin_name == "process_death"]
    real = impl.function

    def boom(agent, pane, process):
        raise OSError("process table unreadable")

    monkeypatch.setattr(impl, "function", boom)
    run_ticks(sup, PLUGIN_ERROR_LIMIT + 3)
    assert len([e for e in events(sup, "plugin_error") if e["data"]["plugin"] == "process_death"]) == PLUGIN_ERROR_LIMIT + 3
    assert events(sup, "plugin_disabled") == []
    assert sup.pm.get_plugin("process_death") is not None
    assert sup.pm.disable("process_death") is False and sup.pm.disable("restart") is False
    monkeypatch.setattr(impl, "function", real)
    fake_tmux.pane("a").kill()
    tick(sup)
    assert len(restarts(sup)) == 1


def test_garbage_results_are_reported_and_the_good_findings_kept(make_supervisor):
    good = Finding("marker", None, "a real finding", immediate=True, severity="info")

    class Garbage:
        @hookimpl
        def ccci_check_agent(self):
            return "not a finding"

    class MoreGarbage:
        @hookimpl
        def ccci_check_agent(self):
            return [None, 42, {"check": "x"}, ["nested"], good]

    class Number:
        @hookimpl
        def ccci_check_fleet(self):
            return 3.14

    sup = make_supervisor(agents=["a"], plugins=[(Garbage(), "g1"), (MoreGarbage(), "g2"), (Number(), "g3")])
    findings = run_ticks(sup, 3)
    assert findings == [good] * 3
    assert good.agent == "a"  # a finding without an agent is given the checked agent
    # the garbage is a plugin error (5 ticks of it disable the plugin: test_check_results.py)
    errs = events(sup, "plugin_error")
    assert sorted({e["data"]["plugin"] for e in errs}) == ["g1", "g2", "g3"] and len(errs) == 9
    assert all("PluginResultError" in e["message"] for e in errs)
    assert events(sup, "tick_error") == []
    assert restarts(sup) == []


def _six_agents_with_a_breaker_at_three(make_supervisor, fake_clock, names):
    sup = make_supervisor(agents=names, checks={"startup_grace": 0, "breaker_min_agents": 3,
                                                "breaker_fraction": 0.5, "breaker_window": 60})
    for _ in range(3):
        fake_clock.advance(1)
        sup.tick()
    return sup


def test_a_tmux_server_killed_between_the_pane_list_and_the_process_scan_is_one_loss_not_a_breaker(
        make_supervisor, fake_tmux, fake_clock):
    """The chaos soak on a loaded 2-core machine (2026-12-07): ``kill -9`` of the tmux
    server landed between a tick's pane list (every pane alive) and its process scan
    (every process dead): 16 of 20 process deaths in one tick opened the fleet breaker,
    and the lost server was seen only on the next tick, so nothing was restored for
    300 s. The runner now looks at the server again before the breaker opens."""
    from ccci.testing.fakes import events

    names = [f"a{i}" for i in range(6)]
    sup = _six_agents_with_a_breaker_at_three(make_supervisor, fake_clock, names)
    scan = sup.process_scan

    def killed_during_the_scan(pids):
        fake_tmux.crash_server()
        return scan(pids)

    sup.process_scan = killed_during_the_scan
    fake_clock.advance(1)
    sup.tick()
    sup.process_scan = scan
    for _ in range(10):
        fake_clock.advance(1)
        sup.tick()
    assert not events(sup, "breaker_open")
    assert len(events(sup, "tmux_server_lost")) == 1
    assert sorted(fake_tmux.panes) == sorted(sup.agents[n].session for n in names)
    assert all(not p.dead and p.process_alive for p in fake_tmux.panes.values())


def test_the_breaker_still_opens_when_agents_die_on_a_live_tmux_server(make_supervisor, fake_tmux, fake_clock):
    from ccci.testing.fakes import events

    names = [f"a{i}" for i in range(6)]
    sup = _six_agents_with_a_breaker_at_three(make_supervisor, fake_clock, names)
    for n in names[:4]:
        fake_tmux.pane(n).kill(signal=9)
    fake_clock.advance(1)
    sup.tick()
    assert len(events(sup, "breaker_open")) == 1 and not events(sup, "tmux_server_lost")
