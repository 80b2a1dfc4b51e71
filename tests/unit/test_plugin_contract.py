"""The plugin contract (issue: plugin contract 1.0) on a fake tmux and a fake clock:

* a remedy plugin that raises (tryfirst) cannot stop a restart, and its errors name the
  plugin, the hook and file:line;
* a check whose evidence stays on screen gets its remedy once per occurrence, also
  after a watcher restart, and again when the occurrence is new;
* retry_after_s, pending and ok=False do what RemedyResult says;
* builtins are called before third-party implementations unless those ask tryfirst;
* the stash is per plugin, per agent and per runner, and persisted keys survive a restart;
* no hook receives the runner.
"""
from __future__ import annotations

import inspect

import pytest

from ccci import Finding, Remedy, RemedyResult, StashKey, hookimpl, hookspecs
from ccci.hookspecs import PROJECT_NAME
from ccci.services import Services
from ccci.supervisor import Supervisor
from ccci.testing.fakes import events, run_ticks, tick

RESTARTS = ("agent_resumed", "agent_restarted_fresh", "agent_started")


class RaisingRemedies:
    """A remedy plugin written carelessly: both hooks raise, both ask to run first."""

    @hookimpl(tryfirst=True)
    def ccci_choose_remedy(self, finding, agent):
        return Remedy("noop", agent.name, finding) if finding.data["missing_key"] else None

    @hookimpl(tryfirst=True)
    def ccci_run_remedy(self, remedy):
        raise RuntimeError(f"cannot run {remedy.action}")


class NothingChooser:
    """Answers every finding with an action nobody handles ('overridden into nothing')."""

    @hookimpl(tryfirst=True)
    def ccci_choose_remedy(self, finding, agent):
        return Remedy("noop", finding.agent, finding)


@pytest.mark.parametrize("plugin", [RaisingRemedies(), NothingChooser()], ids=["raising", "noop"])
def test_a_remedy_plugin_cannot_stop_a_restart(make_supervisor, fake_tmux, plugin):
    sup = make_supervisor(agents=["a"], plugins=[(plugin, "careless")])
    tick(sup)
    old = fake_tmux.pane("a")
    old.kill(signal=9)
    tick(sup)
    new = fake_tmux.pane("a")
    assert new is not old and not new.dead
    assert [e["kind"] for e in events(sup, agent="a") if e["kind"] in RESTARTS] == ["agent_started", "agent_resumed"]
    if isinstance(plugin, RaisingRemedies):
        errs = events(sup, "plugin_error")
        assert {e["data"]["hook"] for e in errs} == {"ccci_choose_remedy"}  # the restart went to the essential plugin
        [err] = errs
        assert err["data"]["plugin"] == "careless" and "KeyError" in err["message"]
        assert err["data"]["where"].startswith("test_plugin_contract.py:")
        assert "careless" in err["message"] and err["data"]["where"] in err["message"]


def test_a_raising_run_remedy_is_skipped_for_the_builtin_one(make_supervisor, fake_tmux):
    """A tryfirst ccci_run_remedy that raises on 'send' does not stop the builtin send."""

    class RaisingSend:
        @hookimpl(tryfirst=True)
        def ccci_run_remedy(self, remedy):
            raise KeyError("boom")

    sup = make_supervisor(agents=["a"], plugins=[(RaisingSend(), "raiser")])
    tick(sup)
    res = sup.run_remedy(Remedy("send", "a", Finding("x", "a", "y"), text="hello"))
    assert res is not None and res.ok
    [err] = events(sup, "plugin_error")
    assert err["data"]["plugin"] == "raiser" and err["data"]["hook"] == "ccci_run_remedy"
    assert "KeyError" in err["message"]


def test_five_failing_ticks_disable_a_remedy_plugin_but_never_an_essential_one(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], plugins=[(RaisingRemedies(), "careless")],
                          checks={"backoff_initial": 0, "restart_intensity": 100})
    tick(sup)
    for _ in range(6):
        fake_tmux.pane("a").kill(signal=9)
        tick(sup)
        tick(sup)
    assert sup.pm.get_plugin("careless") is None
    [dis] = events(sup, "plugin_disabled")
    assert dis["data"]["plugin"] == "careless" and "5 ticks in a row" in dis["message"]
    assert sup.pm.get_plugin("restart") is not None and sup.pm.get_plugin("process_death") is not None
    assert not fake_tmux.pane("a").dead
    assert len(events(sup, "agent_resumed")) == 6  # every death restarted, before and after the disabling


