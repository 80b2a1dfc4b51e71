"""Token prices, cost per agent and UTC day, and the ``[prices]``/``[budget]`` tables.

Prices come from ``ccci/data/prices.toml`` (shipped with ccci; its ``[source]`` table
names the pages and the date the figures were read) and ``[prices."MODEL"]`` tables in
``ccci.toml``, which replace or add a model::

    [prices."claude-sonnet-4-5"]
    input = 3.0         # USD per million input tokens
    output = 15.0       # USD per million output tokens
    cache_read = 0.30   # USD per million cache-read tokens
    cache_write = 3.75  # USD per million cache-write tokens

A model id is priced by its exact key, else by the longest key that is a prefix of it
(``claude-sonnet-4-5-20250929`` takes the price of ``claude-sonnet-4-5`` when that key
exists, else of ``claude-sonnet-4``), else it is *unpriced*: its tokens are counted, its cost
is ``None`` and the model is listed under ``unpriced``, never guessed.

Usage rows are :meth:`ccci.state.StateStore.usage_rows` dicts (tokens per agent, UTC day
``YYYY-MM-DD`` and model). Costs are USD, rounded to 1e-6 only when shown.

``[budget]`` (optional)::

    [budget]
    daily_usd = 50.0        # the whole fleet, per UTC day
    agent_daily_usd = 20.0  # every agent, per UTC day
    [budget.agents]
    builder = 30.0          # this agent (replaces agent_daily_usd for it)

enforced by the ``budget`` check (:mod:`ccci.checks.budget`).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from ccci.clock import UTC

PRICES_FILE = Path(__file__).parent / "data" / "prices.toml"
#: price fields (USD per million tokens) and the usage counter each applies to
PRICE_FIELDS: dict[str, str] = {"input": "input_tokens", "output": "output_tokens",
                                "cache_read": "cache_read_tokens", "cache_write": "cache_write_tokens"}


class PriceError(ValueError):
    """A bad ``[prices]`` or ``[budget]`` table (one line: file, key, fix)."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens of one model; ``origin`` is where the figures came from
    (``"ccci/data/prices.toml (<date>)"`` or the ``ccci.toml`` path)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    origin: str = ""

    def cost(self, counts: dict[str, Any]) -> float:
        """USD for ``counts`` (a usage row: token counters by :data:`PRICE_FIELDS` value)."""
        return sum(float(getattr(self, f)) * int(counts.get(c) or 0) for f, c in PRICE_FIELDS.items()) / 1e6


@dataclass
class PriceTable:
    """Prices by model key (see the module doc for the matching rule)."""

    models: dict[str, Price] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)

    def lookup(self, model: str) -> tuple[str, Price] | None:
        """``(key, price)`` for ``model``: exact key, else the longest key that is a prefix."""
        if model in self.models:
            return model, self.models[model]
        best = max((k for k in self.models if model.startswith(k)), key=len, default=None)
        return (best, self.models[best]) if best is not None else None

    def cost(self, row: dict[str, Any]) -> float | None:
        """USD of one usage row, ``None`` when its model is unpriced."""
        hit = self.lookup(str(row.get("model") or ""))
        return hit[1].cost(row) if hit else None


