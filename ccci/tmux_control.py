"""One tmux control-mode client (``tmux -C``) per watcher: the tick's tmux queries and
commands over two pipes, and notifications that wake the runner.

Protocol (tmux 3.3a, ``man tmux`` CONTROL MODE; measured on this machine):

* every command line written to the client's stdin is answered, in order, by one block
  per command: ``%begin TIME NUMBER FLAGS``, the output lines, then ``%end`` or
  ``%error`` with the same three fields. FLAGS is ``1`` for a command this client sent;
  the ``attach-session`` that starts the client answers with a ``0`` block first;
* several commands on one line (``a ; b ; c``) give one block each, but a failing
  command ends the line: the commands after it get no block at all. A request
  (:meth:`ControlClient.run`) is therefore one line, complete at its last ``%end`` or at
  its first ``%error``, which is what a forked ``tmux a ; b ; c`` does too;
* notifications (``%output``, ``%exit``, ``%sessions-changed``, ``%window-close``,
  ``%subscription-changed`` ...) are lines starting with ``%`` and never occur inside a
  block. A line outside a block that is neither is a desync (e.g. a pane that printed a
  forged ``%end`` line inside a ``capture-pane`` reply): the client is dropped.

What the client attaches to: ``attach-session`` with no target, i.e. one of the
fleet's own sessions, with ``-f ignore-size`` so the client never resizes an agent's
window. It never runs ``new-session`` for itself: a fleet without sessions has no
server (tmux exits with its last session), so there is nothing to attach to and the
caller uses forked clients; the control client neither creates a session that
``ccci status`` would show nor keeps a server alive after ``ccci shutdown`` (tmux
detaches a control client whose session is destroyed and it exits with ``%exit``).

What tmux 3.3a does *not* notify: a pane whose process exits under ``remain-on-exit``
gets no control-mode notification (measured: ``kill -9`` of the pane's process, no line
until the subscription timer), and ``%output`` covers only the panes of the attached
session. So the client also

* subscribes (``refresh-client -B``) to every pane's ``pane_dead``/``pane_pid`` across
  all sessions; tmux checks subscriptions once a second (``control.c``: a 1 s timer);
* watches each live pane's process with a Linux pidfd (``os.pidfd_open``, Linux >= 5.3),
  which becomes readable the moment the process exits: a ``kill -9`` wakes the runner
  at once.

Process hygiene: every request has a deadline; a missed deadline kills the client (it is
wedged) and the caller falls back to a forked client. The client process carries
:data:`OWNER_ENV` (``"<owner pid>:<owner start time>"``) in its environment, so a later
watcher can find clients whose owner died (:func:`reap_orphans`) without touching any
other program's ``tmux -C`` clients. A client whose owner is killed sees EOF on stdin
and exits by itself (measured: tmux 3.3a exits, status 1); the reaper is for a client
that was wedged when its owner died.

Driven with :mod:`subprocess` pipes and :mod:`selectors` (no pty, so no pexpect): control
mode is a line protocol on plain pipes, and one reader thread multiplexes the client's
stdout with the pidfds.
"""
from __future__ import annotations

import collections
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from typing import Callable

import psutil

#: environment variable on every control client ccci starts: ``"<pid>:<create time>"`` of
#: the process that owns it (psutil's ``create_time()``, seconds since the epoch, repr)
OWNER_ENV = "CCCI_TMUX_CONTROL_OWNER"
DEADLINE_S = 5.0  #: default deadline of one request (seconds)
CONNECT_S = 3.0  #: deadline of the attach (seconds)
OUTPUT_WAKE_S = 2.0  #: ``%output`` of one pane wakes the runner at most this often (seconds)
OUTPUT_WAKE_FLEET_S = 0.5  #: ... and ``%output`` of any pane at most this often (seconds)
SUBSCRIPTION = "ccci-panes"
#: every window of every session: ``@N:activity`` and each pane's ``%N=dead/pid`` (a
#: change wakes the runner within 1 s). ``window_activity`` (seconds) moves with any
#: output in the window: the wake-up for a pane printing in a session the client is not
#: attached to, which gets no ``%output``; it lets the runner's quiet-fleet safety tick
#: (``fleet.idle_tick_seconds``) be long without a screen change waiting for it.
SUBSCRIPTION_FORMAT = "#{S:#{W:#{window_id}:#{window_activity} #{P:#{pane_id}=#{pane_dead}/#{pane_pid} }}}"

