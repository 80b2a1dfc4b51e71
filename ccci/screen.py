"""Pane text that remembers how it was drawn: which characters were dim.

A TUI draws a *placeholder* in an empty input box (Claude Code 2.1.332: ``Resend your
message to try again`` after a failed request) in faint text (SGR 2), and what a person
typed in normal text. ``capture-pane -p`` loses the difference, so a placeholder nobody
has written a rule for yet would read as a draft and block every remedy. ``capture-pane
-p -e`` keeps it: :class:`Screen` is the plain text (a ``str``, what every rule reads)
built from such a capture, and :meth:`Screen.faint_only` tells whether a stretch of a line
was drawn faint.

Measured on Claude Code 2.1.332 in tmux 3.3 (``tests/golden/claude-2.1.332-styled/``): the
empty box after a 529 is drawn ``❯`` NBSP, then the cursor cell in reverse video holding the
placeholder's first letter (``ESC[7mR``), then ``ESC[0;2m`` and the rest of the placeholder;
typed text is drawn in the default style with the cursor cell after it.
"""
from __future__ import annotations

import re

#: one escape sequence in ``capture-pane -e`` output: SGR (``ESC[...m``), other CSI, OSC
ESCAPE_RE = re.compile(r"\x1b\[([0-?]*)([ -/]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")

FAINT = 1
REVERSE = 2
FLAGS = 0xFF  #: the attribute bits of a style; above them, the foreground colour's id

#: foreground colours seen so far, interned: a style is ``flags | id << 8``; id 0 is the
#: terminal's default foreground. The names are SGR parameter strings: ``"38;5;248"``,
#: ``"38;2;153;153;153"``, ``"90"``.
_FG_IDS: dict[str, int] = {"": 0}
_FG_NAMES: list[str] = [""]


def _fg_id(name: str) -> int:
    fid = _FG_IDS.get(name)
    if fid is None:
        fid = _FG_IDS[name] = len(_FG_NAMES)
        _FG_NAMES.append(name)
    return fid


def foreground(style: int) -> str:
    """The SGR name of a style's foreground colour (``"38;5;248"``; ``""`` = default)."""
    return _FG_NAMES[style >> 8]


def _sgr(params: str, style: int) -> int:
    """Apply one SGR parameter list (``"0;2"``) to ``style`` (FAINT | REVERSE bits and
    the foreground colour's id).

    Colour parameters (``38;5;n``, ``38;2;r;g;b`` and the background forms) are taken
    whole so their numbers are not read as attributes."""
    codes = [c for c in params.replace(":", ";").split(";")] if params else ["0"]
    i = 0
    while i < len(codes):
        code = int(codes[i]) if codes[i].isdigit() else 0
        if code in (38, 48, 58):
            kind = codes[i + 1] if i + 1 < len(codes) else ""
            width = 3 if kind == "5" else 5 if kind == "2" else 2
            if code == 38:
                style = (style & FLAGS) | _fg_id(";".join(codes[i:i + width])) << 8
            i += width
            continue
        if code == 0:
            style = 0
        elif code == 2:
            style |= FAINT
        elif code == 22:  # normal intensity: neither bold nor faint
            style &= ~FAINT
        elif code == 7:
            style |= REVERSE
        elif code == 27:
            style &= ~REVERSE
        elif 30 <= code <= 37 or 90 <= code <= 97:
            style = (style & FLAGS) | _fg_id(str(code)) << 8
        elif code == 39:
            style &= FLAGS
        i += 1
    return style


def parse_line(styled: str, style: int = 0) -> tuple[str, list[int], int]:
    """One line of ``capture-pane -e`` output as (plain text, style of each character,
    style in force at its end).

    :param style: the style in force where the line starts: tmux 3.3 writes only the
        changes from the previous cell, across line ends too, so a capture is parsed from
        its first line on.
    :returns: the text without escapes; a list as long as it, each item a bit set of
        :data:`FAINT` and :data:`REVERSE`; the style to start the next line with.
    """
    out: list[str] = []
    styles: list[int] = []
    pos = 0
    for m in ESCAPE_RE.finditer(styled):
        chunk = styled[pos:m.start()]
        out.append(chunk)
        styles.extend([style] * len(chunk))
        if m.group(3) == "m" and m.group(2) == "":
            style = _sgr(m.group(1), style)
        pos = m.end()
    chunk = styled[pos:]
    out.append(chunk)
    styles.extend([style] * len(chunk))
    return "".join(out), styles, style


