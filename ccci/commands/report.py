"""``ccci report``: what happened to the fleet over a period, for the morning after.

The numbers come from :func:`ccci.report.build_report` (the event log, the message
queue, the usage table, the phase state); this module only renders them:

* text (default): rich tables, every value from a pane, commit or config printed
  literally (:class:`rich.text.Text` cells, no markup);
* ``--json``: the report dict as it is (the README, "ccci report", lists its fields);
* ``--html FILE``: one self-contained page (inline CSS, the timeline embedded as a
  ``data:`` PNG, every value HTML-escaped);
* ``--png FILE``: the timeline: one lane per agent coloured by state over the period,
  with markers for restarts, other remedies, escalations and handoff commits
  (matplotlib, Agg backend: no display needed).
"""
from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ccci.clock import UTC, parse_utc

#: lane colours of the timeline, by state (also the HTML legend)
STATE_COLOURS: dict[str, str] = {
    "busy": "#2e7d32", "idle": "#81c784", "unsent_input": "#fdd835", "waiting_input": "#ff9800",
    "fatal_error": "#b71c1c", "context_limit": "#8e24aa", "usage_limit": "#5e35b1", "api_error": "#e53935",
    "exited": "#424242", "unknown": "#bdbdbd", "restarting": "#1e88e5", "stopped": "#757575",
    "given_up": "#000000", "unwatched": "#eeeeee",
}
#: marker style by kind: (matplotlib marker, colour, label)
MARKERS: dict[str, tuple[str, str, str]] = {
    "restart": ("X", "#0d47a1", "restart"), "remedy": ("v", "#e65100", "remedy"),
    "escalation": ("*", "#d50000", "escalation"), "commit": ("|", "#212121", "handoff commit (ping to this agent)"),
}


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    s = float(s)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _causes(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def _usd(v: float | None) -> str:
    return "-" if v is None else f"${v:,.2f}" if v >= 0.01 or v == 0 else f"${v:.4f}"


def _tokens(t: dict[str, int]) -> str:
    if not t:
        return "-"
    total = sum(t.values())
    return f"{total:,} ({t.get('input_tokens', 0):,} in, {t.get('output_tokens', 0):,} out, " \
           f"{t.get('cache_read_tokens', 0):,} cache read, {t.get('cache_write_tokens', 0):,} cache write)"


def rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One dict of display strings per agent (shared by the text and HTML renderers)."""
    out = []
    for name, a in report["agents"].items():
        lost = a["time_lost_s"]
        lat = a["handoff_latency"]
        out.append({
            "agent": name,
            "uptime": "-" if a["uptime_pct"] is None else f"{a['uptime_pct']:.1f}%",
            "states": ", ".join(f"{s} {_dur(v)}" for s, v in a["time_in_state_s"].items()),
            "restarts": f"{a['restarts']['total']}: {_causes(a['restarts']['by_cause'])}" if a["restarts"]["total"] else "0",
            "remedies": f"{a['remedies']['total']}: {_causes(a['remedies']['by_cause'])}" if a["remedies"]["total"] else "0",
            "lost to limits": ", ".join(f"{k} {_dur(v)}" for k, v in lost.items() if k != "stall" and v) or "0s",
            "lost to stalls": _dur(lost["stall"]),
            "pings": str(a["pings_received"]),
            "handoff latency": "-" if not lat["count"] else f"median {lat['median_s']:.1f}s, max {lat['max_s']:.1f}s"
                               + (f", {lat['undelivered']} undelivered" if lat["undelivered"] else ""),
            "escalations": str(a["escalations"]["total"]),
            "tokens": _tokens(a["tokens"]),
            "cost": _usd(a["cost_usd"]),
        })
    return out


def fleet_lines(report: dict[str, Any]) -> list[str]:
    """Fleet-wide lines: period, handoffs, fleet remedies, phases, cost."""
    ph = report["phases"]
    cost = report["cost"]
    lines = [f"fleet {report['fleet']}: {report['since']} to {report['until']} ({_dur(report['period_s'])})",
             "handoff commits seen: " + (", ".join(f"{k} {v}" for k, v in sorted(report["handoffs"].items())) or "none"),
             f"fleet remedies: {report['fleet_remedies']['total']}"
             + (f" ({_causes(report['fleet_remedies']['by_cause'])})" if report["fleet_remedies"]["total"] else "")]
    if ph["total"]:
        lines.append(f"phases: {ph['completed']} of {ph['total']} complete; current {ph['current'] or 'none (all done)'}"
                     + (f"; {len(ph['events'])} phase events in the period" if ph["events"] else ""))
    else:
        lines.append("phases: none configured")
    src = cost["prices_source"]
    lines.append(f"cost: {_usd(cost['total_usd'])} over UTC days {', '.join(cost['days']) or 'none'}"
                 + (f"; unpriced models: {', '.join(cost['unpriced_models'])}" if cost["unpriced_models"] else "")
                 + (f" (prices of {src.get('date')}; override with [prices] in ccci.toml)" if src.get("date") else ""))
    return lines


def render_text(report: dict[str, Any], console: Console) -> None:
    """Fleet lines, then one two-column table per agent (readable on a phone's terminal)."""
    for line in fleet_lines(report):
        console.print(Text(line), soft_wrap=True)
    for r in rows(report):
        t = Table(title=Text(f"agent {r['agent']}"), show_header=False, title_justify="left")
        t.add_column("what", style="bold", no_wrap=True)
        t.add_column("value", overflow="fold")
        for key in ("uptime", "states", "restarts", "remedies", "lost to limits", "lost to stalls", "pings",
                    "handoff latency", "escalations", "tokens", "cost"):
            t.add_row(Text(key), Text(r[key]))
        console.print(t)


def render_png(report: dict[str, Any], path: Path | None = None, width_in: float = 12.0) -> bytes:
    """The timeline as PNG bytes (also written to ``path`` when given): one lane per
    agent, a bar per state interval coloured by :data:`STATE_COLOURS`, markers by
    :data:`MARKERS`; x axis UTC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = list(report["agents"])
    fig = Figure(figsize=(width_in, 1.2 + 0.7 * max(1, len(names))), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    t0, t1 = parse_utc(report["since"]), parse_utc(report["until"])
    seen: set[str] = set()
    lanes = {n: len(names) - 1 - i for i, n in enumerate(names)}
    for name, y in lanes.items():
        bars: dict[str, list[tuple[float, float]]] = {}  # one broken_barh call per state: fast for long logs
        for a, b, s in report["agents"][name]["timeline"]:
            ta, tb = mdates.date2num(parse_utc(a)), mdates.date2num(parse_utc(b))
            bars.setdefault(s, []).append((ta, tb - ta))
        for s, spans in bars.items():
            ax.broken_barh(spans, (y - 0.35, 0.7), facecolors=STATE_COLOURS.get(s, "#bdbdbd"), linewidth=0)
            seen.add(s)
    points: dict[tuple[str, str], list[float]] = {}
    for m in report["markers"]:
        if m["agent"] in lanes:
            points.setdefault((m["agent"], m["kind"]), []).append(mdates.date2num(parse_utc(m["at"])))
    used_markers: set[str] = set()
    for (agent, kind), xs in points.items():
        shape, colour, _ = MARKERS.get(kind, ("o", "#000000", kind))
        ax.plot(xs, [lanes[agent] + 0.45] * len(xs), marker=shape, color=colour,
                markersize=9 if kind != "commit" else 12, linestyle="none")
        used_markers.add(kind)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(list(reversed(names)))
    ax.set_ylim(-0.6, len(names) - 0.2 + 0.3)
    ax.set_xlim(mdates.date2num(t0), mdates.date2num(t1))
    locator = mdates.AutoDateLocator(tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))  # seconds for minutes, days for a week
    ax.set_xlabel("UTC")
    ax.set_title(f"fleet {report['fleet']}: {report['since']} to {report['until']}")
    handles = [Patch(facecolor=STATE_COLOURS[s], label=s) for s in STATE_COLOURS if s in seen]
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], marker=MARKERS[k][0], color=MARKERS[k][1], linestyle="none", label=MARKERS[k][2])
                for k in MARKERS if k in used_markers]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def render_html(report: dict[str, Any], png: bytes | None) -> str:
    """One self-contained HTML page (no external resource; every value escaped)."""
    e = html.escape
    cols = ("agent", "uptime", "states", "restarts", "remedies", "lost to limits", "lost to stalls", "pings",
            "handoff latency", "escalations", "tokens", "cost")
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{e(r[c])}</td>" for c in cols) + "</tr>" for r in rows(report))
    lines = "".join(f"<li>{e(line)}</li>" for line in fleet_lines(report))
    img = (f'<img alt="timeline" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else "")
    legend = "".join(f'<span class="key"><i style="background:{c}"></i>{e(s)}</span>' for s, c in STATE_COLOURS.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>ccci report: {e(report['fleet'])}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1rem;color:#212121}}
table{{border-collapse:collapse;width:100%;margin:1rem 0}}
th,td{{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}}
th{{background:#f5f5f5}} img{{max-width:100%}} .key{{margin-right:.8rem;white-space:nowrap}}
.key i{{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle;border:1px solid #999}}
@media (max-width:700px){{table,tr,td,th{{display:block}} th{{display:none}}}}
</style></head><body>
<h1>ccci report: fleet {e(report['fleet'])}</h1>
<ul>{lines}</ul>
{img}
<p>{legend}</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<script type="application/json" id="report">{e(json.dumps(report))}</script>
</body></html>
"""


@click.command()
@click.option("--since", "since", default="12h", show_default=True,
              help="Start of the period: a duration before now (30m, 12h, 2d) or an ISO-8601 UTC time.")
@click.option("--until", "until", default=None, help="End of the period (ISO-8601 UTC; default: now).")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one self-contained HTML page to FILE.")
@click.option("--png", "png_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the timeline picture (PNG) to FILE.")
@click.pass_context
def report(ctx: click.Context, since: str, until: str | None, as_json: bool, html_file: Path | None,
           png_file: Path | None) -> None:
    """Per agent over a period: uptime, time in each state, restarts and remedies by
    cause, time lost to limits and stalls, handoffs, escalations, tokens and cost."""
    from ccci.commands.cli import console, fail, load_config
    from ccci.cost import PriceError
    from ccci.report import build_report, parse_since
    from ccci.state import StateStore

    cfg = load_config(ctx.obj["fleet"])
    now = datetime.now(UTC)
    try:
        t0 = parse_since(since, now)
        t1 = parse_since(until, now) if until else now
    except ValueError as exc:
        fail(str(exc))
    if t1 <= t0:
        fail(f"--since {since} is not before --until {until or 'now'}; pick an earlier --since")
    try:
        store = StateStore(cfg.state_dir)
    except Exception as exc:  # noqa: BLE001
        fail(f"{cfg.state_dir}: cannot open the state database ({exc}); check the directory's permissions")
    try:
        rep = build_report(store, cfg, t0, t1)
    except PriceError as exc:
        fail(str(exc))
    png = None
    if png_file is not None or html_file is not None:
        try:
            png = render_png(rep, png_file)
        except OSError as exc:
            fail(f"{png_file}: cannot write the timeline ({exc.strerror or exc}); pick a writable path for --png")
    if html_file is not None:
        try:
            html_file.write_text(render_html(rep, png))
        except OSError as exc:
            fail(f"{html_file}: cannot write the page ({exc.strerror or exc}); pick a writable path for --html")
    if as_json:
        click.echo(json.dumps(rep, indent=2))
    else:
        render_text(rep, console)
