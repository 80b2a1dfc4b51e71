"""Screens of a new CLI version against the labels and rules of the nearest tested one
(issue 12, "a drift routine anyone can run"; driven by ``tools/record_cli.py``).

A recorder (``tests/e2e/test_claude_screens.py``, ``tests/e2e/record_codexgemini.py``)
writes one pane capture per state as ``NN_<state name>.txt`` into a directory. This
module

* finds the nearest tested version of the CLI that has labelled golden screens
  (:func:`find_reference`: the newest tested version not newer than the new one, else
  the oldest),
* drafts ``LABELS.toml`` for the new screens from that version's labels, matched by file
  name, else by the state name after the ``NN_`` prefix (:func:`draft_labels`,
  :func:`render_labels`); screens with no counterpart are listed as needing a label,
* reads every screen with the backend's rules for the new version (its own pattern file
  when there is one, else the nearest older one: :func:`ccci.patterns.choose`) and compares
  state, input text and reset time with the labels (:func:`classify`,
  :func:`format_report`).

Nothing here runs a CLI or needs the network.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ccci.backends.base import Backend
from ccci.testing.agent_clis import REPO

GOLDEN = REPO / "tests" / "golden"
#: a screen file a recorder writes: ``NN_<state name>.txt``
SCREEN_RE = re.compile(r"^(?P<n>\d+)_(?P<name>.+)\.txt$")
#: label keys copied into a draft (``reset_at`` and ``now`` belong to one recording)
COPIED_KEYS = ("state", "input_text")


class DriftError(ValueError):
    """Bad input for the drift routine (no labelled screens for the CLI, unreadable
    ``LABELS.toml``); the message is one line and names the fix."""


def version_key(version: str) -> tuple[int, ...]:
    """Sort key of a dotted version: ``"2.1.332"`` -> ``(2, 1, 332)`` (a non-numeric part
    counts as 0, as in :mod:`ccci.patterns`)."""
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.-]", version))


def nearest_tested(version: str, tested: tuple[str, ...] | list[str]) -> str:
    """The tested version nearest ``version``: ``version`` itself when tested, else the
    newest one older than it, else (``version`` older than all) the oldest.

    :raises DriftError: when ``tested`` is empty.
    """
    if not tested:
        raise DriftError(f"no tested version to compare {version} with; add one to the backend's tested_versions")
    ordered = sorted(tested, key=version_key)
    older = [v for v in ordered if version_key(v) <= version_key(version)]
    return older[-1] if older else ordered[0]


@dataclass(frozen=True)
class Reference:
    """The labelled golden screens of one tested version.

    Attributes:
        cli: backend name (``claude``, ``codex``...).
        version: the tested CLI version.
        directory: the golden directory holding ``LABELS.toml``.
        labels: the parsed ``LABELS.toml`` (``{file name: {"state": ..., ...}}``).
    """

    cli: str
    version: str
    directory: Path
    labels: dict[str, dict[str, Any]]


def read_labels(path: Path) -> dict[str, dict[str, Any]]:
    """A ``LABELS.toml`` file as ``{file name: label table}``.

    :raises DriftError: when the file is not valid TOML.
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DriftError(f"{path}: invalid TOML ({exc}); fix the file") from None


def find_reference(cli: str, version: str, tested: tuple[str, ...] | list[str],
                   golden: Path = GOLDEN) -> Reference:
    """The labelled screens of the tested version nearest ``version`` (:func:`nearest_tested`,
    among the ``tested`` versions that have a ``<golden>/<cli>-<v>-recorded/LABELS.toml``
    or ``<golden>/<cli>-<v>/LABELS.toml``; the ``-recorded`` one first: a recorder wrote it,
    so its screen names are the recorder's).

    :param cli: backend name.
    :param version: the new CLI version.
    :param tested: the backend's tested versions (:meth:`Backend.versions_tested`).
    :param golden: the golden screens' root (default ``tests/golden``).
    :raises DriftError: when no tested version has labelled screens.
    """
    dirs: dict[str, Path] = {}
    for v in tested:
        for d in (golden / f"{cli}-{v}-recorded", golden / f"{cli}-{v}"):
            if (d / "LABELS.toml").is_file():
                dirs[v] = d
                break
    if not dirs:
        raise DriftError(f"no labelled screens of {cli} in {golden} for its tested versions "
                         f"{', '.join(tested) or '(none)'}; record and label one first ({cli}-<version>/LABELS.toml)")
    v = nearest_tested(version, list(dirs))
    return Reference(cli, v, dirs[v], read_labels(dirs[v] / "LABELS.toml"))


