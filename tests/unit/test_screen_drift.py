"""The drift routine's offline half (ccci.testing.screen_drift, tools/record_cli.py
--no-record): labels drafted from the nearest tested version, and the rules-vs-screens
report, on the recorded golden screens. No CLI, no network."""
from __future__ import annotations

import importlib.util
import shutil
import sys
import tomllib
from pathlib import Path

import pytest

from ccci.testing import screen_drift as drift

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
REC_332 = GOLDEN / "claude-2.1.332-recorded"
#: labelled recorded screens of 2.1.332 (25 since the auto-mode offer was recorded)
N332 = len(tomllib.loads((REC_332 / "LABELS.toml").read_text()))
TOOL = Path(__file__).resolve().parents[2] / "tools" / "record_cli.py"


def _tool():
    spec = importlib.util.spec_from_file_location("record_cli", TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["record_cli"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _copy_screens(src: Path, dst: Path, labels: bool) -> Path:
    dst.mkdir(parents=True)
    for p in src.glob("*.txt"):
        shutil.copy2(p, dst / p.name)
    if labels:
        shutil.copy2(src / "LABELS.toml", dst / "LABELS.toml")
    return dst


# ----------------------------------------------------------------------------- nearest tested version


@pytest.mark.parametrize("version,expected", [
    ("2.1.332", "2.1.332"), ("2.1.340", "2.1.332"), ("3.0.0", "2.1.332"), ("2.1.200", "2.1.197"),
    ("2.1.197", "2.1.197"), ("2.0.1", "2.1.197"),
])
def test_nearest_tested_is_the_newest_not_newer_else_the_oldest(version, expected):
    assert drift.nearest_tested(version, ("2.1.332", "2.1.197")) == expected


def test_nearest_tested_needs_a_tested_version():
    with pytest.raises(drift.DriftError, match="tested_versions"):
        drift.nearest_tested("1.0.0", ())


def test_reference_prefers_the_recorded_directory():
    ref = drift.find_reference("claude", "2.1.340", ("2.1.197", "2.1.332"))
    assert (ref.version, ref.directory) == ("2.1.332", REC_332)
    assert ref.labels["01_startup_idle.txt"]["state"] == "idle"
    ref = drift.find_reference("claude", "2.1.250", ("2.1.197", "2.1.332"))
    assert ref.directory == GOLDEN / "claude-2.1.197-recorded"
    assert drift.find_reference("codex", "0.171.0", ("0.169.0",)).directory == GOLDEN / "codex-0.169.0"


def test_reference_without_labelled_screens_is_a_one_line_error(tmp_path):
    with pytest.raises(drift.DriftError) as err:
        drift.find_reference("claude", "2.1.340", ("2.1.332",), golden=tmp_path)
    assert "\n" not in str(err.value) and "LABELS.toml" in str(err.value)


# ----------------------------------------------------------------------------- the report


def test_recorded_2_1_332_screens_all_read_as_labelled():
    labels = drift.read_labels(REC_332 / "LABELS.toml")
    rows = drift.classify(REC_332, labels, drift.backend_for("claude", "2.1.332"))
    assert len(rows) == len(labels) == N332
    assert drift.all_right(rows), [r for r in rows if not r.ok]
    report = drift.format_report(rows)
    assert report.splitlines()[0].split() == ["screen", "expected", "state", "got", "state", "expected",
                                              "input_text", "got", "result"]
    assert f"{N332} of {N332} classified right; 0 mismatch(es); 0 screen(s) need a label" in report
    assert "MISMATCH" not in report and "NEEDS LABEL" not in report


@pytest.mark.parametrize("cli,version,directory", [
    ("claude", "2.1.197", "claude-2.1.197-recorded"), ("codex", "0.169.0", "codex-0.169.0"),
    ("gemini", "0.61.0", "gemini-0.61.0"),
])
def test_other_golden_directories_all_read_as_labelled(cli, version, directory):
    d = GOLDEN / directory
    assert drift.all_right(drift.classify(d, drift.read_labels(d / "LABELS.toml"), drift.backend_for(cli, version)))


def test_a_wrong_label_is_reported(tmp_path):
    d = _copy_screens(REC_332, tmp_path / "rec", labels=True)
    labels = drift.read_labels(d / "LABELS.toml")
    labels["06_thinking_400_fatal.txt"]["state"] = "idle"
    labels["16_typed_draft.txt"]["input_text"] = "goodbye"
    rows = {r.screen: r for r in drift.classify(d, labels, drift.backend_for("claude", "2.1.332"))}
    assert not rows["06_thinking_400_fatal.txt"].ok and rows["06_thinking_400_fatal.txt"].got_state == "fatal_error"
    assert not rows["16_typed_draft.txt"].ok and rows["16_typed_draft.txt"].got_input == "hello"
    assert not drift.all_right(list(rows.values()))
    report = drift.format_report(list(rows.values()))
    line = next(ln for ln in report.splitlines() if ln.startswith("06_thinking_400_fatal.txt"))
    assert line.split() == ["06_thinking_400_fatal.txt", "idle", "fatal_error", "''", "''", "MISMATCH"]
    assert "claude.fatal" in report  # the rules that matched are named under a mismatch
    assert f"{N332 - 2} of {N332} classified right; 2 mismatch(es)" in report


def test_a_wrong_reset_time_is_reported(tmp_path):
    labels = drift.read_labels(REC_332 / "LABELS.toml")
    labels["09_usage_limit_final.txt"]["reset_at"] = "2026-12-02T08:00:00Z"
    rows = drift.classify(REC_332, labels, drift.backend_for("claude", "2.1.332"))
    assert [r.screen for r in rows if not r.ok] == ["09_usage_limit_final.txt"]
    assert "reset_at: expected 2026-12-02T08:00:00Z, got 2026-12-02T07:01:00Z" in drift.format_report(rows)


def test_a_labelled_screen_that_is_missing_is_a_mismatch(tmp_path):
    d = _copy_screens(REC_332, tmp_path / "rec", labels=True)
    (d / "05_after_tool_idle.txt").unlink()
    rows = drift.classify(d, drift.read_labels(d / "LABELS.toml"), drift.backend_for("claude", "2.1.332"))
    missing = [r for r in rows if r.got_state == "(missing)"]
    assert [r.screen for r in missing] == ["05_after_tool_idle.txt"] and not missing[0].ok


def test_a_label_without_state_is_a_one_line_error(tmp_path):
    with pytest.raises(drift.DriftError, match="has no state"):
        drift.classify(REC_332, {"01_startup_idle.txt": {"note": "x"}}, drift.backend_for("claude", "2.1.332"))


# ----------------------------------------------------------------------------- drafting labels


def test_screens_match_by_name_else_by_state_name():
    labelled = ["01_startup_idle.txt", "06_http_400_thinking_block.txt", "10_usage_limit.txt",
                "11_rate_limit_final.txt", "12_after_exit.txt"]
    new = ["01_startup_idle.txt", "06_http_400.txt", "10_usage_limit_early.txt", "11_usage_limit.txt",
           "13_rate_limit_final.txt", "14_after_exit.txt"]
    assert drift.match_screens(new, labelled) == {
        "01_startup_idle.txt": "01_startup_idle.txt", "11_usage_limit.txt": "10_usage_limit.txt",
        "13_rate_limit_final.txt": "11_rate_limit_final.txt", "14_after_exit.txt": "12_after_exit.txt",
        "06_http_400.txt": "06_http_400_thinking_block.txt"}  # whole words added by a person
    # 10_usage_limit_early extends usage_limit, but that label went to 11_usage_limit (same name first)
    assert "10_usage_limit_early.txt" not in drift.match_screens(new, labelled)
    # a prefix that is not a whole word, or two candidates, is no match
    assert drift.match_screens(["01_idle.txt"], ["01_idle_x.txt", "02_idle_y.txt"]) == {}
    assert drift.match_screens(["01_idl.txt"], ["01_idle.txt"]) == {}


def test_draft_copies_state_and_input_text_and_takes_title_and_time_from_the_recording(tmp_path):
    d = _copy_screens(REC_332, tmp_path / "new", labels=False)
    (d / "titles.txt").write_text("# titles\n02_streaming_busy.txt\t◓ Claude Code\n")
    (d / "99_something_new.txt").write_text("a screen no older version had\n")
    ref = drift.find_reference("claude", "2.1.340", ("2.1.197", "2.1.332"))
    draft = drift.draft_labels(d, ref)
    assert draft.unlabelled == ["99_something_new.txt"] and draft.unused == []
    assert set(draft.labels) == set(ref.labels)
    for name, label in draft.labels.items():
        assert label["state"] == ref.labels[name]["state"]
        assert label.get("input_text") == ref.labels[name].get("input_text")
        assert "reset_at" not in label
        assert label["note"].startswith(f"DRAFT from claude-2.1.332-recorded/{name}")
    assert draft.labels["02_streaming_busy.txt"]["title"] == "◓ Claude Code"  # the new recording's
    assert "title" not in draft.labels["03_reply_finished_idle.txt"]  # not recorded: not copied
    assert draft.labels["24_subscriber_usage_limit_auto_continue.txt"]["now"].endswith("Z")
    assert "reset_at 2026-12-02T07:01:00Z not copied" in draft.labels["09_usage_limit_final.txt"]["note"]

    text = drift.render_labels(draft, "claude", "2.1.340", ref, {"99_something_new.txt": "unknown"})
    head = text.split("\n\n")[0]
    assert "DRAFT" in head and "tests/golden/claude-2.1.332-recorded/LABELS.toml" in head
    assert "claude 2.1.332, the nearest tested version" in head and "A person must read every screen" in head
    assert "# NEEDS A LABEL" in text and '# ["99_something_new.txt"]' in text
    parsed = tomllib.loads(text)  # valid TOML; the screen that needs a label stays commented out
    assert set(parsed) == set(ref.labels)
    assert parsed["16_typed_draft.txt"] == draft.labels["16_typed_draft.txt"]


def test_titles_file_is_read_with_or_without_the_command_column(tmp_path):
    (tmp_path / "titles.txt").write_text("# comment\na.txt\tproj\tnode\nb.txt\t(not recorded)\t(not recorded)\n"
                                         "c.txt\t✳ Claude Code\n")
    assert drift.read_titles(tmp_path) == {"a.txt": "proj", "c.txt": "✳ Claude Code"}
    assert drift.read_titles(tmp_path / "none") == {}


# ----------------------------------------------------------------------------- the tool, offline


def test_tool_report_on_the_recorded_screens_exits_0(tmp_path, capsys):
    d = _copy_screens(REC_332, tmp_path / "rec", labels=True)
    assert _tool().main(["claude", "2.1.332", "--no-record", "--out", str(d)]) == 0
    out = capsys.readouterr().out
    assert f"{N332} of {N332} classified right" in out and "claude-2.1.332.toml" in out and "time: " in out


def test_tool_exits_1_on_a_wrong_label(tmp_path, capsys):
    d = _copy_screens(REC_332, tmp_path / "rec", labels=True)
    text = (d / "LABELS.toml").read_text(encoding="utf-8")
    start = text.index('["20_permission_dialog.txt"]')
    text = text[:start] + text[start:].replace('state = "waiting_input"', 'state = "busy"', 1)
    (d / "LABELS.toml").write_text(text, encoding="utf-8")
    assert _tool().main(["claude", "2.1.332", "--no-record", "--out", str(d)]) == 1
    out = capsys.readouterr().out
    assert f"{N332 - 1} of {N332} classified right; 1 mismatch(es)" in out
    assert next(ln for ln in out.splitlines() if ln.startswith("20_permission_dialog.txt")).endswith("MISMATCH")


def test_tool_drafts_labels_for_a_newer_version_and_lists_the_new_screen(tmp_path, capsys):
    d = _copy_screens(REC_332, tmp_path / "rec", labels=False)
    tool = _tool()
    assert tool.main(["claude", "2.1.340", "--no-record", "--out", str(d)]) == 0  # same screens: all right
    assert "DRAFTED" in capsys.readouterr().out and (d / "LABELS.toml").read_text().startswith("# DRAFT")
    (d / "LABELS.toml").unlink()
    shutil.copy2(d / "03_reply_finished_idle.txt", d / "99_new_idle.txt")
    assert tool.main(["claude", "2.1.340", "--no-record", "--out", str(d)]) == 1
    out = capsys.readouterr().out
    assert "1 need a label: 99_new_idle.txt" in out
    assert next(ln for ln in out.splitlines() if ln.startswith("99_new_idle.txt")).split()[-2:] == ["NEEDS", "LABEL"]
    assert f"{N332} of {N332 + 1} classified right; 0 mismatch(es); 1 screen(s) need a label" in out
    assert "ccci's rules read it as 'idle'" in (d / "LABELS.toml").read_text()


@pytest.mark.parametrize("argv,message", [
    (["foo", "1.2.3"], "unknown CLI 'foo'; use one of claude, codex, gemini"),
    (["claude", "latest"], "is not a version number; give one like 2.1.340"),
    (["opencode", "1.18.33"], "no recorder for 'opencode'"),
])
def test_tool_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert _tool().main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_tool_no_record_needs_the_directory(tmp_path, capsys):
    assert _tool().main(["claude", "2.1.340", "--no-record", "--out", str(tmp_path / "nope")]) == 2
    assert "does not exist; record first" in capsys.readouterr().err


def test_tool_unreadable_labels_is_a_one_line_error(tmp_path, capsys):
    d = _copy_screens(REC_332, tmp_path / "rec", labels=False)
    (d / "LABELS.toml").write_text('["01_startup_idle.txt"\nstate = \n')
    assert _tool().main(["claude", "2.1.332", "--no-record", "--out", str(d)]) == 2
    err = capsys.readouterr().err
    assert "invalid TOML" in err and "fix the file" in err and err.count("\n") == 1


def test_tool_with_no_screens_exits_1(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _tool().main(["codex", "0.169.0", "--no-record", "--out", str(tmp_path / "empty")]) == 1
    assert "no screens" in capsys.readouterr().err


def test_a_blank_capture_is_pointed_out(tmp_path):
    d = _copy_screens(REC_332, tmp_path / "rec", labels=True)
    (d / "01_startup_idle.txt").write_text("\n" * 50)
    rows = drift.classify(d, drift.read_labels(d / "LABELS.toml"), drift.backend_for("claude", "2.1.332"))
    assert rows[0].blank and not rows[0].ok and not any(r.blank for r in rows[1:])
    assert "the capture is BLANK" in drift.format_report(rows)