def test_a_backend_whose_methods_raise_is_unknown_and_named_and_deaths_are_still_restarted(make_supervisor, fake_tmux):
    from ccci.backends.scripted import ScriptedBackend

    class Broken(ScriptedBackend):
        name = "broken"

        def analyse(self, screen, title="", now=None):
            raise ValueError("cannot read this screen")

        def is_ready_for_input(self, analysis):
            raise ValueError("cannot tell")

    class Registers:
        @hookimpl
        def ccci_register_backends(self):
            return [Broken()]

    sup = make_supervisor(agents=[{"name": "a", "backend": "broken"}], plugins=[(Registers(), "brokenbackend")])
    sup.queue_message("a", "hello")
    tick(sup)
    errs = events(sup, "plugin_error")
    assert {e["data"]["hook"] for e in errs} == {"broken.analyse", "broken.is_ready_for_input"}
    assert all(e["data"]["plugin"] == "brokenbackend" and e["data"]["where"].startswith("test_plugin_contract.py:")
               for e in errs)
    assert sup.agents["a"].analysis.state.value == "unknown"
    old = fake_tmux.pane("a")
    old.kill(signal=9)
    tick(sup)
    assert fake_tmux.pane("a") is not old and not fake_tmux.pane("a").dead
    run_ticks(sup, 10)
    [disabled] = events(sup, "plugin_disabled")  # once, not again every five ticks
    assert disabled["data"]["plugin"] == "brokenbackend"
    n = len(events(sup, "plugin_error"))
    run_ticks(sup, 5)
    assert len(events(sup, "plugin_error")) == n


# --------------------------------------------------------------------------- once per occurrence

MARKER = "DEPLOY-FAILED"


class MarkerCheck:
    """The documented way: evidence names the occurrence (the line), the remedy acts once."""

    @hookimpl
    def ccci_check_agent(self, agent, block):
        for line in block.splitlines():
            if MARKER in line:
                return Finding("deploy_failed", agent.name, "a deploy failed", evidence=line.strip())
        return None

    @hookimpl
    def ccci_choose_remedy(self, finding):
        if finding.check == "deploy_failed":
            return Remedy("notify_person", finding.agent, finding)
        return None

    @hookimpl
    def ccci_run_remedy(self, remedy, services):
        if remedy.action != "notify_person":
            return None
        services.emit("deploy_alert", f"{remedy.agent}: {remedy.reason.evidence}", agent=remedy.agent)
        return RemedyResult(True, "person told")


def test_a_remedy_runs_once_per_occurrence_also_after_a_watcher_restart(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], plugins=[(MarkerCheck(), "marker")], checks={"startup_grace": 0})
    tick(sup)
    fake_tmux.pane("a").append(f"{MARKER} build 17", "> ")
    run_ticks(sup, 20)
    assert len(events(sup, "deploy_alert")) == 1
    # a new watcher on the same state (kill -9 of the old one): it adopts, and the
    # occurrence it remedied is still remedied
    sup2 = make_supervisor(sup.config, plugins=[(MarkerCheck(), "marker")])
    run_ticks(sup2, 20)
    assert len(events(sup2, "deploy_alert")) == 1
    # the line scrolls away (a new turn), then a new failure: a new occurrence
    fake_tmux.pane("a").append("» next turn", "ok", "> ")
    run_ticks(sup2, 3)
    fake_tmux.pane("a").append(f"{MARKER} build 18", "> ")
    run_ticks(sup2, 10)
    alerts = events(sup2, "deploy_alert")
    assert [a["message"] for a in alerts] == ["a: DEPLOY-FAILED build 17", "a: DEPLOY-FAILED build 18"]


def test_the_same_line_after_it_went_away_is_a_new_occurrence(make_supervisor, fake_tmux):
    sup = make_supervisor(agents=["a"], plugins=[(MarkerCheck(), "marker")], checks={"startup_grace": 0})
    tick(sup)
    fake_tmux.pane("a").append(f"{MARKER} build 1", "> ")
    run_ticks(sup, 5)
    fake_tmux.pane("a").append("» next turn", "> ")
    run_ticks(sup, 3)
    fake_tmux.pane("a").append("» again", f"{MARKER} build 1", "> ")
    run_ticks(sup, 5)
    assert len(events(sup, "deploy_alert")) == 2


class FleetNamesAgent:
    """A fleet check whose finding names an agent (like a job request)."""

    def __init__(self) -> None:
        self.runs = 0
        self.on = True

    @hookimpl
    def ccci_check_fleet(self):
        return Finding("request", "a", "a request for a", evidence="request 1", immediate=True) if self.on else None

    @hookimpl
    def ccci_choose_remedy(self, finding):
        return Remedy("handle", finding.agent, finding) if finding.check == "request" else None

    @hookimpl
    def ccci_run_remedy(self, remedy):
        if remedy.action != "handle":
            return None
        self.runs += 1
        return RemedyResult(True)


