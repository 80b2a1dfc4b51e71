"""``ccci budget``: today's spend against ``[budget]``, and lifting a budget hold.

``ccci budget`` prints, per agent, the USD spent on the current UTC day (the usage the
CLIs recorded, priced by :mod:`ccci.cost`) next to its limit and the fleet's.
``ccci budget reset [AGENT...]`` is a person saying "go on": the budget check
(:mod:`ccci.checks.budget`) neither escalates nor refuses launches of those agents for
the rest of the UTC day, and an agent it gave up is no longer given up (as ``ccci start``
does; a watcher picks that up within a tick).
"""
from __future__ import annotations

import json
from datetime import datetime

import click
from rich.table import Table
from rich.text import Text

from ccci.clock import UTC


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def budget(ctx: click.Context, as_json: bool) -> None:
    """Today's spend per agent against [budget]; 'reset' lifts a budget hold for today."""
    if ctx.invoked_subcommand is not None:
        return
    from ccci.commands.cli import console, fail, load_config
    from ccci.cost import PriceError, budget as budget_of, cost_today, price_table, utc_day
    from ccci.state import StateStore

    cfg = load_config(ctx.obj["fleet"])
    now = datetime.now(UTC)
    try:
        b, table = budget_of(cfg), price_table(cfg)
    except PriceError as exc:
        fail(str(exc))
    spent = cost_today(StateStore(cfg.state_dir), table, now)
    out = {"day": utc_day(now), "fleet_usd": round(sum(spent.values()), 6), "fleet_limit_usd": b.daily_usd,
           "agents": {a.name: {"usd": round(spent.get(a.name, 0.0), 6), "limit_usd": b.for_agent(a.name)}
                      for a in cfg.agents}}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    t = Table(title=Text(f"spend on {out['day']} (UTC)"))
    for c in ("agent", "spent", "limit"):
        t.add_column(c)
    for name, v in out["agents"].items():
        t.add_row(Text(name), Text(f"${v['usd']:.2f}"), Text("-" if v["limit_usd"] is None else f"${v['limit_usd']:.2f}"))
    t.add_row(Text("fleet"), Text(f"${out['fleet_usd']:.2f}"),
              Text("-" if b.daily_usd is None else f"${b.daily_usd:.2f}"))
    console.print(t)


@budget.command()
@click.argument("agents", nargs=-1)
@click.pass_context
def reset(ctx: click.Context, agents: tuple[str, ...]) -> None:
    """Lift the budget hold of AGENTS (all by default) for the rest of the UTC day."""
    from ccci.checks.budget import OVERRIDE_KEY
    from ccci.commands.cli import _agent_names, _clear_escalation, build, load_config, say
    from ccci.cost import utc_day

    cfg = load_config(ctx.obj["fleet"])
    names = _agent_names(cfg, agents)
    sup = build(cfg)
    day = utc_day(datetime.now(UTC))
    for n in names:
        sup.store.put(OVERRIDE_KEY.format(agent=n), day)
        if sup.store.agent(n).given_up:
            _clear_escalation(sup, n)
            say(f"{n}: budget lifted for {day} (UTC); no longer given up")
        else:
            say(f"{n}: budget lifted for {day} (UTC)")