def screen_files(directory: Path) -> list[str]:
    """The screen files (``NN_<name>.txt``) in ``directory``, in order; ``titles.txt`` and
    other records are not screens."""
    return sorted(p.name for p in Path(directory).glob("*.txt") if SCREEN_RE.match(p.name))


def state_name(filename: str) -> str:
    """``"07_context_limit.txt"`` -> ``"context_limit"`` (the file name without number
    and ``.txt``)."""
    m = SCREEN_RE.match(filename)
    return m.group("name") if m else filename.removesuffix(".txt")


def read_titles(directory: Path) -> dict[str, str]:
    """The pane title at each capture from ``<directory>/titles.txt`` (lines
    ``<file>\\t<title>[\\t<command>]``, ``#`` comments); ``{}`` without the file. A title
    ``(not recorded)`` is left out."""
    path = Path(directory) / "titles.txt"
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or "\t" not in line:
            continue
        name, title = line.split("\t")[:2]
        if title != "(not recorded)":
            out[name] = title
    return out


def _extends(a: str, b: str) -> bool:
    """State name ``a`` is ``b`` with more words (``http_400_thinking_block`` / ``http_400``)."""
    return a.startswith(b + "_")


def match_screens(screens: list[str], labelled: list[str]) -> dict[str, str]:
    """Which labelled screen each new screen corresponds to, in three passes: the same file
    name; else the only unused labelled one with the same state name (:func:`state_name`,
    e.g. ``10_usage_limit.txt`` for a new ``11_usage_limit.txt``); else the only unused one
    whose state name extends the new one's or is extended by it by whole ``_`` words
    (``06_http_400_thinking_block.txt`` for a new ``06_http_400.txt``: a person renamed a
    recorder's file). Each labelled screen is used once.

    :returns: ``{new screen: labelled screen}`` for the screens that have a counterpart.
    """
    out: dict[str, str] = {}
    used: set[str] = set()
    for s in screens:
        if s in labelled:
            out[s] = s
            used.add(s)
    tests = (lambda a, b: a == b, lambda a, b: _extends(a, b) or _extends(b, a))
    for same_state in tests:
        for s in screens:
            if s in out:
                continue
            cands = [x for x in labelled if x not in used and same_state(state_name(x), state_name(s))]
            if len(cands) == 1:
                out[s] = cands[0]
                used.add(cands[0])
    return out


@dataclass
class Draft:
    """Labels drafted for a new recording.

    Attributes:
        labels: ``{new screen: label table}`` for the screens with a counterpart.
        sources: ``{new screen: the reference screen its label was copied from}``.
        unlabelled: new screens with no counterpart (they need a label).
        unused: reference screens no new screen matched (not recorded this time).
    """

    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    unlabelled: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def _utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def draft_labels(directory: Path, ref: Reference) -> Draft:
    """Draft labels for the screens in ``directory`` from ``ref``'s labels.

    A draft copies ``state`` and ``input_text`` (:data:`COPIED_KEYS`); ``title`` is the
    new recording's (``titles.txt``) when it has one; ``now`` is the screen file's
    modification time (the capture time, UTC) when the reference label had a ``now``;
    ``reset_at`` is never copied (each recording has its own reset time): the note says
    when the reference had one.

    :param directory: the new recording (screen files, optional ``titles.txt``).
    :param ref: the nearest tested version's labelled screens.
    """
    screens = screen_files(directory)
    titles = read_titles(directory)
    matched = match_screens(screens, list(ref.labels))
    d = Draft(unused=[x for x in ref.labels if x not in set(matched.values())])
    for s in screens:
        src = matched.get(s)
        if src is None:
            d.unlabelled.append(s)
            continue
        old = ref.labels[src]
        label: dict[str, Any] = {k: old[k] for k in COPIED_KEYS if k in old}
        if "now" in old:
            label["now"] = _utc_iso((Path(directory) / s).stat().st_mtime)
        if titles.get(s):
            label["title"] = titles[s]
        note = f"DRAFT from {ref.directory.name}/{src}"
        if "reset_at" in old:
            note += f" (its reset_at {old['reset_at']} not copied: add this screen's)"
        if old.get("note"):
            note += f"; its note: {old['note']}"
        label["note"] = note
        d.labels[s] = label
        d.sources[s] = src
    return d


