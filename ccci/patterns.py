"""Screen detection patterns as data: one TOML file per backend and CLI version.

Files live in ``ccci/patterns/<backend>-<version>.toml``. Each has:

``[meta]``
    ``backend``, ``version`` (the CLI version the screens were recorded from), ``source``.
``[layout]``
    ``input_line``: regex with a ``text`` group for the input box's first line (the
    newest matching line on screen is the input box).
    ``input_end``: regex of the line that closes the input box (optional; else the input
    box is one line).
    ``input_top``: regex of a border line just above the input line (optional).
    ``input_search_lines``: look for the input line only among the bottom N non-blank
    lines (default 0: anywhere), for CLIs whose echoed old prompts look like it.
    ``input_placeholder``: regex; when the input box's text matches it, the box is
    empty (CLIs that draw a placeholder such as ``Ask Codex to do anything`` in an empty
    box; ``capture-pane -p`` loses the dim colour that tells it from typed text).
    Without a rule, text drawn faint (SGR 2) in the box is a placeholder too, when the
    screen is a :class:`ccci.screen.Screen` (what ``ccci watch`` captures).
    ``input_placeholder_inks``: list of SGR foreground colours (``"38;5;248"``) that also
    mark placeholder text, for CLIs that draw it grey rather than faint.
    ``block_start``: regex of the line that opens a user turn; the *newest block* is
    from the last such line above the input box down to the box. Old errors stay on
    screen above newer turns, so rules with ``scope = "block"`` see only the newest.
    ``normalize``: regexes whose matches are blanked before fingerprinting (timers,
    token counters), so a ticking clock is not "activity".
    ``default_state``: state when no rule matches and an input box is present.
``[[rules]]``
    ``id``, ``state`` (an :class:`ccci.model.AgentState` value), ``regex``, ``scope``
    (``block`` | ``above`` | ``input`` | ``footer`` | ``screen`` | ``title`` | ``last``:
    the bottom non-blank line),
    ``priority`` (higher wins; default 50), ``unless`` (regex; the rule does not match
    when this matches in the same scope), ``source`` (where it was observed),
    ``input_box`` (optional: ``"present"`` or ``"absent"``; the rule only matches when
    an input box was, or was not, found on screen. Dialogs that replace the input box
    use ``"absent"``, so a model reply quoting the dialog's text cannot match).
    Named groups are kept as evidence; ``reset_epoch`` (unix seconds) and ``reset_iso``
    give a usage-limit reset time; ``reset_clock`` (``8:34am``, ``5pm``) with
    ``reset_tz`` (``UTC`` or an IANA zone name, e.g. ``Europe/Berlin``) and optional
    ``reset_date`` (``Jul 18``) give one relative to the time of the capture (see
    :func:`resolve_clock_time`). A ``resume_failed`` group marks a screen saying the
    conversation cannot be resumed (the process-death remedy then starts fresh).

A user overrides or adds rules in ``ccci.toml`` under ``[patterns.<backend>]`` with
the same ``[[rules]]`` schema; a rule with a builtin's ``id`` replaces it.
"""
from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from ccci.clock import UTC, local_zone, parse_utc
from ccci.model import AgentState, Match, ScreenAnalysis
from ccci.screen import faint_only

PATTERN_DIR = Path(__file__).parent / "patterns"
SCOPES = ("block", "above", "input", "footer", "screen", "title", "last")
INPUT_BOX_CONDITIONS = ("", "present", "absent")
WAITING_UNTIL_RE = re.compile(r"WAITING-UNTIL:\s*(?P<iso>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?)")
MAX_LINES = 400  # only the bottom of a huge capture matters; bounds the work per screen
MAX_LINE_CHARS = 2000


class PatternError(ValueError):
    """A pattern file or override is malformed; the message names file, key and fix."""


#: normalized lines per tuple of ``normalize`` patterns: (this generation, the previous
#: one) of ``{line: line with the patterns blanked}`` (:meth:`PatternSet.fingerprint`)
_NORMALIZED: dict[tuple[re.Pattern, ...], tuple[dict[str, str], dict[str, str]]] = {}
#: lines in one generation of :data:`_NORMALIZED` before it becomes the previous one
#: (a 200-agent fleet's screens share many lines; bounds the memory to two generations)
NORMALIZED_GENERATION = 10000
#: distinct ``normalize`` tuples kept in :data:`_NORMALIZED` (one per backend and version in use)
MAX_NORMALIZE_SETS = 64