def test_a_fleet_finding_naming_an_agent_is_its_own_occurrence(make_supervisor):
    plugin = FleetNamesAgent()
    sup = make_supervisor(agents=["a"], plugins=[(plugin, "requests")])
    run_ticks(sup, 10)  # the agent's own checks run each tick and report nothing: not the end of it
    assert plugin.runs == 1
    plugin.on = False
    tick(sup)
    plugin.on = True
    run_ticks(sup, 3)
    assert plugin.runs == 2


class RetryingRemedy(MarkerCheck):
    def __init__(self, result: RemedyResult) -> None:
        self.result = result
        self.runs = 0

    @hookimpl
    def ccci_run_remedy(self, remedy, services):
        if remedy.action != "notify_person":
            return None
        self.runs += 1
        return self.result


@pytest.mark.parametrize("result,runs", [
    (RemedyResult(True), 1),                        # done: once
    (RemedyResult(True, retry_after_s=5), 4),       # again every 5 s while it lasts: at 0, 5, 10, 15
    (RemedyResult(False), 19),                      # failed: tried again on each later tick
    (RemedyResult(False, retry_after_s=10), 2),     # failed, try again after 10 s
], ids=["ok", "ok-retry", "failed", "failed-retry"])
def test_remedy_result_decides_when_the_same_occurrence_is_acted_on_again(make_supervisor, fake_tmux, result, runs):
    plugin = RetryingRemedy(result)
    sup = make_supervisor(agents=["a"], plugins=[(plugin, "retrying")], checks={"startup_grace": 0})
    tick(sup)
    fake_tmux.pane("a").append(f"{MARKER} build 17", "> ")
    run_ticks(sup, 20)
    assert plugin.runs == runs


def test_pending_result_pauses_the_agents_checks_until_it_is_back(make_supervisor, fake_tmux):
    class PendingRemedy(RetryingRemedy):
        pass

    plugin = PendingRemedy(RemedyResult(True, pending=True))
    sup = make_supervisor(agents=["a"], plugins=[(plugin, "pending")], checks={"startup_grace": 0})
    tick(sup)
    fake_tmux.pane("a").append(f"{MARKER} build 17", "> ")
    tick(sup)
    tick(sup)
    assert plugin.runs == 1 and sup.agents["a"].pending_since_mono is not None
    tick(sup)  # the process is alive: back after 1 s
    assert sup.agents["a"].pending_since_mono is None


# --------------------------------------------------------------------------- order


class Recorder:
    def __init__(self, log: list, name: str) -> None:
        self.log, self.name = log, name

    @hookimpl
    def ccci_choose_remedy(self, finding):
        self.log.append(self.name)
        return None


def test_builtins_are_asked_before_third_party_plugins_unless_tryfirst(make_supervisor):
    sup = make_supervisor(agents=["a"], plugins=[(Recorder([], "third"), "third")])
    order = [i.plugin_name for i in sup.calls.ordered("ccci_choose_remedy")]
    assert order.index("third") > max(order.index(n) for n in ("fatal_error", "stall", "context_limit"))
    assert order[-1] == "process_death"  # trylast stays last

    class First(Recorder):
        @hookimpl(tryfirst=True)
        def ccci_choose_remedy(self, finding):
            return None

    sup2 = make_supervisor(agents=["a"], plugins=[(First([], "first"), "first")])
    assert sup2.calls.ordered("ccci_choose_remedy")[0].plugin_name == "first"


# --------------------------------------------------------------------------- stash

COUNT = StashKey[int]("count")
SEEN = StashKey[list]("seen", persist=True)


class Counter:
    @hookimpl
    def ccci_check_agent(self, agent, stash):
        stash[COUNT] = stash.get(COUNT, 0) + 1
        stash.setdefault(SEEN, []).append(agent.name)
        stash[SEEN] = stash[SEEN]  # written through
        return None


def test_stash_is_per_plugin_agent_and_runner_and_persisted_keys_survive_a_restart(make_supervisor):
    sup = make_supervisor(agents=["a", "b"], plugins=[(Counter(), "counter")])
    run_ticks(sup, 3)
    a, b = sup.stashes.get("counter", "a"), sup.stashes.get("counter", "b")
    assert a[COUNT] == 3 and b[COUNT] == 3 and a.get(SEEN) == ["a"] * 3 and b[SEEN] == ["b"] * 3
    assert COUNT not in sup.stashes.get("stall", "a") and sup.stashes.get("counter", None).get(COUNT) is None
    sup2 = make_supervisor(sup.config, plugins=[(Counter(), "counter")])
    fresh = sup2.stashes.get("counter", "a")
    assert COUNT not in fresh  # memory keys are this runner's only
    assert fresh[SEEN] == ["a"] * 3  # persisted keys come back
    with pytest.raises(KeyError):
        fresh[COUNT]
    del fresh[SEEN]
    assert sup2.stashes.get("counter", "a").get(SEEN) is None


