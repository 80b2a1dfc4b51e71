"""Test doubles for ccci plugin authors: a fake tmux pane, a fake tmux server, a
temporary git origin, and a TOML writer for fleet configs.

They are plain classes (no pytest dependency), so they can be used outside pytest too;
:mod:`ccci.testing.pytest_plugin` wraps them in fixtures.

:class:`FakeTmux` implements every method of :class:`ccci.tmux.Tmux` that the
:class:`ccci.supervisor.Supervisor` (and :func:`ccci.send.deliver`) use, backed by
:class:`FakePane` objects keyed by session name. Nothing runs: a "launched" agent is a
FakePane whose screen the test sets. By default a FakePane draws the layout of ccci's own
``scripted`` backend (``ccci/patterns/scripted-1.0.toml``): the screen text, a border,
and the ``> `` input line at the bottom; a submitted line is echoed as ``» text`` (the
scripted agent's turn marker). Change :attr:`FakePane.input_box` and
:attr:`FakePane.echo` to draw another backend's layout.

Fake pids start at :data:`FAKE_PID_BASE` (5,000,000), above Linux's largest possible pid
(4,194,304), so a fake pid can never name a real process.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from ccci.model import PaneInfo, ProcessInfo
from ccci.tmux import MAX_LITERAL, TmuxError

FAKE_PID_BASE = 5_000_000  #: first pid FakeTmux hands out (no real process can have it)
SCRIPTED_BORDER = "─" * 40
SCRIPTED_INPUT_BOX = SCRIPTED_BORDER + "\n> {input}"  #: the scripted agent's input box
SCRIPTED_ECHO = "» {text}"  #: how the scripted agent echoes a submitted turn
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
ENTER_KEYS = ("Enter", "C-m", "KPEnter")

_UNSET: Any = object()


class FakePane:
    """A fake tmux pane: settable screen text, a process that can die, an input line.

    :param session_name: tmux session the pane belongs to.
    :param pane_id: tmux pane id (``"%N"``).
    :param pid: pid of the pane's process (fake; see :data:`FAKE_PID_BASE`).
    :param screen: text above the input box (the whole screen when ``input_box`` is
        ``None``).
    :param input_box: format string drawn below ``screen`` with ``{input}`` replaced by
        the text typed so far; ``None`` draws no input box (a dialog, a busy TUI).
    :param echo: format string (``{text}``) appended to ``screen`` when a line is
        submitted with Enter; ``None`` to append nothing.
    :param current_command: ``pane_current_command`` (e.g. ``"python3"``, ``"claude"``).
    :param title: ``pane_title``.
    :param width, height: pane size in cells.

    Typing (:meth:`type`, ``FakeTmux.send_literal``/``paste``) appends to :attr:`input`;
    Enter (:meth:`press`) submits it: the text is recorded in :attr:`submitted`, echoed
    into the screen, and :attr:`on_submit` is called, so a test can make the agent go
    busy or answer. Set :attr:`swallow_enter` to lose the next N Enter presses (a TUI
    that drops Enter while it redraws), or :attr:`on_key` to intercept any key.

    Every change (screen, input, title, death) increases :attr:`version`, which is
    reported as ``PaneInfo.activity`` so the supervisor re-captures the pane.
    """

    def __init__(
        self,
        session_name: str = "fake",
        pane_id: str = "%0",
        pid: int = FAKE_PID_BASE,
        *,
        screen: str = "",
        input_box: str | None = SCRIPTED_INPUT_BOX,
        echo: str | None = SCRIPTED_ECHO,
        current_command: str = "python3",
        title: str = "",
        width: int = 200,
        height: int = 50,
    ) -> None:
        self.session_name = session_name
        self.pane_id = pane_id
        self.pid = pid
        self.version = 0
        self._screen = screen
        self._input = ""
        self._title = title
        self.input_box = input_box
        self.echo = echo
        self.current_command = current_command
        self.width, self.height = width, height
        #: the process exited (``remain-on-exit`` keeps the pane); see :meth:`kill`
        self.dead = False
        self.dead_status: int | None = None
        self.dead_signal: int | None = None
        #: what the process scan reports while the pane is not dead (``False``: a zombie)
        self.process_alive = True
        self.process_name = current_command
        self.cpu_seconds = 0.0  #: reported by the fake process scan (seconds)
        self.children = 0  #: live child processes reported by the fake process scan
        #: seconds shown by the busy line while busy (see :meth:`busy`), else ``None``
        self.busy_seconds: int | None = None
        self.submitted: list[str] = []  #: lines submitted with Enter, oldest first
        self.keys: list[str] = []  #: every key name sent (``send_key``), in order
        self.typed: list[str] = []  #: every literal text typed or pasted, in order
        self.on_submit: Callable[[FakePane, str], None] | None = None
        self.on_key: Callable[[FakePane, str], bool | None] | None = None
        self.swallow_enter = 0  #: the next N Enter presses are lost
        # set by FakeTmux.new_session: how ccci launched the agent
        self.argv: list[str] = []
        self.cwd: Path | None = None
        self.env: dict[str, str] = {}
        self.log_file: Path | None = None

    # ------------------------------------------------------------------ state
    def _changed(self) -> None:
        self.version += 1

    @property
    def screen(self) -> str:
        """Text above the input box; setting it marks the pane as changed."""
        return self._screen

    @screen.setter
    def screen(self, text: str) -> None:
        self._screen = text
        self._changed()

    @property
    def input(self) -> str:
        """Text typed into the input box and not yet submitted."""
        return self._input

    @input.setter
    def input(self, text: str) -> None:
        self._input = text
        self._changed()

    @property
    def title(self) -> str:
        return self._title

    @title.setter
    def title(self, text: str) -> None:
        self._title = text
        self._changed()

    def set_screen(self, text: str, *, input_box: str | None = _UNSET, input: str | None = None) -> "FakePane":
        """Replace the screen (and optionally the input box format and typed text).

        Leaves the busy state (:attr:`busy_seconds` = ``None``). Returns ``self``.
        """
        self._screen = text
        self.busy_seconds = None
        if input_box is not _UNSET:
            self.input_box = input_box
        if input is not None:
            self._input = input
        self._changed()
        return self

    def append(self, *lines: str) -> "FakePane":
        """Add lines at the bottom of the screen (above the input box)."""
        text = "\n".join(lines)
        self._screen = f"{self._screen}\n{text}" if self._screen else text
        self._changed()
        return self

    def busy(self, seconds: int = 0) -> "FakePane":
        """Show the scripted agent's busy line ``⠋ working… (Ns)`` at the bottom instead
        of the input box (the scripted backend reads this as ``busy``)."""
        self.busy_seconds = int(seconds)
        self._changed()
        return self

    def tick_timer(self, seconds: int = 1) -> "FakePane":
        """Advance the busy line's timer (a live TUI redrawing its spinner)."""
        self.busy_seconds = (self.busy_seconds or 0) + int(seconds)
        self._changed()
        return self

    def idle(self) -> "FakePane":
        """Leave the busy state: the input box is drawn again."""
        self.busy_seconds = None
        self._changed()
        return self

    def kill(self, status: int | None = 1, signal: int | None = None) -> "FakePane":
        """The pane's process exits (status) or is killed (signal); the pane stays,
        dead, with tmux's ``Pane is dead`` line, as with ``remain-on-exit on``."""
        self.dead = True
        self.dead_signal = signal
        self.dead_status = None if signal else status
        how = f"signal {signal}" if signal else f"status {status}"
        self.busy_seconds = None
        self.input_box = None
        self.append(f"Pane is dead ({how})")
        return self

    # ------------------------------------------------------------------ drawing
    def capture(self) -> str:
        """What ``tmux capture-pane -p`` would return (plain text, no escapes)."""
        lines = self._screen.split("\n") if self._screen else []
        if self.busy_seconds is not None:
            glyph = SPINNER[self.busy_seconds % len(SPINNER)]
            lines.append(f"{glyph} working… ({self.busy_seconds}s)")
        elif self.input_box is not None:
            lines.extend(self.input_box.format(input=self._input).split("\n"))
        return "\n".join(lines)

    def info(self) -> PaneInfo:
        """This pane as one row of the batched ``list-panes`` query.

        ``activity`` is :attr:`version` (a change counter, not epoch seconds); the cursor
        is at the end of the last line.
        """
        text = self.capture()
        lines = text.split("\n")
        return PaneInfo(
            session_name=self.session_name, pane_id=self.pane_id, pid=self.pid, dead=self.dead,
            dead_status=self.dead_status, dead_signal=self.dead_signal,
            current_command="" if self.dead else self.current_command, title=self._title,
            activity=self.version, cursor=(len(lines[-1]), len(lines) - 1), history_size=0,
            width=self.width, height=self.height,
        )

    # ------------------------------------------------------------------ keyboard
    def type(self, text: str) -> None:
        """Type literal text into the input box (ignored when the pane is dead)."""
        self.typed.append(text)
        if self.dead:
            return
        self.input = self._input + text

    def paste(self, text: str) -> None:
        """A bracketed paste: the text lands in the input box (newlines kept)."""
        self.type(text)

    def press(self, key: str) -> None:
        """Press one key by tmux name: ``Enter`` submits, ``C-u`` clears the input,
        ``BSpace`` deletes a character; other keys are only recorded in :attr:`keys`."""
        self.keys.append(key)
        if self.dead:
            return
        if self.on_key is not None and self.on_key(self, key):
            return
        if key in ENTER_KEYS:
            if self.swallow_enter > 0:
                self.swallow_enter -= 1
                return
            self.submit()
        elif key == "C-u":
            self.input = ""
        elif key == "BSpace":
            self.input = self._input[:-1]

    def submit(self) -> None:
        """What an accepted Enter does: record, clear the box, echo, call :attr:`on_submit`.
        An empty input box submits nothing."""
        text = self._input
        if not text:
            return
        self._input = ""
        self.submitted.append(text)
        if self.echo is not None:
            self.append(self.echo.format(text=" ".join(text.split("\n"))))
        else:
            self._changed()
        if self.on_submit is not None:
            self.on_submit(self, text)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        state = "dead" if self.dead else ("busy" if self.busy_seconds is not None else "live")
        return f"FakePane({self.session_name!r}, {self.pane_id}, pid={self.pid}, {state})"