def _toml_str(value: str) -> str:
    """A TOML basic string (JSON string syntax is valid TOML for these values)."""
    return json.dumps(value, ensure_ascii=False)


def render_labels(draft: Draft, cli: str, version: str, ref: Reference,
                  readings: dict[str, str] | None = None) -> str:
    """The draft as ``LABELS.toml`` text: a header saying the labels are drafts to be
    checked by a person and which version they were copied from, one table per labelled
    screen, and a commented-out table for each screen that needs a label (with ccci's
    reading from ``readings``, ``{screen: state}``, as a hint, not a label).

    :param draft: from :func:`draft_labels`.
    :param cli: backend name.
    :param version: the new CLI version.
    :param ref: where the labels were copied from.
    """
    try:
        src = ref.directory.relative_to(REPO)
    except ValueError:
        src = ref.directory
    lines = [
        f"# DRAFT labels for the {cli} {version} screens in this directory, written by tools/record_cli.py",
        f"# on {_utc_iso(datetime.now(timezone.utc).timestamp())}: copied from {src}/LABELS.toml",
        f"# ({cli} {ref.version}, the nearest tested version) for the screens of the same name, so",
        "# they say what the OLD version's screen meant. A person must read every screen below and",
        "# fix its label (and then remove the 'DRAFT' from its note and this header) before these",
        "# screens are used as golden screens. Format: tests/golden/README.md. reset_at is never",
        "# copied: add the reset time a usage-limit screen shows.",
    ]
    if draft.unlabelled:
        lines.append(f"# {len(draft.unlabelled)} screen(s) had no counterpart and NEED A LABEL (commented out at the end).")
    if draft.unused:
        lines.append(f"# Not recorded this time (labelled in {ref.version} only): {', '.join(draft.unused)}.")
    for name, label in draft.labels.items():
        lines += ["", f"[{_toml_str(name)}]"]
        lines += [f"{k} = {_toml_str(str(v))}" for k, v in label.items()]
    for name in draft.unlabelled:
        hint = (readings or {}).get(name)
        lines += ["", f"# NEEDS A LABEL: no screen of this name in {ref.directory.name}/"
                  + (f" (ccci's rules read it as {hint!r}: a hint, not a label)" if hint else ""),
                  f"# [{_toml_str(name)}]", '# state = ""']
    return "\n".join(lines) + "\n"


@dataclass
class Row:
    """One screen of the report.

    Attributes:
        screen: file name.
        expected_state: the label's state (``None``: the screen has no label).
        got_state: what the rules read.
        expected_input: the label's ``input_text`` (``None``: not labelled).
        got_input: the input box's text as read.
        expected_reset: the label's ``reset_at`` (ISO-8601 UTC; ``None``: not labelled).
        got_reset: the reset time read (ISO-8601 UTC or ``None``).
        rules: ids of the rules that matched, strongest first.
        blank: the capture has no text (taken before the CLI drew anything).
    """

    screen: str
    expected_state: str | None
    got_state: str
    expected_input: str | None
    got_input: str
    expected_reset: str | None
    got_reset: str | None
    rules: list[str] = field(default_factory=list)
    blank: bool = False

    @property
    def labelled(self) -> bool:
        return self.expected_state is not None

    @property
    def ok(self) -> bool:
        """Labelled, and state, input text and reset time (those labelled) read as labelled."""
        return (self.labelled and self.got_state == self.expected_state
                and (self.expected_input is None or self.got_input == self.expected_input)
                and (self.expected_reset is None or self.got_reset == self.expected_reset))


