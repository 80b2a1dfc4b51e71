"""tmux access through libtmux: one batched query per tick, literal sends.

libtmux is used for the server connection (socket name, command runner, errors) so
ccci never builds a shell command line: every call is an argv list. The per-tick
read is one ``list-panes -a -F ...`` call; captures of the panes that may have changed
go in one more call, chained with ``;`` and separated by a marker line.
"""
from __future__ import annotations

import os
import secrets
import shlex
import time
from pathlib import Path

import libtmux

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


def _int(s: str, default: int | None = 0) -> int | None:
    try:
        return int(s)
    except (TypeError, ValueError):
        return default


class Tmux:
    """A tmux server, addressed by socket name.

    :param socket_name: ``tmux -L`` name; ``None`` or ``""`` for the default server.
    :param socket_path: ``tmux -S`` path (overrides ``socket_name``).
    """

    def __init__(self, socket_name: str | None = None, socket_path: str | None = None) -> None:
        self.server = libtmux.Server(socket_name=socket_name or None, socket_path=socket_path or None)
        self.calls = 0  #: tmux subprocesses run (for benchmarks and tests)
        self.server_running = True  #: False when the last list_panes found no server

    def cmd(self, *args: str, check: bool = True) -> list[str]:
        """Run one tmux command (argv, no shell); returns stdout lines.

        :raises TmuxError: when ``check`` and tmux wrote to stderr.
        """
        self.calls += 1
        res = self.server.cmd(*args)
        if check and res.stderr:
            raise TmuxError(" ".join(res.stderr)[:500])
        return res.stdout

    # ------------------------------------------------------------------ reading
    def list_panes(self) -> dict[str, PaneInfo]:
        """Every pane of the server, keyed by session name (first pane of each session).

        Returns ``{}`` when no server runs. One tmux call.
        """
        self.calls += 1
        res = self.server.cmd("list-panes", "-a", "-F", LIST_FORMAT)
        self.server_running = not res.stderr
        if res.stderr:
            return {}
        out: dict[str, PaneInfo] = {}
        for line in res.stdout:
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
        return {p: Screen.from_styled("\n".join(v)) if v else "" for p, v in texts.items()}

    def has_session(self, name: str) -> bool:
        """Exact-name check (``has-session -t =NAME``; plain ``-t NAME`` is a prefix match)."""
        self.calls += 1
        res = self.server.cmd("has-session", "-t", f"={name}")
        return not res.stderr

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
        """Kill a session if it exists (exact name)."""
        self.calls += 1
        self.server.cmd("kill-session", "-t", f"={name}")

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
