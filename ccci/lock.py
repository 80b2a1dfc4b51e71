"""One writer per fleet: an exclusive ``flock`` on ``<state_dir>/watch.lock``.

The kernel releases the lock when the holder dies (even by ``kill -9``), so a standby
watcher (``ccci watch --standby``) takes over at once and a stale lock never blocks.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


class LockHeld(RuntimeError):
    """Another watcher holds the fleet's lock; the message names its pid."""


class FleetLock:
    """:param state_dir: the fleet state directory (the lock file lives there)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "watch.lock"
        self.fd: int | None = None

    def holder(self) -> int | None:
        """Pid written by the current holder, or ``None``."""
        try:
            txt = self.path.read_text().strip()
            return int(txt) if txt else None
        except (OSError, ValueError):
            return None

    def is_held(self) -> bool:
        """True when some process holds the lock (checked without taking it)."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def acquire(self, wait: bool = False, poll_s: float = 0.2, should_stop=lambda: False) -> None:
        """Take the lock.

        :param wait: block until it frees (standby) instead of failing.
        :raises LockHeld: when ``wait`` is false and another process holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait or should_stop():
                    os.close(fd)
                    pid = self.holder()
                    raise LockHeld(f"another ccci watch (pid {pid}) supervises this fleet ({self.path}); "
                                   f"use --standby to wait and take over") from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def verify(self) -> bool:
        """Check that the lock file on disk is still the one we hold (someone may have
        deleted the state directory). If it was removed or replaced, lock a new one.

        :returns: ``False`` when another process locked the new file first: this
            process is no longer the fleet's watcher and must stop acting.
        """
        if self.fd is None:
            return False
        try:
            st = os.stat(self.path)
            own = os.fstat(self.fd)
            if (st.st_ino, st.st_dev) == (own.st_ino, own.st_dev):
                return True
        except FileNotFoundError:
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(self.fd)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
