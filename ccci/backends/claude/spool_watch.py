"""Wake the runner the moment a Claude Code hook writes its spool file (inotify).

:mod:`ccci.backends.claude.hookrelay` appends one line per lifecycle hook to
``<state_dir>/hooks/<agent>.jsonl`` (one ``write(2)`` on an ``O_APPEND`` descriptor, then
``close(2)``). :class:`SpoolWatcher` watches that directory with inotify (the
``inotify_simple`` library, a thin ctypes wrapper of the kernel calls) on a daemon thread
and, for every write to a ``*.jsonl`` file, calls ``on_write(agent)``; the
``claude_hooks`` plugin passes :meth:`ccci.services.Services.wake`, so the tick that
folds the new record (``claude_hooks.ccci_observe``) runs at once instead of at the next
``tick_seconds`` boundary. A ``StopFailure`` (the CLI's own report of an API error) is
thereby acted on within one tick's work of the hook, not up to a tick later.

Without inotify (not Linux, the library missing, ``fs.inotify.max_user_instances`` or
``max_user_watches`` used up) :attr:`SpoolWatcher.available` is ``False``, the reason is
in :attr:`SpoolWatcher.error`, and the tick alone reads the spool, as before.

Measured on this project's 2-core machine (``bench/hook_latency.py``, results in
``bench/hook_latency.json``): the spool write to the runner's wake-up takes well under a
millisecond; what remains is the tick's own work.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

READ_TIMEOUT_MS = 250  #: ms one blocking read waits before the thread looks at its stop flag
SUFFIX = ".jsonl"  #: spool files end so (``hooks/<agent>.jsonl``); settings files are ignored


class SpoolWatcher:
    """Calls ``on_write(agent)`` whenever ``directory/<agent>.jsonl`` is written.

    :param directory: the hooks directory (created 0700 when missing).
    :param on_write: called on the watcher's thread with the agent's name (the file's
        stem); must be thread-safe and quick (``Services.wake`` is). An exception it
        raises is swallowed (the tick still reads the spool).
    :param start: start the thread now (tests may call :meth:`start` later).

    Attributes:
        available: inotify is watching the directory.
        error: why not, one line (``""`` when available).
        wakes: how many times ``on_write`` was called (for tests and the bench).
    """

    def __init__(self, directory: Path, on_write: Callable[[str], None], start: bool = True) -> None:
        self.directory = Path(directory)
        self.on_write = on_write
        self.available = False
        self.error = ""
        self.wakes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ino = None
        try:
            from inotify_simple import INotify, flags
        except ImportError as exc:  # pragma: no cover - a dependency; missing only off-Linux installs
            self.error = f"inotify_simple not importable: {exc}"
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            ino = INotify()
        except (OSError, AttributeError) as exc:  # AttributeError: libc without inotify_init1 (not Linux)
            self.error = f"inotify unavailable: {exc}"
            return
        try:
            # IN_MODIFY: the relay's append; IN_CLOSE_WRITE / IN_MOVED_TO: a file replaced whole
            ino.add_watch(str(self.directory), flags.MODIFY | flags.CLOSE_WRITE | flags.MOVED_TO)
        except OSError as exc:  # ENOSPC: max_user_watches used up
            ino.close()
            self.error = f"inotify watch on {self.directory} failed: {exc}"
            return
        self._ino = ino
        self.available = True
        if start:
            self.start()

    def start(self) -> None:
        """Start the thread (once; a no-op without inotify)."""
        if self._ino is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="ccci-claude-spool", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ino = self._ino
        assert ino is not None
        try:
            while not self._stop.is_set():
                try:
                    events = ino.read(timeout=READ_TIMEOUT_MS)
                except OSError:
                    if self._stop.is_set():
                        return
                    raise
                agents: list[str] = []
                for ev in events:
                    if ev.name.endswith(SUFFIX):
                        agent = ev.name[: -len(SUFFIX)]
                        if agent not in agents:
                            agents.append(agent)  # several events of one write wake once
                for agent in agents:
                    self.wakes += 1
                    try:
                        self.on_write(agent)
                    except Exception:  # noqa: BLE001 - the tick reads the spool anyway
                        pass
        except Exception as exc:  # noqa: BLE001 - fall back to the tick, say why
            self.error = f"inotify read failed: {type(exc).__name__}: {exc}"
            self.available = False

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (within :data:`READ_TIMEOUT_MS`) and close the inotify descriptor."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._ino is not None:
            try:
                self._ino.close()
            except OSError:
                pass
            self._ino = None
        self.available = False