class ScreenSequence:
    """The few :class:`ccci.tmux.Tmux` calls :func:`ccci.send.deliver` makes, for one pane
    whose captures are given: ``capture`` returns ``screens`` in turn (the last one
    repeats), e.g. ``[real idle screen, real screen after Enter]``; what was typed, pasted
    and pressed is recorded in :attr:`typed` and :attr:`keys`."""

    def __init__(self, screens: list[str]) -> None:
        self.screens = list(screens)
        self.typed: list[str] = []
        self.keys: list[str] = []

    def capture(self, pane_ids: list[str]) -> dict[str, str]:
        screen = self.screens.pop(0) if len(self.screens) > 1 else self.screens[0]
        return {pane_ids[0]: screen}

    def send_literal(self, pane_id: str, text: str) -> None:
        self.typed.append(text)

    def paste(self, pane_id: str, text: str, tmpdir: Path) -> None:
        self.typed.append(text)

    def send_key(self, pane_id: str, key: str) -> None:
        self.keys.append(key)


class FakeTmux:
    """A fake :class:`ccci.tmux.Tmux`: the same methods the supervisor uses, backed by
    :class:`FakePane` objects keyed by session name. No process is started.

    Attributes:
        panes: live sessions: session name -> :class:`FakePane`.
        history: every pane ever created, oldest first (killed ones included), to
            inspect how ccci launched an agent (``argv``, ``env``, ``cwd``).
        calls: tmux calls made (as :attr:`ccci.tmux.Tmux.calls` counts them).
        log: ``(method, *args)`` of every call, for assertions.
        killed_pids: pids passed to :meth:`kill_pid` (the supervisor's process kill).
        on_new_session: ``callback(pane)`` run when ccci starts a session, e.g. to draw
            the agent's first screen or make it die at once.
    """

    def __init__(self) -> None:
        self.panes: dict[str, FakePane] = {}
        self.history: list[FakePane] = []
        self.calls = 0
        self.log: list[tuple[Any, ...]] = []
        self.killed_pids: list[int] = []
        self.on_new_session: Callable[[FakePane], None] | None = None
        self._pane_ids = itertools.count(1)
        self._pids = itertools.count(FAKE_PID_BASE)
        #: as :attr:`ccci.tmux.Tmux.server_running`: ``False`` after :meth:`kill_server`
        #: until ccci starts a session again
        self.server_running = True

    # ------------------------------------------------------------------ test helpers
    def add_pane(self, session_name: str, **kwargs: Any) -> FakePane:
        """Create a session that ccci did not start (e.g. an agent left running by an
        earlier watcher, to be adopted). ``kwargs`` go to :class:`FakePane`.

        :raises TmuxError: when the session exists.
        """
        if session_name in self.panes:
            raise TmuxError(f"duplicate session: {session_name}")
        kwargs.setdefault("pane_id", f"%{next(self._pane_ids)}")
        kwargs.setdefault("pid", next(self._pids))
        pane = FakePane(session_name, **kwargs)
        self.panes[session_name] = pane
        self.history.append(pane)
        return pane

    def pane(self, name: str) -> FakePane:
        """The live pane of session ``name``; an agent name is accepted too when exactly
        one session ends with ``-<name>`` (ccci's sessions are ``ccci-<fleet>-<agent>``).

        :raises KeyError: naming the sessions that exist.
        """
        if name in self.panes:
            return self.panes[name]
        hits = [p for s, p in self.panes.items() if s.endswith(f"-{name}")]
        if len(hits) == 1:
            return hits[0]
        raise KeyError(f"no fake tmux session {name!r}; sessions: {', '.join(sorted(self.panes)) or 'none'}")

    def by_id(self, pane_id: str) -> FakePane | None:
        """The live pane with tmux id ``pane_id``, or ``None``."""
        for p in self.panes.values():
            if p.pane_id == pane_id:
                return p
        return None

    def launches(self, name: str | None = None) -> list[FakePane]:
        """Panes created by :meth:`new_session` (all, or for sessions named/ending with
        ``name``), oldest first."""
        out = [p for p in self.history if p.argv]
        if name is not None:
            out = [p for p in out if p.session_name == name or p.session_name.endswith(f"-{name}")]
        return out

    def kill_pid(self, pid: int) -> None:
        """Kill the process ``pid`` (SIGKILL): its pane becomes dead. Used in place of
        :func:`ccci.processes.kill_tree` by the ``make_supervisor`` fixture."""
        self.killed_pids.append(pid)
        for p in self.panes.values():
            if p.pid == pid and not p.dead:
                p.kill(signal=9)

    def crash_server(self) -> None:
        """``kill -9`` of the tmux server: every pane's process dies with it and every
        session is gone; :meth:`list_panes` returns ``{}`` with :attr:`server_running`
        ``False`` until ccci starts a session."""
        for p in self.panes.values():
            p.process_alive = False
            p.dead = True
        self.panes.clear()
        self.server_running = False

    def scan_processes(self, pids: list[int]) -> dict[int, ProcessInfo]:
        """A stand-in for :func:`ccci.processes.scan_processes`: a pid is alive when a
        live, not dead pane has it and its :attr:`FakePane.process_alive` is true."""
        out: dict[int, ProcessInfo] = {}
        for pid in pids:
            pane = next((p for p in self.panes.values() if p.pid == pid and not p.dead), None)
            if pane is None or not pane.process_alive:
                out[pid] = ProcessInfo(pid=pid, alive=False)
            else:
                out[pid] = ProcessInfo(pid=pid, alive=True, name=pane.process_name,
                                       cpu_seconds=pane.cpu_seconds, children=pane.children)
        return out

    def _target(self, pane_id: str) -> FakePane:
        pane = self.by_id(pane_id)
        if pane is None:
            raise TmuxError(f"can't find pane: {pane_id}")
        return pane

    # ------------------------------------------------------------------ the Tmux API
    def cmd(self, *args: str, check: bool = True) -> list[str]:
        """Any other tmux command: recorded, returns no output."""
        self.calls += 1
        self.log.append(("cmd", *args))
        return []

    def list_panes(self) -> dict[str, PaneInfo]:
        """Every session's pane as :class:`ccci.model.PaneInfo`, keyed by session name."""
        self.calls += 1
        self.log.append(("list_panes",))
        return {name: p.info() for name, p in self.panes.items()}

    def capture(self, pane_ids: list[str]) -> dict[str, str]:
        """``{pane_id: screen text}``; a pane that does not exist maps to ``""``."""
        if not pane_ids:
            return {}
        self.calls += 1
        self.log.append(("capture", tuple(pane_ids)))
        out = {}
        for pid in pane_ids:
            pane = self.by_id(pid)
            out[pid] = pane.capture() if pane else ""
        return out

    def has_session(self, name: str) -> bool:
        self.calls += 1
        self.log.append(("has_session", name))
        return name in self.panes

    def new_session(
        self, name: str, argv: list[str], cwd: Path | None, env: dict[str, str],
        width: int = 200, height: int = 50, log_file: Path | None = None,
    ) -> PaneInfo:
        """Create a FakePane for ``name`` (recording ``argv``, ``cwd``, ``env`` and
        ``log_file``; nothing is written), run :attr:`on_new_session` on it, and return
        its :class:`PaneInfo`.

        :raises TmuxError: when the session exists (as tmux does).
        """
        self.calls += 1
        self.log.append(("new_session", name, tuple(argv)))
        self.server_running = True
        pane = self.add_pane(name, width=width, height=height,
                             current_command=Path(argv[0]).name if argv else "")
        pane.argv, pane.cwd, pane.env, pane.log_file = list(argv), cwd, dict(env), log_file
        if self.on_new_session is not None:
            self.on_new_session(pane)
        return PaneInfo(session_name=name, pane_id=pane.pane_id, pid=pane.pid, width=width, height=height)

    def kill_session(self, name: str) -> None:
        """Remove the session if it exists."""
        self.calls += 1
        self.log.append(("kill_session", name))
        self.panes.pop(name, None)

    def pipe_to_file(self, pane_id: str, logfile: Path) -> None:
        """Recorded only; no file is written."""
        self.calls += 1
        self.log.append(("pipe_to_file", pane_id, Path(logfile)))

    def send_literal(self, pane_id: str, text: str) -> None:
        """Type ``text`` into the pane (same limits as the real one).

        :raises ValueError: over :data:`ccci.tmux.MAX_LITERAL` characters or with a newline.
        :raises TmuxError: for an unknown pane.
        """
        if len(text) > MAX_LITERAL:
            raise ValueError(f"text is {len(text)} chars; over {MAX_LITERAL} use paste()")
        if "\n" in text or "\r" in text:
            raise ValueError("text has a newline; use paste() for multi-line text")
        self.calls += 1
        self.log.append(("send_literal", pane_id, text))
        self._target(pane_id).type(text)

    def send_key(self, pane_id: str, key: str) -> None:
        """Press ``key`` in the pane (see :meth:`FakePane.press`)."""
        self.calls += 1
        self.log.append(("send_key", pane_id, key))
        self._target(pane_id).press(key)

    def paste(self, pane_id: str, text: str, tmpdir: Path) -> None:
        """Paste ``text`` into the pane (``tmpdir`` is not used)."""
        self.calls += 2  # load-buffer + paste-buffer
        self.log.append(("paste", pane_id, text))
        self._target(pane_id).paste(text)

    def kill_server(self) -> None:
        """Every session is gone (:attr:`server_running` ``False`` until a new session)."""
        self.calls += 1
        self.log.append(("kill_server",))
        self.panes.clear()
        self.server_running = False

    def start_control(self, wake=None, deadline_s: float = 5.0) -> list[int]:
        """No control-mode client in the fake (:meth:`ccci.tmux.Tmux.start_control`):
        nothing to reap; ``wake`` is kept so a test can call it."""
        self.control_wake = wake
        return []

    def stop_control(self) -> None:
        """Nothing to end (:meth:`ccci.tmux.Tmux.stop_control`)."""
        self.control_wake = None