def _parse_now(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def classify(directory: Path, labels: dict[str, dict[str, Any]], backend: Backend) -> list[Row]:
    """Read every screen in ``directory`` with ``backend`` and pair it with its label.

    The title given to the rules is the label's ``title``, else the one in
    ``titles.txt``; ``now`` is the label's (for a reset shown as a clock time).
    Labelled files that are missing are reported as a row with got state
    ``(missing)``.

    :param directory: screen files.
    :param labels: ``{file name: label}`` (a ``LABELS.toml``).
    :param backend: a backend set to the CLI version (:func:`backend_for`).
    :raises DriftError: when a label has no ``state``.
    """
    directory = Path(directory)
    titles = read_titles(directory)
    names = screen_files(directory)
    names += sorted(n for n in labels if n not in names)
    rows = []
    for name in names:
        label = labels.get(name)
        if label is not None and "state" not in label:
            raise DriftError(f"{directory / 'LABELS.toml'}: [{name!r}] has no state; add state = \"<state>\"")
        path = directory / name
        exp = (label or {}).get("state")
        exp_input = (label or {}).get("input_text")
        exp_reset = (label or {}).get("reset_at")
        if not path.is_file():
            rows.append(Row(name, exp, "(missing)", exp_input, "", exp_reset, None))
            continue
        title = (label or {}).get("title", titles.get(name, ""))
        screen = path.read_text(encoding="utf-8")
        an = backend.analyse(screen, title, _parse_now((label or {}).get("now")))
        got_reset = an.reset_at.strftime("%Y-%m-%dT%H:%M:%SZ") if an.reset_at else None
        rows.append(Row(name, exp, an.state.value, exp_input, an.input_text, exp_reset, got_reset,
                        [m.rule for m in an.matches], blank=not screen.strip()))
    return rows


def backend_for(cli: str, version: str) -> Backend:
    """The builtin backend ``cli`` reading screens as those of CLI ``version``: with
    ``ccci/patterns/<cli>-<version>.toml`` when it exists, else the nearest older pattern
    file (:meth:`Backend.use_cli_version`).

    :raises DriftError: for a backend ccci does not have.
    """
    from ccci.plugins import collect_backends, get_plugin_manager

    backends = collect_backends(get_plugin_manager(entrypoints=False, environ={}))
    if cli not in backends:
        raise DriftError(f"unknown backend {cli!r}; use one of {', '.join(sorted(backends))}")
    backend = backends[cli]
    backend.use_cli_version(version)
    return backend


def _cell(value: str | None, width: int) -> str:
    text = "-" if value is None else repr(value) if value == "" or "\n" in value else value
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[:width - 1] + "…"


def format_report(rows: list[Row]) -> str:
    """The table ``screen | expected state | got state | expected input_text | got |
    result`` (``-``: not labelled), a line per reset-time difference, and the summary
    ``N of M classified right``.

    Result: ``ok``, ``MISMATCH`` or ``NEEDS LABEL``."""
    w = max([len("screen"), *(len(r.screen) for r in rows)])
    head = f"{'screen':<{w}}  {'expected state':<15} {'got state':<15} {'expected input_text':<22} {'got':<22} result"
    out = [head, "-" * len(head)]
    for r in rows:
        result = "ok" if r.ok else ("NEEDS LABEL" if not r.labelled else "MISMATCH")
        out.append(f"{r.screen:<{w}}  {_cell(r.expected_state, 15):<15} {_cell(r.got_state, 15):<15} "
                   f"{_cell(r.expected_input, 22):<22} {_cell(r.got_input, 22):<22} {result}")
        if r.labelled and r.expected_reset is not None and r.got_reset != r.expected_reset:
            out.append(f"{'':<{w}}  reset_at: expected {r.expected_reset}, got {r.got_reset}")
        if r.blank:
            out.append(f"{'':<{w}}  the capture is BLANK: taken before the CLI drew (slow start?); "
                       "the captures after it may be a step behind: record again")
        elif r.labelled and not r.ok:
            out.append(f"{'':<{w}}  rules that matched: {', '.join(r.rules) or '(none)'}")
    out.append("")
    out.append(summary(rows))
    return "\n".join(out)


def summary(rows: list[Row]) -> str:
    """``"N of M classified right"`` (M: every screen) with the mismatches and the screens
    that need a label counted."""
    right = sum(r.ok for r in rows)
    wrong = sum(r.labelled and not r.ok for r in rows)
    unlabelled = sum(not r.labelled for r in rows)
    return (f"{right} of {len(rows)} classified right; {wrong} mismatch(es); "
            f"{unlabelled} screen(s) need a label")


def all_right(rows: list[Row]) -> bool:
    """Every screen labelled and read as labelled (and at least one screen)."""
    return bool(rows) and all(r.ok for r in rows)