# --------------------------------------------------------------------------- the narrow API


def test_no_hookspec_receives_the_runner():
    for name, fn in vars(hookspecs).items():
        if inspect.isfunction(fn) and hasattr(fn, f"{PROJECT_NAME}_spec"):
            params = inspect.signature(fn).parameters
            assert "supervisor" not in params, name
            for p in params.values():
                assert "Supervisor" not in str(p.annotation), (name, p.name)


def test_services_bound_to_a_plugin_implement_the_protocol(make_supervisor):
    sup = make_supervisor(agents=["a"])
    svc = sup.services("someone")
    assert isinstance(svc, Services) and not isinstance(svc, Supervisor)
    assert svc.plugin == "someone" and svc.agents() == ["a"] and svc.agent("a").name == "a"
    svc.stash("a")[COUNT] = 7
    assert sup.stashes.get("someone", "a")[COUNT] == 7
    svc.emit("custom_event", "hello [not markup]", agent="a", n=1)
    [ev] = events(sup, "custom_event")
    assert ev["data"] == {"n": 1, "plugin": "someone"} and ev["message"] == "hello [not markup]"


# --------------------------------------------------------------------------- reload and listing

BROKEN_LOCAL = '''
from ccci import hookimpl

@hookimpl
def ccci_check_agent(agent):
    raise RuntimeError("broken local check")
'''
FIXED_LOCAL = '''
from ccci import Finding, hookimpl

@hookimpl
def ccci_check_agent(agent):
    return Finding("local_ok", agent.name, "the fixed local check ran", severity="info")
'''


def test_sighup_reload_takes_a_fixed_ccci_plugins_py_and_enables_it_again(make_supervisor):
    sup = make_supervisor(agents=["a"])
    local = sup.config.root / "ccci_plugins.py"
    local.write_text(BROKEN_LOCAL)
    sup.reload_local_plugins()
    assert sup.pm.get_plugin("ccci_plugins") is not None
    run_ticks(sup, 6)
    assert sup.pm.get_plugin("ccci_plugins") is None and "ccci_plugins" in sup.pm.disabled
    local.write_text(FIXED_LOCAL)
    sup.request_reload()
    sup.reload_local_plugins()
    assert sup.pm.get_plugin("ccci_plugins") is not None and "ccci_plugins" not in sup.pm.disabled
    assert any(f.check == "local_ok" for f in tick(sup))
    reloads = events(sup, "plugins_reloaded")
    assert len(reloads) == 2 and reloads[-1]["data"]["enabled"] == ["ccci_plugins"]


def test_ccci_plugins_lists_disabled_plugins_with_the_reason_and_how_to_enable(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ccci.commands.cli import main
    from ccci.commands.init import init_fleet
    from ccci.model import Event
    from ccci.state import StateStore
    from ccci import config as config_mod

    init_fleet(tmp_path / "f", name="lst")
    cfg = config_mod.load(tmp_path / "f")
    store = StateStore(cfg.state_dir)
    store.append_event(Event("watcher_started", "watching"))
    store.append_event(Event("plugin_disabled", "plugin deploy failed on 5 ticks in a row; disabled",
                             data={"plugin": "deploy", "reason": "failed on 5 ticks in a row"}))
    store.close()
    res = CliRunner().invoke(main, ["--fleet", str(tmp_path / "f"), "plugins", "--json"],
                             env={"CCCI_DISABLE_PLUGINS": "stall"})
    assert res.exit_code == 0, res.output
    import json

    disabled = {d["name"]: d for d in json.loads(res.output)["disabled"]}
    assert disabled["stall"]["reason"] == "CCCI_DISABLE_PLUGINS" and "CCCI_DISABLE_PLUGINS" in disabled["stall"]["enable"]
    assert "5 ticks in a row" in disabled["deploy"]["reason"] and "restart the watcher" in disabled["deploy"]["enable"]
    text = CliRunner().invoke(main, ["--fleet", str(tmp_path / "f"), "plugins"], env={"CCCI_DISABLE_PLUGINS": "stall"})
    assert "disabled: stall (CCCI_DISABLE_PLUGINS); to enable: remove it from CCCI_DISABLE_PLUGINS" in text.output