@dataclass
class Rule:
    """One detection rule (see the module docstring for the fields)."""

    id: str
    state: AgentState
    regex: re.Pattern
    scope: str = "block"
    priority: int = 50
    unless: re.Pattern | None = None
    source: str = ""
    input_box: str = ""  # "" (either), "present" or "absent"


@dataclass
class PatternSet:
    """Layout and rules for one backend and CLI version."""

    backend: str
    version: str
    rules: list[Rule]
    input_line: re.Pattern | None = None
    input_end: re.Pattern | None = None
    input_top: re.Pattern | None = None
    input_placeholder: re.Pattern | None = None
    input_search_lines: int = 0
    input_placeholder_inks: tuple[str, ...] = ()
    block_start: re.Pattern | None = None
    normalize: list[re.Pattern] = field(default_factory=list)
    default_state: AgentState = AgentState.IDLE
    origin: str = ""

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str) -> "PatternSet":
        """Build from parsed TOML.

        :raises PatternError: naming ``origin`` and the bad key.
        """
        meta = data.get("meta", {})
        layout = data.get("layout", {})
        ps = cls(
            backend=str(meta.get("backend", "")),
            version=str(meta.get("version", "")),
            rules=[],
            origin=origin,
        )
        for key in ("input_line", "input_end", "input_top", "input_placeholder", "block_start"):
            if key in layout:
                setattr(ps, key, _compile(layout[key], origin, f"layout.{key}"))
        ps.normalize = [_compile(r, origin, "layout.normalize") for r in layout.get("normalize", [])]
        isl = layout.get("input_search_lines", 0)
        if not isinstance(isl, int) or isl < 0:
            raise PatternError(f"{origin}: layout.input_search_lines: expected a whole number >= 0 (0 = whole screen)")
        ps.input_search_lines = isl
        inks = layout.get("input_placeholder_inks", [])
        if not isinstance(inks, list) or not all(isinstance(i, str) and re.fullmatch(r"[0-9;]+", i) for i in inks):
            raise PatternError(f'{origin}: layout.input_placeholder_inks: expected a list of SGR colours such as ["38;5;248"]')
        ps.input_placeholder_inks = tuple(inks)
        if "default_state" in layout:
            ps.default_state = _state(layout["default_state"], origin, "layout.default_state")
        ps.rules = [_rule(r, origin, i) for i, r in enumerate(data.get("rules", []))]
        ps.rules.sort(key=lambda r: -r.priority)
        return ps

    @classmethod
    def load(cls, path: Path) -> "PatternSet":
        """Load one pattern file.

        :raises PatternError: on TOML syntax errors or bad keys.
        """
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise PatternError(f"{path}: invalid TOML: {exc}") from None
        return cls.from_dict(data, str(path))

    def with_overrides(self, rules: list[dict[str, Any]], origin: str) -> "PatternSet":
        """A copy with user rules added; a rule whose ``id`` exists replaces it.

        :raises PatternError: on a malformed override rule.
        """
        new = [_rule(r, origin, i) for i, r in enumerate(rules)]
        ids = {r.id for r in new}
        merged = [r for r in self.rules if r.id not in ids] + new
        merged.sort(key=lambda r: -r.priority)
        copy = PatternSet(**{**self.__dict__, "rules": merged})
        return copy

    # ------------------------------------------------------------------ analysis
    def analyse(self, screen: str, title: str = "", now: datetime | None = None) -> ScreenAnalysis:
        """Read one capture.

        :param screen: ``tmux capture-pane -p`` text (any size; only the last
            ``MAX_LINES`` lines, each cut to ``MAX_LINE_CHARS``, are read).
        :param title: the pane title (for ``scope = "title"`` rules).
        :param now: when the capture was taken (UTC; default: now), to place a reset
            time given without a date (``resets 8:34am (UTC)``).
        :returns: a :class:`ccci.model.ScreenAnalysis`.
        """
        every = screen.splitlines()
        offset = max(0, len(every) - MAX_LINES)  # index of lines[0] in the whole screen
        lines = [ln[:MAX_LINE_CHARS].rstrip() for ln in every[offset:]]
        while lines and not lines[-1].strip():
            lines.pop()
        regions = self._regions(lines, screen, offset)
        regions["title"] = [title] if title else []
        matches: list[Match] = []
        for rule in self.rules:
            if rule.input_box and (rule.input_box == "present") != regions["_has_input"]:
                continue
            m = self._match(rule, regions[rule.scope])
            if m is not None:
                matches.append(m)
        analysis = ScreenAnalysis(matches=matches, input_text=regions["_input_text"][0] if regions["_input_text"] else "",
                                  input_present=regions["_has_input"], block="\n".join(regions["block"]),
                                  placeholder=regions["_placeholder"])
        if matches:
            analysis.state = matches[0].state
        elif regions["_has_input"]:
            analysis.state = self.default_state
        else:
            analysis.state = AgentState.UNKNOWN
        for m in matches if analysis.state == AgentState.USAGE_LIMIT else ():
            # a reset belongs to a screen that reads usage_limit (an old limit line in the
            # history under a dialog is no reset: codex-0.171.0/17_warnings_view.txt)
            if m.state == AgentState.USAGE_LIMIT:
                analysis.reset_at = _reset_time(m.groups, now or datetime.now(UTC))
                if analysis.reset_at:
                    break
        # only the newest block: a wait declared before a newer turn no longer holds
        for line in reversed(regions["block"]):
            wm = WAITING_UNTIL_RE.search(line)
            if wm:
                try:
                    analysis.waiting_until = parse_utc(wm.group("iso"))
                except ValueError:
                    pass
                break
        analysis.fingerprint = self.fingerprint(lines)
        return analysis

    def fingerprint(self, lines: list[str]) -> str:
        """Hash of the lines with ``normalize`` patterns blanked (timers, counters).

        A line's normalized text is remembered (:data:`_NORMALIZED`, by the tuple of
        ``normalize`` patterns and the line): screens repeat most of their lines from one
        capture to the next, and blanking was about half of :meth:`analyse` (bench/:
        91 of 206 us per Claude Code screen). Same result as blanking afresh."""
        # one update of every line followed by "\n" (the digest of hashing line by line,
        # with two update calls per line)
        normalize = tuple(self.normalize)
        if not normalize:
            return hashlib.sha1("".join(line + "\n" for line in lines).encode("utf-8", "replace")).hexdigest()
        known = _NORMALIZED.get(normalize)
        if known is None:
            if len(_NORMALIZED) >= MAX_NORMALIZE_SETS:
                _NORMALIZED.clear()  # pattern sets replaced by config reloads
            known = _NORMALIZED[normalize] = ({}, {})
        new, old = known
        get_new = new.get
        outs = []
        for line in lines:
            out = get_new(line)
            if out is None:
                out = old.get(line)
                if out is None:
                    out = line
                    for rx in normalize:
                        out = rx.sub("#", out)
                new[line] = out
            outs.append(out)
        if len(new) > NORMALIZED_GENERATION:
            # two generations: the lines of recent screens stay, old ones age out
            _NORMALIZED[normalize] = ({}, new)
        text = "\n".join(outs) + "\n" if outs else ""
        return hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()

    def _regions(self, lines: list[str], screen: str = "", offset: int = 0) -> dict[str, Any]:
        """Split the screen into the scopes rules read (``block``, ``above``, ``input``,
        ``footer``, ``screen``, ``last``). ``screen`` and ``offset`` (index of ``lines[0]``
        in ``screen.splitlines()``) let a :class:`ccci.screen.Screen` tell a placeholder
        drawn faint from typed text."""
        idx = None
        nonblank = [ln for ln in lines if ln.strip()]
        last = nonblank[-1:] if nonblank else []
        if self.input_line is not None:
            lowest = 0
            if self.input_search_lines:
                # only the bottom N non-blank lines may hold the input box, so an old
                # echoed prompt higher up is never mistaken for it
                seen = 0
                for i in range(len(lines) - 1, -1, -1):
                    if lines[i].strip():
                        seen += 1
                        if seen == self.input_search_lines:
                            lowest = i
                            break
            for i in range(len(lines) - 1, lowest - 1, -1):
                if self.input_line.search(lines[i]):
                    idx = i
                    break
        if idx is None:
            return {
                "block": self._newest_block(lines), "above": lines, "input": [], "footer": [], "screen": lines,
                "last": last, "_input_text": [], "_has_input": False, "_placeholder": "",
            }
        end = idx + 1
        if self.input_end is not None:
            while end < len(lines) and not self.input_end.search(lines[end]):
                end += 1
        m = self.input_line.search(lines[idx])
        first = (m.groupdict().get("text") or "") if m else ""
        input_lines = [first] + [ln.strip() for ln in lines[idx + 1:end]]
        text = "\n".join(x for x in (s.strip() for s in input_lines) if x)
        placeholder = ""
        if text and (
            (self.input_placeholder is not None and self.input_placeholder.search(text))
            or self._drawn_faint(screen, offset, idx, end, m.start("text") if m and m.groupdict().get("text") is not None else 0)
        ):
            # the placeholder of an empty box, not typed text: a text the pattern file
            # knows, or one drawn faint (capture-pane -e), so a new one cannot block a remedy
            placeholder, text, input_lines = text, "", [""]
        top = idx
        if self.input_top is not None and top > 0 and self.input_top.search(lines[top - 1]):
            top -= 1
        above = lines[:top]
        return {
            "block": self._newest_block(above), "above": above, "input": input_lines,
            "footer": lines[end + (1 if self.input_end is not None else 0):], "screen": lines, "last": last,
            "_input_text": [text], "_has_input": True, "_placeholder": placeholder,
        }

    def _drawn_faint(self, screen: str, offset: int, idx: int, end: int, start: int) -> bool:
        """True when every non-blank character of the input box (line ``idx`` from column
        ``start``, then the lines up to ``end``) was drawn faint; False without styles."""
        if not getattr(screen, "styles", None):
            return False
        every = screen.splitlines()
        seen = False
        for line_index, col in [(offset + idx, start)] + [(offset + i, 0) for i in range(idx + 1, end)]:
            if line_index >= len(every) or not every[line_index][col:].strip(" \u00a0"):
                continue  # a blank line of the box: nothing typed there
            if not faint_only(screen, line_index, col, inks=self.input_placeholder_inks):
                return False
            seen = True
        return seen

    def _newest_block(self, lines: list[str]) -> list[str]:
        """The lines from the last ``block_start`` line (the newest user turn) on."""
        if self.block_start is not None:
            for i in range(len(lines) - 1, -1, -1):
                if self.block_start.search(lines[i]):
                    return lines[i:]
        return lines

    @staticmethod
    def _match(rule: Rule, region: list[str]) -> Match | None:
        if rule.unless is not None and any(rule.unless.search(ln) for ln in region):
            return None
        for line in reversed(region):
            m = rule.regex.search(line)
            if m:
                groups = {k: v for k, v in m.groupdict().items() if v is not None}
                return Match(rule=rule.id, state=rule.state, line=line.strip(), groups=groups, source=rule.source)
        return None


