"""Every message prints literally: text from users, configs, panes and errors is never read
as rich markup (``[phases]`` used to vanish) or as an ``:emoji:`` code."""
from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from rich.console import Console
from rich.table import Table

from ccci.commands import cli
from ccci.commands.demo import Demo

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "claude-2.1.197"


def run(args: list[str]):
    return CliRunner().invoke(cli.main, args)


def fleet(tmp_path: Path, toml: str) -> Path:
    (tmp_path / "ccci.toml").write_text(toml, encoding="utf-8")
    return tmp_path


def test_phase_status_without_phases_keeps_the_brackets(tmp_path):
    d = fleet(tmp_path, '[[agents]]\nname = "a"\n')
    res = run(["--fleet", str(d), "phase", "status"])
    assert res.exit_code == 2
    path = (d / "ccci.toml").resolve()
    assert res.stderr == f'ccci: {path}: phases: no [phases] table; add [phases] order = ["1", "2"]\n'


def test_bad_fleet_name_keeps_the_character_class(tmp_path):
    d = fleet(tmp_path, '[fleet]\nname = "Bad Name"\n[[agents]]\nname = "a"\n')
    res = run(["--fleet", str(d), "status"])
    assert res.exit_code == 2
    path = (d / "ccci.toml").resolve()
    assert res.stderr == (f"ccci: {path}: fleet.name: 'Bad Name' must match [a-z0-9][a-z0-9_-]* "
                          "(max 40); rename it\n")


@pytest.mark.parametrize("toml,expected", [
    ('agents = "a"\n', "agents: expected an array of tables [[agents]]"),
    ('fleet = 3\n[[agents]]\nname = "a"\n', "fleet: expected a table [fleet], got int"),
    ('[[agents]]\nname = "[bold]x"\n', "agents[0].name: '[bold]x' must match [a-z0-9][a-z0-9_-]* (max 40); rename it"),
    ('[[agents]]\nname = "a"\nrole = "[red]:smile:"\n',
     "agents[0].role: '[red]:smile:' is not a role; use one of loop, orchestrator, job"),
])
def test_config_errors_print_their_brackets_on_one_line(tmp_path, toml, expected):
    d = fleet(tmp_path, toml)
    res = run(["--fleet", str(d), "stop"])
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1, res.stderr  # one line: file, key, problem and fix
    assert res.stderr == f"ccci: {(d / 'ccci.toml').resolve()}: {expected}\n"


def test_diagnose_prints_pane_text_and_path_literally(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no fleet here: only the builtin plugins
    capture = tmp_path / "[pane] :smile: capture.txt"
    capture.write_bytes((GOLDEN / "23_enter_swallowed_3000_same_call_pasted.txt").read_bytes())
    res = run(["diagnose", str(capture), "--backend", "claude"])
    assert res.exit_code == 0, res.output
    first = res.stdout.splitlines()[0]
    assert first.startswith(f"{capture}: ")
    assert "[Pasted text #" in res.stdout  # the collapsed paste, as the pane shows it


def test_unknown_backend_error_keeps_brackets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    capture = tmp_path / "c.txt"
    capture.write_text("x\n", encoding="utf-8")
    res = run(["diagnose", str(capture), "--backend", "[nope]"])
    assert res.exit_code == 2
    assert "unknown backend '[nope]'" in res.stderr


def test_table_cells_are_literal():
    buf = io.StringIO()
    t = Table()
    t.add_column("last event")
    t.add_row(cli.cell("nudge [phases] :smile:"))
    Console(file=buf, width=60).print(t)
    assert "nudge [phases] :smile:" in buf.getvalue()


def test_demo_timeline_prints_event_messages_literally():
    buf = io.StringIO()
    fake = SimpleNamespace(console=Console(file=buf, width=200), seen_id=0, t0=0.0)
    fake.say = lambda *parts: Demo.say(fake, *parts)
    fake.store = SimpleNamespace(events=lambda after_id: [
        {"id": 1, "at": "1970-01-01T00:00:01Z", "agent": "builder", "kind": "remedy",
         "message": "sent 'continue' for [usage_limit] :smile:"}])
    Demo.print_new_events(fake)
    out = buf.getvalue()
    assert "builder" in out and "remedy" in out
    assert "sent 'continue' for [usage_limit] :smile:" in out
