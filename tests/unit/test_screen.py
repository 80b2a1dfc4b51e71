"""Placeholders told from drafts by how they were drawn (ccci/screen.py, issue 12 item 2):
real styled captures of Claude Code 2.1.332 (tests/golden/claude-2.1.332-styled/), read
with the pattern file's list of known placeholders removed, as a placeholder nobody has
written a rule for yet."""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from ccci.backends.claude import ClaudeBackend
from ccci.clock import FakeClock
from ccci.config import DEFAULT_CHECKS
from ccci.screen import FAINT, FLAGS, REVERSE, Screen, faint_only, foreground, parse_line
from ccci.send import deliver
from ccci.testing.fakes import ScreenSequence

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
STYLED = GOLDEN / "claude-2.1.332-styled"
LABELS = tomllib.loads((STYLED / "LABELS.toml").read_text())
GEMINI_STYLED = GOLDEN / "gemini-0.61.0-styled"


def _backend_without_known_placeholders() -> ClaudeBackend:
    backend = ClaudeBackend(cli_version="2.1.332")
    assert backend.patterns.input_placeholder is not None  # the rule data this test takes away
    backend._patterns = dataclasses.replace(backend.patterns, input_placeholder=None)  # test-only: as if no rule knew it
    return backend


@pytest.mark.parametrize("name", sorted(LABELS))
def test_real_styled_screens_read_right_without_the_known_placeholder_texts(name):
    label = LABELS[name]
    screen = Screen.from_styled((STYLED / name).read_text())
    analysis = _backend_without_known_placeholders().analyse(screen)
    assert analysis.state.value == label["state"]
    assert analysis.input_text == label["input_text"]
    assert analysis.placeholder == label["placeholder"]


@pytest.mark.parametrize("name", sorted(tomllib.loads((GEMINI_STYLED / "LABELS.toml").read_text())))
def test_gemini_draws_its_placeholder_grey_and_the_ink_marks_it_without_the_text_rule(name):
    from ccci.backends.gemini import GeminiBackend

    label = tomllib.loads((GEMINI_STYLED / "LABELS.toml").read_text())[name]
    backend = GeminiBackend()
    assert backend.patterns.input_placeholder_inks == ("38;5;248",)
    backend._patterns = dataclasses.replace(backend.patterns, input_placeholder=None)  # test-only: no text rule
    analysis = backend.analyse(Screen.from_styled((GEMINI_STYLED / name).read_text()))
    assert (analysis.state.value, analysis.input_text, analysis.placeholder) == (
        label["state"], label["input_text"], label["placeholder"])
    # without the ink the grey text would be typed text
    backend._patterns = dataclasses.replace(backend.patterns, input_placeholder_inks=())
    if label["placeholder"]:
        assert backend.analyse(Screen.from_styled((GEMINI_STYLED / name).read_text())).input_text == label["placeholder"]


CODEX_STYLED = GOLDEN / "codex-0.169.0-styled"


@pytest.mark.parametrize("name", sorted(tomllib.loads((CODEX_STYLED / "LABELS.toml").read_text())))
def test_codex_draws_its_placeholder_faint(name):
    from ccci.backends.codex import CodexBackend

    label = tomllib.loads((CODEX_STYLED / "LABELS.toml").read_text())[name]
    backend = CodexBackend()
    backend._patterns = dataclasses.replace(backend.patterns, input_placeholder=None)  # test-only: no text rule
    analysis = backend.analyse(Screen.from_styled((CODEX_STYLED / name).read_text()), label["title"])
    assert (analysis.state.value, analysis.input_text, analysis.placeholder) == (
        label["state"], label["input_text"], label["placeholder"])


def test_placeholder_inks_are_validated():
    from ccci.patterns import PatternError, PatternSet

    with pytest.raises(PatternError, match=r"x\.toml: layout\.input_placeholder_inks: expected a list of SGR colours"):
        PatternSet.from_dict({"layout": {"input_placeholder_inks": "grey"}}, "x.toml")


def test_without_styles_an_unknown_placeholder_reads_as_a_draft():
    """What the styles are for: the same screen as plain text, no rule for its placeholder."""
    plain = str(Screen.from_styled((STYLED / "03_529_placeholder.txt").read_text()))
    analysis = _backend_without_known_placeholders().analyse(plain)
    assert analysis.input_text == "Resend your message to try again" and analysis.placeholder == ""


def test_a_placeholder_text_nobody_has_seen_is_still_a_placeholder():
    raw = (STYLED / "03_529_placeholder.txt").read_text()
    assert "esend your message to try again" in raw
    raw = raw.replace("\x1b[7mR", "\x1b[7mA").replace("esend your message to try again", "sk me anything, or try /help")
    analysis = ClaudeBackend(cli_version="2.1.332").analyse(Screen.from_styled(raw))
    assert analysis.input_text == "" and analysis.placeholder == "Ask me anything, or try /help"