class Screen(str):
    """A pane capture: the plain text (this ``str``) plus the styles it was drawn with.

    Build it from ``capture-pane -p -e -J`` output with :meth:`from_styled`; every rule
    reads the plain text exactly as it reads ``capture-pane -p -J`` (each line with its
    trailing blanks removed). A plain ``str`` passed where a :class:`Screen` may come (fake
    panes, golden screens) simply has no styles: :func:`faint_only` answers ``None``.
    """

    styles: tuple[tuple[int, ...], ...]

    @classmethod
    def from_styled(cls, styled: "str | list[str]", previous: "dict[tuple[str, int], tuple[str, tuple[int, ...], int]] | None" = None,
                    keep: "dict[tuple[str, int], tuple[str, tuple[int, ...], int]] | None" = None) -> "Screen":
        """Parse a ``capture-pane -e`` capture (lines joined by ``\\n``, or the list of
        lines).

        :param previous: parsed lines of an earlier capture (what ``keep`` was filled with
            then), reused for a line with the same raw text and the same style in force
            at its start: a pane's next capture mostly repeats its lines (bench/: parsing
            was 2.7 ms of a 50-agent tick). Parsing is a pure function of those two, so
            the result is the same as without it.
        :param keep: filled with this capture's parsed lines (``{(raw line, style at its
            start): (text without trailing blanks, styles, style at its end)}``), to pass
            as ``previous`` next time; it holds only this capture's lines.
        """
        lines: list[str] = []
        styles: list[tuple[int, ...]] = []
        style = 0
        for raw in styled.split("\n") if isinstance(styled, str) else styled:
            key = (raw, style)
            hit = previous.get(key) if previous is not None else None
            if hit is None:
                text, st, end = parse_line(raw, style)
                stripped = text.rstrip()
                hit = (stripped, tuple(st[:len(stripped)]), end)
            if keep is not None:
                keep[key] = hit
            lines.append(hit[0])
            styles.append(hit[1])
            style = hit[2]
        while lines and not lines[-1]:
            lines.pop()
            styles.pop()
        obj = cls("\n".join(lines))
        # styles line up with splitlines(), what the rules index; a line break of another
        # kind inside a line (U+2028, ...) would shift them, so such a screen has none
        obj.styles = tuple(styles) if len(obj.splitlines()) == len(styles) else ()
        return obj


def faint_only(screen: str, line_index: int, start: int, end: int | None = None,
               inks: "frozenset[str] | tuple[str, ...]" = ()) -> bool | None:
    """Whether characters ``start:end`` of line ``line_index`` of ``screen`` were all drawn
    faint: the test for an input-box placeholder.

    Faint is SGR 2 (Claude Code 2.1.332), or a foreground colour in ``inks`` (a CLI that
    draws its placeholder grey instead: Gemini CLI 0.61.0 uses ``38;5;248`` for ``Type your
    message or @path/to/file`` and ``38;5;231`` for typed text). Blanks are ignored, and so
    is a cell in reverse video (the cursor: Claude Code 2.1.332 draws a placeholder's first
    letter under it); at least one faint character is needed.

    :param screen: a :class:`Screen` (anything else has no styles).
    :param line_index: index into ``screen.splitlines()``; negative counts from the end.
    :param inks: SGR foreground names that count as faint (``"38;5;248"``).
    :returns: ``True``/``False``; ``None`` when the screen carries no styles for that line.
    """
    styles = getattr(screen, "styles", None)
    if not styles:
        return None
    lines = screen.splitlines()
    if not -len(lines) <= line_index < len(lines) or len(styles) != len(lines):
        return None
    ink_ids = {_FG_IDS[i] for i in inks if i in _FG_IDS}
    text, st = lines[line_index], styles[line_index]
    faint = 0
    for ch, s in zip(text[start:end], st[start:end]):
        if ch.isspace() or ch == "\u00a0" or s & REVERSE:
            continue
        if not (s & FAINT or (s >> 8) in ink_ids):
            return False
        faint += 1
    return faint > 0
