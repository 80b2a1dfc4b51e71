"""Every golden capture under tests/golden/<backend>-<version>/ gives its labelled
state (and reset_at) through the real `ccci diagnose --json` command."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from ccci.commands.cli import main

pytestmark = pytest.mark.usefixtures("golden_zone")  # the recorded CLIs ran in UTC

GOLDEN = Path(__file__).parent / "golden"


def _cases():
    for labels in sorted(GOLDEN.glob("*/LABELS.toml")):
        backend = labels.parent.name.split("-")[0]
        for fname, label in tomllib.loads(labels.read_text()).items():
            yield pytest.param(labels.parent / fname, backend, label, id=f"{labels.parent.name}/{fname}")


CASES = list(_cases())


def test_corpus_covers_both_backends_and_every_state():
    backends = {c.values[1] for c in CASES}
    assert {"claude", "scripted", "codex", "gemini"} <= backends
    codex_dirs = {c.values[0].parent.name for c in CASES if c.values[1] == "codex"}
    assert {"codex-0.169.0", "codex-0.171.0"} <= codex_dirs  # both tested Codex CLI versions
    states = {c.values[2]["state"] for c in CASES}
    assert {"busy", "idle", "unsent_input", "waiting_input", "fatal_error", "context_limit", "usage_limit",
            "api_error", "exited"} <= states


@pytest.mark.parametrize("path,backend,label", CASES)
def test_diagnose_gives_the_labelled_state(path, backend, label):
    args = ["diagnose", str(path), "--backend", backend, "--json"]
    if label.get("now"):  # when the screen was captured (a reset shown as a clock time)
        args += ["--now", label["now"]]
    if label.get("title"):  # the pane title at capture time, where the screen alone cannot tell
        args += ["--title", label["title"]]
    version = path.parent.name.split("-")[1]
    if backend in ("claude", "codex"):  # <backend>-<version>[-recorded]/: read with that version's pattern file
        args += ["--cli-version", version]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["state"] == label["state"], out["matches"]
    if backend == "codex":  # one rule file per tested Codex CLI version (0.169.0, 0.171.0)
        assert Path(out["patterns"]).name == f"codex-{version}.toml"
    assert out["reset_at"] == label.get("reset_at")
    if "input_text" in label:  # "" = an empty box, even with a placeholder drawn in it
        assert out["input_text"] == label["input_text"]
    if "placeholder" in label:  # styled captures (capture-pane -e): the faint text of an empty box
        assert out["placeholder"] == label["placeholder"]
    for f in out["findings"]:
        assert f["check"] and "evidence" in f
    if label["state"] in ("fatal_error", "context_limit", "usage_limit", "api_error"):
        assert any(f["check"] == label["state"] for f in out["findings"]), out["findings"]


def test_diagnose_unknown_backend_is_one_line_error(tmp_path):
    f = tmp_path / "screen.txt"
    f.write_text("hello\n")
    result = CliRunner().invoke(main, ["diagnose", str(f), "--backend", "nope"])
    assert result.exit_code == 2
    assert "unknown backend 'nope'" in result.output and "claude" in result.output
