"""tmux access: one batched query per tick, literal sends.

Two transports, one API. The watcher (:meth:`Tmux.start_control`) runs every query and
command through one persistent control-mode client (:mod:`ccci.tmux_control`): no
process is forked per tick, and its notifications wake the runner when a pane changes.
Everything else, and the watcher whenever the control client is not running (no server,
no session to attach to, a wedged or lost client while it is restarted), forks one tmux
client per call through libtmux (socket name, command runner, errors), so ccci never
builds a shell command line: every call is an argv list. The per-tick read is one
``list-panes -a -F ...`` call; captures of the panes that may have changed go in one
more call (forked: chained with ``;`` and separated by a marker line; control mode:
one line per pane, pipelined, plus a sentinel).
"""
from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import threading
import time
from pathlib import Path

import libtmux

from ccci import tmux_control
from ccci.model import PaneInfo
from ccci.screen import Screen

FIELDS = (
    "session_name", "pane_id", "pane_pid", "pane_dead", "pane_dead_status", "pane_dead_signal",
    "pane_current_command", "window_activity", "cursor_x", "cursor_y", "history_size",
    "pane_width", "pane_height", "pane_title",
)
SEP = "\x1f"  # unit separator: cannot appear in tmux format output of these fields
LIST_FORMAT = SEP.join("#{%s}" % f for f in FIELDS)
MAX_LITERAL = 4096  # a single line over ~4 KB is cut by the tty (docs/agent-clis.md#tmux-behaviour-ccci-works-around)


#: tmux's messages when the server it reached exited under it (measured: ``new-session``
#: right after killing the server's last session, tmux 3.3)
SERVER_GONE = ("server exited unexpectedly", "lost server")


def _literal(arg: str) -> str:
    """``arg`` as one literal tmux argument. tmux 3.3a reads an argument ending in ``;``
    as a command separator (``new-session ... -- cmd 'a;' if ...`` ran ``if-shell``) and
    ``\\;`` at the end as a literal ``;``: an argument ending in ``;`` gets that escape
    (``'a;'`` -> ``'a\\;'``, ``'b\\;'`` -> ``'b\\\\;'``; measured: the process sees ``a;`` and
    ``b\\;``)."""
    return arg[:-1] + "\\;" if arg.endswith(";") else arg


class TmuxError(RuntimeError):
    """A tmux command failed; the message is tmux's stderr."""


#: first words of the commands that may be sent again through a forked client when the
#: control client was lost after it had sent them (they change nothing)
_IDEMPOTENT = frozenset({"list-panes", "capture-pane", "display-message", "has-session", "list-sessions",
                         "list-clients", "list-windows", "show-options", "kill-session"})
#: panes whose last capture's parsed lines are kept (:meth:`Tmux._screen`); past it all are dropped
MAX_PARSED_PANES = 1000
CONTROL_RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  #: waits between failed control-client starts (seconds)


def _int(s: str, default: int | None = 0) -> int | None:
    try:
        return int(s)
    except (TypeError, ValueError):
        return default


def socket_path_of(label: str = "default") -> str:
    """The path of the socket tmux 3.3 uses for ``-L label``:
    ``${TMUX_TMPDIR:-/tmp}/tmux-<uid>/<label>`` (the first entry of a ``:``-separated
    ``TMUX_TMPDIR``; the directory resolved like tmux's ``realpath``). ``"default"`` is
    the default server's, which a client run without ``-L`` or ``-S`` outside tmux uses.

    ccci names the default server by this path (``-S``) so that a fleet with
    ``tmux_socket = ""`` means that server wherever ccci runs: a tmux client run inside
    tmux without ``-L``/``-S`` follows ``$TMUX`` instead, to the server it runs under.
    Tests and benchmarks use it to remove the socket file a killed server leaves."""
    tmpdir = next((p for p in os.environ.get("TMUX_TMPDIR", "").split(":") if p), "/tmp")
    return os.path.join(os.path.realpath(os.path.join(tmpdir, f"tmux-{os.geteuid()}")), label)