def _compile(text: Any, origin: str, key: str) -> re.Pattern:
    if not isinstance(text, str):
        raise PatternError(f"{origin}: {key}: expected a regex string, got {type(text).__name__}")
    try:
        return re.compile(text)
    except re.error as exc:
        raise PatternError(f"{origin}: {key}: invalid regex ({exc}); fix the pattern") from None


def _state(value: Any, origin: str, key: str) -> AgentState:
    try:
        return AgentState(value)
    except ValueError:
        allowed = ", ".join(s.value for s in AgentState)
        raise PatternError(f"{origin}: {key}: unknown state {value!r}; use one of {allowed}") from None


def _rule(data: Any, origin: str, index: int) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(data, dict):
        raise PatternError(f"{origin}: {where}: expected a table")
    for req in ("id", "state", "regex"):
        if req not in data:
            raise PatternError(f"{origin}: {where}.{req}: missing; every rule needs id, state and regex")
    scope = data.get("scope", "block")
    if scope not in SCOPES:
        raise PatternError(f"{origin}: {where}.scope: {scope!r} unknown; use one of {', '.join(SCOPES)}")
    input_box = data.get("input_box", "")
    if input_box not in INPUT_BOX_CONDITIONS:
        raise PatternError(f"{origin}: {where}.input_box: {input_box!r} unknown; use \"present\" or \"absent\" (or omit it)")
    return Rule(
        id=str(data["id"]),
        state=_state(data["state"], origin, f"{where}.state"),
        regex=_compile(data["regex"], origin, f"{where}.regex"),
        scope=scope,
        priority=int(data.get("priority", 50)),
        unless=_compile(data["unless"], origin, f"{where}.unless") if "unless" in data else None,
        source=str(data.get("source", "")),
        input_box=input_box,
    )


