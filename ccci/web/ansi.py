"""A pane capture with escapes (``tmux capture-pane -p -e``) as HTML: SGR colours and
attributes become ``<span>`` elements, every character of text is HTML-escaped, and
every other escape sequence (cursor moves, OSC titles and hyperlinks) is dropped.

tmux 3.3 writes SGR as ``ESC[<params>m`` with ``;``-separated parameters, 256-colour
(``38;5;N``) and RGB (``38;2;R;G;B``) forms included; ``:`` separators (ITU T.416) are
read the same way.
"""
from __future__ import annotations

import html
from typing import Iterable

from ccci.screen import ESCAPE_RE

#: the 16 ANSI colours (xterm defaults), indices 0-15 of the 256-colour palette
BASE16 = ("#000000", "#cd0000", "#00cd00", "#cdcd00", "#0000ee", "#cd00cd", "#00cdcd", "#e5e5e5",
          "#7f7f7f", "#ff0000", "#00ff00", "#ffff00", "#5c5cff", "#ff00ff", "#00ffff", "#ffffff")


def palette(n: int) -> str:
    """CSS colour of xterm 256-colour index ``n`` (0-255): 16 base colours, a 6x6x6
    cube (levels 0, 95, 135, 175, 215, 255), 24 greys (8 + 10 k)."""
    if n < 16:
        return BASE16[n]
    if n < 232:
        n -= 16
        lv = [0, 95, 135, 175, 215, 255]
        return "#%02x%02x%02x" % (lv[n // 36], lv[(n // 6) % 6], lv[n % 6])
    g = 8 + 10 * (n - 232)
    return "#%02x%02x%02x" % (g, g, g)


class _Style:
    __slots__ = ("fg", "bg", "bold", "faint", "italic", "underline", "reverse")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.fg = self.bg = None
        self.bold = self.faint = self.italic = self.underline = self.reverse = False

    def key(self) -> tuple:
        return (self.fg, self.bg, self.bold, self.faint, self.italic, self.underline, self.reverse)

    def apply(self, params: str) -> None:
        codes = params.replace(":", ";").split(";") if params else ["0"]
        i = 0
        while i < len(codes):
            c = int(codes[i]) if codes[i].isdigit() else 0
            if c in (38, 48, 58):
                kind = codes[i + 1] if i + 1 < len(codes) else ""
                colour = None
                try:
                    if kind == "5":
                        colour = palette(int(codes[i + 2]) % 256)
                        i += 3
                    elif kind == "2":
                        r, g, b = (max(0, min(255, int(x or 0))) for x in codes[i + 2:i + 5])
                        colour = "#%02x%02x%02x" % (r, g, b)
                        i += 5
                    else:
                        i += 2
                except (ValueError, IndexError):
                    return  # malformed: ignore the rest of this sequence
                if c == 38:
                    self.fg = colour
                elif c == 48:
                    self.bg = colour
                continue
            if c == 0:
                self.reset()
            elif c == 1:
                self.bold = True
            elif c == 2:
                self.faint = True
            elif c == 3:
                self.italic = True
            elif c == 4:
                self.underline = True
            elif c == 7:
                self.reverse = True
            elif c == 22:
                self.bold = self.faint = False
            elif c == 23:
                self.italic = False
            elif c == 24:
                self.underline = False
            elif c == 27:
                self.reverse = False
            elif 30 <= c <= 37:
                self.fg = BASE16[c - 30]
            elif 90 <= c <= 97:
                self.fg = BASE16[c - 90 + 8]
            elif c == 39:
                self.fg = None
            elif 40 <= c <= 47:
                self.bg = BASE16[c - 40]
            elif 100 <= c <= 107:
                self.bg = BASE16[c - 100 + 8]
            elif c == 49:
                self.bg = None
            i += 1


def _open_tag(key: tuple) -> str:
    fg, bg, bold, faint, italic, underline, reverse = key
    if reverse:
        fg, bg = (bg or "var(--screen-bg)"), (fg or "var(--screen-fg)")
    css = []
    if fg:
        css.append(f"color:{fg}")
    if bg:
        css.append(f"background:{bg}")
    classes = [n for n, on in (("b", bold), ("f", faint), ("i", italic), ("u", underline)) if on]
    attrs = (f' class="{" ".join(classes)}"' if classes else "") + (f' style="{";".join(css)}"' if css else "")
    return f"<span{attrs}>" if attrs else ""


def segments(text: str) -> list[tuple[tuple, str]]:
    """``text`` as ``[(style key, plain text)]``, escapes consumed."""
    style = _Style()
    out: list[tuple[tuple, str]] = []
    pos = 0
    for m in ESCAPE_RE.finditer(text):
        if m.start() > pos:
            out.append((style.key(), text[pos:m.start()]))
        if m.group(3) == "m" and not m.group(2):
            style.apply(m.group(1))
        pos = m.end()
    if pos < len(text):
        out.append((style.key(), text[pos:]))
    return out


def _redact(segs: list[tuple[tuple, str]], secrets: Iterable[str]) -> list[tuple[tuple, str]]:
    """Replace every secret in the *visible* text (a secret split by escapes too) by
    ``***``, kept in the style its first character had."""
    secrets = [s for s in secrets if s]
    plain = "".join(t for _, t in segs)
    if not secrets or not any(s in plain for s in secrets):
        return segs
    styles = [k for k, t in segs for _ in t]
    hidden = [False] * len(plain)
    starts: set[int] = set()
    for s in sorted(secrets, key=len, reverse=True):
        i = plain.find(s)
        while i >= 0:
            if not any(hidden[i:i + len(s)]):
                starts.add(i)
                for j in range(i, i + len(s)):
                    hidden[j] = True
            i = plain.find(s, i + 1)
    out: list[tuple[tuple, str]] = []
    for i, ch in enumerate(plain):
        if hidden[i] and i not in starts:
            continue
        piece = "***" if i in starts else ch
        if out and out[-1][0] == styles[i]:
            out[-1] = (styles[i], out[-1][1] + piece)
        else:
            out.append((styles[i], piece))
    return out


def to_html(text: str, secrets: Iterable[str] = ()) -> str:
    """HTML for a ``capture-pane -p -e`` capture: escaped text in ``<span>`` elements
    that carry the SGR colours (inline ``color``/``background``) and the classes ``b``
    (bold), ``f`` (faint), ``i`` (italic), ``u`` (underline). Every value of ``secrets``
    in the visible text is shown as ``***``. Safe to put inside ``<pre>``: no text from
    ``text`` is ever markup."""
    parts = []
    for key, chunk in _redact(segments(text), secrets):
        tag = _open_tag(key)
        esc = html.escape(chunk, quote=True)
        parts.append(f"{tag}{esc}</span>" if tag else esc)
    return "".join(parts)
