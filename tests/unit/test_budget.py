"""Prices, ``[prices]``/``[budget]`` validation and the budget check's decisions (a fake
services object over a real state database)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from ccci import config as config_mod
from ccci.checks import budget as bud
from ccci.cost import PriceError, cost_today, price_table, shipped_prices, validate_budget, validate_prices
from ccci.model import AgentState, Finding, Remedy, RemedyResult
from ccci.services import StoreKeyValue
from ccci.stash import Stashes
from ccci.state import StateStore

NOW = datetime(2026, 12, 6, 15, 0, tzinfo=timezone.utc)
DAY = "2026-12-06"
MILLION_OUT = {"output_tokens": 1_000_000}  # $15 on claude-sonnet-4-*


def test_shipped_prices_have_a_source_and_match_by_longest_prefix():
    t = shipped_prices()
    assert t.source["anthropic"].startswith("https://") and t.source["date"]
    assert t.lookup("claude-sonnet-4-5-20250929")[0] == "claude-sonnet-4"
    assert t.lookup("claude-opus-4-1-20250805")[0] == "claude-opus-4-1"
    assert t.lookup("claude-opus-4-20250514")[0] == "claude-opus-4"
    assert t.lookup("nothing-like-it") is None and t.cost({"model": "nothing-like-it", "input_tokens": 9}) is None
    assert t.cost({"model": "claude-haiku-4-5", "input_tokens": 1_000_000, "output_tokens": 1_000_000,
                   "cache_read_tokens": 1_000_000, "cache_write_tokens": 1_000_000}) == pytest.approx(1 + 5 + 0.1 + 1.25)


@pytest.mark.parametrize("raw, match", [
    ({"m": {"input": "3"}}, r"prices\.m\.input: expected USD per million tokens"),
    ({"m": {"input": 1, "output": 2, "cache": 1}}, r"prices\.m\.cache: unknown key"),
    ({"m": {"output": 2}}, r"prices\.m: input and output are required"),
    ({"m": 3}, r"prices\.m: expected a table"),
])
def test_bad_prices_are_one_line_naming_the_key(tmp_path, raw, match):
    with pytest.raises(PriceError, match=match):
        validate_prices(raw, tmp_path / "ccci.toml")


def test_bad_budget_and_config_errors(tmp_path):
    with pytest.raises(PriceError, match=r"budget\.daily_usd: expected USD per UTC day"):
        validate_budget({"daily_usd": 0}, tmp_path / "c.toml")
    with pytest.raises(PriceError, match=r"budget\.agents\.nobody: no such agent"):
        validate_budget({"agents": {"nobody": 3}}, tmp_path / "c.toml", ["builder"])
    with pytest.raises(PriceError, match=r"budget\.daily: unknown key"):
        validate_budget({"daily": 3}, tmp_path / "c.toml")
    b = validate_budget({"daily_usd": 50, "agent_daily_usd": 10, "agents": {"builder": 30}}, tmp_path / "c.toml")
    assert b.for_agent("builder") == 30 and b.for_agent("other") == 10 and b.daily_usd == 50
    # through the config loader: one line, the file and the key
    from ccci.commands.init import render_config

    cfg = tmp_path / "ccci.toml"
    cfg.write_text(render_config("f", str(tmp_path / "o.git"), "main", "scripted")
                   + '\n[prices."my-model"]\ninput = -1\noutput = 1\n')
    with pytest.raises(config_mod.ConfigError) as exc:
        config_mod.load(cfg)
    assert str(exc.value).startswith(f"{cfg}: prices.my-model.input:") and "\n" not in str(exc.value)


class FakeServices:
    """What the budget plugin uses of :class:`ccci.services.Services`, over a real store."""

    def __init__(self, store: StateStore, config, given_up=(), busy=()):
        self.store, self.config = store, config
        self.state = StoreKeyValue(store)
        self._stashes = Stashes(store)
        self.views = {a.name: SimpleNamespace(name=a.name, given_up=a.name in given_up, pid=4242,
                                              analysis=SimpleNamespace(state=AgentState.BUSY if a.name in busy
                                                                       else AgentState.IDLE))
                      for a in config.agents}
        self.ran: list[Remedy] = []
        self.clock = NOW

    def now(self):
        return self.clock

    def agents(self):
        return list(self.views)

    def agent(self, name):
        return self.views[name]

    def stash(self, agent=None):
        return self._stashes.get("budget", agent)

    def usage_rows(self, agent=None, since_day=None):
        return self.store.usage_rows(agent=agent, since_day=since_day)

    def run_remedy(self, remedy):
        self.ran.append(remedy)
        return RemedyResult(True, "escalated", pending=False)


def fleet_cfg(tmp_path: Path, budget: dict):
    return SimpleNamespace(raw={"budget": budget}, path=tmp_path / "ccci.toml",
                           agents=[SimpleNamespace(name="builder"), SimpleNamespace(name="adversary")])


def test_over_budget_agent_is_escalated_once_per_day_until_the_next_utc_day(tmp_path):
    st = StateStore(tmp_path)
    cfg = fleet_cfg(tmp_path, {"agent_daily_usd": 10.0})
    st.set_usage("builder", DAY, "c", "claude-sonnet-4-5", MILLION_OUT, NOW)  # $15
    st.set_usage("builder", "2026-12-05", "c", "claude-sonnet-4-5", MILLION_OUT, NOW)  # yesterday: not today's
    st.set_usage("adversary", DAY, "c", "claude-sonnet-4-5", {"output_tokens": 100_000}, NOW)  # $1.50
    assert cost_today(st, price_table(cfg), NOW) == {"builder": pytest.approx(15.0), "adversary": pytest.approx(1.5)}
    svc = FakeServices(st, cfg)
    fs = bud.ccci_check_fleet(config=cfg, now=NOW, mono=100.0, services=svc)
    assert [f.agent for f in fs] == ["builder"] and "$15.00 of $10.00" in fs[0].summary
    remedy = bud.ccci_choose_remedy(finding=fs[0], agent=SimpleNamespace(name="builder"))
    assert remedy.action == "budget_hold"
    res = bud.ccci_run_remedy(remedy=remedy, services=svc, now=NOW)
    assert res.ok and [r.action for r in svc.ran] == ["escalate"]
    assert svc.ran[0].not_before == datetime(2026, 12, 7, tzinfo=timezone.utc)  # the automatic retry: next UTC day
    svc.views["builder"].given_up = True  # what the escalate remedy does
    # once per day: no second finding, however often it looks
    assert bud.ccci_check_fleet(config=cfg, now=NOW, mono=200.0, services=svc) is None
    # launches are refused while held ...
    why = bud.ccci_before_launch(agent=svc.views["builder"], mode="restart", config=cfg, services=svc)
    assert why and why.startswith("daily budget exceeded: builder spent $15.00 of $10.00")
    assert bud.ccci_before_launch(agent=svc.views["adversary"], mode="restart", config=cfg, services=svc) is None
    # ... until a person says so: 'ccci start' (the agent is no longer given up that day)
    svc.views["builder"].given_up = False
    assert bud.ccci_before_launch(agent=svc.views["builder"], mode="restart", config=cfg, services=svc) is None


def test_fleet_budget_holds_every_agent_and_budget_reset_lifts_it(tmp_path):
    st = StateStore(tmp_path)
    cfg = fleet_cfg(tmp_path, {"daily_usd": 20.0})
    st.set_usage("builder", DAY, "c", "claude-sonnet-4", {"output_tokens": 800_000}, NOW)  # $12
    st.set_usage("adversary", DAY, "c", "claude-sonnet-4", {"output_tokens": 800_000}, NOW)  # $12
    svc = FakeServices(st, cfg)
    fs = bud.ccci_check_fleet(config=cfg, now=NOW, mono=0.0, services=svc)
    assert sorted(f.agent for f in fs) == ["adversary", "builder"]
    assert all("the fleet spent $24.00 of $20.00" in f.summary for f in fs)
    # rate limited: no second look within EVERY_S
    st.put(bud.OVERRIDE_KEY.format(agent="builder"), DAY)  # 'ccci budget reset builder'
    assert bud.ccci_check_fleet(config=cfg, now=NOW, mono=1.0, services=svc) is None
    fs = bud.ccci_check_fleet(config=cfg, now=NOW, mono=bud.EVERY_S + 1, services=svc)
    assert [f.agent for f in fs] == ["adversary"]
    assert bud.ccci_before_launch(agent=svc.views["builder"], mode="start", config=cfg, services=svc) is None
    assert bud.ccci_before_launch(agent=svc.views["adversary"], mode="start", config=cfg, services=svc)
    # an override is for one UTC day only; the next day spends from zero
    svc.clock = NOW + timedelta(days=1)
    assert bud.ccci_before_launch(agent=svc.views["adversary"], mode="start", config=cfg, services=svc) is None


def test_the_retry_after_a_hold_never_interrupts_a_running_turn(tmp_path):
    st = StateStore(tmp_path)
    cfg = fleet_cfg(tmp_path, {"agent_daily_usd": 10.0})
    svc = FakeServices(st, cfg, busy=("builder",))
    svc.stash("builder")[bud.ESCALATED] = "2026-12-05"  # held yesterday
    why = bud.ccci_before_launch(agent=svc.views["builder"], mode="restart", config=cfg, services=svc)
    assert why == "a turn is running: not interrupted after the budget hold ended"
    # once: later restarts (a stall of a frozen process) are the runner's to decide
    assert bud.ccci_before_launch(agent=svc.views["builder"], mode="restart", config=cfg, services=svc) is None


def test_no_budget_table_means_no_check(tmp_path):
    st = StateStore(tmp_path)
    cfg = SimpleNamespace(raw={}, path=tmp_path / "c.toml", agents=[SimpleNamespace(name="builder")])
    st.set_usage("builder", DAY, "c", "claude-opus-4-1", MILLION_OUT, NOW)
    svc = FakeServices(st, cfg)
    assert bud.ccci_check_fleet(config=cfg, now=NOW, mono=0.0, services=svc) is None
    assert bud.ccci_before_launch(agent=svc.views["builder"], mode="start", config=cfg, services=svc) is None


def test_metrics_export_each_agents_cost_today(make_supervisor):
    from prometheus_client import generate_latest

    from ccci.cost import utc_day
    from ccci.reporters import metrics

    sup = make_supervisor(agents=["a", "b"])
    now = sup.clock.now()
    sup.store.set_usage("a", utc_day(now), "c", "claude-sonnet-4-5", MILLION_OUT, now)  # $15 today
    sup.store.set_usage("a", utc_day(now - timedelta(days=1)), "c", "claude-sonnet-4-5", MILLION_OUT, now)  # not today
    reg, m = metrics.build_registry(0.0)
    exp = metrics.Exporter(registry=reg, metrics=m)
    metrics._refresh_usage(exp, sup.services("metrics"))
    text = generate_latest(reg).decode()
    assert 'ccci_agent_cost_today_usd{agent="a"} 15.0' in text
    assert 'ccci_agent_cost_today_usd{agent="b"} 0.0' in text
