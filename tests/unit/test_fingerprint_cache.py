"""PatternSet.fingerprint remembers normalized lines (ccci/patterns.py): the hash is the
same as blanking every line afresh, across backends (different ``normalize`` lists),
screens that share lines, a generation change, and the bound on pattern sets."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ccci import patterns
from ccci.backends.claude import ClaudeBackend
from ccci.backends.codex import CodexBackend
from ccci.backends.gemini import GeminiBackend

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _fresh(ps: patterns.PatternSet, lines: list[str]) -> str:
    h = hashlib.sha1()
    for line in lines:
        for rx in ps.normalize:
            line = rx.sub("#", line)
        h.update(line.encode("utf-8", "replace"))
        h.update(b"\n")
    return h.hexdigest()


def _screens() -> list[list[str]]:
    return [p.read_text(errors="replace").splitlines() for d in sorted(GOLDEN.iterdir()) if d.is_dir()
            for p in sorted(d.glob("*.txt"))][:200]


def test_remembered_lines_hash_like_fresh_blanking(monkeypatch):
    monkeypatch.setattr(patterns, "_NORMALIZED", {})
    monkeypatch.setattr(patterns, "NORMALIZED_GENERATION", 50)  # several generation changes
    sets = [ClaudeBackend(cli_version="2.1.332").patterns, CodexBackend().patterns, GeminiBackend().patterns]
    assert all(ps.normalize for ps in sets[:1])
    screens = _screens()
    assert len(screens) > 20
    for _ in range(2):
        for ps in sets:
            for lines in screens:
                assert ps.fingerprint(lines) == _fresh(ps, lines)
    assert len(patterns._NORMALIZED) == len({tuple(ps.normalize) for ps in sets if ps.normalize})
    # bounded: a generation ends after the screen that took it past the size
    longest = max(len(lines) for lines in screens)
    for new, old in patterns._NORMALIZED.values():
        assert len(new) <= 50 + longest and len(old) <= 50 + longest


def test_pattern_sets_are_bounded(monkeypatch):
    import re

    monkeypatch.setattr(patterns, "_NORMALIZED", {})
    monkeypatch.setattr(patterns, "MAX_NORMALIZE_SETS", 3)
    ps = ClaudeBackend(cli_version="2.1.332").patterns
    for i in range(10):
        ps.normalize = [re.compile(rf"\d{{{i + 1}}}")]
        assert ps.fingerprint(["12345 x 42"]) == _fresh(ps, ["12345 x 42"])
        assert len(patterns._NORMALIZED) <= 3