Wake = Callable[[str], None]


class ControlError(RuntimeError):
    """tmux answered ``%error``: the message is the block's text (what a forked client
    prints on stderr)."""


class ControlUnavailable(RuntimeError):
    """The control client is not running, died, missed a deadline or desynced.

    :attr sent: True when the request line had been written before the failure (the
        command may have run: do not repeat a non-idempotent command).
    """

    def __init__(self, message: str, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


def quote(arg: str) -> str:
    """``arg`` as one word for tmux's command parser: single-quoted (no ``$``, ``~`` or
    ``\\`` processing inside), a ``'`` written as ``'\\''`` (measured: ``'it'\\''s'``
    reaches the command as ``it's``)."""
    return "'" + arg.replace("'", "'\\''") + "'"


def control_line(argv: list[str]) -> tuple[str, int]:
    """A forked client's argv (commands separated by ``;`` arguments, an argument ending
    in ``\\;`` meaning a literal ``;``; see ``ccci.tmux._literal``) as one control-mode
    line. Returns ``(line, number of commands)``.

    :raises ValueError: for an argument with a newline, carriage return or NUL (a line
        protocol cannot carry it; the caller uses a forked client).
    """
    words: list[str] = []
    n = 1
    for a in argv:
        if "\n" in a or "\r" in a or "\0" in a:
            raise ValueError("argument with a newline")
        if a == ";":
            words.append(";")
            n += 1
            continue
        if a.endswith("\\;"):
            words.append(quote(a[:-2] + ";"))
        elif a.endswith(";"):  # tmux's argv rule: a trailing ';' ends the command
            if a[:-1]:
                words.append(quote(a[:-1]))
            words.append(";")
            n += 1
        else:
            words.append(quote(a))
    while words and words[-1] == ";":
        words.pop()
        n -= 1
    return " ".join(words), max(n, 1)


def _owner_tag(pid: int | None = None) -> str:
    p = psutil.Process(pid)
    return f"{p.pid}:{p.create_time()!r}"


def _owner_alive(tag: str) -> bool:
    try:
        pid_s, created = tag.split(":", 1)
        p = psutil.Process(int(pid_s))
        return repr(p.create_time()) == created and p.status() != psutil.STATUS_ZOMBIE
    except (ValueError, psutil.Error):
        return False


def _client_owner(pid: int) -> str | None:
    """The :data:`OWNER_ENV` value of process ``pid`` (``/proc/PID/environ``), or None."""
    try:
        env = psutil.Process(pid).environ()
    except (psutil.Error, OSError):
        return None
    return env.get(OWNER_ENV)


def _tmux_base(socket_name: str | None, socket_path: str | None) -> list[str]:
    base = [shutil.which("tmux") or "tmux"]
    if socket_path:
        base += ["-S", socket_path]
    elif socket_name:
        base += ["-L", socket_name]
    return base


def control_clients(socket_name: str | None, socket_path: str | None = None) -> list[dict]:
    """Every control-mode client of the server: ``[{"pid", "name", "owner"}]``, where
    ``owner`` is the :data:`OWNER_ENV` tag or None for a client ccci did not start.
    ``[]`` when no server runs. One forked ``list-clients``."""
    res = subprocess.run(_tmux_base(socket_name, socket_path)
                         + ["list-clients", "-F", "#{client_pid}\x1f#{client_control_mode}\x1f#{client_name}"],
                         capture_output=True, text=True, timeout=10)
    out = []
    for line in res.stdout.splitlines():
        parts = line.split("\x1f")
        if len(parts) != 3 or parts[1] != "1" or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        out.append({"pid": pid, "name": parts[2], "owner": _client_owner(pid)})
    return out


def reap_orphans(socket_name: str | None, socket_path: str | None = None, wait_s: float = 2.0) -> list[int]:
    """End the control clients on this server that a ccci process started and that
    outlived it: clients carrying :data:`OWNER_ENV` whose owner (pid and start time) is
    gone. A client without the marker (another program's ``tmux -C``) or with a live
    owner is never touched. Each is detached (``detach-client -t NAME``: it exits with
    ``%exit``), then sent SIGKILL if still there after ``wait_s`` seconds (re-checked to
    be the same marked process first).

    :returns: the pids reaped.
    """
    reaped = []
    base = _tmux_base(socket_name, socket_path)
    for c in control_clients(socket_name, socket_path):
        if c["owner"] is None or _owner_alive(c["owner"]):
            continue
        subprocess.run(base + ["detach-client", "-t", c["name"]], capture_output=True, timeout=10)
        reaped.append(c["pid"])
    # a client process the server already dropped (it saw EOF on the client's stdin) but
    # that could not exit (stopped, wedged): found by its command line and marker
    for pid in marked_processes(socket_name, socket_path):
        if pid not in reaped and not _owner_alive(_client_owner(pid) or ""):
            reaped.append(pid)
    end = time.monotonic() + wait_s
    for pid in reaped:
        while time.monotonic() < end and psutil.pid_exists(pid) and _client_owner(pid) is not None:
            time.sleep(0.02)
        owner = _client_owner(pid)
        if owner is not None and not _owner_alive(owner):  # still the same orphan: a wedged client
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return reaped


def marked_processes(socket_name: str | None, socket_path: str | None = None) -> list[int]:
    """Pids of the ``tmux ... -C attach-session`` processes on this socket that carry
    :data:`OWNER_ENV` (only processes of this user can be read), whatever their owner."""
    want = _tmux_base(socket_name, socket_path)[1:] + ["-C", "attach-session"]
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if len(cmd) >= len(want) + 1 and cmd[1:len(want) + 1] == want and _client_owner(p.pid) is not None:
            out.append(p.pid)
    return out


class _Request:
    """One line of a batch (:meth:`ControlClient.run`). The batch shares one
    ``threading.Event``, set when its last line is answered or the client fails (the
    answers come in order): one Event per batch, not per line (a tick's capture batch
    has a line per changed pane)."""

    __slots__ = ("ncmds", "outputs", "error", "done", "failed", "last")

    def __init__(self, ncmds: int, done: threading.Event, last: bool = True) -> None:
        self.ncmds = ncmds
        self.outputs: list[str] = []  # output lines of the commands that succeeded
        self.error: str | None = None  # the %error block's text
        self.failed: str | None = None  # ControlUnavailable reason
        self.done = done
        self.last = last  # the batch's last line: its answer completes the batch


class ControlClient:
    """One ``tmux -C attach-session -f ignore-size`` client on a server.

    :param socket_name: ``tmux -L`` name (``None``: the default server).
    :param socket_path: ``tmux -S`` path (overrides ``socket_name``).
    :param on_wake: called (from the reader thread) with a reason when a pane or the
        server changed: a pane process exited (pidfd), ``pane_dead``/``pane_pid`` changed
        (subscription), sessions or windows came or went, the client exited (server
        killed, attached session destroyed), or a pane printed (``%output``, at most once
        per :data:`OUTPUT_WAKE_S` per pane and :data:`OUTPUT_WAKE_FLEET_S` overall).
    :param deadline_s: default deadline of a request (seconds).
    """

    def __init__(self, socket_name: str | None = None, socket_path: str | None = None,
                 on_wake: Wake | None = None, deadline_s: float = DEADLINE_S) -> None:
        self.base = _tmux_base(socket_name, socket_path)
        self.on_wake = on_wake
        self.deadline_s = deadline_s
        self.proc: subprocess.Popen | None = None
        self.closed_reason = ""  #: why the client ended ("" while it runs)
        self.notifications: collections.Counter[str] = collections.Counter()  #: count per notification kind
        self.attached_session = ""  #: name of the session the client is attached to
        self._lock = threading.Lock()  # write + enqueue, so the queue order is the stdin order
        self._pending: collections.deque[_Request] = collections.deque()
        self._block: list[str] | None = None
        self._block_key = b""
        self._block_ours = False
        self._attached = threading.Event()
        self._attached_ok = False
        self._alive = False
        self._thread: threading.Thread | None = None
        self._sel: selectors.BaseSelector | None = None
        self._rpipe = self._wpipe = -1
        self._want_pids: set[int] | None = None
        self._pidfds: dict[int, int] = {}  # pid -> pidfd
        self._sub_seen = False
        self._last_out: dict[str, float] = {}
        self._last_out_any = 0.0

    # ------------------------------------------------------------------ life
    @property
    def alive(self) -> bool:
        """True while the client runs and answers."""
        return self._alive

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def subscribed(self) -> bool:
        """True once tmux sent the subscription's first value (tmux >= 3.2 has
        subscriptions): pane and window changes in every session wake the runner."""
        return self._sub_seen

    def start(self, timeout: float = CONNECT_S) -> None:
        """Start the client and wait until it is attached.

        :raises ControlUnavailable: no server, no session to attach to, or no answer
            within ``timeout`` seconds (the client is then ended).
        """
        env = {**os.environ, OWNER_ENV: _owner_tag()}
        env.pop("TMUX", None)  # never nested into the tmux ccci itself may run under
        self.proc = subprocess.Popen(self.base + ["-C", "attach-session", "-f", "ignore-size"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, close_fds=True)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._rpipe, self._wpipe = os.pipe()
        os.set_blocking(self._rpipe, False)
        os.set_blocking(self._wpipe, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout.fileno(), selectors.EVENT_READ, "tmux")
        self._sel.register(self._rpipe, selectors.EVENT_READ, "self")
        self._alive = True
        self._thread = threading.Thread(target=self._loop, name="ccci-tmux-control", daemon=True)
        self._thread.start()
        if not self._attached.wait(timeout) or not self._alive:
            reason = self.closed_reason or f"no answer within {timeout:.1f}s"
            self._fail(reason)
            raise ControlUnavailable(f"tmux control client did not attach: {reason}")
        try:
            self.run([["refresh-client", "-B", f"{SUBSCRIPTION}::{SUBSCRIPTION_FORMAT}"]])
        except ControlError:
            pass  # a tmux without subscriptions (< 3.2): pidfds and the tick remain

    def wait_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the client to end; True if it did."""
        end = time.monotonic() + timeout
        while self._alive and time.monotonic() < end:
            time.sleep(0.005)
        return not self._alive

    def close(self, timeout: float = 2.0) -> None:
        """End the client: stdin closed (tmux detaches it and it exits), killed if it is
        still there after ``timeout`` seconds; reaped; pidfds closed. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        if not self.closed_reason:
            self.closed_reason = "closed"  # (no wake-up for an exit we asked for)
        if proc.poll() is None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._fail(self.closed_reason or "closed")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _fail(self, reason: str) -> None:
        """Mark the client dead, fail every pending request, kill and reap the process."""
        with self._lock:
            was_alive = self._alive
            self._alive = False
            if not self.closed_reason:
                self.closed_reason = reason
            pending, self._pending = list(self._pending), collections.deque()
        for req in pending:
            req.failed = reason
            req.done.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass
        if proc is not None:
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
            for f in (proc.stdin,):
                try:
                    f.close()
                except (OSError, ValueError):
                    pass
        if self._wpipe >= 0:
            try:
                os.write(self._wpipe, b"x")  # the reader thread ends
            except OSError:
                pass
        attached, self._attached_ok = self._attached_ok, False
        self._attached.set()
        if was_alive and attached and reason != "closed":
            self._wake(f"tmux control client ended: {reason}")

    # ------------------------------------------------------------------ requests
    def run(self, argvs: list[list[str]], deadline_s: float | None = None) -> list[tuple[list[str], str | None]]:
        """Send each argv (a forked client's argv, ``;`` separating commands) as one
        line, all at once; wait for every answer.

        :returns: per argv ``(output lines, error text or None)``; the output lines are
            those of the commands before an error.
        :raises ControlUnavailable: the client is not running, died, desynced, or the
            deadline (``deadline_s``, default :attr:`deadline_s` seconds, for the whole
            batch) passed; the client is then ended (a wedged client is restarted by
            the caller).
        :raises ValueError: an argument cannot go on one line (see :func:`control_line`).
        """
        lines = [control_line(a) for a in argvs]
        done = threading.Event()
        reqs = [_Request(n, done, i == len(lines) - 1) for i, (_, n) in enumerate(lines)]
        data = "".join(line + "\n" for line, _ in lines).encode("utf-8", "surrogateescape")
        with self._lock:
            if not self._alive:
                raise ControlUnavailable(f"tmux control client not running ({self.closed_reason or 'not started'})")
            self._pending.extend(reqs)
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (OSError, ValueError) as exc:
                for r in reqs:
                    self._pending.remove(r)
                sent = False
                err = f"write failed: {exc}"
            else:
                sent, err = True, None
        if err is not None:
            self._fail(err)
            raise ControlUnavailable(err, sent=sent)
        if not done.wait(self.deadline_s if deadline_s is None else deadline_s):
            self._fail(f"deadline of {self.deadline_s if deadline_s is None else deadline_s:.1f}s missed")
        for r in reqs:
            if r.failed is not None:
                raise ControlUnavailable(f"tmux control client: {r.failed}", sent=True)
        return [(r.outputs, r.error) for r in reqs]

    # ------------------------------------------------------------------ pidfds
    def watch_pids(self, pids: set[int] | list[int]) -> None:
        """Watch these processes (each live pane's pid): one exiting wakes the runner at
        once. Replaces the previous set; applied by the reader thread."""
        self._want_pids = set(pids)
        if self._wpipe >= 0:
            try:
                os.write(self._wpipe, b"p")
            except OSError:
                pass

    def _apply_pids(self) -> None:
        want, self._want_pids = self._want_pids, None
        if want is None or self._sel is None or not hasattr(os, "pidfd_open"):
            return
        for pid in list(self._pidfds):
            if pid not in want:
                fd = self._pidfds.pop(pid)
                self._sel.unregister(fd)
                os.close(fd)
        for pid in want - set(self._pidfds):
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._wake(f"pane process {pid} exited")
                continue
            except OSError:
                continue
            self._pidfds[pid] = fd
            self._sel.register(fd, selectors.EVENT_READ, pid)

    # ------------------------------------------------------------------ reader thread
    def _wake(self, reason: str) -> None:
        if self.on_wake is not None:
            try:
                self.on_wake(reason)
            except Exception:  # noqa: BLE001 - a wake callback must not kill the reader
                pass

    def _loop(self) -> None:
        buf = b""
        fd = self.proc.stdout.fileno()
        try:
            while True:
                for key, _ in self._sel.select():
                    if key.data == "tmux":
                        try:
                            chunk = os.read(fd, 1 << 16)
                        except BlockingIOError:
                            continue
                        if not chunk:
                            self._fail(self.closed_reason or "tmux exited")
                            return
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        for line in lines:
                            block = self._block
                            if block is not None and line[:1] != b"%":  # a reply's output line
                                block.append(line.decode("utf-8", "surrogateescape"))
                                continue
                            self._line(line)
                            if not self._alive:
                                return
                    elif key.data == "self":
                        try:
                            os.read(self._rpipe, 4096)
                        except BlockingIOError:
                            pass
                        if not self._alive:
                            return
                        self._apply_pids()
                    else:  # a pidfd: that pane's process exited
                        pid = key.data
                        self._sel.unregister(key.fd)
                        os.close(key.fd)
                        self._pidfds.pop(pid, None)
                        self.notifications["pidfd"] += 1
                        self._wake(f"pane process {pid} exited")
        except Exception as exc:  # noqa: BLE001
            self._fail(f"reader failed: {type(exc).__name__}: {exc}")
        finally:
            for pfd in self._pidfds.values():
                os.close(pfd)
            self._pidfds.clear()
            if self._sel is not None:
                self._sel.close()
            for p in (self._rpipe, self._wpipe):
                try:
                    os.close(p)
                except OSError:
                    pass
            self._rpipe = self._wpipe = -1
            try:
                self.proc.stdout.close()
            except (OSError, ValueError):
                pass

    def _line(self, line: bytes) -> None:
        if self._block is not None:
            if line.startswith((b"%end ", b"%error ")) and line.split(b" ", 1)[1] == self._block_key:
                block, self._block = self._block, None
                if self._block_ours:
                    self._answer(block, error=line.startswith(b"%error"))
                elif line.startswith(b"%error"):  # the attach itself failed (flags 0)
                    self._fail("attach failed: " + " ".join(block)[:200])
                else:
                    self._attached_ok = True
                    self._attached.set()  # the attach's own block (flags 0)
            else:
                self._block.append(line.decode("utf-8", "surrogateescape"))
            return
        if line.startswith(b"%begin "):
            self._block = []
            self._block_key = line.split(b" ", 1)[1]
            self._block_ours = line.rsplit(b" ", 1)[-1] == b"1"
            return
        if line.startswith(b"%"):
            self._notification(line)
            return
        self._fail(f"desync: unexpected line outside a block: {line[:60]!r}")

    def _answer(self, block: list[str], error: bool) -> None:
        with self._lock:
            if not self._pending:
                req = None
            else:
                req = self._pending[0]
                if error:
                    req.error = "\n".join(block)
                else:
                    req.outputs.extend(block)
                    req.ncmds -= 1
                if error or req.ncmds <= 0:
                    self._pending.popleft()
                else:
                    req = None
        if req is not None and req.last:
            req.done.set()

    def _notification(self, line: bytes) -> None:
        kind, _, rest = line.partition(b" ")
        k = kind[1:].decode("ascii", "replace")
        self.notifications[k] += 1
        if k in ("output", "extended-output"):
            pane = rest.split(b" ", 1)[0].decode("ascii", "replace")
            now = time.monotonic()
            if now - self._last_out.get(pane, -1e9) >= OUTPUT_WAKE_S and now - self._last_out_any >= OUTPUT_WAKE_FLEET_S:
                self._last_out[pane] = self._last_out_any = now
                self._wake(f"tmux %output {pane}")
        elif k == "subscription-changed":
            if self._sub_seen:  # the first one is the initial value
                self._wake("tmux pane state changed")
            self._sub_seen = True
        if k == "session-changed":  # "%session-changed $ID NAME": the session attached to
            self.attached_session = rest.split(b" ", 1)[-1].decode("utf-8", "replace")
        if k == "exit" and not self.closed_reason:
            self.closed_reason = "tmux %exit" + (": " + rest.decode("utf-8", "replace") if rest else "")
        elif k in ("sessions-changed", "window-close", "unlinked-window-close", "window-pane-changed"):
            self._wake(f"tmux %{k}")