CLOCK_RE = re.compile(r"^(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ampm>[ap]m)?$", re.I)
MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
RESET_PAST_S = 6 * 3600  #: a dateless reset up to this far before the capture is read as past, not tomorrow


def resolve_clock_time(clock: str, tz: "str | tzinfo", now: datetime, date: str = "") -> datetime | None:
    """A reset time shown as a wall-clock time in a zone, as an absolute UTC time.

    Claude Code prints ``resets 8:34am (UTC)`` / ``resets 5pm (Europe/Paris)`` without a
    date. The time is placed on the day (in ``tz``) that puts it within
    ``(now - RESET_PAST_S, now + 24 h - RESET_PAST_S]``: the next occurrence (tomorrow when
    today's is over), except that a reset that passed less than 6 h before the capture
    stays in the past (the limit has lifted; a 5-hour session limit is never announced
    more than 5 h ahead). With ``date`` (``Jul 18``) the year is the one that puts it
    nearest ``now``.

    :param clock: ``8:34am``, ``5pm``, ``17:40``.
    :param tz: ``UTC``, an IANA zone name, or a ``tzinfo``.
    :param now: the capture's time (aware datetime).
    :param date: optional ``<Mon> <day>``.
    :returns: an aware UTC datetime, or ``None`` when the clock, zone or date is unreadable.
    """
    from datetime import timedelta
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    m = CLOCK_RE.match(clock.strip())
    if not m:
        return None
    hour, minute = int(m.group("h")), int(m.group("m") or 0)
    ampm = (m.group("ampm") or "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    if isinstance(tz, tzinfo):
        zone = tz
    else:
        try:
            zone = UTC if tz.strip().upper() in ("UTC", "GMT", "Z") else ZoneInfo(tz.strip())
        except (ZoneInfoNotFoundError, ValueError):
            return None
    local_now = now.astimezone(zone)
    if date:
        dm = re.match(r"^(?P<mon>[A-Za-z]{3})[a-z]*\.? (?P<day>\d{1,2})$", date.strip())
        if not dm or dm.group("mon").lower() not in MONTHS:
            return None
        best = None
        for year in (local_now.year - 1, local_now.year, local_now.year + 1):
            try:
                cand = datetime(year, MONTHS[dm.group("mon").lower()], int(dm.group("day")), hour, minute, tzinfo=zone)
            except ValueError:
                continue
            if best is None or abs((cand - now).total_seconds()) < abs((best - now).total_seconds()):
                best = cand
        return best.astimezone(UTC) if best else None
    base = datetime(local_now.year, local_now.month, local_now.day, hour, minute, tzinfo=zone)
    for days in (-1, 0, 1):
        # zoneinfo arithmetic on wall time: the same clock time on the neighbouring day
        cand = (base + timedelta(days=days)).replace(tzinfo=zone)
        delta = (cand - now).total_seconds()
        if -RESET_PAST_S < delta <= 24 * 3600 - RESET_PAST_S:
            return cand.astimezone(UTC)
    return None


def _reset_time(groups: dict[str, str], now: datetime | None = None) -> datetime | None:
    if "reset_epoch" in groups:
        try:
            return datetime.fromtimestamp(int(groups["reset_epoch"]), UTC)
        except (ValueError, OverflowError, OSError):
            return None
    if "reset_iso" in groups:
        try:
            return parse_utc(groups["reset_iso"])
        except ValueError:
            return None
    if "reset_clock" in groups and "reset_tz" in groups:
        return resolve_clock_time(groups["reset_clock"], groups["reset_tz"], now or datetime.now(UTC),
                                  groups.get("reset_date", ""))
    if "reset_local" in groups:
        # a clock time without a zone (Claude Code 2.1.332's retry line '... · retrying in
        # 3s (3:22am)'): the CLI's local zone, which is ccci's (clock.local_zone)
        return resolve_clock_time(groups["reset_local"], local_zone(), now or datetime.now(UTC),
                                  groups.get("reset_date", ""))
    return None


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.-]", v))