def _price(table: Any, where: str) -> Price:
    if not isinstance(table, dict):
        raise PriceError(f"{where}: expected a table with input, output, cache_read, cache_write (USD per million tokens)")
    unknown = set(table) - set(PRICE_FIELDS)
    if unknown:
        raise PriceError(f"{where}.{sorted(unknown)[0]}: unknown key; known: {', '.join(PRICE_FIELDS)}")
    vals = {}
    for f in PRICE_FIELDS:
        v = table.get(f, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise PriceError(f"{where}.{f}: expected USD per million tokens (a number >= 0), got {v!r}")
        vals[f] = float(v)
    if "input" not in table or "output" not in table:
        raise PriceError(f"{where}: input and output are required (USD per million tokens), e.g. input = 3.0, output = 15.0")
    return Price(**vals, origin="")


def shipped_prices(path: Path = PRICES_FILE) -> PriceTable:
    """The price file shipped with ccci. :raises PriceError: when it is malformed."""
    raw = tomllib.loads(path.read_text())
    src = {k: str(v) for k, v in raw.get("source", {}).items()}
    origin = f"ccci/data/prices.toml ({src.get('date', 'undated')})"
    models = {}
    for name, t in raw.get("models", {}).items():
        p = _price(t, f"{path}: models.{name}")
        models[name] = Price(p.input, p.output, p.cache_read, p.cache_write, origin)
    return PriceTable(models, src)


def validate_prices(raw: Any, path: Path) -> dict[str, Price]:
    """``[prices."MODEL"]`` tables of ``ccci.toml`` -> ``{model: Price}``.

    :raises PriceError: one line naming the file, the key and the fix.
    """
    if not isinstance(raw, dict):
        raise PriceError(f'{path}: prices: expected tables [prices."MODEL"] with input, output, cache_read, cache_write')
    out = {}
    for model, t in raw.items():
        p = _price(t, f"{path}: prices.{model}")
        out[model] = Price(p.input, p.output, p.cache_read, p.cache_write, str(path))
    return out


def price_table(config: Any = None) -> PriceTable:
    """The shipped prices with ``config``'s ``[prices]`` over them (``config``: a
    :class:`ccci.config.FleetConfig` or ``None``)."""
    table = shipped_prices()
    raw = getattr(config, "raw", {}) or {}
    if "prices" in raw:
        table.models.update(validate_prices(raw["prices"], config.path))
    return table


@dataclass(frozen=True)
class Budget:
    """``[budget]``: USD per UTC day; ``None`` = no limit."""

    daily_usd: float | None = None
    agent_daily_usd: float | None = None
    agents: dict[str, float] = field(default_factory=dict)

    def for_agent(self, agent: str) -> float | None:
        """The agent's own daily limit (USD), or ``None``."""
        return self.agents.get(agent, self.agent_daily_usd)

    @property
    def enabled(self) -> bool:
        return self.daily_usd is not None or self.agent_daily_usd is not None or bool(self.agents)


def validate_budget(raw: Any, path: Path, agent_names: Iterable[str] = ()) -> Budget:
    """``[budget]`` -> :class:`Budget`. :raises PriceError: one line (file, key, fix)."""
    if not isinstance(raw, dict):
        raise PriceError(f"{path}: budget: expected a table [budget] with daily_usd, agent_daily_usd, [budget.agents]")
    known = {"daily_usd", "agent_daily_usd", "agents"}
    for k in raw:
        if k not in known:
            raise PriceError(f"{path}: budget.{k}: unknown key; known: {', '.join(sorted(known))}")

    def usd(v: Any, key: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise PriceError(f"{path}: {key}: expected USD per UTC day (a number > 0), got {v!r}")
        return float(v)

    agents = raw.get("agents", {})
    if not isinstance(agents, dict):
        raise PriceError(f"{path}: budget.agents: expected a table of AGENT = USD per UTC day")
    names = set(agent_names)
    for a in agents:
        if names and a not in names:
            raise PriceError(f"{path}: budget.agents.{a}: no such agent; agents are: {', '.join(sorted(names))}")
    return Budget(
        daily_usd=usd(raw["daily_usd"], "budget.daily_usd") if "daily_usd" in raw else None,
        agent_daily_usd=usd(raw["agent_daily_usd"], "budget.agent_daily_usd") if "agent_daily_usd" in raw else None,
        agents={a: usd(v, f"budget.agents.{a}") for a, v in agents.items()},
    )


def budget(config: Any) -> Budget:
    """The fleet's :class:`Budget` (empty when ``[budget]`` is absent)."""
    raw = getattr(config, "raw", {}) or {}
    if "budget" not in raw:
        return Budget()
    return validate_budget(raw["budget"], config.path, [a.name for a in getattr(config, "agents", [])])


def utc_day(at: datetime) -> str:
    """``YYYY-MM-DD`` of ``at`` in UTC."""
    return at.astimezone(UTC).strftime("%Y-%m-%d")


def costs(rows: list[dict[str, Any]], table: PriceTable) -> dict[str, Any]:
    """Cost of usage rows: ``{"by_agent_day": {agent: {day: usd}}, "by_agent": {agent: usd},
    "tokens_by_agent": {agent: {counter: tokens}}, "total_usd": usd,
    "unpriced": sorted model ids without a price}``. Unpriced rows add tokens, not cost."""
    by_day: dict[str, dict[str, float]] = {}
    tokens: dict[str, dict[str, int]] = {}
    unpriced: set[str] = set()
    for r in rows:
        agent, day = r["agent"], r["day"]
        t = tokens.setdefault(agent, {c: 0 for c in PRICE_FIELDS.values()})
        for c in PRICE_FIELDS.values():
            t[c] += int(r.get(c) or 0)
        c = table.cost(r)
        by_day.setdefault(agent, {}).setdefault(day, 0.0)
        if c is None:
            unpriced.add(str(r.get("model") or ""))
        else:
            by_day[agent][day] += c
    by_agent = {a: sum(d.values()) for a, d in by_day.items()}
    return {"by_agent_day": by_day, "by_agent": by_agent, "tokens_by_agent": tokens,
            "total_usd": sum(by_agent.values()), "unpriced": sorted(unpriced)}


def cost_today_rows(rows: list[dict[str, Any]], table: PriceTable, now: datetime) -> dict[str, float]:
    """``{agent: USD spent on the UTC day of now}`` from usage rows (unpriced models: 0)."""
    day = utc_day(now)
    out: dict[str, float] = {}
    for r in rows:
        if r["day"] == day:
            out[r["agent"]] = out.get(r["agent"], 0.0) + (table.cost(r) or 0.0)
    return out


def cost_today(store: Any, table: PriceTable, now: datetime) -> dict[str, float]:
    """``{agent: USD spent on the UTC day of now}`` from ``store.usage_rows``."""
    return cost_today_rows(store.usage_rows(since_day=utc_day(now)), table, now)