def test_typed_text_drawn_faint_only_in_part_is_a_draft():
    raw = (STYLED / "04_typed_over_placeholder.txt").read_text()
    raw = raw.replace("continue\x1b[7m", "cont\x1b[2minue\x1b[7m")  # half of it dim: still typed by someone
    analysis = _backend_without_known_placeholders().analyse(Screen.from_styled(raw))
    assert analysis.input_text == "continue" and analysis.placeholder == ""


def test_sgr_parsing_colours_resets_and_line_carry():
    text, styles, end = parse_line("a\x1b[38;5;2mb\x1b[2mc\x1b[22md\x1b[7me\x1b[27mf\x1b[48;2;2;7;2mg\x1b[0;2mh")
    assert text == "abcdefgh"
    # colour numbers (5;2 and 2;7;2) are not read as faint or reverse; the foreground is kept
    assert [s & FLAGS for s in styles] == [0, 0, FAINT, 0, REVERSE, 0, 0, FAINT] and end == FAINT
    assert [foreground(s) for s in styles] == ["", "38;5;2", "38;5;2", "38;5;2", "38;5;2", "38;5;2", "38;5;2", ""]
    _, styles, _ = parse_line("\x1b[90ma\x1b[39mb\x1b[38;2;1;2;3mc")
    assert [foreground(s) for s in styles] == ["90", "", "38;2;1;2;3"]
    screen = Screen.from_styled("x \x1b[2mdim\nstill dim\x1b[0m plain\n\n\n")
    assert str(screen) == "x dim\nstill dim plain"  # trailing blank lines cut, like the rules see them
    assert faint_only(screen, 0, 2) is True and faint_only(screen, 1, 0, 9) is True
    assert faint_only(screen, 1, 0) is False and faint_only(screen, 0, 0) is False
    assert faint_only("x dim", 0, 2) is None  # a plain str has no styles


@pytest.mark.parametrize("styled", [True, False], ids=["styled", "plain"])
def test_a_remedy_is_not_blocked_by_a_placeholder_nobody_has_seen(styled, tmp_path):
    before = Screen.from_styled((STYLED / "03_529_placeholder.txt").read_text())
    after = Screen.from_styled((STYLED / "05_reply_idle.txt").read_text())
    tmux = ScreenSequence([before if styled else str(before), after])
    res = deliver(tmux, "%1", _backend_without_known_placeholders(), "continue", dict(DEFAULT_CHECKS), FakeClock(),
                  tmp_path)
    if styled:  # as ccci watch captures: typed and submitted
        assert res.delivered and tmux.typed == ["continue"] and tmux.keys == ["Enter"], res.detail
    else:  # plain text would have read the placeholder as someone's draft
        assert not res.delivered and res.retry_later and tmux.typed == [] and "draft" in res.detail


def _styled_captures() -> list[str]:
    dirs = [STYLED, GEMINI_STYLED, CODEX_STYLED]
    return [p.read_text() for d in dirs for p in sorted(d.glob("*.txt"))]


def test_reusing_an_earlier_captures_parsed_lines_gives_the_fresh_parse():
    """Screen.from_styled(previous=...) (what Tmux does per pane) against a fresh parse:
    every pair of real styled captures, the same capture again, and a capture whose first
    line's style change is cut (so every later line starts in another style and must not
    be taken from the earlier parse)."""
    caps = _styled_captures()
    assert len(caps) >= 6
    variants = caps + [c.split("\n", 1)[1] if "\n" in c else c for c in caps] + [
        c.replace("\x1b[0;2m", "", 1) for c in caps if "\x1b[0;2m" in c
    ]
    reused = 0
    for before in caps:
        keep: dict = {}
        Screen.from_styled(before, None, keep)
        assert keep  # one entry per line
        for after in variants:
            fresh = Screen.from_styled(after)
            seen: dict = {}
            got = Screen.from_styled(after, keep, seen)
            assert str(got) == str(fresh) and got.styles == fresh.styles
            assert set(seen) == {k for k in seen if k[0] in after.split("\n")}  # only this capture's lines
            reused += sum(1 for k in seen if k in keep)
    assert reused > 0  # the reuse path ran, not only fresh parses


def test_tmux_keeps_only_each_panes_last_parsed_lines():
    from ccci import tmux as tmux_mod

    t = tmux_mod.Tmux("ccci-unit-never-started")
    caps = _styled_captures()
    first = t._screen("%1", caps[0].split("\n"))
    assert first == Screen.from_styled(caps[0]) and first.styles == Screen.from_styled(caps[0]).styles
    again = t._screen("%1", caps[1].split("\n"))
    assert again.styles == Screen.from_styled(caps[1]).styles
    assert {k[0] for k in t._parsed["%1"]} == set(caps[1].split("\n"))
    for i in range(tmux_mod.MAX_PARSED_PANES + 1):
        t._parsed[f"%x{i}"] = {}
    t._screen("%2", caps[2].split("\n"))
    assert set(t._parsed) == {"%2"}  # past the bound everything else is dropped