class Tmux:
    """A tmux server, addressed by socket name.

    :param socket_name: ``tmux -L`` name; ``None`` or ``""`` for the default server.
    :param socket_path: ``tmux -S`` path (overrides ``socket_name``). With neither, the
        default server's path (:func:`socket_path_of`), so that forked clients and
        the control client reach the same server when ccci runs inside another tmux
        server (``$TMUX``).
    """

    def __init__(self, socket_name: str | None = None, socket_path: str | None = None) -> None:
        if not socket_name and not socket_path:
            socket_path = socket_path_of()
            try:  # what tmux does for its default socket; with -S it creates no directory
                os.makedirs(os.path.dirname(socket_path), mode=0o700, exist_ok=True)
            except OSError:
                pass  # tmux's own error names the path at the first call
        self.server = libtmux.Server(socket_name=socket_name or None, socket_path=socket_path or None)
        self.socket_name, self.socket_path = socket_name or None, socket_path or None
        self.calls = 0  #: tmux subprocesses run (for benchmarks and tests)
        self.control_calls = 0  #: requests answered by the control client
        self.control_starts = 0  #: control clients started (the first and every restart)
        self.server_running = True  #: False when the last list_panes found no server
        self.control: tmux_control.ControlClient | None = None  #: the running control client, if any
        self._control_wanted = False
        self._control_wake: tmux_control.Wake | None = None
        self._control_deadline = tmux_control.DEADLINE_S
        self._control_failures = 0
        self._control_next_try = 0.0
        self._control_lock = threading.Lock()
        #: {pane_id: parsed lines of its last capture} (``Screen.from_styled``'s ``keep``);
        #: each dict is filled before it is stored and never changed after
        self._parsed: dict[str, dict] = {}
        self._rows: dict[str, PaneInfo] = {}  # list-panes row text -> its PaneInfo (last call)
        #: (control client, pids) last given to its ``watch_pids``
        self._watched: tuple[tmux_control.ControlClient | None, set[int]] = (None, set())

    # ------------------------------------------------------------------ control mode
    def start_control(self, wake: tmux_control.Wake | None = None,
                      deadline_s: float = tmux_control.DEADLINE_S) -> list[int]:
        """Use one control-mode client for every call from now on (the watcher does).

        First ends the control clients that a dead ccci process left on this server
        (:func:`ccci.tmux_control.reap_orphans`); then starts a client if the server has
        a session (else at a later call: every call tries again, at most every
        :data:`CONTROL_RETRY_S` step after a failure). Calls fall back to a forked
        client while no control client runs.

        :param wake: called with a reason, from the client's reader thread, when a pane
            or the server changed (``Supervisor.wake``).
        :param deadline_s: deadline of each request (seconds); a missed one ends the
            client (wedged), and the next call starts a new one.
        :returns: the pids of the orphaned control clients reaped.
        """
        try:
            reaped = tmux_control.reap_orphans(self.socket_name, self.socket_path)
        except (OSError, subprocess.SubprocessError):
            reaped = []
        self._control_wanted, self._control_wake, self._control_deadline = True, wake, deadline_s
        self._control_next_try = 0.0
        self._ensure_control()
        return reaped

    def stop_control(self) -> None:
        """End the control client (stdin closed, then killed if it lingers); later calls
        fork tmux clients again. Idempotent."""
        self._control_wanted = False
        with self._control_lock:
            ctl, self.control = self.control, None
        if ctl is not None:
            ctl.close()

    def _ensure_control(self) -> tmux_control.ControlClient | None:
        if not self._control_wanted:
            return None
        ctl = self.control
        if ctl is not None and ctl.alive:
            return ctl
        if time.monotonic() < self._control_next_try:
            return None
        with self._control_lock:
            if self.control is not None and self.control.alive:
                return self.control
            if self.control is not None:
                self.control.close()
                self.control = None
            ctl = tmux_control.ControlClient(self.socket_name, self.socket_path, on_wake=self._control_wake,
                                             deadline_s=self._control_deadline)
            try:
                ctl.start()
            except (tmux_control.ControlUnavailable, OSError):
                ctl.close()
                wait = CONTROL_RETRY_S[min(self._control_failures, len(CONTROL_RETRY_S) - 1)]
                self._control_failures += 1
                self._control_next_try = time.monotonic() + wait
                return None
            self._control_failures = 0
            self.control_starts += 1
            self.control = ctl
            return ctl

    def _via_control(self, argvs: list[list[str]]) -> list[tuple[list[str], str | None]] | None:
        """Run argvs through the control client; None when it is not running or was lost
        before sending (the caller forks a client).

        :raises TmuxError: the client was lost after sending a command that changes
            something (it may have run: it is not repeated).
        """
        ctl = self._ensure_control()
        if ctl is None:
            return None
        try:
            res = ctl.run(argvs)
        except ValueError:
            return None  # an argument with a newline: a forked client takes argv as is
        except tmux_control.ControlUnavailable as exc:
            self._control_next_try = 0.0  # restart at the next call
            if exc.sent and any(a and a[0] not in _IDEMPOTENT for a in argvs):
                raise TmuxError(f"{exc}; the command may have run") from exc
            return None
        self.control_calls += 1
        return res

    def _raw(self, *args: str) -> tuple[list[str], list[str]]:
        """``(stdout lines, stderr lines)`` of one command line, control client first."""
        got = self._via_control([list(args)])
        if got is not None:
            out, err = got[0]
            return out, [err] if err is not None else []
        self.calls += 1
        res = self.server.cmd(*args)
        return res.stdout, res.stderr

    def cmd(self, *args: str, check: bool = True) -> list[str]:
        """Run one tmux command (argv, no shell; ``;`` arguments chain commands);
        returns stdout lines.

        :raises TmuxError: when ``check`` and tmux wrote to stderr (control mode: a
            ``%error`` block).
        """
        out, err = self._raw(*args)
        if check and err:
            raise TmuxError(" ".join(err)[:500])
        return out

    # ------------------------------------------------------------------ reading
    def list_panes(self) -> dict[str, PaneInfo]:
        """Every pane of the server, keyed by session name (first pane of each session).

        Returns ``{}`` when no server runs. One tmux call.
        """
        got = self._via_control([["list-panes", "-a", "-F", LIST_FORMAT]])
        if got is not None and got[0][1] is None:
            lines = got[0][0]
            self.server_running = True
        else:
            self.calls += 1
            res = self.server.cmd("list-panes", "-a", "-F", LIST_FORMAT)
            self.server_running = not res.stderr
            if res.stderr:
                return {}
            lines = res.stdout
            if self._control_wanted and lines and self.control is None and self._control_failures <= 1:
                # sessions again (a restarted server): attach now, unless attaching keeps
                # failing for another reason (then the backoff stands)
                self._control_next_try = 0.0
        out = self._parse_panes(lines)
        ctl = self.control
        if ctl is not None and ctl.alive:
            pids = {p.pid for p in out.values() if p.pid and not p.dead}
            if pids != self._watched[1] or ctl is not self._watched[0]:  # (a pipe write and a thread wake-up)
                ctl.watch_pids(pids)
                self._watched = (ctl, pids)
        return out

    def _parse_panes(self, lines: list[str]) -> dict[str, PaneInfo]:
        """The rows as :class:`PaneInfo`, keyed by session (its first pane). A row whose
        text is the same as in the last call gives the same :class:`PaneInfo` object
        (nothing changes a PaneInfo; most rows repeat from tick to tick: bench/ parsed
        200 rows per tick)."""
        out: dict[str, PaneInfo] = {}
        prev, rows = self._rows, {}
        for line in lines:
            info = prev.get(line)
            if info is not None:
                rows[line] = info
                if info.session_name not in out:
                    out[info.session_name] = info
                continue
            parts = line.split(SEP)
            if len(parts) != len(FIELDS):
                continue
            d = dict(zip(FIELDS, parts))
            if d["session_name"] in out:
                continue
            out[d["session_name"]] = PaneInfo(
                session_name=d["session_name"],
                pane_id=d["pane_id"],
                pid=_int(d["pane_pid"]) or 0,
                dead=d["pane_dead"] == "1",
                dead_status=_int(d["pane_dead_status"], None),
                dead_signal=_int(d["pane_dead_signal"], None),
                current_command=d["pane_current_command"],
                title=d["pane_title"],
                activity=_int(d["window_activity"]) or 0,
                cursor=(_int(d["cursor_x"]) or 0, _int(d["cursor_y"]) or 0),
                history_size=_int(d["history_size"]) or 0,
                width=_int(d["pane_width"]) or 0,
                height=_int(d["pane_height"]) or 0,
            )
            rows[line] = out[d["session_name"]]
        self._rows = rows
        return out

    def capture(self, pane_ids: list[str]) -> dict[str, str]:
        """Visible text of several panes in one tmux call (``capture-pane -p -e -J`` each).

        :returns: ``{pane_id: screen}``: each a :class:`ccci.screen.Screen`, the plain text
            (what ``capture-pane -p -J`` shows, each line's trailing blanks removed) that
            also knows which characters were drawn faint (a placeholder, not typed text);
            a pane that vanished maps to ``""``.
        """
        if not pane_ids:
            return {}
        got = self._capture_control(pane_ids)
        if got is not None:
            return got
        # the marker carries the pane's index, never the pane id: display-message runs
        # its text through strftime, which mangles "%3"-style pane ids
        marker = "@@ccci-" + secrets.token_hex(6) + "@@"
        args: list[str] = []
        for i, pid in enumerate(pane_ids):
            if i:
                args += [";"]
            args += ["display-message", "-p", f"{marker}{i}", ";", "capture-pane", "-p", "-e", "-J", "-t", pid]
        self.calls += 1
        res = self.server.cmd(*args)
        texts: dict[str, list[str]] = {p: [] for p in pane_ids}
        current: str | None = None
        for line in res.stdout:
            if line.startswith(marker):
                idx = _int(line[len(marker):], None)
                current = pane_ids[idx] if idx is not None and 0 <= idx < len(pane_ids) else None
                continue
            if current is not None:
                texts[current].append(line)
        return {p: self._screen(p, v) if v else "" for p, v in texts.items()}

    def _capture_control(self, pane_ids: list[str]) -> dict[str, str] | None:
        """:meth:`capture` through the control client: one line per pane (a vanished
        pane fails alone), then a ``display-message`` sentinel with a random token. A
        pane that prints a forged ``%end`` line would make the rest of its capture
        arrive outside a block: the client sees the desync and ends, and the sentinel
        never answers, so no cut-short capture is returned (None: the caller forks)."""
        token = "@@ccci-" + secrets.token_hex(6) + "@@"
        argvs = [["capture-pane", "-p", "-e", "-J", "-t", pid] for pid in pane_ids]
        got = self._via_control(argvs + [["display-message", "-p", token]])
        if got is None or got[-1] != ([token], None):
            return None
        return {p: self._screen(p, out) if err is None and out else ""
                for p, (out, err) in zip(pane_ids, got)}

    def _screen(self, pane_id: str, lines: list[str]) -> Screen:
        """One pane's capture parsed, reusing the lines it shares with that pane's last
        capture (:meth:`ccci.screen.Screen.from_styled`; same result as a fresh parse)."""
        if len(self._parsed) > MAX_PARSED_PANES:
            self._parsed = {}  # panes come and go: a bound, not an eviction policy
        keep: dict = {}
        screen = Screen.from_styled(lines, self._parsed.get(pane_id), keep)
        self._parsed[pane_id] = keep
        return screen

    def has_session(self, name: str) -> bool:
        """Exact-name check (``has-session -t =NAME``; plain ``-t NAME`` is a prefix match)."""
        _, err = self._raw("has-session", "-t", f"={name}")
        return not err

    # ------------------------------------------------------------------ writing
    def new_session(
        self, name: str, argv: list[str], cwd: Path | None, env: dict[str, str],
        width: int = 200, height: int = 50, log_file: Path | None = None,
    ) -> PaneInfo:
        """Start ``argv`` (no shell) in a new detached session with ``remain-on-exit``.

        With ``log_file``, the pane's output is appended to it from the first byte
        (``pipe-pane`` in the same tmux command as ``new-session``).

        :raises TmuxError: when the session exists or tmux fails.
        """
        args = ["new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), "-P", "-F", "#{pane_id}" + SEP + "#{pane_pid}"]
        if cwd:
            args += ["-c", str(cwd)]
        for k, v in env.items():
            args += ["-e", _literal(f"{k}={v}")]
        args += ["--", *(_literal(a) for a in argv)]
        args += [";", "set-option", "-w", "-t", f"={name}:", "remain-on-exit", "on"]
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(log_file, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
            args += [";", "pipe-pane", "-o", "-t", f"={name}:", f"cat >> {shlex.quote(str(log_file))}"]
        try:
            out = self.cmd(*args)
        except TmuxError as exc:
            if not any(m in str(exc) for m in SERVER_GONE):
                raise
            # the session killed just before (a restart) was the server's last, so tmux
            # was exiting as we connected: the second call starts a new server
            time.sleep(0.1)
            out = self.cmd(*args)
        pane_id, pid = out[0].split(SEP)
        return PaneInfo(session_name=name, pane_id=pane_id, pid=int(pid), width=width, height=height)

    def kill_session(self, name: str) -> None:
        """Kill a session if it exists (exact name).

        When it is the session the control client is attached to, tmux detaches the
        client (``%exit``): wait for that (up to 1 s) so the next call does not go to
        a client that is exiting; it starts a new one."""
        ctl = self.control
        self._raw("kill-session", "-t", f"={name}")
        if ctl is not None and ctl.alive and ctl.attached_session == name:
            ctl.wait_closed(1.0)

    def pipe_to_file(self, pane_id: str, logfile: Path) -> None:
        """Append the pane's output to ``logfile`` (``pipe-pane -o``; the path is quoted)."""
        logfile.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(logfile, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))  # 0600 before tmux appends
        self.cmd("pipe-pane", "-o", "-t", pane_id, f"cat >> {shlex.quote(str(logfile))}")

    def send_literal(self, pane_id: str, text: str) -> None:
        """Type ``text`` literally (``send-keys -l``): never interpreted as key names.

        A trailing ``;`` is escaped (tmux would drop it as a command separator).
        :raises ValueError: for text over :data:`MAX_LITERAL` characters or with newlines.
        """
        if len(text) > MAX_LITERAL:
            raise ValueError(f"text is {len(text)} chars; over {MAX_LITERAL} use paste()")
        if "\n" in text or "\r" in text:
            raise ValueError("text has a newline; use paste() for multi-line text")
        if text.endswith(";"):
            text = text[:-1] + "\\;"
        self.cmd("send-keys", "-t", pane_id, "-l", "--", text)

    def send_key(self, pane_id: str, key: str) -> None:
        """Send one key by name (``Enter``, ``Escape``, ``C-u``). Only ccci's own constants."""
        self.cmd("send-keys", "-t", pane_id, key)

    def paste(self, pane_id: str, text: str, tmpdir: Path) -> None:
        """Paste ``text`` as a bracketed paste (``load-buffer`` + ``paste-buffer -p``).

        The text goes through a 0600 file in ``tmpdir``, removed afterwards.
        """
        tmpdir.mkdir(parents=True, exist_ok=True)
        path = tmpdir / f"paste-{secrets.token_hex(6)}"
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            buf = "ccci-" + secrets.token_hex(4)
            self.cmd("load-buffer", "-b", buf, str(path))
            self.cmd("paste-buffer", "-p", "-d", "-b", buf, "-t", pane_id)
        finally:
            path.unlink(missing_ok=True)

    def kill_server(self) -> None:
        self.calls += 1
        self.server.cmd("kill-server")