# --------------------------------------------------------------------------- TOML


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """A Python value as a TOML value (str, bool, int, float, list, dict as an inline
    table, :class:`pathlib.Path` as a string).

    :raises TypeError: for other types.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def toml_document(tables: dict[str, dict[str, Any]], arrays: dict[str, Iterable[dict[str, Any]]] | None = None) -> str:
    """Write ``[table]`` sections and ``[[array]]`` tables (nested dicts become inline
    tables). Empty tables are left out."""
    out: list[str] = []
    for name, table in tables.items():
        if not table:
            continue
        out.append(f"[{name}]")
        out.extend(f"{_key(k)} = {toml_value(v)}" for k, v in table.items())
        out.append("")
    for name, items in (arrays or {}).items():
        for item in items:
            out.append(f"[[{name}]]")
            out.extend(f"{_key(k)} = {toml_value(v)}" for k, v in item.items())
            out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- git


class GitOrigin:
    """A temporary bare git repository standing in for a fleet's origin, with a scratch
    clone to push commits from (as the agents would).

    :param root: directory to create ``origin.git`` and ``scratch`` in.
    :param branch: the branch (default ``main``, the config default).

    Attributes:
        path: the bare repository (use ``str(path)`` as ``[git] origin``).
        url: ``str(path)``.
        branch: the branch pushed to.
        scratch: the working clone commits are made in.
    """

    def __init__(self, root: Path, branch: str = "main") -> None:
        import git

        self.root = Path(root)
        self.branch = branch
        self.path = self.root / "origin.git"
        self.scratch = self.root / "scratch"
        self.url = str(self.path)
        bare = git.Repo.init(self.path, bare=True)
        bare.git.symbolic_ref("HEAD", f"refs/heads/{branch}")
        self._repo = git.Repo.init(self.scratch)
        self._repo.git.symbolic_ref("HEAD", f"refs/heads/{branch}")
        self._repo.create_remote("origin", self.url)
        self._n = 0
        self.initial = self.push_commit("initial commit")

    def push_commit(self, subject: str, *, author: str = "ccci-test", files: dict[str, str] | None = None) -> str:
        """Commit in the scratch clone and push it to origin's branch.

        :param subject: the commit subject (e.g. ``"claim(step 1): parser"``).
        :param author: author and committer name.
        :param files: ``{relative path: content}`` to write; default: one line appended
            to ``log.txt`` so every commit changes something.
        :returns: the new commit's full sha (40 hex digits).
        """
        import git

        self._n += 1
        if files is None:
            log = self.scratch / "log.txt"
            with log.open("a", encoding="utf-8") as fh:
                fh.write(f"{self._n} {subject}\n")
            files_written = ["log.txt"]
        else:
            files_written = []
            for rel, content in files.items():
                p = self.scratch / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(content, encoding="utf-8")
                files_written.append(rel)
        self._repo.index.add(files_written)
        actor = git.Actor(author, f"{author}@example.invalid")
        commit = self._repo.index.commit(subject, author=actor, committer=actor)
        self._repo.git.push("--quiet", "origin", f"HEAD:refs/heads/{self.branch}")
        return commit.hexsha

    def head(self) -> str:
        """Origin's branch head sha."""
        import git

        return git.Repo(self.path).commit(f"refs/heads/{self.branch}").hexsha

    def subjects(self) -> list[str]:
        """Origin's commit subjects on the branch, oldest first."""
        import git

        repo = git.Repo(self.path)
        return [c.summary for c in repo.iter_commits(f"refs/heads/{self.branch}", reverse=True)]


# --------------------------------------------------------------------------- driving a supervisor


def tick(sup: Any, seconds: float = 1.0) -> list[Any]:
    """Advance the supervisor's (fake) clock by ``seconds``, then run one tick.

    :returns: the tick's findings (before hysteresis).
    """
    sup.clock.advance(seconds)
    return sup.tick()


def run_ticks(sup: Any, seconds: float, step: float = 1.0) -> list[Any]:
    """Tick every ``step`` seconds of fake time until ``seconds`` have passed.

    :returns: every finding of those ticks, in order.
    """
    out: list[Any] = []
    n = max(1, int(round(seconds / step)))
    for _ in range(n):
        out.extend(tick(sup, step))
    return out


def events(sup: Any, kind: str | None = None, agent: str | None = None) -> list[dict[str, Any]]:
    """The supervisor's durable events (dicts with ``kind``, ``agent``, ``message``,
    ``data``, ``at``), oldest first, optionally only one kind and/or agent."""
    return [e for e in sup.store.events(limit=10**9, agent=agent) if kind is None or e["kind"] == kind]