def available(backend: str, directory: Path = PATTERN_DIR) -> list[Path]:
    """Pattern files for ``backend``, oldest version first."""
    files = list(directory.glob(f"{backend}-*.toml"))
    return sorted(files, key=lambda p: _version_key(p.stem[len(backend) + 1:]))


def choose(backend: str, version: str | None = None, directory: Path = PATTERN_DIR) -> Path:
    """The pattern file for ``backend`` at CLI ``version``: the newest file whose version
    is ``<= version`` (the nearest tested version not newer than the CLI); the newest of
    all when ``version`` is ``None`` or older than every file.

    :raises PatternError: when no file exists for the backend.
    """
    files = available(backend, directory)
    if not files:
        raise PatternError(f"{directory}: no pattern file for backend {backend!r}; add {backend}-<version>.toml")
    chosen = files[-1]
    if version:
        older = [p for p in files if _version_key(p.stem[len(backend) + 1:]) <= _version_key(version)]
        if older:
            chosen = older[-1]
    return chosen


def load_for(backend: str, version: str | None = None, directory: Path = PATTERN_DIR) -> PatternSet:
    """The pattern set of :func:`choose` (``backend`` at CLI ``version``).

    :raises PatternError: when no file exists for the backend.
    """
    return PatternSet.load(choose(backend, version, directory))
